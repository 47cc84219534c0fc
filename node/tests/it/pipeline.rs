//! Sharded pipelines between real nodes on loopback: shard servers holding layer ranges, a client
//! node relaying hidden states hop by hop, failover with prefix replay, verified spans. With the
//! tiny model always; with the real SmolLM2 when it is cached.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_identity::Keypair;
use mycel_models::registry::DEFAULT_CHAT_MODEL;
use mycel_models::{ChatMessage, ChatModel, SamplingParams};
use mycel_node::chat::{ChatAnswer, ChatEvent, ChatJob, collect};
use mycel_node::config::{Config, ServeConfig, TINY_MODEL_ID};
use mycel_node::pipeline::{Pipeline, audit_span};
use mycel_node::route::plan;
use mycel_node::{RunningNode, StartOptions, models};
use serde_json::json;

use crate::harness::{post, url};

fn models_dir() -> Option<PathBuf> {
    std::env::var_os("MYCEL_TEST_MODELS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mycel/dev-data/models"))
        })
}

async fn load(id: &str, range: Option<(u32, u32)>, dir: &Path) -> Arc<ChatModel> {
    let (id, dir) = (id.to_string(), dir.to_path_buf());
    let m = tokio::task::spawn_blocking(move || match range {
        Some((a, b)) => models::load_range(&id, a, b, &dir),
        None => models::load(&id, &dir, |_| {}),
    })
    .await
    .unwrap()
    .unwrap();
    Arc::new(m)
}

/// Starts a node serving `full` (whole models) and `shards` (layer ranges), bootstrapped to `to`.
async fn start(
    full: &[(&str, Arc<ChatModel>)],
    shards: &[(&str, Arc<ChatModel>)],
    to: Option<&RunningNode>,
    dir: &Path,
) -> RunningNode {
    let boot = to.map(|n| vec![n.node.listen_addrs()[0].to_string()]);
    start_with(
        full,
        shards,
        Config::loopback(boot.unwrap_or_default()),
        dir,
    )
    .await
}

async fn start_with(
    full: &[(&str, Arc<ChatModel>)],
    shards: &[(&str, Arc<ChatModel>)],
    config: Config,
    dir: &Path,
) -> RunningNode {
    let own = |l: &[(&str, Arc<ChatModel>)]| -> BTreeMap<String, Arc<ChatModel>> {
        l.iter()
            .map(|(id, m)| (id.to_string(), m.clone()))
            .collect()
    };
    RunningNode::start(StartOptions {
        shards: own(shards),
        models_dir: Some(dir.to_path_buf()),
        key: Keypair::generate(),
        config,
        models: own(full),
        info_file: None,
        ledger: None,
    })
    .await
    .unwrap()
}

