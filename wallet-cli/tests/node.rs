//! `mycel chat`, `node status`, `peers` and `models` against real nodes: a provider serving the
//! tiny model and a forwarder without a model, both in this process on loopback; the wallet is the
//! real binary talking JSON-RPC (HTTP and WebSocket) to the forwarder.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_identity::Keypair;
use mycel_node::config::{Config, TINY_MODEL_ID};
use mycel_node::{RunningNode, StartOptions, models};
use serde_json::Value;

async fn start(
    models: BTreeMap<String, Arc<mycel_models::ChatModel>>,
    bootstrap: Vec<String>,
) -> RunningNode {
    RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: Keypair::generate(),
        config: Config::loopback(bootstrap),
        models,
        info_file: None,
        ledger: None,
    })
    .await
    .unwrap()
}

/// Runs the wallet binary off the async runtime and returns (exit code, stdout, stderr).
async fn mycel(args: Vec<String>) -> (i32, String, String) {
    mycel_with_input(args, String::new()).await
}

/// Like [`mycel`], with `input` on stdin.
async fn mycel_with_input(args: Vec<String>, input: String) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = assert_cmd::Command::cargo_bin("mycel")
            .unwrap()
            .args(&args)
            .write_stdin(input)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_chats_through_a_forwarding_node() {
    let tiny = models::load(TINY_MODEL_ID, std::path::Path::new("/nonexistent"), |_| {}).unwrap();
    let provider = start(
        BTreeMap::from([(TINY_MODEL_ID.to_string(), Arc::new(tiny))]),
        vec![],
    )
    .await;
    let forwarder = start(
        BTreeMap::new(),
        vec![provider.node.listen_addrs()[0].to_string()],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while forwarder.node.peers().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "forwarder never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rpc = format!("http://{}", forwarder.http_addr);
    let provider_did = provider.node.info().did.to_string();
    let base = |rest: &[&str]| -> Vec<String> {
        let mut v = vec!["--rpc".to_string(), rpc.clone()];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };

    // Streaming chat (WebSocket subscription): text on stdout, who answered on stderr.
    let (code, out, err) = mycel(base(&[
        "chat",
        "--model",
        "tiny",
        "--max-tokens",
        "8",
        "--seed",
        "1",
        "hello",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty(), "empty answer; stderr {err}");
    assert!(err.contains(&provider_did), "{err}");
    assert!(
        err.contains("; job chatcmpl-"),
        "the note names the job: {err}"
    );

    // Non-streaming with --json: the envelope names the serving DID, and the same seed gives the
    // same text as the stream did.
    let (code, json_out, err) = mycel(base(&[
        "--json",
        "chat",
        "--model",
        "tiny",
        "--max-tokens",
        "8",
        "--seed",
        "1",
        "hello",
    ]))
    .await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["data"]["served_by"], provider_did.as_str());
    assert_eq!(v["data"]["remote"], true);
    assert_eq!(v["data"]["content"].as_str().unwrap().trim(), out.trim());
    // The same seeded request again: answered from the node's cache. Its id is a job id.
    assert_eq!(v["data"]["cached"], true);
    let id = v["data"]["id"].as_str().unwrap().to_string();
    let (code, job_out, err) = mycel(base(&["--json", "job", &id])).await;
    assert_eq!(code, 0, "{err}");
    let job: Value = serde_json::from_str(&job_out).unwrap();
    assert_eq!(job["command"], "job");
    assert_eq!(job["data"]["id"], id.as_str());
    assert_eq!(job["data"]["state"], "done");
    assert_eq!(job["data"]["served_by"], provider_did.as_str());
    assert_eq!(
        job["data"]["completion_tokens"],
        v["data"]["usage"]["completion_tokens"]
    );
    let (code, text, err) = mycel(base(&["job", &id])).await;
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("state:    done"), "{text}");
    assert!(text.contains(&provider_did), "{text}");
    let (code, _, err) = mycel(base(&["job", "chatcmpl-0"])).await;
    assert_eq!(code, 4, "an unknown job is not found: {err}");

    // Without a prompt, a session: one turn per stdin line until an empty line or EOF; the
    // answers stream to stdout, one "answered by" note per turn.
    let (code, out, err) = mycel_with_input(
        base(&[
            "chat",
            "--model",
            "tiny",
            "--max-tokens",
            "6",
            "--seed",
            "3",
        ]),
        "first question\nsecond question\n".into(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("answered by").count(), 2, "{err}");
    assert!(
        out.lines().filter(|l| !l.trim().is_empty()).count() >= 2,
        "{out}"
    );
    // A session is for people; --json needs a prompt.
    let (code, _, err) = mycel(base(&["--json", "chat"])).await;
    assert_eq!(code, 6, "{err}");

    // Unknown model → not found (4); bad parameter → invalid (6).
    let (code, _, err) = mycel(base(&["chat", "--model", "nope", "hi"])).await;
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = mycel(base(&[
        "chat",
        "--model",
        "tiny",
        "--temperature",
        "9",
        "hi",
    ]))
    .await;
    assert_eq!(code, 6, "{err}");

    // node status / peers / models.
    let (code, out, err) = mycel(base(&["--json", "node", "status"])).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["data"]["node"]["did"],
        forwarder.node.info().did.to_string().as_str()
    );
    assert!(v["data"]["peers"].as_u64().unwrap() >= 1);
    let (code, out, _) = mycel(base(&["--json", "peers"])).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["data"]["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["did"] == provider_did.as_str())
    );
    // Peers' models arrive with their heartbeats (every second here): poll briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out, _) = mycel(base(&["--json", "models"])).await;
        assert_eq!(code, 0);
        let v: Value = serde_json::from_str(&out).unwrap();
        if v["data"]["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "tiny")
        {
            break;
        }
        assert!(Instant::now() < deadline, "tiny never listed: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    forwarder.shutdown().await;
    provider.shutdown().await;

    // Nobody listening: a clear error and exit code 9.
    let (code, _, err) = mycel(base(&["node", "status"])).await;
    assert_eq!(code, 9, "{err}");
    assert!(err.contains("cannot reach the node"), "{err}");
}
