//! Debian's HAProxy on loopback, in `mode tcp` in front of a server, writing
//! the PROXY protocol header on every connection to it.
//!
//! Without `haproxy` on the machine the tests say so and pass, unless
//! `TNR_REQUIRE_HAPROXY` is set, as in CI, where they fail.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The address HAProxy connects to the server from: the balancer the
/// server lists, apart from the clients, which come from 127.0.0.1 and
/// other loopback addresses.
pub const BALANCER: &str = "127.0.0.9";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `send-proxy`: the text header.
    V1,
    /// `send-proxy-v2`: the binary header; health checks send `LOCAL`.
    V2,
}

pub struct Haproxy {
    child: Child,
    dir: PathBuf,
    /// Where clients connect.
    pub addr: SocketAddr,
}

impl Haproxy {
    /// HAProxy forwarding to `server` with the header of `version`, and,
    /// with `check`, an HTTP health check of `GET /health` every 200 ms
    /// that carries the header too. `None` when HAProxy is not installed
    /// and not required.
    pub fn start(server: SocketAddr, version: Version, check: bool) -> Option<Self> {
        if Command::new("haproxy").arg("-v").output().is_err() {
            assert!(
                std::env::var_os("TNR_REQUIRE_HAPROXY").is_none(),
                "TNR_REQUIRE_HAPROXY is set but haproxy is not installed"
            );
            eprintln!("skipped: haproxy is not installed");
            return None;
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("tnr-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let send = match version {
            Version::V1 => "send-proxy",
            Version::V2 => "send-proxy-v2",
        };
        let check = if check {
            "check inter 200ms fall 1 rise 1"
        } else {
            ""
        };
        let config = format!(
            "global\n  maxconn 512\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend front\n  bind 127.0.0.1:{port}\n  default_backend app\n\
             backend app\n\
             \x20 option httpchk\n\
             \x20 http-check send meth GET uri /health ver HTTP/1.1 hdr Host example.com\n\
             \x20 server app {server} {send} source {BALANCER} {check}\n"
        );
        let file = dir.join("haproxy.cfg");
        std::fs::write(&file, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("haproxy starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "haproxy did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Self { child, dir, addr })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
