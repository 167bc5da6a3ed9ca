//! 100,000 CrowdSec decisions and a stand-in for the LAPI that serves them,
//! shared by the criterion bench (`benches/crowdsec.rs`) and the
//! instruction-count harness (`examples/callgrind.rs`), so both measure the
//! same table. The bouncer's correctness is tested against the real LAPI in
//! `tests/crowdsec.rs`.

use std::fmt::Write as _;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many decisions the stream holds.
pub const DECISIONS: usize = 100_000;

/// A decision stream answer with `DECISIONS` decisions, spread with a
/// fixed generator so every run holds the same table; with an address
/// banned on its own and one inside a banned range.
pub fn stream() -> (String, String, String) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::from(r#"{"deleted":null,"new":["#);
    let (mut lone, mut member) = (String::new(), String::new());
    for id in 0..DECISIONS {
        let r = next();
        let (scope, value) = match id % 4 {
            0 => (
                "Ip",
                format!(
                    "{}.{}.{}.{}",
                    11 + (r % 200) as u8,
                    (r >> 8) as u8,
                    (r >> 16) as u8,
                    (r >> 24) as u8
                ),
            ),
            1 => (
                "Ip",
                format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    (r >> 16) as u16,
                    (r >> 32) as u16,
                    r as u16
                ),
            ),
            2 => (
                "Range",
                format!(
                    "{}.{}.{}.0/24",
                    11 + (r % 200) as u8,
                    (r >> 8) as u8,
                    (r >> 16) as u8
                ),
            ),
            _ => (
                "Range",
                format!("2001:db8:{:x}::/{}", (r >> 16) as u16, 48 + (r % 16)),
            ),
        };
        if id == 0 {
            lone.clone_from(&value);
        }
        if id == 2 {
            member = value.replace(".0/24", ".77");
        }
        if id > 0 {
            out.push(',');
        }
        let _ = write!(
            out,
            r#"{{"duration":"4h","id":{id},"origin":"crowdsec","scenario":"crowdsecurity/http-probing","scope":"{scope}","type":"ban","value":"{value}"}}"#
        );
    }
    out.push_str("]}");
    (out, lone, member)
}

/// Answers the first pull with `body` and every later one with no change.
pub async fn stand_in_lapi(body: String) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = vec![0u8; 4096];
            let n = stream.read(&mut head).await.unwrap_or(0);
            let startup = String::from_utf8_lossy(&head[..n]).contains("startup=true");
            let answer = if startup {
                body.as_str()
            } else {
                r#"{"deleted":null,"new":null}"#
            };
            // The answer is written from where it is, never copied: the
            // bench counts what the process holds while it is pulled.
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                answer.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    addr
}
