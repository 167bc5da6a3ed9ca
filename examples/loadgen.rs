//! The load generator behind `benches/load.sh`: plain HTTP/1.1 over tokio,
//! one thread, so that pinned to one core it leaves the other to the server.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8444 --mode keepalive|drop
//!     [--conns N] [--secs S] [--host NAME] [--clients N] [--hot N] [--addr ...]...
//! ```
//!
//! - `keepalive`: `--conns` connections, each sending requests one after the
//!   other and reading each response (`Content-Length` framing) before the
//!   next. Counts responses.
//! - `drop`: `--conns` workers, each opening a new connection per request,
//!   sending it and reading until the server closes. Counts closes by FIN
//!   and by RST, and every byte received, which must be none.
//!
//! Each request names a client in `X-Forwarded-For`, cycling through
//! `--clients` addresses (10.0.0.0/8), so that a server trusting loopback as
//! its proxy runs the real-IP walk and the rate limit for every request and
//! no client goes over its rate. New connections come from source addresses
//! cycling over 127.0.0.0/24, so the run does not exhaust one address's
//! ports.
//!
//! `--source-net N` connects from 127.0.N.1 to 127.0.N.250 instead of
//! 127.0.0.x, so that a server can deny those sources and still be probed
//! from 127.0.0.1.
//!
//! `--connect-timeout MS`, in drop mode, gives up on a connection attempt
//! that gets no SYN-ACK within MS milliseconds and counts it as a `timeout`:
//! a client the server's kernel refuses.
//!
//! `--hot N` sends every other request as one of N clients (10.255.0.0/16)
//! that go far over any sensible rate, the rest as the `--clients` that stay
//! within it. A request the server drops closes its keep-alive connection;
//! keep-alive mode counts those as `dropped` and reconnects.
//!
//! - `tls-drop`: as `drop`, but each connection sends a TLS ClientHello
//!   (rustls's) for `--host`, with no server name when `--host` is an
//!   address, and reads until the server closes: a refused ClientHello must
//!   get no byte, or only the alert the server was told to send.
//! - `tls-new`: each worker opens a connection, finishes a TLS handshake
//!   (trusting `--ca FILE`), sends one request for `--host`, reads its
//!   response and closes: a handshake per request.
//!
//! `--addr` may be given several times, for a fleet of servers: each new
//! connection goes to the next one. Keep-alive mode prints the median and
//! 99th percentile of the time from a request's first byte written to its
//! response's last byte read (`p50_us`, `p99_us`).
//!
//! Prints one line of `key=value` pairs.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    KeepAlive,
    Drop,
    TlsDrop,
    TlsNew,
}

struct Args {
    addrs: Vec<SocketAddr>,
    mode: Mode,
    conns: usize,
    secs: f64,
    host: String,
    clients: u32,
    hot: u32,
    connect_timeout: Option<Duration>,
    source_net: u8,
    ca: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addrs: Vec::new(),
        mode: Mode::KeepAlive,
        conns: 32,
        secs: 5.0,
        host: "example.com".into(),
        clients: 65_536,
        hot: 0,
        connect_timeout: None,
        source_net: 0,
        ca: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value:?}: {e}");
        match flag.as_str() {
            "--addr" => args.addrs.push(value.parse().map_err(|e| bad(&e))?),
            "--mode" => {
                args.mode = match value.as_str() {
                    "keepalive" => Mode::KeepAlive,
                    "drop" => Mode::Drop,
                    "tls-drop" => Mode::TlsDrop,
                    "tls-new" => Mode::TlsNew,
                    _ => return Err(bad(&"expected keepalive, drop, tls-drop or tls-new")),
                }
            }
            "--conns" => args.conns = value.parse().map_err(|e| bad(&e))?,
            "--secs" => args.secs = value.parse().map_err(|e| bad(&e))?,
            "--host" => args.host = value,
            "--clients" => args.clients = value.parse().map_err(|e| bad(&e))?,
            "--hot" => args.hot = value.parse().map_err(|e| bad(&e))?,
            "--source-net" => args.source_net = value.parse().map_err(|e| bad(&e))?,
            "--ca" => args.ca = Some(value),
            "--connect-timeout" => {
                let ms: u64 = value.parse().map_err(|e| bad(&e))?;
                args.connect_timeout = Some(Duration::from_millis(ms));
            }
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    if args.conns == 0 || args.clients == 0 || args.secs.is_nan() || args.secs <= 0.0 {
        return Err("--conns, --clients and --secs must be above 0".into());
    }
    if args.addrs.is_empty() {
        args.addrs.push("127.0.0.1:8444".parse().expect("literal"));
    }
    Ok(args)
}

