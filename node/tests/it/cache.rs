//! The response cache through the real HTTP interface: B (no model) forwards to A (serves `tiny`);
//! exact repeats of deterministic requests are answered by B from its cache, so A — the provider —
//! serves no further job for them, as its `inbound` request counter shows.

use jsonrpsee::http_client::HttpClientBuilder;
use mycel_rpc_api::{ChatMessage, ChatRequest, JobState, MycelApiClient};
use serde_json::{Value, json};

use crate::harness::{Pair, metric, post, url};

const INBOUND: &str = "mycel_inference_requests_total{route=\"inbound\"}";
const LOCAL: &str = "mycel_inference_requests_total{route=\"local\"}";
const HITS: &str = "mycel_inference_cache_hits_total";

fn body(extra: Value) -> String {
    let mut body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "Tell me about caches."}],
        "max_tokens": 12,
        "temperature": 0,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body.to_string()
}

/// Sends an OpenAI chat request to `node` and returns the parsed body.
async fn ask(node: &mycel_node::RunningNode, extra: Value) -> Value {
    let r = post(url(node, "/v1/chat/completions"), body(extra)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeats_of_deterministic_requests_are_answered_from_the_cache() {
    let pair = Pair::start().await;
    let (a, b) = (&pair.a, &pair.b);

    // First greedy request: inference on A.
    let first = ask(b, json!({})).await;
    assert_eq!(first["mycel"]["cached"], false, "{first}");
    assert_eq!(first["mycel"]["remote"], true);
    assert_eq!(metric(a, INBOUND).await, 1.0);

    // The exact repeat: from B's cache, same answer, a new id; A serves nothing more.
    let second = ask(b, json!({})).await;
    assert_eq!(second["mycel"]["cached"], true, "{second}");
    assert_eq!(content(&second), content(&first));
    assert_eq!(second["usage"], first["usage"]);
    assert_eq!(
        second["choices"][0]["finish_reason"],
        first["choices"][0]["finish_reason"]
    );
    assert_eq!(
        second["system_fingerprint"],
        a.node.did().to_string().as_str()
    );
    assert_ne!(
        second["id"], first["id"],
        "every request is a job of its own"
    );
    assert_eq!(
        metric(a, INBOUND).await,
        1.0,
        "a cache hit must not reach the provider"
    );
    assert_eq!(metric(b, HITS).await, 1.0);

    // Streaming replays the cached text as one delta, then the final chunk, then [DONE].
    let r = post(
        url(b, "/v1/chat/completions"),
        body(json!({"stream": true})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let data: Vec<&str> = r
        .body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{}", r.body);
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, content(&first));
    let last = chunks.last().unwrap();
    assert_eq!(last["mycel"]["cached"], true, "{last}");
    assert_eq!(last["usage"], first["usage"]);
    assert_eq!(metric(a, INBOUND).await, 1.0);

    // JSON-RPC shares the cache: the same request in its terms is a hit too.
    let client = HttpClientBuilder::default().build(url(b, "/")).unwrap();
    let request = ChatRequest {
        model: Some("tiny".into()),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "Tell me about caches.".into(),
        }],
        max_tokens: Some(12),
        temperature: Some(0.0),
        ..Default::default()
    };
    let rpc = client.chat(request.clone()).await.unwrap();
    assert!(rpc.cached);
    assert_eq!(rpc.content, content(&first));
    let status = client.job_status(rpc.id.clone()).await.unwrap();
    assert!(status.cached);
    assert_eq!(status.state, JobState::Done);
    assert_eq!(
        status.served_by.as_deref(),
        Some(a.node.did().to_string().as_str())
    );
    assert_eq!(metric(a, INBOUND).await, 1.0);

    // Any difference in what decides the answer is a miss: max_tokens, stop, the prompt.
    let other = ask(b, json!({"max_tokens": 11})).await;
    assert_eq!(other["mycel"]["cached"], false);
    assert_eq!(metric(a, INBOUND).await, 2.0);
    let other = ask(b, json!({"stop": ["zzz"]})).await;
    assert_eq!(other["mycel"]["cached"], false);
    assert_eq!(metric(a, INBOUND).await, 3.0);

    // Sampling without a seed is never cached, not even when repeated.
    for n in 4..6 {
        let sampled = ask(b, json!({"temperature": 0.8})).await;
        assert_eq!(sampled["mycel"]["cached"], false, "{sampled}");
        assert_eq!(metric(a, INBOUND).await, f64::from(n));
    }
    // Sampling with the caller's seed is deterministic: the repeat is a hit.
    let seeded = ask(b, json!({"temperature": 0.8, "seed": 99})).await;
    assert_eq!(seeded["mycel"]["cached"], false);
    let again = ask(b, json!({"temperature": 0.8, "seed": 99})).await;
    assert_eq!(again["mycel"]["cached"], true);
    assert_eq!(content(&again), content(&seeded));
    assert_eq!(metric(a, INBOUND).await, 6.0);
    let other_seed = ask(b, json!({"temperature": 0.8, "seed": 100})).await;
    assert_eq!(other_seed["mycel"]["cached"], false);
    assert_eq!(metric(a, INBOUND).await, 7.0);
    assert_eq!(metric(b, HITS).await, 4.0);
    pair.shutdown().await;
}

/// A node serving the model itself caches its own answers too: the repeat runs no generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_answers_its_own_repeats_from_the_cache() {
    let a = crate::harness::start_provider().await;
    let first = ask(&a, json!({})).await;
    assert_eq!(first["mycel"]["remote"], false);
    assert_eq!(first["mycel"]["cached"], false);
    assert_eq!(metric(&a, LOCAL).await, 1.0);
    let second = ask(&a, json!({})).await;
    assert_eq!(second["mycel"]["cached"], true);
    assert_eq!(content(&second), content(&first));
    assert_eq!(metric(&a, LOCAL).await, 1.0, "no second generation");
    a.shutdown().await;
}
