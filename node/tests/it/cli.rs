//! The `mycel-node` binary: `init`, then `up` as a real process, queried over HTTP, stopped by SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::post;

const BIN: &str = env!("CARGO_BIN_EXE_mycel-node");

#[test]
fn init_writes_key_and_documented_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap(), "init"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("did:key:z6Mk"), "{stdout}");
    let cfg = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    assert_eq!(
        mycel_node::Config::from_toml_str(&cfg).unwrap(),
        mycel_node::Config::default()
    );
    assert!(dir.path().join("node.key").is_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_http_writes_node_json_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "-q",
            "up",
            "--model",
            "tiny",
        ])
        .args([
            "--http",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let info_path = dir.path().join("node.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    let info: Value = loop {
        if let Ok(text) = std::fs::read_to_string(&info_path)
            && let Ok(v) = serde_json::from_str(&text)
        {
            break v;
        }
        assert!(Instant::now() < deadline, "node.json never appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let peer = info["peer_id"].as_str().unwrap();
    assert!(info["did"].as_str().unwrap().starts_with("did:key:z6Mk"));
    assert!(
        info["listen_addrs"][0]
            .as_str()
            .unwrap()
            .ends_with(&format!("/p2p/{peer}"))
    );
    let http = info["http_url"].as_str().unwrap();
    let r = post(
        format!("{http}/v1/chat/completions"),
        json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.served_by.as_deref(), info["did"].as_str());

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("node did not stop within 15 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// `mycel-node status` against a running node (and a clear error without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_identity_peers_models_and_says_when_no_node_runs() {
    let pair = crate::harness::Pair::start().await;
    pair.wait_until_b_lists_tiny().await;
    let url = crate::harness::url(&pair.b, "");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["status", "--rpc", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(&pair.b.node.did().to_string()), "{stdout}");
    assert!(stdout.contains("peers:    1"), "{stdout}");
    assert!(stdout.contains("model:    tiny  (1 provider)"), "{stdout}");
    assert!(stdout.contains("ledger:   none"), "{stdout}");
    pair.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the node running?"));
}