/// Counters shared by the workers of one single-threaded run.
#[derive(Default)]
struct Counts {
    done: Cell<u64>,
    fin: Cell<u64>,
    rst: Cell<u64>,
    bytes: Cell<u64>,
    errors: Cell<u64>,
    next_client: Cell<u32>,
    next_source: Cell<u8>,
    next_addr: Cell<usize>,
    dropped: Cell<u64>,
    timeouts: Cell<u64>,
    micros: std::cell::RefCell<Vec<u32>>,
}

impl Counts {
    fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }

    fn request(&self, args: &Args, buf: &mut Vec<u8>) {
        let n = self.next_client.get();
        self.next_client.set(n.wrapping_add(1));
        let [_, a, b, c] = match (args.hot, n % 2) {
            (0, _) => (n % args.clients).to_be_bytes(),
            (hot, 0) => {
                let [_, _, b, c] = (n / 2 % hot).to_be_bytes();
                [0, 255, b, c]
            }
            // Below 10.255.0.0, where the hot clients are.
            (_, _) => (n / 2 % args.clients.min(0xfe_ffff)).to_be_bytes(),
        };
        buf.clear();
        buf.extend_from_slice(
            format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadgen/1\r\nX-Forwarded-For: 10.{a}.{b}.{c}\r\n\r\n",
                args.host
            )
            .as_bytes(),
        );
    }

    fn target(&self, args: &Args) -> SocketAddr {
        let n = self.next_addr.get();
        self.next_addr.set((n + 1) % args.addrs.len());
        args.addrs[n]
    }

    fn source(&self, args: &Args) -> SocketAddr {
        let n = self.next_source.get();
        self.next_source.set(if n >= 250 { 1 } else { n + 1 });
        SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, args.source_net, n.max(1))),
            0,
        )
    }
}

