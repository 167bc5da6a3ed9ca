//! Real `redis-server` processes on loopback, started and killed by the
//! tests: a plain server, a TLS-only server with a CA made here, and a
//! Redis Cluster made with `redis-cli --cluster create`.
//!
//! Without `redis-server` the tests that need one skip with a printed
//! reason, unless `TNR_REQUIRE_REDIS` is set, as in CI, where they fail.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Generous: these bound a hang, they do not time anything.
const PATIENCE: Duration = Duration::from_secs(20);

/// `None` after saying why, or a panic when Redis is required.
fn skip<T>(what: &str, error: &str) -> Option<T> {
    if std::env::var_os("TNR_REQUIRE_REDIS").is_some() {
        panic!("TNR_REQUIRE_REDIS is set but {what} cannot start: {error}");
    }
    eprintln!("skipped: {what} cannot start ({error}); apt-get install redis-server redis-tools");
    None
}

/// A free loopback port. With `bus`, port + 10000 is free too, for a
/// cluster node's bus.
fn free_port(bus: bool) -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if !bus {
            return port;
        }
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A directory of its own under the system's temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tnr-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Self(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `redis-server` child on a loopback port, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    /// For a TLS-only server: the CA its certificate is signed by.
    tls_ca: Option<PathBuf>,
}

impl RedisServer {
    /// A plain server, or `None` (after saying why) when the binary is
    /// missing and Redis is not required.
    pub fn start() -> Option<Self> {
        let port = free_port(false);
        match Self::start_with(port, &["--port", &port.to_string()]) {
            Ok(server) => Some(server),
            Err(e) => skip("redis-server", &e),
        }
    }

    /// A server with these arguments beyond the common ones, listening on
    /// `port` once started.
    pub fn start_with(port: u16, args: &[&str]) -> Result<Self, String> {
        let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        args.extend(
            ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .iter()
                .map(|a| (*a).to_owned()),
        );
        args.extend(["--loglevel", "warning"].iter().map(|a| (*a).to_owned()));
        let mut server = Self {
            child: None,
            port,
            args,
            tls_ca: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!("redis-server exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!("not listening on port {} after 20 s", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls_ca.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process (SIGSTOP): it keeps its connections and answers
    /// nothing, as a stalled server does, until [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Killed and started again on the same port, with the same arguments.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn().expect("redis-server restarts on its port");
    }

    /// A command over plain TCP; server errors (such as a cluster's
    /// `MOVED`) come back as `Err`.
    pub fn try_command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = match &self.tls_ca {
            None => redis::Client::open(self.url())?,
            #[cfg(feature = "redis-tls")]
            Some(ca) => {
                let certs = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(std::fs::read(ca).expect("the CA file")),
                };
                redis::Client::build_with_tls(self.url(), certs)?
            }
            #[cfg(not(feature = "redis-tls"))]
            Some(_) => unreachable!("TLS servers are started with feature redis-tls only"),
        };
        let mut conn = client.get_connection()?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut conn)
    }

    pub fn command(&self, args: &[&str]) -> redis::Value {
        self.try_command(args).expect("redis command")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA made here, a server certificate for 127.0.0.1 and a client
/// certificate signed by it, and a stranger's CA that signed neither.
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub stranger_ca: PathBuf,
}

impl TlsFiles {
    pub fn make(dir: &Scratch) -> Self {
        let (ca, issuer) = crate::certs::authority("tnr test CA");
        let (stranger, _) = crate::certs::authority("a stranger's CA");
        let (server_cert, server_key) =
            crate::certs::leaf(&["localhost", "127.0.0.1"], None, None, &issuer);
        let (client_cert, client_key) =
            crate::certs::leaf(&["replica.invalid"], None, None, &issuer);
        Self {
            ca: dir.write("ca.pem", &ca),
            server_cert: dir.write("server.pem", &server_cert),
            server_key: dir.write("server.key", &server_key),
            client_cert: dir.write("client.pem", &client_cert),
            client_key: dir.write("client.key", &client_key),
            stranger_ca: dir.write("stranger.pem", &stranger),
        }
    }

    /// `redis-server` arguments for TLS only on `port`, no plain port.
    fn server_args(&self, port: u16, mutual: bool) -> Vec<String> {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            path(&self.server_cert),
            "--tls-key-file",
            path(&self.server_key),
            "--tls-ca-cert-file",
            path(&self.ca),
            "--tls-auth-clients",
            if mutual { "yes" } else { "no" },
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    }
}

/// A TLS-only `redis-server` (no plain port) whose certificate is signed by
/// a CA made here.
pub struct TlsRedis {
    pub server: RedisServer,
    pub files: TlsFiles,
    _dir: Scratch,
}

