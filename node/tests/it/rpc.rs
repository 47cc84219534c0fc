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
    let mut sub = client.chat_stream(request("tiny")).await.unwrap();
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
    match client.chat_stream(bad).await {
        Err(ClientError::Call(e)) => assert_eq!(e.code(), error_codes::INVALID_PARAMS),
        other => panic!("expected invalid params, got {:?}", other.map(|_| ())),
    }
    pair.shutdown().await;
}