async fn connect(counts: &Counts, args: &Args) -> io::Result<TcpStream> {
    let to = counts.target(args);
    let socket = TcpSocket::new_v4()?;
    socket.bind(counts.source(args))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// How a keep-alive request ended.
enum Answer {
    Ok,
    /// Closed with nothing read: the server dropped it.
    Dropped,
    Broken,
}

/// Reads one response framed by `Content-Length`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(len) = len {
                if buf.len() >= end + 4 + len {
                    return if head.starts_with("http/1.1 200") {
                        Answer::Ok
                    } else {
                        Answer::Broken
                    };
                }
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) if buf.is_empty() => return Answer::Dropped,
            Ok(0) | Err(_) => return Answer::Broken,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn keepalive_worker(args: Rc<Args>, counts: Rc<Counts>, deadline: Instant) {
    let (mut request, mut response) = (Vec::new(), Vec::new());
    while Instant::now() < deadline {
        let Ok(mut stream) = connect(&counts, &args).await else {
            Counts::add(&counts.errors, 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while Instant::now() < deadline {
            counts.request(&args, &mut request);
            let sent = Instant::now();
            if stream.write_all(&request).await.is_err() {
                Counts::add(&counts.errors, 1);
                break;
            }
            match read_response(&mut stream, &mut response).await {
                Answer::Ok => {
                    let micros = u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX);
                    counts.micros.borrow_mut().push(micros);
                    Counts::add(&counts.done, 1);
                }
                Answer::Dropped => {
                    Counts::add(&counts.dropped, 1);
                    break;
                }
                Answer::Broken => {
                    Counts::add(&counts.errors, 1);
                    break;
                }
            }
        }
    }
}

/// A rustls client configuration: trusting `--ca`, or nothing (enough for
/// a ClientHello that is never answered).
fn tls_client(args: &Args) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &args.ca {
        for cert in CertificateDer::pem_file_iter(ca).expect("--ca") {
            roots.add(cert.expect("--ca")).expect("--ca");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The ClientHello a rustls client sends for `host` (none when `host` is
/// an address).
fn client_hello(args: &Args) -> Vec<u8> {
    let mut config = (*tls_client(args)).clone();
    let name = if args.host.parse::<IpAddr>().is_ok() {
        config.enable_sni = false;
        ServerName::try_from("example.com").expect("name")
    } else {
        ServerName::try_from(args.host.clone()).expect("--host")
    };
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("hello");
    let mut wire = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut wire).expect("hello");
    }
    wire
}

async fn tls_new_worker(args: Rc<Args>, counts: Rc<Counts>, deadline: Instant) {
    let connector = tokio_rustls::TlsConnector::from(tls_client(&args));
    let name = ServerName::try_from(args.host.clone()).expect("--host");
    let mut request = Vec::new();
    let mut response = Vec::new();
    while Instant::now() < deadline {
        let Ok(stream) = connect(&counts, &args).await else {
            Counts::add(&counts.errors, 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut tls = match connector.connect(name.clone(), stream).await {
            Ok(tls) => tls,
            Err(e) => {
                if counts.errors.get() == 0 {
                    eprintln!("handshake: {e}");
                }
                Counts::add(&counts.errors, 1);
                continue;
            }
        };
        counts.request(&args, &mut request);
        request.truncate(request.len() - 2);
        request.extend_from_slice(b"Connection: close\r\n\r\n");
        response.clear();
        let _ = tls.write_all(&request).await;
        let _ = tls.read_to_end(&mut response).await;
        if response.starts_with(b"HTTP/1.1 200") {
            Counts::add(&counts.done, 1);
        } else {
            if counts.errors.get() == 0 {
                eprintln!("answer: {:?}", String::from_utf8_lossy(&response));
            }
            Counts::add(&counts.errors, 1);
        }
    }
}

async fn drop_worker(args: Rc<Args>, counts: Rc<Counts>, deadline: Instant) {
    let mut request = Vec::new();
    let hello = (args.mode == Mode::TlsDrop).then(|| client_hello(&args));
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        let connected = match args.connect_timeout {
            None => connect(&counts, &args).await,
            Some(limit) => match tokio::time::timeout(limit, connect(&counts, &args)).await {
                Ok(connected) => connected,
                // No SYN-ACK: refused in the kernel. One attempt, done.
                Err(_) => {
                    Counts::add(&counts.timeouts, 1);
                    Counts::add(&counts.done, 1);
                    continue;
                }
            },
        };
        let Ok(mut stream) = connected else {
            Counts::add(&counts.errors, 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        match &hello {
            Some(hello) => request.clone_from(hello),
            None => counts.request(&args, &mut request),
        }
        // The server may close before the write completes; the read tells.
        let _ = stream.write_all(&request).await;
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => {
                    Counts::add(&counts.fin, 1);
                    break;
                }
                Ok(n) => Counts::add(&counts.bytes, n as u64),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    Counts::add(&counts.rst, 1);
                    break;
                }
                Err(_) => {
                    Counts::add(&counts.errors, 1);
                    break;
                }
            }
        }
        Counts::add(&counts.done, 1);
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => Rc::new(args),
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let counts = Rc::new(Counts::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.secs);
    local.block_on(&runtime, async {
        let workers: Vec<_> = (0..args.conns)
            .map(|_| {
                let (args, counts) = (Rc::clone(&args), Rc::clone(&counts));
                match args.mode {
                    Mode::KeepAlive => {
                        tokio::task::spawn_local(keepalive_worker(args, counts, deadline))
                    }
                    Mode::Drop | Mode::TlsDrop => {
                        tokio::task::spawn_local(drop_worker(args, counts, deadline))
                    }
                    Mode::TlsNew => {
                        tokio::task::spawn_local(tls_new_worker(args, counts, deadline))
                    }
                }
            })
            .collect();
        for worker in workers {
            worker.await.expect("worker");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let done = counts.done.get();
    let mut micros = counts.micros.take();
    micros.sort_unstable();
    let percentile = |p: usize| micros.get(micros.len() * p / 100).copied().unwrap_or(0);
    println!(
        "mode={} secs={secs:.2} done={done} rate={:.0} dropped={} p50_us={} p99_us={} \
         fin={} rst={} timeouts={} bytes={} errors={}",
        match args.mode {
            Mode::Drop => "drop",
            Mode::TlsDrop => "tls-drop",
            Mode::TlsNew => "tls-new",
            Mode::KeepAlive => "keepalive",
        },
        done as f64 / secs,
        counts.dropped.get(),
        percentile(50),
        percentile(99),
        counts.fin.get(),
        counts.rst.get(),
        counts.timeouts.get(),
        counts.bytes.get(),
        counts.errors.get(),
    );
    ExitCode::SUCCESS
}
