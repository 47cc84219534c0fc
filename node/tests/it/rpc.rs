//! JSON-RPC through the generated jsonrpsee client.

use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::HttpClientBuilder;
use mycel_rpc_api::{ChatMessage, ChatRequest, MycelApiClient, error_codes};

use crate::harness::{Pair, url};

fn request(model: &str) -> ChatRequest {
    ChatRequest {
        model: Some(model.into()),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: "Hello there".into(),
        }],
        max_tokens: Some(12),
        temperature: Some(0.0),
        seed: Some(3),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_chat_on_b_is_served_by_a() {
    let pair = Pair::start().await;
    let client = HttpClientBuilder::default()
        .build(url(&pair.b, "/"))
        .unwrap();

    let info = client.node_info().await.unwrap();
    assert_eq!(info.did, pair.b.node.did().to_string());
    assert!(info.listen_addrs[0].ends_with(&format!("/p2p/{}", info.peer_id)));
    assert!(info.models.is_empty());

    let peers = client.peers().await.unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(
        peers[0].did.as_deref(),
        Some(pair.a.node.did().to_string().as_str())
    );

    let answer = client.chat(request("tiny")).await.unwrap();
    assert_eq!(answer.served_by, pair.a.node.did().to_string());
    assert!(answer.remote);
    assert!(!answer.content.is_empty());
    assert_eq!(
        answer.usage.total_tokens,
        answer.usage.prompt_tokens + answer.usage.completion_tokens
    );

    // A's heartbeats carry its version and free memory into B's peer list.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let peer = loop {
        let p = client.peers().await.unwrap().remove(0);
        if !p.version.is_empty() {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no heartbeat: {p:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(peer.version, env!("CARGO_PKG_VERSION"));
    assert!(peer.free_mem_mib > 0, "{peer:?}");

    match client.chat(request("no-such-model")).await {
        Err(ClientError::Call(e)) => assert_eq!(e.code(), error_codes::MODEL_NOT_FOUND),
        other => panic!("expected model-not-found, got {other:?}"),
    }
    let mut empty = request("tiny");
    empty.messages.clear();
    match client.chat(empty).await {
        Err(ClientError::Call(e)) => assert_eq!(e.code(), error_codes::INVALID_PARAMS),
        other => panic!("expected invalid params, got {other:?}"),
    }
    pair.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_chat_stream_over_websocket_on_the_same_port() {
    let pair = Pair::start().await;
    let client = jsonrpsee::ws_client::WsClientBuilder::default()
        .build(format!("ws://{}", pair.b.http_addr))
        .await
        .unwrap();
    assert_eq!(
        client.node_info().await.unwrap().did,
        pair.b.node.did().to_string()
    );
    let mut sub = client.subscribe_chat(request("tiny")).await.unwrap();
    let mut text = String::new();
    let mut pieces = 0;
    let last = loop {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next())
            .await
            .expect("chunk in time")
            .expect("subscription open")
            .unwrap();
        assert_eq!(chunk.served_by, pair.a.node.did().to_string());
        assert!(chunk.remote);
        assert_eq!(chunk.error, None);
        if !chunk.delta.is_empty() {
            pieces += 1;
            text.push_str(&chunk.delta);
        }
        if chunk.finish_reason.is_some() {
            break chunk;
        }
    };
    assert!(pieces > 1, "streamed token by token");
    assert!(last.usage.unwrap().completion_tokens >= 1);
    // Same request through mycel_chat gives the same greedy text.
    assert_eq!(client.chat(request("tiny")).await.unwrap().content, text);

    let mut bad = request("tiny");
    bad.temperature = Some(9.0);
    match client.subscribe_chat(bad).await {
        Err(ClientError::Call(e)) => assert_eq!(e.code(), error_codes::INVALID_PARAMS),
        other => panic!("expected invalid params, got {:?}", other.map(|_| ())),
    }
    pair.shutdown().await;
}

/// JSON-RPC 2.0 conformance through raw HTTP, as a third-party client sees it: batches mixing valid
/// and invalid calls, notifications, and every standard error code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_http_follows_json_rpc_2_0() {
    use crate::harness::post;
    use serde_json::{Value, json};

    let pair = Pair::start().await;
    let endpoint = url(&pair.b, "/");
    let call = |body: String| post(endpoint.clone(), body);

    // A single call.
    let reply = call(
        json!({"jsonrpc": "2.0", "id": 7, "method": "mycel_nodeInfo", "params": []}).to_string(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let v = reply.json();
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], 7);
    assert_eq!(v["result"]["did"], pair.b.node.did().to_string().as_str());

    // -32700 parse error, with a null id.
    let v = call("{\"jsonrpc\": \"2.0\", \"method\": ".into())
        .await
        .json();
    assert_eq!(v["error"]["code"], -32700);
    assert_eq!(v["id"], Value::Null);
    // -32600 invalid request (not an object / wrong version).
    let v = call(json!({"jsonrpc": "1.0", "id": 1, "method": "mycel_peers"}).to_string())
        .await
        .json();
    assert_eq!(v["error"]["code"], -32600, "{v}");
    // -32601 method not found.
    let v = call(json!({"jsonrpc": "2.0", "id": "x", "method": "mycel_nope"}).to_string())
        .await
        .json();
    assert_eq!(v["error"]["code"], -32601);
    assert_eq!(v["id"], "x");
    // -32602 invalid params (wrong type, and an empty conversation).
    let v = call(
        json!({"jsonrpc": "2.0", "id": 2, "method": "mycel_chat", "params": [42]}).to_string(),
    )
    .await
    .json();
    assert_eq!(v["error"]["code"], -32602);
    let v = call(
        json!({"jsonrpc": "2.0", "id": 3, "method": "mycel_chat", "params": [{"messages": []}]})
            .to_string(),
    )
    .await
    .json();
    assert_eq!(v["error"]["code"], -32602);
    // Named parameters work too.
    let v = call(json!({"jsonrpc": "2.0", "id": 4, "method": "mycel_chat", "params": {"request": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}}}).to_string()).await.json();
    assert!(v["result"]["content"].is_string(), "{v}");

    // A batch mixing valid calls, an invalid one and a notification: one response per call with an
    // id, none for the notification, matched by id.
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "mycel_nodeInfo", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "mycel_nope", "params": []},
        {"jsonrpc": "2.0", "method": "mycel_peers", "params": []},
        {"jsonrpc": "2.0", "id": 3, "method": "mycel_models", "params": []},
        17
    ]);
    let v = call(batch.to_string()).await.json();
    let replies = v.as_array().expect("a batch gets an array");
    assert_eq!(replies.len(), 4, "{v}");
    let by_id = |id: Value| replies.iter().find(|r| r["id"] == id).cloned();
    assert!(by_id(json!(1)).expect("id 1")["result"]["did"].is_string());
    assert_eq!(by_id(json!(2)).expect("id 2")["error"]["code"], -32601);
    assert!(by_id(json!(3)).expect("id 3")["result"].is_array());
    assert_eq!(
        by_id(Value::Null).expect("the invalid entry")["error"]["code"],
        -32600
    );
    // An empty batch is an invalid request.
    let v = call("[]".into()).await.json();
    assert_eq!(v["error"]["code"], -32600, "{v}");

    // A lone notification gets no JSON-RPC response body.
    let reply =
        call(json!({"jsonrpc": "2.0", "method": "mycel_peers", "params": []}).to_string()).await;
    assert!(reply.body.trim().is_empty(), "{}", reply.body);
    assert_eq!(reply.status, 204);

    // An oversize request is refused (413, or the connection is closed while the client is still
    // sending), and the node keeps serving.
    let huge = json!({"jsonrpc": "2.0", "id": 9, "method": "mycel_chat",
        "params": [{"messages": [{"role": "user", "content": "x".repeat(16 * 1024 * 1024)}]}]})
    .to_string();
    let target = endpoint.clone();
    let status = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(&target)
            .header("content-type", "application/json")
            .send(huge.as_bytes())
            .map(|r| r.status().as_u16())
    })
    .await
    .unwrap();
    assert!(matches!(status, Ok(413) | Err(_)), "{status:?}");
    let v = call(
        json!({"jsonrpc": "2.0", "id": 10, "method": "mycel_peers", "params": []}).to_string(),
    )
    .await
    .json();
    assert!(v["result"].is_array());

    pair.shutdown().await;
}

