//! The real default model end to end (A serves smollm2-135m-instruct, B forwards). Skipped, with a
//! message, when the model is not in the cache: set MYCEL_TEST_MODELS_DIR to a models cache
//! (default `$HOME/.cache/mycel/dev-data/models`), e.g. after `mycel-node model pull`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use mycel_identity::Keypair;
use mycel_models::registry::DEFAULT_CHAT_MODEL;
use mycel_node::{RunningNode, StartOptions, models};
use serde_json::json;

use crate::harness::{post, start_forwarder, url};

fn models_dir() -> Option<PathBuf> {
    std::env::var_os("MYCEL_TEST_MODELS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mycel/dev-data/models"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_answers_through_a_forwarding_node() {
    let Some(dir) = models_dir().filter(|d| models::is_cached(DEFAULT_CHAT_MODEL, d)) else {
        println!(
            "SKIPPED: {DEFAULT_CHAT_MODEL} is not cached (set MYCEL_TEST_MODELS_DIR or run `mycel-node model pull {DEFAULT_CHAT_MODEL}`)"
        );
        return;
    };
    let load_started = Instant::now();
    let model = tokio::task::spawn_blocking(move || models::load(DEFAULT_CHAT_MODEL, &dir, |_| {}))
        .await
        .unwrap()
        .unwrap();
    println!(
        "loaded {DEFAULT_CHAT_MODEL} in {:?}",
        load_started.elapsed()
    );
    let mut config = mycel_node::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        mdns: false,
        http: "127.0.0.1:0".parse().unwrap(),
        models: Vec::new(),
        ..Default::default()
    };
    config.infer_timeout_secs = 300;
    let a = RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: Keypair::generate(),
        config,
        models: BTreeMap::from([(DEFAULT_CHAT_MODEL.to_string(), Arc::new(model))]),
        info_file: None,
        ledger: None,
    })
    .await
    .unwrap();
    let b = start_forwarder(&a).await;
    while b.node.peers().await.unwrap().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let body = json!({
        "model": DEFAULT_CHAT_MODEL,
        "messages": [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
        "max_tokens": 24,
        "temperature": 0,
    })
    .to_string();
    let started = Instant::now();
    let r = post(url(&b, "/v1/chat/completions"), body).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    let tokens = v["usage"]["completion_tokens"].as_u64().unwrap();
    println!(
        "real model via B → A: {elapsed:?} for {tokens} tokens ({:.1} tok/s end to end): {content:?}",
        tokens as f64 / elapsed.as_secs_f64()
    );
    assert!(!content.trim().is_empty());
    assert_eq!(v["mycel"]["served_by"], a.node.did().to_string());
    assert!(content.contains("Paris"), "unexpected answer {content:?}");
    b.shutdown().await;
    a.shutdown().await;
}
