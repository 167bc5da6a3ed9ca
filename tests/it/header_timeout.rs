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