/// `rpc.discover` returns an OpenRPC document that lists exactly the methods the node serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_discover_lists_every_served_method() {
    use crate::harness::post;
    use serde_json::json;

    let pair = Pair::start().await;
    let v = post(
        url(&pair.b, "/"),
        json!({"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}).to_string(),
    )
    .await
    .json();
    let doc = &v["result"];
    assert_eq!(doc["openrpc"], "1.2.6");
    let listed: Vec<&str> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, mycel_rpc_api::openrpc::METHODS);
    // Every listed method exists: calling it never yields -32601 (method not found).
    for method in listed {
        let v = post(
            url(&pair.b, "/"),
            json!({"jsonrpc": "2.0", "id": 2, "method": method, "params": []}).to_string(),
        )
        .await
        .json();
        assert_ne!(v["error"]["code"], -32601, "{method}: {v}");
    }
    // And every `$ref` resolves inside the document.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
    pair.shutdown().await;
}

/// Dropping WebSocket clients mid-stream frees their generation slots on the provider: with both of
/// A's slots (max_concurrent_generations = 2) taken by slow streams whose clients then disconnect, a
/// new request is answered promptly instead of waiting ~40 s for the abandoned answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_disconnect_mid_stream_frees_the_session() {
    use std::time::{Duration, Instant};

    let pair = Pair::start().await;
    pair.a.node.set_generation_delay(Duration::from_millis(200));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let client = jsonrpsee::ws_client::WsClientBuilder::default()
            .build(format!("ws://{}", pair.b.http_addr))
            .await
            .unwrap();
        let mut long = request("tiny");
        long.max_tokens = Some(200);
        let mut sub = client.subscribe_chat(long).await.unwrap();
        // Wait until A is generating for this client.
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .expect("chunk in time")
                .expect("open")
                .unwrap();
            if !chunk.delta.is_empty() {
                break;
            }
        }
        clients.push((client, sub));
    }
    drop(clients);

    let started = Instant::now();
    let client = HttpClientBuilder::default()
        .build(url(&pair.b, "/"))
        .unwrap();
    let mut short = request("tiny");
    short.max_tokens = Some(2);
    let answer = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match client.chat(short.clone()).await {
                Ok(answer) => break answer,
                Err(ClientError::Call(e)) if e.code() == error_codes::BUSY => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .expect("the abandoned streams still hold A's generation slots");
    assert!(answer.usage.completion_tokens >= 1);
    assert!(started.elapsed() < Duration::from_secs(15));
    pair.shutdown().await;
}

