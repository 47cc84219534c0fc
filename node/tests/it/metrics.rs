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

/// The Grafana dashboard in deploy/ only charts series a node really exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grafana_dashboard_charts_only_exported_series() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/mycel-node.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 9);
    let pair = Pair::start().await;
    // Labelled families appear once they have a sample: one answered request gives them one.
    let body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2
    });
    let r = post(url(&pair.a, "/v1/chat/completions"), body.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A shard server with an automatic range exports the per-layer coverage it observes.
    let shards = start_auto_shard_server(&pair.a).await;
    // … and the gossip family once a heartbeat from B arrived (1 s interval in tests).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let scrape = loop {
        let scrape =
            get(url(&pair.a, "/metrics")).await.body + &get(url(&shards, "/metrics")).await.body;
        if scrape.contains("mycel_gossip_messages_total{")
            && scrape.contains("mycel_shard_layer_coverage{")
        {
            break scrape;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no gossip counted:\n{scrape}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    for expr in &exprs {
        for (i, _) in expr.match_indices("mycel_") {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // A histogram is exported as _bucket/_sum/_count series, counters with _total.
            let family = name.trim_end_matches("_bucket");
            assert!(
                scrape.contains(&format!("# TYPE {family} "))
                    || scrape.contains(&format!("# TYPE {} ", family.trim_end_matches("_total"))),
                "the dashboard charts `{name}`, which /metrics does not export"
            );
        }
    }
    shards.shutdown().await;
    pair.shutdown().await;
}

/// A node serving layers [0, 2) of `tiny` as an automatic range, bootstrapped to `to`.
async fn start_auto_shard_server(to: &mycel_node::RunningNode) -> mycel_node::RunningNode {
    use mycel_node::config::{Config, TINY_MODEL_ID};
    let dir = std::path::Path::new("/nonexistent");
    let shard = mycel_node::models::load_range(TINY_MODEL_ID, 0, 2, dir).unwrap();
    let mut config = Config::loopback(vec![to.node.listen_addrs()[0].to_string()]);
    config.serve.ranges = vec![format!("{TINY_MODEL_ID}:auto")];
    config.serve.span = 2;
    mycel_node::RunningNode::start(mycel_node::StartOptions {
        shards: [(TINY_MODEL_ID.to_string(), std::sync::Arc::new(shard))].into(),
        models_dir: None,
        key: mycel_identity::Keypair::generate(),
        config,
        models: Default::default(),
        info_file: None,
        ledger: None,
    })
    .await
    .unwrap()
}
