//! Signed model manifests between real nodes on loopback: a publisher announces a new version of
//! `tiny` (another tiny GGUF, served from a local file source); a node trusting it adopts it and
//! answers with the new weights, one that does not trust it only relays, a late joiner learns the
//! manifest by re-publication, a restart keeps serving the adopted version, and a manifest whose
//! sha256 does not match the file is never adopted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_identity::{Did, Keypair};
use mycel_models::{Architecture, LoadOptions, SourceSpec, tiny};
use mycel_node::chat::{ChatJob, ModelHost, SamplingRequest, collect};
use mycel_node::config::{Config, TINY_MODEL_ID};
use mycel_node::manifest::ModelManifest;
use mycel_node::{RunningNode, StartOptions, models, node_key};
use serde_json::{Value, json};

use crate::harness::{metric, post, url};

/// Seed of the published version's weights (the served `tiny` uses [`models::TINY_SEED`]).
const NEW_SEED: u64 = 0x7e57_0002;
const PROMPT: &str = "hello there, who are you?";

/// A node serving `tiny`, caching models in `models_dir`, trusting `trusted` publishers and
/// re-publishing manifests every second.
async fn start(
    key: Keypair,
    models_dir: &Path,
    trusted: &[Did],
    bootstrap: Option<&RunningNode>,
) -> RunningNode {
    let tiny = models::load(TINY_MODEL_ID, Path::new("/nonexistent"), |_| {}).expect("tiny");
    let mut config = Config::loopback(
        bootstrap
            .map(|b| vec![b.node.listen_addrs()[0].to_string()])
            .unwrap_or_default(),
    );
    config.manifests.trusted_publishers = trusted.iter().map(|d| d.to_string()).collect();
    config.manifests.republish_interval_secs = 1;
    RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: Some(models_dir.to_path_buf()),
        key,
        config,
        models: BTreeMap::from([(TINY_MODEL_ID.to_string(), Arc::new(tiny))]),
        info_file: None,
        ledger: None,
    })
    .await
    .expect("node starts")
}

/// Calls a JSON-RPC method; returns the whole response object.
async fn call(node: &RunningNode, method: &str, params: Value) -> Value {
    post(
        url(node, "/"),
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
    )
    .await
    .json()
}

