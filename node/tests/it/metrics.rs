//! `GET /metrics`: Prometheus text that counts requests on both the asking and the serving node.

use serde_json::json;

use crate::harness::{Pair, get, post, url};

fn value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{series}` in:\n{scrape}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_scrape_counts_a_request() {
    let pair = Pair::start().await;
    let before = get(url(&pair.b, "/metrics")).await;
    assert_eq!(before.status, 200);
    assert!(before.body.ends_with("# EOF\n"), "{}", before.body);
    assert_eq!(value(&before.body, "mycel_peers"), 1.0);
    assert!(value(&before.body, "mycel_connections") >= 1.0);
    assert!(
        before.body.contains("libp2p_swarm_connections_established"),
        "libp2p's own metrics share the registry"
    );

    let body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8,
        "temperature": 0,
    });
    let reply = post(url(&pair.b, "/v1/chat/completions"), body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let tokens = reply.json()["usage"]["completion_tokens"].as_f64().unwrap();

    let b = get(url(&pair.b, "/metrics")).await.body;
    assert_eq!(
        value(&b, "mycel_inference_requests_total{route=\"remote\"}"),
        1.0
    );
    assert_eq!(value(&b, "mycel_inference_latency_seconds_count"), 1.0);
    assert_eq!(value(&b, "mycel_inference_tokens_total"), tokens);
    assert_eq!(value(&b, "mycel_inference_failovers_total"), 0.0);
    let a = get(url(&pair.a, "/metrics")).await.body;
    assert_eq!(
        value(&a, "mycel_inference_requests_total{route=\"inbound\"}"),
        1.0
    );
    assert!(value(&a, "mycel_heartbeats_sent_total") >= 0.0);
    pair.shutdown().await;
}
