//! `CloseMode::Silent`: with `TCP_REPAIR` the client is told nothing at all,
//! so its read waits instead of seeing a FIN or an RST. Skipped, with the
//! reason printed, where this process lacks `CAP_NET_ADMIN`.

use crate::common;

use std::time::Duration;

use common::{get, seed_rules, spawn_app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_no_response::connection::CloseMode;
use tower_no_response::connection::silent_close_available;

#[tokio::test]
async fn a_silent_drop_tells_the_client_nothing() {
    if !silent_close_available() {
        eprintln!(
            "skipped: TCP_REPAIR needs CAP_NET_ADMIN on Linux; Silent falls back to an RST \
             with a hop limit of 1, which loopback delivers"
        );
        return;
    }
    let app = spawn_app(seed_rules().close_mode(CloseMode::Silent).build().unwrap()).await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(&get(Some("evil.com"), Some("curl")))
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    // A FIN or RST would end this read at once; silence makes it wait.
    let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    assert!(read.is_err(), "the client was told something: {read:?}");
    assert_eq!(app.hits(), 0);
    // The server has forgotten the connection: a new one is served normally.
    let ok = common::exchange(app.addr, &get(Some("example.com"), Some("curl"))).await;
    ok.assert_ok();
}