/// Calls a JSON-RPC method that must succeed; returns its result.
async fn result(node: &RunningNode, method: &str, params: Value) -> Value {
    let v = call(node, method, params).await;
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

/// The node's greedy answer to [`PROMPT`].
async fn answer(node: &RunningNode) -> String {
    let r = result(
        node,
        "mycel_chat",
        json!([{
            "model": TINY_MODEL_ID,
            "messages": [{"role": "user", "content": PROMPT}],
            "temperature": 0,
            "max_tokens": 12,
        }]),
    )
    .await;
    assert_eq!(r["remote"], false, "{r}");
    r["content"].as_str().expect("content").to_string()
}

/// The greedy answer of the published weights, computed here without any node.
async fn answer_of_new_weights() -> String {
    let model = tiny::tiny_model(NEW_SEED, &LoadOptions::default()).expect("tiny");
    let host = ModelHost::new(
        BTreeMap::from([(TINY_MODEL_ID.to_string(), Arc::new(model))]),
        1,
    );
    let job = ChatJob::new(
        TINY_MODEL_ID.into(),
        vec![mycel_models::ChatMessage::user(PROMPT)],
        &SamplingRequest {
            temperature: Some(0.0),
            max_tokens: Some(12),
            ..Default::default()
        },
        vec![],
    )
    .expect("job");
    let rx = host.start(job).await.expect("started");
    collect(rx).await.expect("answer").text
}

/// Writes the new version's weights; returns the file.
fn write_new_version(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-v2.gguf");
    std::fs::write(&path, tiny::tiny_gguf(NEW_SEED).expect("gguf")).expect("write");
    path
}

/// The versions `mycel_nodeInfo` says the node serves: `(model, version)`.
async fn versions(node: &RunningNode) -> Vec<(String, u64)> {
    let info = result(node, "mycel_nodeInfo", json!([])).await;
    info["model_versions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| {
                    (
                        v["model"].as_str().expect("model").to_string(),
                        v["version"].as_u64().expect("version"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_connected(node: &RunningNode) {
    wait_until("connected", Duration::from_secs(10), || async {
        !node.node.peers().await.expect("peers").is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_is_adopted_only_by_trusting_nodes_relayed_to_late_joiners_and_kept_on_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = |name: &str| {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    };
    let p_key = Keypair::generate();
    let p_did = Did::from_public_key(p_key.public());
    let p = start(p_key.clone(), &dir("p"), &[], None).await;
    let t = start(Keypair::generate(), &dir("t"), &[p_did], Some(&p)).await;
    let u = start(Keypair::generate(), &dir("u"), &[], Some(&p)).await;
    wait_connected(&t).await;
    wait_connected(&u).await;

    let old = answer(&t).await;
    assert_eq!(answer(&u).await, old);
    let expected = answer_of_new_weights().await;
    assert_ne!(expected, old, "the new weights must answer differently");
    let file = write_new_version(&dir("files"));

    // P signs the manifest of the file (as `mycel-node model publish` does) and gossips it.
    let manifest = {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            ModelManifest::for_file(TINY_MODEL_ID, 2, &file, Vec::new(), p_did)
        })
        .await
        .expect("joins")
        .expect("describes the file")
    };
    assert_eq!(manifest.layers, tiny::TINY_LAYERS);
    let r = result(
        &p,
        "mycel_publishManifest",
        json!([manifest.sign(&p_key).expect("signs")]),
    )
    .await;
    assert_eq!(r["status"], "published", "{r}");

    // T trusts P: it fetches, verifies and serves the new version.
    wait_until("T adopted v2", Duration::from_secs(30), || async {
        versions(&t).await == vec![(TINY_MODEL_ID.to_string(), 2)]
    })
    .await;
    assert_eq!(answer(&t).await, expected, "T answers with the new weights");
    let listed = result(&t, "mycel_manifests", json!([])).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["publisher"], p_did.to_string());
    assert_eq!(listed[0]["version"], 2);
    assert_eq!(listed[0]["trusted"], true);
    assert_eq!(listed[0]["adopted"], true);
    assert_eq!(metric(&t, "mycel_manifest_adoptions_total").await, 1.0);

    // U does not trust P: it holds and relays the manifest but keeps serving the old version.
    wait_until("U holds the manifest", Duration::from_secs(10), || async {
        result(&u, "mycel_manifests", json!([])).await[0]["version"] == 2
    })
    .await;
    let listed = result(&u, "mycel_manifests", json!([])).await;
    assert_eq!(listed[0]["trusted"], false);
    assert_eq!(listed[0]["adopted"], false);
    assert!(versions(&u).await.is_empty());
    assert_eq!(
        answer(&u).await,
        old,
        "U still answers with the old weights"
    );
    assert_eq!(metric(&u, "mycel_manifest_adoptions_total").await, 0.0);
    assert!(!tmp.path().join("u").join(".adopted").exists());

    // L joins after the publication, through U: it learns the manifest from a re-publication.
    let l = start(Keypair::generate(), &dir("l"), &[p_did], Some(&u)).await;
    wait_until("L adopted v2", Duration::from_secs(30), || async {
        versions(&l).await == vec![(TINY_MODEL_ID.to_string(), 2)]
    })
    .await;
    assert_eq!(answer(&l).await, expected);

    // T restarts alone (no peer to hear the manifest from): it serves the adopted version at once.
    t.shutdown().await;
    let t2 = start(Keypair::generate(), &tmp.path().join("t"), &[p_did], None).await;
    assert_eq!(versions(&t2).await, vec![(TINY_MODEL_ID.to_string(), 2)]);
    assert_eq!(answer(&t2).await, expected, "the restarted node serves v2");
    // Without trusting P any more, the same cache serves the registry's version again.
    t2.shutdown().await;
    let t3 = start(Keypair::generate(), &tmp.path().join("t"), &[], None).await;
    assert!(versions(&t3).await.is_empty());
    assert_eq!(answer(&t3).await, old);

    for n in [t3, l, u, p] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_with_a_wrong_hash_is_not_adopted_and_the_old_version_keeps_serving() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let p_key = Keypair::generate();
    let p_did = Did::from_public_key(p_key.public());
    let p = start(p_key.clone(), &tmp.path().join("p"), &[], None).await;
    let t_models = tmp.path().join("t");
    let t = start(Keypair::generate(), &t_models, &[p_did], Some(&p)).await;
    wait_connected(&t).await;
    let old = answer(&t).await;

    let file = write_new_version(tmp.path());
    let size = std::fs::metadata(&file).expect("file").len();
    let wrong_sha = "00".repeat(32);
    let manifest = ModelManifest {
        model: TINY_MODEL_ID.into(),
        version: 3,
        file: "tiny-v3.gguf".into(),
        sha256: wrong_sha.clone(),
        size,
        layers: tiny::TINY_LAYERS,
        architecture: Architecture::Llama,
        sources: vec![SourceSpec::Path { path: file }],
        publisher: p_did,
        issued_at: 1,
    };
    let signed = manifest.sign(&p_key).expect("signs");

    // A tampered manifest is refused by the RPC (and would be rejected as gossip).
    let mut tampered = signed.clone();
    tampered.body = tampered.body.replace("\"version\":3", "\"version\":4");
    let v = call(&p, "mycel_publishManifest", json!([tampered])).await;
    assert_eq!(v["error"]["code"], -32602, "{v}");

    let r = result(&p, "mycel_publishManifest", json!([signed])).await;
    assert_eq!(r["status"], "published", "{r}");
    assert_eq!(r["version"], 3);
    let again = result(&p, "mycel_publishManifest", json!([signed])).await;
    assert_eq!(again["status"], "known");

    wait_until("T tried and failed", Duration::from_secs(30), || async {
        metric(&t, "mycel_manifest_adoption_failures_total").await >= 1.0
    })
    .await;
    let listed = result(&t, "mycel_manifests", json!([])).await;
    assert_eq!(listed[0]["version"], 3, "{listed}");
    assert_eq!(listed[0]["trusted"], true);
    assert_eq!(listed[0]["adopted"], false);
    assert!(versions(&t).await.is_empty());
    assert_eq!(answer(&t).await, old, "the old version keeps answering");
    assert_eq!(metric(&t, "mycel_manifest_adoptions_total").await, 0.0);
    assert!(
        !t_models.join(".adopted").join(&wrong_sha).exists(),
        "nothing unverified is kept"
    );
    assert_eq!(
        metric(&t, "mycel_manifests_received_total{outcome=\"new\"}").await,
        1.0
    );

    // The same file under its true hash, as the next version: adopted (the hash was the fault).
    let mut fixed = manifest.clone();
    fixed.version = 4;
    fixed.sha256 = mycel_models::pull::sha256_file(&tmp.path().join("tiny-v2.gguf"))
        .expect("hash")
        .to_hex();
    let r = result(
        &p,
        "mycel_publishManifest",
        json!([fixed.sign(&p_key).expect("signs")]),
    )
    .await;
    assert_eq!(r["status"], "published", "{r}");
    wait_until("T adopted v4", Duration::from_secs(30), || async {
        versions(&t).await == vec![(TINY_MODEL_ID.to_string(), 4)]
    })
    .await;
    assert_eq!(answer(&t).await, answer_of_new_weights().await);
    assert_eq!(
        metric(&t, "mycel_manifest_adoption_failures_total").await,
        1.0
    );

    t.shutdown().await;
    p.shutdown().await;
}

/// `mycel_publishManifest` changes what the network serves: a non-loopback caller needs the
/// node's bearer token (skipped where the machine has no routable address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_publishing_needs_a_trusted_caller() {
    use crate::harness::post_with_auth;
    let Some(ip) = crate::harness::routable_ip() else {
        println!("SKIPPED: this machine has no routable address");
        return;
    };
    let node = RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: Keypair::generate(),
        config: Config {
            http: std::net::SocketAddr::new(ip, 0),
            rpc_token: Some(mycel_node::config::RpcToken("s3cret".into())),
            ..Config::loopback(Vec::new())
        },
        models: BTreeMap::new(),
        info_file: None,
        ledger: None,
    })
    .await
    .expect("node starts");
    let key = Keypair::generate();
    let signed = ModelManifest {
        model: TINY_MODEL_ID.into(),
        version: 2,
        file: "tiny-v2.gguf".into(),
        sha256: "ab".repeat(32),
        size: 10,
        layers: tiny::TINY_LAYERS,
        architecture: Architecture::Llama,
        sources: vec![SourceSpec::Url {
            url: "https://example.org/tiny-v2.gguf".into(),
        }],
        publisher: Did::from_public_key(key.public()),
        issued_at: 1,
    }
    .sign(&key)
    .expect("signs");
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "mycel_publishManifest", "params": [signed]})
            .to_string();
    let endpoint = url(&node, "/");
    let v = post(endpoint.clone(), body.clone()).await.json();
    assert_eq!(v["error"]["code"], -32020, "{v}");
    let v = post_with_auth(endpoint.clone(), body.clone(), "Bearer wrong")
        .await
        .json();
    assert_eq!(v["error"]["code"], -32020, "{v}");
    let v = post_with_auth(endpoint, body, "Bearer s3cret").await.json();
    assert_eq!(v["result"]["status"], "published", "{v}");
    let listed = result(&node, "mycel_manifests", json!([])).await;
    assert_eq!(listed[0]["trusted"], false, "{listed}");
    node.shutdown().await;
}