/// `mycel_jobStatus` follows a job from both routes: running while it streams (with its provider),
/// done with its token counts, failed when the client leaves; unknown ids get `JOB_NOT_FOUND`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_status_follows_jobs_from_both_routes() {
    use std::time::{Duration, Instant};

    use mycel_rpc_api::JobState;

    let pair = Pair::start().await;
    let a_did = pair.a.node.did().to_string();
    let client = HttpClientBuilder::default()
        .build(url(&pair.b, "/"))
        .unwrap();

    // mycel_chat: the response id is the job id.
    let answer = client.chat(request("tiny")).await.unwrap();
    let s = client.job_status(answer.id.clone()).await.unwrap();
    assert_eq!(s.id, answer.id);
    assert_eq!(s.model, "tiny");
    assert_eq!(s.state, JobState::Done);
    assert_eq!(s.served_by.as_deref(), Some(a_did.as_str()));
    assert!(s.remote && !s.cached);
    assert_eq!(s.prompt_tokens, Some(answer.usage.prompt_tokens));
    assert_eq!(s.completion_tokens, Some(answer.usage.completion_tokens));
    assert_eq!(
        s.finish_reason.as_deref(),
        Some(answer.finish_reason.as_str())
    );
    assert_eq!(s.error, None);
    assert_eq!(s.payment, None, "B keeps no ledger: nothing was paid");
    let finished = s.finished_ms.expect("finished");
    assert!(s.created_ms > 0 && s.created_ms <= finished);

    // The OpenAI route: its completion id is a job id too.
    let reply = crate::harness::post(
        url(&pair.b, "/v1/chat/completions"),
        serde_json::json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4, "temperature": 0.5})
        .to_string(),
    )
    .await;
    let v = reply.json();
    let id = v["id"].as_str().unwrap().to_string();
    let s = client.job_status(id).await.unwrap();
    assert_eq!(s.state, JobState::Done);
    assert_eq!(
        s.completion_tokens,
        v["usage"]["completion_tokens"].as_u64().map(|n| n as u32)
    );

    // A slow stream is running, with its provider known, until the client leaves.
    pair.a.node.set_generation_delay(Duration::from_millis(100));
    let ws = jsonrpsee::ws_client::WsClientBuilder::default()
        .build(format!("ws://{}", pair.b.http_addr))
        .await
        .unwrap();
    let mut long = request("tiny");
    long.max_tokens = Some(200);
    let mut sub = ws.subscribe_chat(long).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("chunk in time")
        .expect("open")
        .unwrap();
    assert!(first.id.starts_with("chatcmpl-"), "{first:?}");
    let s = client.job_status(first.id.clone()).await.unwrap();
    assert_eq!(s.state, JobState::Running);
    assert_eq!(s.served_by.as_deref(), Some(a_did.as_str()));
    assert_eq!(s.finished_ms, None);
    drop(sub);
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(10);
    let s = loop {
        let s = client.job_status(first.id.clone()).await.unwrap();
        if s.state != JobState::Running {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the abandoned job never ended: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(s.state, JobState::Failed);
    assert!(s.error.unwrap().contains("cancelled"));

    // Unknown and malformed ids.
    match client.job_status("chatcmpl-0".into()).await {
        Err(ClientError::Call(e)) => assert_eq!(e.code(), error_codes::JOB_NOT_FOUND),
        other => panic!("expected job not found, got {other:?}"),
    }
    match client.job_status("x".repeat(65)).await {
        Err(ClientError::Call(e)) => assert_eq!(e.code(), error_codes::INVALID_PARAMS),
        other => panic!("expected invalid params, got {other:?}"),
    }
    // A's jobs are A's: B's job ids are unknown there.
    let on_a = HttpClientBuilder::default()
        .build(url(&pair.a, "/"))
        .unwrap();
    match on_a.job_status(answer.id).await {
        Err(ClientError::Call(e)) => assert_eq!(e.code(), error_codes::JOB_NOT_FOUND),
        other => panic!("expected job not found, got {other:?}"),
    }
    pair.shutdown().await;
}

/// The bearer-token gate of state-changing methods, seen through HTTP: a loopback client is trusted
/// even with a wrong token; a client on another address needs the right one. The node here keeps no
/// ledger, so a trusted `ledger_submit` gets past the gate and is answered "no ledger" (-32010),
/// while an untrusted one is refused first (-32020).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_gate_trusts_loopback_and_checks_others() {
    use std::collections::BTreeMap;

    use mycel_identity::Keypair;
    use mycel_node::config::{Config, RpcToken};
    use mycel_node::{RunningNode, StartOptions};
    use serde_json::json;

    use crate::harness::{post, post_with_auth};

    let submit =
        json!({"jsonrpc": "2.0", "id": 1, "method": "ledger_submit", "params": ["00"]}).to_string();
    let code = |v: serde_json::Value| v["error"]["code"].as_i64().unwrap();
    let start = |http: std::net::SocketAddr| async move {
        RunningNode::start(StartOptions {
            shards: Default::default(),
            models_dir: None,
            key: Keypair::generate(),
            config: Config {
                http,
                rpc_token: Some(RpcToken("s3cret".into())),
                ..Config::loopback(Vec::new())
            },
            models: BTreeMap::new(),
            info_file: None,
            ledger: None,
        })
        .await
        .unwrap()
    };

    let node = start("127.0.0.1:0".parse().unwrap()).await;
    let endpoint = url(&node, "/");
    for auth in ["Bearer wrong", "Bearer s3cret", "Basic Zm9vOmJhcg=="] {
        let v = post_with_auth(endpoint.clone(), submit.clone(), auth)
            .await
            .json();
        assert_eq!(
            code(v),
            i64::from(error_codes::LEDGER_UNAVAILABLE),
            "loopback with `{auth}`"
        );
    }
    node.shutdown().await;

    // Reaching the node through a non-loopback address of this machine makes the client
    // non-loopback. Skipped where the machine has no such address.
    let Some(ip) = crate::harness::routable_ip() else {
        println!("SKIPPED the non-loopback half: this machine has no routable address");
        return;
    };
    let node = start(std::net::SocketAddr::new(ip, 0)).await;
    let endpoint = url(&node, "/");
    for auth in ["Bearer wrong", "Basic s3cret", "s3cret"] {
        let v = post_with_auth(endpoint.clone(), submit.clone(), auth)
            .await
            .json();
        assert_eq!(
            code(v),
            i64::from(error_codes::UNAUTHORIZED),
            "{ip} with `{auth}`"
        );
    }
    let v = post(endpoint.clone(), submit.clone()).await.json();
    assert_eq!(
        code(v),
        i64::from(error_codes::UNAUTHORIZED),
        "{ip} without a token"
    );
    let v = post_with_auth(endpoint, submit, "Bearer s3cret")
        .await
        .json();
    assert_eq!(
        code(v),
        i64::from(error_codes::LEDGER_UNAVAILABLE),
        "{ip} with the token"
    );
    node.shutdown().await;
}

