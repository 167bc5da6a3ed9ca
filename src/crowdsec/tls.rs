//! HTTPS to the Local API (feature `crowdsec-tls`): its certificate checked
//! against a CA file or the system's roots, and optionally a client
//! certificate that identifies the bouncer in place of a key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::error::BuildError;

/// The files TLS is set up from.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    pub(crate) ca: Option<PathBuf>,
    pub(crate) client: Option<(PathBuf, PathBuf)>,
}

/// A connector for one LAPI.
#[derive(Clone)]
pub(crate) struct Tls {
    connector: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// Checks every file now, so that a wrong one is refused at start-up
    /// rather than at the first pull.
    pub(crate) fn new(files: &TlsFiles, host: &str) -> Result<Self, BuildError> {
        if tokio_rustls::rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race to another installer is fine: one is installed.
            let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        }
        let mut roots = RootCertStore::empty();
        match &files.ca {
            Some(ca) => {
                for cert in certificates(ca)? {
                    roots
                        .add(cert)
                        .map_err(|e| refuse("crowdsec ca_file", ca, e.to_string()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(BuildError::Setting {
                        setting: "crowdsec url",
                        value: host.to_owned(),
                        reason: "https with no CA file, and the system has no root certificates"
                            .into(),
                    });
                }
            }
        }
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let config = match &files.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    refuse(
                        "crowdsec client_cert_files",
                        key,
                        format!("no usable private key: {e}"),
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| refuse("crowdsec client_cert_files", cert, e.to_string()))?
            }
        };
        let name = ServerName::try_from(host.to_owned()).map_err(|e| BuildError::Setting {
            setting: "crowdsec url",
            value: host.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }

    pub(crate) async fn connect(
        &self,
        tcp: tokio::net::TcpStream,
    ) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| refuse("crowdsec certificate", path, e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refuse("crowdsec certificate", path, e.to_string()))?;
    if certs.is_empty() {
        return Err(refuse(
            "crowdsec certificate",
            path,
            "holds no PEM certificate".into(),
        ));
    }
    Ok(certs)
}

fn refuse(setting: &'static str, path: &Path, reason: String) -> BuildError {
    BuildError::Setting {
        setting,
        value: path.display().to_string(),
        reason,
    }
}
