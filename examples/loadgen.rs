//! The load generator behind `benches/load.sh`: plain HTTP/1.1 over tokio,
//! one thread, so that pinned to one core it leaves the other to the server.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8444 --mode keepalive|drop
//!     [--conns N] [--secs S] [--host NAME] [--clients N]
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
//! Prints one line of `key=value` pairs.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    KeepAlive,
    Drop,
}

struct Args {
    addr: SocketAddr,
    mode: Mode,
    conns: usize,
    secs: f64,
    host: String,
    clients: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:8444".parse().expect("literal"),
        mode: Mode::KeepAlive,
        conns: 32,
        secs: 5.0,
        host: "example.com".into(),
        clients: 65_536,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value:?}: {e}");
        match flag.as_str() {
            "--addr" => args.addr = value.parse().map_err(|e| bad(&e))?,
            "--mode" => {
                args.mode = match value.as_str() {
                    "keepalive" => Mode::KeepAlive,
                    "drop" => Mode::Drop,
                    _ => return Err(bad(&"expected keepalive or drop")),
                }
            }
            "--conns" => args.conns = value.parse().map_err(|e| bad(&e))?,
            "--secs" => args.secs = value.parse().map_err(|e| bad(&e))?,
            "--host" => args.host = value,
            "--clients" => args.clients = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    if args.conns == 0 || args.clients == 0 || args.secs.is_nan() || args.secs <= 0.0 {
        return Err("--conns, --clients and --secs must be above 0".into());
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
}

impl Counts {
    fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }

    fn request(&self, args: &Args, buf: &mut Vec<u8>) {
        let n = self.next_client.get();
        self.next_client.set((n + 1) % args.clients);
        let [_, a, b, c] = n.to_be_bytes();
        buf.clear();
        buf.extend_from_slice(
            format!(
                "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: loadgen/1\r\nX-Forwarded-For: 10.{a}.{b}.{c}\r\n\r\n",
                args.host
            )
            .as_bytes(),
        );
    }

    fn source(&self) -> SocketAddr {
        let n = self.next_source.get();
        self.next_source.set(if n >= 250 { 1 } else { n + 1 });
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n.max(1))), 0)
    }
}

async fn connect(counts: &Counts, to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(counts.source())?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads one response framed by `Content-Length`; false if the server
/// closed or sent something else.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
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
                    return head.starts_with("http/1.1 200");
                }
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
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
        let Ok(mut stream) = connect(&counts, args.addr).await else {
            Counts::add(&counts.errors, 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        while Instant::now() < deadline {
            counts.request(&args, &mut request);
            if stream.write_all(&request).await.is_err()
                || !read_response(&mut stream, &mut response).await
            {
                Counts::add(&counts.errors, 1);
                break;
            }
            Counts::add(&counts.done, 1);
        }
    }
}

async fn drop_worker(args: Rc<Args>, counts: Rc<Counts>, deadline: Instant) {
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(mut stream) = connect(&counts, args.addr).await else {
            Counts::add(&counts.errors, 1);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        counts.request(&args, &mut request);
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
                    Mode::Drop => tokio::task::spawn_local(drop_worker(args, counts, deadline)),
                }
            })
            .collect();
        for worker in workers {
            worker.await.expect("worker");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let done = counts.done.get();
    println!(
        "mode={} secs={secs:.2} done={done} rate={:.0} fin={} rst={} bytes={} errors={}",
        if args.mode == Mode::Drop {
            "drop"
        } else {
            "keepalive"
        },
        done as f64 / secs,
        counts.fin.get(),
        counts.rst.get(),
        counts.bytes.get(),
        counts.errors.get(),
    );
    ExitCode::SUCCESS
}
