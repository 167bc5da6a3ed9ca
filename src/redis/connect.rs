//! Where the store lives and how to reach it: one server or a cluster, in
//! plain text or over TLS, and the one connection type the rest of the module
//! talks through.

use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::error::BuildError;

/// How long a (re)connection may take before a command fails instead.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Builds a [`RedisStore`](super::RedisStore) for one server or a cluster,
/// in plain text or over TLS.
///
/// ```no_run
/// # fn run() -> Result<(), tower_no_response::BuildError> {
/// use tower_no_response::redis::RedisStore;
///
/// let store = RedisStore::builder()
///     .cluster(["redis://10.0.0.5:6379/", "redis://10.0.0.6:6379/"])
///     .build()?
///     .key_prefix("shop:444:");
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct RedisStoreBuilder {
    urls: Vec<String>,
    cluster: bool,
    #[cfg(feature = "redis-tls")]
    tls: TlsFiles,
}

#[cfg(feature = "redis-tls")]
#[derive(Clone, Default)]
struct TlsFiles {
    ca: Option<Pem>,
    client: Option<(Pem, Pem)>,
}

/// PEM text and where it came from, for errors.
#[cfg(feature = "redis-tls")]
#[derive(Clone)]
enum Pem {
    File(std::path::PathBuf),
    Text(&'static str, Vec<u8>),
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls.iter().map(|u| mask_password(u)).collect();
        let mut out = f.debug_struct("RedisStoreBuilder");
        out.field("urls", &urls).field("cluster", &self.cluster);
        #[cfg(feature = "redis-tls")]
        out.field("ca", &self.tls.ca.as_ref().map(Pem::name)).field(
            "client_cert",
            &self.tls.client.as_ref().map(|(c, _)| c.name()),
        );
        out.finish()
    }
}

impl RedisStoreBuilder {
    /// One server: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://` for TLS (feature `redis-tls`), or `unix:///path`. A
    /// managed service's single endpoint, or a proxy in front of a cluster,
    /// is one server too.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.urls = vec![url.into()];
        self.cluster = false;
        self
    }

    /// A Redis Cluster, found through any of these nodes (one is enough;
    /// more survive one being down at start). The rest of the cluster is
    /// discovered from them, and keys, scripts and bans are routed to the
    /// primary that owns each key's slot. All URLs use the same scheme and
    /// credentials.
    pub fn cluster<I>(mut self, seeds: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.urls = seeds.into_iter().map(Into::into).collect();
        self.cluster = true;
        self
    }

    /// Verifies the server's certificate against the CA certificates in this
    /// PEM file instead of the system roots: a private CA, or a managed
    /// service's own. Read when the store is built.
    #[cfg(feature = "redis-tls")]
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.tls.ca = Some(Pem::File(path.into()));
        self
    }

    /// [`ca_file`](Self::ca_file) with the PEM text itself.
    #[cfg(feature = "redis-tls")]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca = Some(Pem::Text("CA PEM", pem.into()));
        self
    }

    /// Mutual TLS: presents this certificate chain and private key (PEM
    /// files) to the server. Read when the store is built.
    #[cfg(feature = "redis-tls")]
    pub fn client_cert_files(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.tls.client = Some((Pem::File(cert.into()), Pem::File(key.into())));
        self
    }

    /// [`client_cert_files`](Self::client_cert_files) with the PEM text
    /// itself.
    #[cfg(feature = "redis-tls")]
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls.client = Some((
            Pem::Text("client certificate PEM", cert.into()),
            Pem::Text("client key PEM", key.into()),
        ));
        self
    }

    /// Checks the URLs and reads the TLS files. Nothing is connected yet:
    /// the first check connects, in the background of the first request.
    ///
    /// # Errors
    /// [`BuildError::StoreUrl`], naming the URL (password masked), when a URL
    /// cannot be parsed, uses `rediss://` without feature `redis-tls`, or is
    /// missing; [`BuildError::StoreTls`], naming the file, when a TLS file
    /// cannot be read or holds no usable PEM, or when TLS files are given for
    /// `redis://` URLs.
    pub fn build(self) -> Result<super::RedisStore, BuildError> {
        let shown = self
            .urls
            .iter()
            .map(|u| mask_password(u))
            .collect::<Vec<_>>()
            .join(",");
        let Some(first) = self.urls.first() else {
            return Err(BuildError::StoreUrl {
                url: String::new(),
                reason: "no URL given".to_owned(),
            });
        };
        let mut infos = Vec::with_capacity(self.urls.len());
        for url in &self.urls {
            infos.push(parse_url(url)?);
        }
        let tls = infos.iter().any(|(_, tls)| *tls);
        if infos.iter().any(|(_, t)| *t != tls) {
            return Err(BuildError::StoreUrl {
                url: shown,
                reason: "mixes redis:// and rediss:// URLs".to_owned(),
            });
        }
        #[cfg(feature = "redis-tls")]
        let certs = self.tls.load(tls, first)?;
        let infos: Vec<redis::ConnectionInfo> = infos.into_iter().map(|(i, _)| i).collect();
        let client = |info: redis::ConnectionInfo| -> Result<redis::Client, BuildError> {
            #[cfg(feature = "redis-tls")]
            let client = match &certs {
                Some(certs) => redis::Client::build_with_tls(info, certs.clone()),
                None => redis::Client::open(info),
            };
            #[cfg(not(feature = "redis-tls"))]
            let client = redis::Client::open(info);
            client.map_err(|e| BuildError::StoreUrl {
                url: mask_password(first),
                reason: e.to_string(),
            })
        };
        let backend = if self.cluster {
            let builder = ClusterClientBuilder::new(infos.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .retries(2);
            #[cfg(feature = "redis-tls")]
            let builder = match &certs {
                Some(certs) => builder.certs(certs.clone()),
                None => builder,
            };
            let cluster = builder.build().map_err(|e| BuildError::StoreUrl {
                url: shown.clone(),
                reason: e.to_string(),
            })?;
            let seeds = infos.into_iter().map(client).collect::<Result<_, _>>()?;
            Backend::Cluster { cluster, seeds }
        } else {
            let mut infos = infos;
            Backend::Single(client(infos.swap_remove(0))?)
        };
        Ok(super::RedisStore::from_backend(
            backend,
            shown,
            "tower_no_response:".to_owned(),
        ))
    }
}

