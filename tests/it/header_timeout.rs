//! Slowloris against the serve loop's header timeout. The event is checked
//! through a thread-local subscriber: the test's runtime is current-thread,
//! so the server's tasks log on the thread that set it.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use common::{PATIENCE, seed_rules};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Slowloris: one byte a second never completes the headers. The client is
/// dropped without a 408, and the drop is logged as `header_timeout`.
#[tokio::test]
async fn slow_headers_are_dropped_without_a_response() {
    let events = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let subscriber = {
        use tracing_subscriber::layer::SubscriberExt;
        let events = Arc::clone(&events);
        tracing_subscriber::registry().with(Recorder(events))
    };
    let _guard = tracing::subscriber::set_default(subscriber);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let layer = seed_rules()
        .header_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let app = Router::new()
        .fallback(|| async { "ok" })
        .layer(layer.clone());
    tokio::spawn(layer.serve(listener, app).run());
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.split();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let trickle = async move {
        for byte in b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n" {
            tokio::select! {
                _ = &mut stop_rx => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if writer.write_all(&[*byte]).await.is_err() {
                return;
            }
        }
    };
    let read = async move {
        let mut bytes = Vec::new();
        let outcome = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut bytes),
        )
        .await;
        let _ = stop_tx.send(());
        (outcome, bytes)
    };
    let ((outcome, bytes), ()) = tokio::join!(read, trickle);
    let closed = outcome.expect("the slow client was never dropped");
    assert!(
        bytes.is_empty(),
        "sent {:?}",
        String::from_utf8_lossy(&bytes)
    );
    // FIN, or a reset if the kernel still held an unread byte: never data.
    if let Err(e) = closed {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    // The event may be written just after the close reaches the client.
    let logged = || {
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.contains("rule=header_timeout"))
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !logged() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no header_timeout event: {:?}",
            events.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Recorder(Arc<std::sync::Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={v:?} ", f.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

/// The timers on a multi-thread runtime, where a connection's task moves
/// between threads and each thread keeps its own alarms: every one of many
/// partial heads is dropped with no byte, no earlier than the header
/// timeout and well before twice it; every idle kept-alive connection is
/// closed in order, after its answer and no earlier than the keep-alive
/// timeout; and a client that keeps asking on one connection for longer
/// than both timeouts is never cut. Both connection sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_timers_on_a_multi_thread_runtime_each_run_out_on_time() {
    use common::{Close, read_one_response, read_until_close};
    const HEADER: Duration = Duration::from_secs(1);
    const KEEPALIVE: Duration = Duration::from_secs(2);
    const SLOW: usize = 40;
    const IDLE: usize = 20;
    let layer = seed_rules()
        .header_timeout(HEADER)
        .keepalive_timeout(KEEPALIVE)
        .build()
        .unwrap();
    let app = Router::new().fallback(|| async { "ok" });
    let sides = [
        (
            "axum::serve",
            common::serve_with(layer.clone(), app.clone()).await,
        ),
        (
            "serve loop",
            common::serve_loop(&layer, app.layer(layer.clone())).await,
        ),
    ];
    let request = b"GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl\r\n\r\n";
    for (side, addr) in sides {
        let started = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..SLOW {
            tasks.spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream
                    .write_all(b"GET / HTTP/1.1\r\nHost: exa")
                    .await
                    .unwrap();
                let outcome = read_until_close(&mut stream).await;
                (false, outcome, started.elapsed())
            });
        }
        for _ in 0..IDLE {
            tasks.spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream.write_all(request).await.unwrap();
                let answer = read_one_response(&mut stream).await;
                assert!(
                    answer.starts_with(b"HTTP/1.1 200 OK\r\n"),
                    "{side}: no answer"
                );
                let answered = tokio::time::Instant::now();
                let outcome = read_until_close(&mut stream).await;
                (true, outcome, answered.elapsed())
            });
        }
        // Asks every 200 ms for three header timeouts and more than a
        // keep-alive timeout: each request restarts the clock.
        let busy = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            for _ in 0..16 {
                stream.write_all(request).await.unwrap();
                let answer = read_one_response(&mut stream).await;
                assert!(
                    answer.starts_with(b"HTTP/1.1 200 OK\r\n"),
                    "{side}: busy client cut"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        while let Some(done) = tasks.join_next().await {
            let (idle, outcome, after) = done.unwrap();
            if idle {
                assert_eq!(
                    outcome.close,
                    Close::Fin,
                    "{side}: idle connection not closed in order"
                );
                assert!(outcome.bytes.is_empty(), "{side}: bytes after the answer");
                assert!(
                    after >= KEEPALIVE,
                    "{side}: idle closed early, after {after:?}"
                );
                assert!(
                    after < KEEPALIVE * 2 + HEADER,
                    "{side}: idle closed late, after {after:?}"
                );
            } else {
                assert!(
                    outcome.bytes.is_empty(),
                    "{side}: {} bytes to a slow head",
                    outcome.bytes.len()
                );
                assert!(
                    after >= HEADER,
                    "{side}: slow head dropped early, after {after:?}"
                );
                assert!(
                    after < HEADER * 3,
                    "{side}: slow head dropped late, after {after:?}"
                );
            }
        }
        busy.await.unwrap();
    }
}