/// `mycel-node model publish` reads the node key of the data dir, describes the file and hands the
/// signed manifest to the running node, which keeps (and gossips) it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_cli_publish_signs_with_the_node_key_and_hands_it_to_the_node() {
    const BIN: &str = env!("CARGO_BIN_EXE_mycel-node");
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("p");
    let (key, _) = node_key::load_or_create(&data).expect("node key");
    let did = Did::from_public_key(key.public());
    let p = start(key, &data.join("models"), &[], None).await;
    let file = write_new_version(tmp.path());
    let sha = mycel_models::pull::sha256_file(&file)
        .expect("hash")
        .to_hex();
    let p_url = format!("http://{}", p.http_addr);
    let run = |args: Vec<String>| {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(BIN)
                .arg("--data-dir")
                .arg(&data)
                .args(args)
                .output()
                .expect("runs")
        })
    };
    let args = |version: &str, source: &str| -> Vec<String> {
        [
            "model",
            "publish",
            TINY_MODEL_ID,
            "--version",
            version,
            "--file",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            file.display().to_string(),
            "--source".into(),
            source.into(),
            "--rpc".into(),
            p_url.clone(),
        ])
        .collect()
    };
    let out = run(args("2", "https://models.example.org/tiny-v2.gguf"))
        .await
        .expect("joins");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{} (an `unrecognized subcommand` means {BIN} was overwritten by a build of \
         another checkout sharing CARGO_TARGET_DIR)",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("published tiny v2"), "{stdout}");
    assert!(stdout.contains(&sha), "{stdout}");
    let listed = result(&p, "mycel_manifests", json!([])).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["publisher"], did.to_string());
    assert_eq!(listed[0]["sha256"], sha);
    assert_eq!(listed[0]["layers"], tiny::TINY_LAYERS);
    assert_eq!(listed[0]["file"], "tiny-v2.gguf");
    // An older version than the one held is refused, and the command says so.
    let out = run(args("1", "https://models.example.org/tiny-v1.gguf"))
        .await
        .expect("joins");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("newer version"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.shutdown().await;
}