impl TlsRedis {
    /// With `mutual`, the server refuses clients without a certificate
    /// signed by the CA.
    pub fn start(mutual: bool) -> Option<Self> {
        let dir = Scratch::new();
        let files = TlsFiles::make(&dir);
        let port = free_port(false);
        let args = files.server_args(port, mutual);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = match RedisServer::start_with(port, &args) {
            Ok(server) => server,
            Err(e) => return skip("redis-server with TLS", &e),
        };
        server.tls_ca = Some(files.ca.clone());
        Some(Self {
            server,
            files,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        self.server.url()
    }
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// A Redis Cluster of three primaries and no replicas, made with
/// `redis-cli --cluster create`.
pub struct Cluster {
    pub nodes: Vec<RedisServer>,
    /// For a TLS-only cluster.
    pub tls: Option<TlsFiles>,
    _dir: Scratch,
}

impl Cluster {
    pub fn start() -> Option<Self> {
        Self::start_with(false, &[])
    }

    /// Every node TLS-only, the cluster bus included.
    pub fn start_tls() -> Option<Self> {
        Self::start_with(true, &[])
    }

    /// With `cluster-require-full-coverage no`: while one primary is down,
    /// the others keep serving their own slots.
    pub fn start_partial() -> Option<Self> {
        Self::start_with(false, &["--cluster-require-full-coverage", "no"])
    }

    fn start_with(tls: bool, extra: &[&str]) -> Option<Self> {
        let dir = Scratch::new();
        let files = tls.then(|| TlsFiles::make(&dir));
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let port = free_port(true);
            let conf = dir.0.join(format!("nodes-{port}.conf"));
            let mut args = match &files {
                Some(files) => files.server_args(port, false),
                None => vec!["--port".to_owned(), port.to_string()],
            };
            if files.is_some() {
                args.extend(["--tls-cluster".to_owned(), "yes".to_owned()]);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let node = RedisServer::start_with(
                port,
                &[
                    &args[..],
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        path(&conf),
                        "--cluster-node-timeout",
                        "1000",
                        "--dir",
                        path(&dir.0),
                    ],
                    extra,
                ]
                .concat(),
            );
            match node {
                Ok(mut node) => {
                    node.tls_ca = files.as_ref().map(|f| f.ca.clone());
                    nodes.push(node);
                }
                Err(e) => return skip("a redis-server cluster node", &e),
            }
        }
        let mut create = Command::new("redis-cli");
        if let Some(files) = &files {
            create.arg("--tls").arg("--cacert").arg(&files.ca);
        }
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let created = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match created {
            Ok(status) if status.success() => {}
            Ok(status) => return skip("redis-cli --cluster create", &status.to_string()),
            Err(e) => return skip("redis-cli --cluster create", &e.to_string()),
        }
        let cluster = Self {
            nodes,
            tls: files,
            _dir: dir,
        };
        cluster.wait_until_ok();
        Some(cluster)
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Every node reports `cluster_state:ok`.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + PATIENCE;
        for node in &self.nodes {
            loop {
                let ok = node.try_command(&["CLUSTER", "INFO"]).is_ok_and(|info| {
                    redis::from_redis_value::<String>(info)
                        .is_ok_and(|t| t.contains("cluster_state:ok"))
                });
                if ok {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// How `CLUSTER SLOTS` names a node: its host and port.
    pub fn name_of(&self, node: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[node].port)
    }

    /// The node that owns `key`'s slot: the others answer `MOVED`.
    pub fn owner_of(&self, key: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.try_command(&["EXISTS", key]).is_ok())
            .expect("one node owns every slot")
    }

    /// How many keys each node holds.
    pub fn keys_per_node(&self) -> Vec<i64> {
        self.nodes
            .iter()
            .map(|node| redis::from_redis_value(node.command(&["DBSIZE"])).unwrap())
            .collect()
    }
}

/// A prefix no other test (or earlier run against the same server) uses.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "tnr-test:{}:{nanos}:{}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Messages of the rate-limit and ban events, from every test in this
/// binary; tests tell theirs apart by the store's port.
pub fn events() -> &'static Mutex<Vec<String>> {
    static EVENTS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        struct Record;
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Record {
            fn on_event(
                &self,
                event: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                struct Fields(String);
                impl tracing::field::Visit for Fields {
                    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                        self.0.push_str(&format!("{}={v:?} ", f.name()));
                    }
                }
                let mut fields = Fields(format!("{} ", event.metadata().target()));
                event.record(&mut fields);
                events().lock().unwrap().push(fields.0);
            }
        }
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Record))
            .expect("the only global subscriber");
        Mutex::new(Vec::new())
    })
}

pub fn events_about(needle: &str) -> Vec<String> {
    events()
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.contains(needle))
        .cloned()
        .collect()
}

/// A layer with `limit` whose budget is in `store`, its shared limit set up
/// by `shared`.
pub fn shared_layer(
    store: tower_no_response::redis::RedisStore,
    limit: tower_no_response::RateLimit,
    shared: impl Fn(
        tower_no_response::limit::SharedRateLimit,
    ) -> tower_no_response::limit::SharedRateLimit,
) -> tower_no_response::NoResponseLayer {
    tower_no_response::NoResponseLayer::builder()
        .rate_limit(limit)
        .shared_rate_limit(shared(tower_no_response::limit::SharedRateLimit::new(
            store,
        )))
        .build()
        .unwrap()
}

/// Sends one request; true when it was served, false when dropped.
pub async fn served(addr: SocketAddr) -> bool {
    use crate::common::{Close, exchange, get};
    let out = exchange(addr, &get(Some("example.com"), Some("curl/8.5.0"))).await;
    if out.bytes.is_empty() {
        assert_eq!(out.close, Close::Fin, "a drop closes with FIN");
        false
    } else {
        out.assert_ok();
        true
    }
}