/// Waits until `node` has heard heartbeats of shard servers covering every layer of `model`.
async fn wait_for_route(node: &RunningNode, model: &str, n_layers: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let offers = mycel_node::pipeline::offers(node.node.network(), model).await;
        if plan(&offers, 0, n_layers, &[]).is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no route over {model} within 20 s: {offers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn greedy_job(model: &str, prompt: &str, max_tokens: usize) -> ChatJob {
    ChatJob {
        model: model.into(),
        messages: vec![ChatMessage::user(prompt)],
        params: SamplingParams {
            temperature: 0.0,
            max_tokens,
            ..SamplingParams::default()
        },
        stop: Vec::new(),
        private: false,
        payment: None,
        seed_fixed: true,
        request_id: None,
        ensemble: None,
    }
}

async fn answer(node: &RunningNode, job: ChatJob) -> ChatAnswer {
    let stream = node.node.chat(job).await.unwrap();
    collect(stream.events).await.unwrap()
}

/// Ranges `[0, L/3)`, `[L/3, 2L/3)`, `[2L/3, L)`.
fn thirds(n: u32) -> [(u32, u32); 3] {
    [(0, n / 3), (n / 3, 2 * n / 3), (2 * n / 3, n)]
}

/// A node serving the whole model and three shard nodes; the pipeline answer must equal the whole
/// model's token for token, over OpenAI HTTP and through the node API.
async fn pipeline_equals_whole_model(id: &str, n_layers: u32, dir: &Path, prompts: &[&str]) {
    let whole = load(id, None, dir).await;
    let d = start(&[(id, whole)], &[], None, dir).await;
    let mut shard_nodes = Vec::new();
    for r in thirds(n_layers) {
        let m = load(id, Some(r), dir).await;
        shard_nodes.push(start(&[], &[(id, m)], Some(&d), dir).await);
    }
    wait_for_route(&d, id, n_layers).await;
    let sharded = format!("{id}{}", mycel_node::node::SHARDED_SUFFIX);
    for prompt in prompts {
        let local = answer(&d, greedy_job(id, prompt, 24)).await;
        let piped = answer(&d, greedy_job(&sharded, prompt, 24)).await;
        assert_eq!(piped.token_ids, local.token_ids, "prompt {prompt:?}");
        assert_eq!(piped.text, local.text);
        assert!(!local.token_ids.is_empty());
    }
    // Through the OpenAI API (a new prompt: repeats come from the response cache), and the job
    // status shows the 3-hop route.
    let fresh = format!("{} Answer briefly.", prompts[0]);
    let body = json!({"model": sharded, "messages": [{"role": "user", "content": fresh}],
        "temperature": 0, "max_tokens": 24});
    let reply = post(url(&d, "/v1/chat/completions"), body.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v = reply.json();
    let local = answer(&d, greedy_job(id, &fresh, 24)).await;
    assert_eq!(v["choices"][0]["message"]["content"], local.text);
    let status = post(
        url(&d, "/"),
        json!({"jsonrpc": "2.0", "id": 1, "method": "mycel_jobStatus", "params": [v["id"]]})
            .to_string(),
    )
    .await
    .json();
    let route = &status["result"]["pipeline"]["route"];
    assert_eq!(route.as_array().map(Vec::len), Some(3), "{status}");
    assert_eq!(route[1]["from"], n_layers / 3);
    assert!(status["result"]["pipeline"]["spans"].as_u64().unwrap() >= 3);
    assert!(crate::harness::metric(&d, "mycel_pipeline_route_hops_count").await >= 1.0);
    for n in shard_nodes {
        n.shutdown().await;
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_pipeline_of_three_shards_equals_the_whole_model() {
    let dir = Path::new("/nonexistent");
    pipeline_equals_whole_model(TINY_MODEL_ID, 6, dir, &["hello there", "the"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_pipeline_of_three_shards_equals_the_whole_model() {
    let Some(dir) = models_dir().filter(|d| models::is_cached(DEFAULT_CHAT_MODEL, d)) else {
        println!("SKIPPED: {DEFAULT_CHAT_MODEL} is not cached (set MYCEL_TEST_MODELS_DIR)");
        return;
    };
    pipeline_equals_whole_model(
        DEFAULT_CHAT_MODEL,
        30,
        &dir,
        &[
            "What is the capital of France?",
            "Write one sentence about rivers.",
        ],
    )
    .await;
}

/// Killing the middle server mid-answer: the answer completes and equals the undisturbed one; the
/// replacement's replayed outputs match the dead server's commitments.
async fn middle_server_dies_mid_answer(id: &str, n_layers: u32, dir: &Path, max_tokens: usize) {
    let whole = load(id, None, dir).await;
    let d = start(&[(id, whole)], &[], None, dir).await;
    let [first, middle, last] = thirds(n_layers);
    let mut nodes = Vec::new();
    for r in [first, middle, middle, last] {
        let m = load(id, Some(r), dir).await;
        let n = start(&[], &[(id, m)], Some(&d), dir).await;
        if r == middle {
            // Slow the middle servers so the answer is still running when one dies.
            n.node.set_generation_delay(Duration::from_millis(15));
        }
        nodes.push(n);
    }
    wait_for_route(&d, id, n_layers).await;
    let prompt = "Tell me a long story about a lighthouse keeper.";
    let undisturbed = answer(&d, greedy_job(id, prompt, max_tokens)).await;
    assert!(
        undisturbed.completion_tokens >= 10,
        "the answer is too short to interrupt: {undisturbed:?}"
    );
    let sharded = format!("{id}{}", mycel_node::node::SHARDED_SUFFIX);
    let mut stream = d
        .node
        .chat(greedy_job(&sharded, prompt, max_tokens))
        .await
        .unwrap();
    match stream.events.recv().await {
        Some(ChatEvent::Delta(_)) => {}
        other => panic!("expected a first delta, got {other:?}"),
    }
    let victim = nodes
        .iter()
        .position(|n| n.node.shard(id) == Some(middle) && n.node.shard_sessions() > 0)
        .expect("one middle server holds the session");
    nodes.remove(victim).stop().await;
    // `Done` repeats the whole text, so the collected answer is complete.
    let rest = collect(stream.events).await.unwrap();
    assert_eq!(
        rest.text, undisturbed.text,
        "the answer after failover differs"
    );
    assert_eq!(rest.token_ids, undisturbed.token_ids);
    let status = d.node.job_status(&stream.id).unwrap();
    let p = status.pipeline.expect("pipeline status");
    assert_eq!(p.failovers, 1, "{p:?}");
    assert_eq!(
        p.disputed, 0,
        "the replacement rebuilt a different state: {p:?}"
    );
    for n in nodes {
        n.shutdown().await;
    }
    d.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_pipeline_survives_its_middle_server_dying() {
    middle_server_dies_mid_answer(TINY_MODEL_ID, 6, Path::new("/nonexistent"), 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_pipeline_survives_its_middle_server_dying() {
    let Some(dir) = models_dir().filter(|d| models::is_cached(DEFAULT_CHAT_MODEL, d)) else {
        println!("SKIPPED: {DEFAULT_CHAT_MODEL} is not cached (set MYCEL_TEST_MODELS_DIR)");
        return;
    };
    middle_server_dies_mid_answer(DEFAULT_CHAT_MODEL, 30, &dir, 40).await;
}

/// Six nodes all start on the first window with automatic ranges; within a bounded time every
/// layer is served at least twice, and then nobody moves any more.
async fn rebalancing_covers_every_layer_twice(id: &str, n_layers: u32, span: u32, dir: &Path) {
    let hub = start(&[], &[], None, dir).await;
    let mut nodes: Vec<RunningNode> = Vec::new();
    for _ in 0..6 {
        let mut boot = vec![hub.node.listen_addrs()[0].to_string()];
        boot.extend(nodes.iter().map(|n| n.node.listen_addrs()[0].to_string()));
        let mut config = Config::loopback(boot);
        config.serve = ServeConfig {
            ranges: vec![format!("{id}:auto")],
            span,
            replication: 2,
            experts: Vec::new(),
        };
        let m = load(id, Some((0, span)), dir).await;
        nodes.push(start_with(&[], &[(id, m)], config, dir).await);
    }
    let started = Instant::now();
    let placements = |nodes: &[RunningNode]| -> Vec<(u32, u32)> {
        nodes.iter().filter_map(|n| n.node.shard(id)).collect()
    };
    let min_coverage = |ranges: &[(u32, u32)]| {
        (0..n_layers)
            .map(|l| ranges.iter().filter(|(a, b)| (*a..*b).contains(&l)).count())
            .min()
            .unwrap_or(0)
    };
    loop {
        let now = placements(&nodes);
        if min_coverage(&now) >= 2 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "coverage still below 2 after 60 s: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let converged = started.elapsed();
    let settled = placements(&nodes);
    // Damped: no further moves once every layer is covered twice.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        placements(&nodes),
        settled,
        "nodes kept moving after convergence"
    );
    println!("rebalanced {id} in {converged:?}: {settled:?}");
    let series = format!(
        "mycel_shard_layer_coverage{{model=\"{id}\",layer=\"{}\"}}",
        n_layers - 1
    );
    assert!(crate::harness::metric(&nodes[0], &series).await >= 2.0);
    // The swarm serves a pipeline afterwards.
    wait_for_route(&hub, id, n_layers).await;
    let sharded = format!("{id}{}", mycel_node::node::SHARDED_SUFFIX);
    let a = answer(&hub, greedy_job(&sharded, "hello", 8)).await;
    assert!(a.completion_tokens > 0);
    for n in nodes {
        n.shutdown().await;
    }
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_shards_rebalance_to_cover_every_layer_twice() {
    rebalancing_covers_every_layer_twice(TINY_MODEL_ID, 6, 2, Path::new("/nonexistent")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_shards_rebalance_to_cover_every_layer_twice() {
    let Some(dir) = models_dir().filter(|d| models::is_cached(DEFAULT_CHAT_MODEL, d)) else {
        println!("SKIPPED: {DEFAULT_CHAT_MODEL} is not cached (set MYCEL_TEST_MODELS_DIR)");
        return;
    };
    rebalancing_covers_every_layer_twice(DEFAULT_CHAT_MODEL, 30, 10, &dir).await;
}

/// Span commitments are checkable: an auditor re-executing each span from the tokens accepts an
/// honest route and rejects the span of a server that skews its activations (the first failing span
/// in layer order names the cheat); the client also checks every commitment's signature, session,
/// range and digests on arrival.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_spans_fail_their_audit() {
    let dir = Path::new("/nonexistent");
    let id = TINY_MODEL_ID;
    let client = start(&[], &[], None, dir).await;
    let mut nodes = Vec::new();
    for r in thirds(6) {
        let m = load(id, Some(r), dir).await;
        nodes.push(start(&[], &[(id, m)], Some(&client), dir).await);
    }
    wait_for_route(&client, id, 6).await;
    let whole = load(id, None, dir).await;
    let tokens = whole.encode_chat(&[ChatMessage::user("audit me")]).unwrap();
    let vocab = whole.config().vocab_size;
    let auditors: Vec<Arc<ChatModel>> =
        futures::future::join_all(thirds(6).map(|(_, to)| load(id, Some((0, to)), dir))).await;
    for forging in [false, true] {
        nodes[1].node.set_forge_outputs(forging);
        let net = client.node.network().clone();
        let mut p = Pipeline::open(net, id, 6, vocab).await.unwrap();
        p.feed(&tokens).await.unwrap();
        p.feed(&[tokens[0]]).await.unwrap();
        let verdicts: Vec<(u32, bool)> = p
            .spans()
            .iter()
            .map(|c| {
                let auditor = auditors
                    .iter()
                    .find(|m| m.layer_range().end() == c.to)
                    .unwrap();
                let upto = &tokens_with(&tokens, tokens[0])[..(c.position + c.seq_len) as usize];
                (c.from, audit_span(auditor, upto, c).unwrap())
            })
            .collect();
        assert_eq!(verdicts.len(), 6, "two steps over three hops");
        let first_failure = verdicts.iter().find(|(_, ok)| !ok).map(|(from, _)| *from);
        if forging {
            assert_eq!(
                first_failure,
                Some(2),
                "the middle span must fail first: {verdicts:?}"
            );
        } else {
            assert_eq!(
                first_failure, None,
                "an honest route must pass: {verdicts:?}"
            );
        }
        p.close().await;
    }
    for n in nodes {
        n.shutdown().await;
    }
    client.shutdown().await;
}

fn tokens_with(prompt: &[u32], next: u32) -> Vec<u32> {
    let mut v = prompt.to_vec();
    v.push(next);
    v
}

/// A server that skewed its activations and then died is exposed by the failover: the
/// replacement's replayed outputs contradict its signed commitments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_exposes_a_dead_forging_server() {
    let dir = Path::new("/nonexistent");
    let id = TINY_MODEL_ID;
    let client = start(&[], &[], None, dir).await;
    let [first, middle, last] = thirds(6);
    let mut nodes = Vec::new();
    for r in [first, middle, middle, last] {
        let m = load(id, Some(r), dir).await;
        let n = start(&[], &[(id, m)], Some(&client), dir).await;
        if r == middle {
            n.node.set_generation_delay(Duration::from_millis(15));
            n.node.set_forge_outputs(true);
        }
        nodes.push(n);
    }
    wait_for_route(&client, id, 6).await;
    let sharded = format!("{id}{}", mycel_node::node::SHARDED_SUFFIX);
    let mut stream = client
        .node
        .chat(greedy_job(&sharded, "tell me more", 40))
        .await
        .unwrap();
    assert!(matches!(
        stream.events.recv().await,
        Some(ChatEvent::Delta(_))
    ));
    let victim = nodes
        .iter()
        .position(|n| n.node.shard(id) == Some(middle) && n.node.shard_sessions() > 0)
        .unwrap();
    // The replacement is honest.
    for (i, n) in nodes.iter().enumerate() {
        if i != victim {
            n.node.set_forge_outputs(false);
        }
    }
    nodes.remove(victim).stop().await;
    let _ = collect(stream.events).await;
    let p = client
        .node
        .job_status(&stream.id)
        .unwrap()
        .pipeline
        .unwrap();
    assert_eq!(p.failovers, 1);
    assert!(
        p.disputed > 0,
        "the forged commitments went unnoticed: {p:?}"
    );
    assert!(crate::harness::metric(&client, "mycel_pipeline_span_disputes_total").await > 0.0);
    for n in nodes {
        n.shutdown().await;
    }
    client.shutdown().await;
}

/// The real binary: three `mycel-node up` processes serve thirds of `tiny` from `[serve] ranges` (the
/// first also serves the whole model), a fourth without a model answers `tiny@sharded` through them
/// over HTTP, token for token like the whole model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_processes_serve_a_pipeline_from_their_config() {
    use std::process::{Command, Stdio};
    const BIN: &str = env!("CARGO_BIN_EXE_mycel-node");
    struct Proc(std::process::Child, tempfile::TempDir);
    impl Drop for Proc {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let spawn = |config: &str, extra: &[&str]| -> Proc {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let child = Command::new(BIN)
            .args(["--data-dir", dir.path().to_str().unwrap(), "-q", "up"])
            .args([
                "--http",
                "127.0.0.1:0",
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--no-mdns",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Proc(child, dir)
    };
    let info = |p: &Proc| -> serde_json::Value {
        let path = p.1.path().join("node.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&path)
                && let Ok(v) = serde_json::from_str(&text)
            {
                return v;
            }
            assert!(Instant::now() < deadline, "node.json never appeared");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let config = |range: &str| {
        format!("heartbeat_interval_secs = 1\n[serve]\nranges = [\"tiny:{range}\"]\n")
    };
    let first = spawn(&config("0-2"), &["--model", "tiny"]);
    let first_info = info(&first);
    let boot = first_info["listen_addrs"][0].as_str().unwrap().to_string();
    let rest: Vec<Proc> = ["2-4", "4-6"]
        .iter()
        .map(|r| spawn(&config(r), &["--no-model", "--bootstrap", &boot]))
        .collect();
    let gateway = spawn(
        "heartbeat_interval_secs = 1\n",
        &["--no-model", "--bootstrap", &boot],
    );
    let http = info(&gateway)["http_url"].as_str().unwrap().to_string();
    for p in &rest {
        info(p);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let models = crate::harness::get(format!("{http}/v1/models"))
            .await
            .json();
        let ids: Vec<&str> = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        if ids.contains(&"tiny@sharded") && ids.contains(&"tiny") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway never saw the pipeline: {models}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ask = |model: &str| {
        json!({"model": model, "messages": [{"role": "user", "content": "hi there"}],
            "temperature": 0, "max_tokens": 12})
        .to_string()
    };
    let whole = post(format!("{http}/v1/chat/completions"), ask("tiny")).await;
    let piped = post(format!("{http}/v1/chat/completions"), ask("tiny@sharded")).await;
    assert_eq!(piped.status, 200, "{}", piped.body);
    assert_eq!(
        piped.json()["choices"][0]["message"]["content"],
        whole.json()["choices"][0]["message"]["content"]
    );
    drop((first, rest, gateway));
}