/// Slow clients cannot pin connections: unfinished headers are cut off after the header timeout,
/// a body that stops arriving fails the request, and an idle keep-alive connection is closed; a
/// normal request on a fresh connection is answered meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_http_clients_are_cut_off() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use mycel_node::http::{BODY_IDLE_TIMEOUT, HEADER_READ_TIMEOUT};

    let pair = Pair::start().await;
    let addr = pair.a.http_addr;
    // Sends `first`, then waits (at most `limit`) for the server to close; returns what it answered.
    let hold = |first: &'static [u8], limit: Duration| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(first).await.expect("write");
        let started = Instant::now();
        let mut reply = Vec::new();
        let closed = tokio::time::timeout(limit, s.read_to_end(&mut reply)).await;
        assert!(closed.is_ok(), "still open after {limit:?}: {first:?}");
        (
            String::from_utf8_lossy(&reply).into_owned(),
            started.elapsed(),
        )
    };
    let limit = HEADER_READ_TIMEOUT.max(BODY_IDLE_TIMEOUT) + Duration::from_secs(5);
    let headers = hold(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: applic", limit);
    let body = hold(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"jsonrpc\"",
        limit,
    );
    let idle = hold(
        b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
        HEADER_READ_TIMEOUT + Duration::from_secs(5),
    );
    let chunked = hold(
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n",
        limit,
    );
    let meanwhile = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let body = r#"{"jsonrpc":"2.0","id":1,"method":"mycel_nodeInfo","params":[]}"#;
        crate::harness::post(url(&pair.a, "/"), body.to_string()).await
    };
    let ((headers, t_headers), (body, t_body), (idle, t_idle), (chunked, _), reply) =
        tokio::join!(headers, body, idle, chunked, meanwhile);
    assert!(
        chunked.starts_with("HTTP/1.1 400") && chunked.contains("-32700"),
        "bad chunked encoding is a parse error: {chunked}"
    );
    assert_eq!(reply.status, 200, "a normal call is answered meanwhile");
    assert!(t_headers >= HEADER_READ_TIMEOUT - Duration::from_secs(1));
    assert!(
        headers.is_empty() || headers.starts_with("HTTP/1.1 408"),
        "{headers}"
    );
    assert!(t_body >= BODY_IDLE_TIMEOUT - Duration::from_secs(1));
    assert!(
        body.starts_with("HTTP/1.1 408") && body.contains("-32700"),
        "a stalled body is a parse error: {body}"
    );
    // The idle connection got its answer first, then was closed for sending no next request.
    assert!(idle.starts_with("HTTP/1.1 200"), "{idle}");
    assert!(t_idle >= HEADER_READ_TIMEOUT - Duration::from_secs(1));
    pair.shutdown().await;
}
