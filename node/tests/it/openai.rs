//! OpenAI-compatible API: remote answers through B, SSE streaming, error objects.

use serde_json::{Value, json};

use crate::harness::{Pair, get, post, url};

fn chat_body(extra: Value) -> String {
    let mut body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "temperature": 0,
        "seed": 1,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_on_b_is_served_by_a_over_libp2p() {
    let pair = Pair::start().await;
    let a_did = pair.a.node.did().to_string();
    let started = std::time::Instant::now();
    let r = post(url(&pair.b, "/v1/chat/completions"), chat_body(json!({}))).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.served_by.as_deref(), Some(a_did.as_str()));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["system_fingerprint"], a_did);
    assert_eq!(v["mycel"]["remote"], true);
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.is_empty(), "empty answer: {v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 1);
    println!(
        "remote chat through B took {elapsed:?} ({} ms inside B)",
        v["mycel"]["latency_ms"]
    );

    // Same seed, greedy: A answering directly gives the same text.
    let direct = post(url(&pair.a, "/v1/chat/completions"), chat_body(json!({}))).await;
    assert_eq!(direct.status, 200);
    assert_eq!(direct.json()["choices"][0]["message"]["content"], content);
    assert_eq!(direct.json()["mycel"]["remote"], false);
    pair.shutdown().await;
}

/// Parses an SSE body into its `data:` payloads.
fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim().to_string())
        .collect()
}

fn check_stream(body: &str, want_did: &str) -> (String, usize) {
    let data = sse_data(body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
    assert!(last["usage"]["total_tokens"].as_u64().unwrap() >= 1);
    let mut text = String::new();
    let mut pieces = 0;
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["system_fingerprint"], want_did);
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str()
            && !t.is_empty()
        {
            pieces += 1;
            text.push_str(t);
        }
    }
    (text, pieces)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_sse_ends_with_done_locally_and_remotely() {
    let pair = Pair::start().await;
    let a_did = pair.a.node.did().to_string();
    let stream = json!({"stream": true});
    let local = post(
        url(&pair.a, "/v1/chat/completions"),
        chat_body(stream.clone()),
    )
    .await;
    assert_eq!(local.status, 200);
    let (local_text, local_pieces) = check_stream(&local.body, &a_did);
    assert!(local_pieces > 1, "a local stream arrives token by token");
    let remote = post(url(&pair.b, "/v1/chat/completions"), chat_body(stream)).await;
    assert_eq!(remote.status, 200);
    assert_eq!(remote.served_by.as_deref(), Some(a_did.as_str()));
    let (remote_text, remote_pieces) = check_stream(&remote.body, &a_did);
    assert!(!remote_text.is_empty());
    assert!(
        remote_pieces > 1,
        "a remote answer streams token by token over libp2p too"
    );
    assert_eq!(local_text, remote_text, "same seed, same greedy answer");
    pair.shutdown().await;
}

fn assert_openai_error(status: u16, body: &str, want_status: u16, want_code: Option<&str>) {
    assert_eq!(status, want_status, "{body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let err = &v["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
    assert_eq!(err["type"], "invalid_request_error", "{v}");
    if let Some(code) = want_code {
        assert_eq!(err["code"], code, "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_errors_with_4xx() {
    let pair = Pair::start().await;
    let endpoint = url(&pair.b, "/v1/chat/completions");
    let cases: Vec<(String, u16, Option<&str>)> = vec![
        (
            json!({"model": "tiny", "messages": []}).to_string(),
            400,
            None,
        ),
        (chat_body(json!({"temperature": 3.0})), 400, None),
        (chat_body(json!({"top_p": 0})), 400, None),
        (chat_body(json!({"max_tokens": 0})), 400, None),
        (chat_body(json!({"max_tokens": 100000})), 400, None),
        (chat_body(json!({"n": 2})), 400, None),
        (
            chat_body(json!({"stop": ["a", "b", "c", "d", "e"]})),
            400,
            None,
        ),
        (
            chat_body(json!({"messages": [{"role": "wizard", "content": "hi"}]})),
            400,
            None,
        ),
        (chat_body(json!({"messages": "hello"})), 400, None),
        ("{not json".to_string(), 400, None),
        (
            chat_body(json!({"model": "no-such-model"})),
            404,
            Some("model_not_found"),
        ),
    ];
    for (body, status, code) in cases {
        let r = post(endpoint.clone(), body.clone()).await;
        assert_openai_error(r.status, &r.body, status, code);
    }
    // A prompt longer than the model's context, at the provider and relayed through B.
    let long = "many words ".repeat(5_000);
    let too_long = chat_body(json!({"messages": [{"role": "user", "content": long}]}));
    for node in [&pair.a, &pair.b] {
        let r = post(url(node, "/v1/chat/completions"), too_long.clone()).await;
        assert_openai_error(r.status, &r.body, 400, Some("context_length_exceeded"));
    }
    // The provider validates too: unknown model straight at A.
    let r = post(
        url(&pair.a, "/v1/chat/completions"),
        chat_body(json!({"model": "nope"})),
    )
    .await;
    assert_openai_error(r.status, &r.body, 404, Some("model_not_found"));
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_list_shows_local_and_peer_models() {
    let pair = Pair::start().await;
    let a = get(url(&pair.a, "/v1/models")).await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "tiny");
    assert_eq!(v["data"][0]["mycel"]["local"], true);
    // B learns A's models from A's signed heartbeats.
    let v = pair.wait_until_b_lists_tiny().await;
    assert_eq!(v["data"][0]["mycel"]["local"], false);
    assert_eq!(
        v["data"][0]["mycel"]["served_by"][0],
        pair.a.node.did().to_string()
    );
    pair.shutdown().await;
}

/// The official `openai` Python client, unchanged but for its base URL, against node B (whose answers
/// come from A over libp2p). Skipped with a message when the package is not installed (`.ci/run`
/// installs it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_client_works_unchanged() {
    let has_client = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !has_client {
        println!("SKIPPED: the `openai` Python package is not installed (pip install openai)");
        return;
    }
    let pair = Pair::start().await;
    // The script lists B's models first; B lists `tiny` once it has heard A's heartbeat.
    pair.wait_until_b_lists_tiny().await;
    let base = url(&pair.b, "");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scripts/openai_client_check.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args([script, &base, "tiny"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("OK"),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pair.shutdown().await;
}