/// One URL as connection info, and whether it asks for TLS.
fn parse_url(url: &str) -> Result<(redis::ConnectionInfo, bool), BuildError> {
    use redis::IntoConnectionInfo;
    let refuse = |reason: String| BuildError::StoreUrl {
        url: mask_password(url),
        reason,
    };
    if url.starts_with("rediss://") && !cfg!(feature = "redis-tls") {
        return Err(refuse(
            "rediss:// needs the crate's `redis-tls` feature".to_owned(),
        ));
    }
    let info = url
        .into_connection_info()
        .map_err(|e| refuse(e.to_string()))?;
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    Ok((info, tls))
}

#[cfg(feature = "redis-tls")]
impl Pem {
    fn name(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Text(what, _) => (*what).to_owned(),
        }
    }

    fn read(&self) -> Result<Vec<u8>, BuildError> {
        match self {
            Self::File(path) => std::fs::read(path).map_err(|e| BuildError::StoreTls {
                file: self.name(),
                reason: e.to_string(),
            }),
            Self::Text(_, pem) => Ok(pem.clone()),
        }
    }

    fn refuse(&self, reason: impl Into<String>) -> BuildError {
        BuildError::StoreTls {
            file: self.name(),
            reason: reason.into(),
        }
    }
}

#[cfg(feature = "redis-tls")]
impl TlsFiles {
    /// The certificates for `rediss://` URLs, checked here so that a wrong
    /// file is refused at build rather than at the first connection.
    fn load(&self, tls: bool, url: &str) -> Result<Option<redis::TlsCertificates>, BuildError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        if !tls {
            if let Some(pem) = self.ca.as_ref().or(self.client.as_ref().map(|(c, _)| c)) {
                return Err(pem.refuse(format!(
                    "TLS files need rediss:// URLs, not {}",
                    mask_password(url)
                )));
            }
            return Ok(None);
        }
        ensure_crypto_provider();
        let certs = |pem: &Pem| -> Result<Vec<u8>, BuildError> {
            let text = pem.read()?;
            let found = CertificateDer::pem_slice_iter(&text)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| pem.refuse(e.to_string()))?;
            if found.is_empty() {
                return Err(pem.refuse("holds no PEM certificate"));
            }
            Ok(text)
        };
        let root_cert = self.ca.as_ref().map(certs).transpose()?;
        let client_tls = match &self.client {
            None => None,
            Some((cert, key)) => {
                let client_cert = certs(cert)?;
                let client_key = key.read()?;
                PrivateKeyDer::from_pem_slice(&client_key)
                    .map_err(|e| key.refuse(format!("holds no usable private key: {e}")))?;
                Some(redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                })
            }
        };
        Ok(Some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

/// rustls needs a process-wide crypto provider. When the application has
/// installed none, ring (the one this feature compiles in) is installed, so
/// that connecting cannot fail for want of one when several providers are
/// compiled into the program.
#[cfg(feature = "redis-tls")]
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// What the store connects to.
#[derive(Clone)]
pub(super) enum Backend {
    Single(redis::Client),
    Cluster {
        cluster: ClusterClient,
        /// One client per seed node, for the ban subscription: a message
        /// published on any node of a cluster reaches subscribers on every
        /// node, so one subscription to one node hears all of them.
        seeds: Vec<redis::Client>,
    },
}

impl Backend {
    /// The connection commands go through. It reconnects by itself: the
    /// manager remakes a lost connection, and the cluster connection
    /// refreshes its slot map and reconnects to the nodes that own them.
    pub(super) fn connect(&self) -> Result<Connection, String> {
        match self {
            Self::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT));
                ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map(Connection::Single)
                    .map_err(|e| e.to_string())
            }
            Self::Cluster { cluster, .. } => {
                let config = ClusterConfig::new().set_connection_timeout(CONNECT_TIMEOUT);
                Ok(Connection::Cluster(
                    cluster.get_pending_async_connection_with_config(config),
                ))
            }
        }
    }

    /// The clients the ban subscription may use, tried in turn.
    pub(super) fn subscribers(&self) -> &[redis::Client] {
        match self {
            Self::Single(client) => std::slice::from_ref(client),
            Self::Cluster { seeds, .. } => seeds,
        }
    }
}

/// A connection to one server or to a cluster; clones share it.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Made on first use, so that building the layer needs neither a runtime nor
/// a reachable server.
pub(super) type LazyConnection = OnceLock<Result<Connection, String>>;

/// `redis://user:secret@host/` as `redis://user:***@host/`, for errors and
/// logs.
pub(super) fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => format!("{}***{}", &url[..scheme_end], &rest[at..]),
    }
}
