//! The counters, published through the `metrics` facade with the names the
//! README documents.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use http::{Request, Response};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower::{Layer, Service, service_fn};
use tower_no_response::{NoResponseLayer, TimedBody};

fn run<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("the test service never waits"),
    }
}

#[test]
fn counters_are_published_with_rule_and_action_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let layer = NoResponseLayer::builder()
            .server_name("example.com")
            .deny_user_agent("masscan")
            .dry_run_rule("user_agent")
            .build()
            .unwrap();
        let mut svc = layer.layer(service_fn(|_: Request<TimedBody<String>>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
        for (host, ua) in [
            ("example.com", "curl"),
            ("evil.com", "curl"),
            ("example.com", "masscan"),
        ] {
            let req = Request::get("/")
                .header("host", host)
                .header("user-agent", ua)
                .body(String::new())
                .unwrap();
            let _ = run(svc.call(req));
        }
    });
    let mut seen = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let DebugValue::Counter(n) = value else {
            continue;
        };
        let mut labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        seen.push(format!("{}{{{}}} {n}", key.key().name(), labels.join(",")));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "tower_no_response_allowed_total{} 2",
            "tower_no_response_requests_total{action=drop,rule=host_unknown} 1",
            "tower_no_response_requests_total{action=would_drop,rule=user_agent} 1",
        ]
    );
}
