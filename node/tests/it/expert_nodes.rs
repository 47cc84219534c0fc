//! Expert routing between real nodes on loopback, with the real embedding model: four honest nodes
//! learn the domain centroids of node/tests/data/domains.json from their own shares of the
//! training queries, exchanging signed centroid updates over gossip; a fifth node (20%) then
//! poisons every domain. Accuracy on the 120 held-out queries is read through `mycel_route` on
//! node 0 before and after. Then `experts` and ensemble chats go through the OpenAI API.
//!
//! The updates are plain clipped means (`noise = false`): with 10 examples per node and domain no
//! (ε, δ) ≤ (1, 10⁻³) leaves a usable centroid (a node needs ~400 at ε = 0.5). The accuracy under
//! production-level noise is measured by `experts.rs`.
//!
//! Skipped, with a message, when all-minilm-l6-v2 is not cached.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_identity::Keypair;
use mycel_models::EmbeddingModel;
use mycel_models::registry::DEFAULT_EMBEDDING_MODEL;
use mycel_node::config::{Config, ExpertConfig, RouterConfig, TINY_MODEL_ID};
use mycel_node::experts::{CENTROID_TOPIC, CentroidUpdate, clipped_mean};
use mycel_node::{RunningNode, StartOptions, models};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::harness::{post, url};

const TEST_PER_DOMAIN: usize = 24;
const HONEST: usize = 4;

#[derive(Deserialize)]
struct Dataset {
    domains: BTreeMap<String, Domain>,
}

#[derive(Deserialize)]
struct Domain {
    system_prompt: String,
    queries: Vec<String>,
}

fn models_dir() -> Option<PathBuf> {
    std::env::var_os("MYCEL_TEST_MODELS_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/mycel/dev-data/models"))
        })
}

async fn rpc(node: &RunningNode, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let v = post(url(node, "/"), body.to_string()).await.json();
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

/// Share of node/tests/data/domains.json: (training queries of node `i` of `HONEST`, test set).
fn split(data: &Dataset, i: usize) -> BTreeMap<String, Vec<String>> {
    data.domains
        .iter()
        .map(|(d, dom)| {
            let train = &dom.queries[..dom.queries.len() - TEST_PER_DOMAIN];
            let mine = train.iter().skip(i).step_by(HONEST).cloned().collect();
            (d.clone(), mine)
        })
        .collect()
}

async fn accuracy(node: &RunningNode, data: &Dataset) -> f64 {
    let (mut right, mut total) = (0, 0);
    for (domain, dom) in &data.domains {
        for q in &dom.queries[dom.queries.len() - TEST_PER_DOMAIN..] {
            let r = rpc(node, "mycel_route", json!([q])).await;
            total += 1;
            if r["domain"] == domain.as_str() {
                right += 1;
            }
        }
    }
    100.0 * f64::from(right) / f64::from(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experts_route_across_nodes_and_resist_poisoned_updates() {
    let Some(dir) = models_dir().filter(|d| models::is_cached(DEFAULT_EMBEDDING_MODEL, d)) else {
        println!("SKIPPED: {DEFAULT_EMBEDDING_MODEL} is not cached (set MYCEL_TEST_MODELS_DIR)");
        return;
    };
    let data: Dataset = serde_json::from_str(include_str!("../data/domains.json")).unwrap();
    let domains: Vec<String> = data.domains.keys().cloned().collect();
    assert!(domains.len() >= 4);
    let work = tempfile::tempdir().unwrap();
    let tiny = Arc::new(models::load(TINY_MODEL_ID, Path::new("/nonexistent"), |_| {}).unwrap());

    // Honest node i serves the expert of domain i (node 0 also the last domain) on `tiny`.
    let mut nodes: Vec<RunningNode> = Vec::new();
    for i in 0..HONEST {
        let examples = work.path().join(format!("examples-{i}.json"));
        std::fs::write(&examples, serde_json::to_vec(&split(&data, i)).unwrap()).unwrap();
        let mut cfg = Config::loopback(
            nodes
                .iter()
                .map(|n| n.node.listen_addrs()[0].to_string())
                .collect(),
        );
        let mut served = vec![i];
        if i == 0 {
            served.extend(HONEST..domains.len());
        }
        cfg.serve.experts = served
            .iter()
            .map(|&d| ExpertConfig {
                domain: domains[d].clone(),
                model: TINY_MODEL_ID.into(),
                system_prompt: data.domains[&domains[d]].system_prompt.clone(),
            })
            .collect();
        cfg.router = Some(RouterConfig {
            examples: Some(examples),
            noise: false,
            update_interval_secs: 1,
            ..RouterConfig::default()
        });
        nodes.push(start(cfg, &tiny, &dir, Keypair::generate()).await);
    }
    let attacker_key = Keypair::generate();
    let attacker = start(
        Config::loopback(vec![nodes[0].node.listen_addrs()[0].to_string()]),
        &tiny,
        &dir,
        attacker_key.clone(),
    )
    .await;

    // Node 0 learns every domain from the three other honest nodes.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = rpc(&nodes[0], "mycel_router", json!([])).await;
        let held: Vec<u64> = r["domains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["updates"].as_u64().unwrap())
            .collect();
        if held.len() == domains.len() && held.iter().all(|&n| n as usize >= HONEST - 1) {
            break;
        }
        assert!(Instant::now() < deadline, "updates never arrived: {r}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let clean = accuracy(&nodes[0], &data).await;
    assert!(clean >= 90.0, "routing accuracy {clean:.1}% < 90%");

    // The attacker sends, for every domain, the centroid of the next domain (a hijack), newer
    // than anything honest, until node 0 holds all of them.
    let embedder = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let v = models::pull(DEFAULT_EMBEDDING_MODEL, &dir, None, |_| {}).unwrap();
            EmbeddingModel::load(&v).unwrap()
        })
        .await
        .unwrap()
    };
    let centroids: Vec<Vec<f32>> = domains
        .iter()
        .map(|d| {
            let q = &data.domains[d].queries;
            let refs: Vec<&str> = q[..q.len() - TEST_PER_DOMAIN]
                .iter()
                .map(String::as_str)
                .collect();
            clipped_mean(&embedder.embed(&refs).unwrap(), 1.0).unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 1_000_000;
    loop {
        round += 1;
        for (i, d) in domains.iter().enumerate() {
            let poison = CentroidUpdate {
                domain: d.parse().unwrap(),
                round,
                vector: centroids[(i + 1) % domains.len()].clone(),
                examples: 16,
            };
            attacker
                .node
                .network()
                .publish(CENTROID_TOPIC, poison.sign(&attacker_key))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = rpc(&nodes[0], "mycel_router", json!([])).await;
        if r["domains"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["updates"].as_u64().unwrap() as usize >= HONEST)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the attacker's updates never arrived: {r}"
        );
    }
    let router = rpc(&nodes[0], "mycel_router", json!([])).await;
    let attacker_id = attacker.node.peer_id().to_base58();
    let rejected = router["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["peer"] == attacker_id.as_str())
        .count();
    let poisoned = accuracy(&nodes[0], &data).await;
    println!(
        "expert routing over {} held-out queries: clean {clean:.1}%, with 1 of 5 nodes poisoning \
         every domain {poisoned:.1}% ({rejected} of {} poisoned updates rejected)",
        TEST_PER_DOMAIN * domains.len(),
        domains.len()
    );
    assert!(
        (clean - poisoned).abs() < 2.0,
        "poisoning moved accuracy from {clean:.1}% to {poisoned:.1}%: {router}"
    );

    // `experts` through the OpenAI API: the cooking question goes to node 0's cooking expert.
    let ask = |body: Value| post(url(&nodes[1], "/v1/chat/completions"), body.to_string());
    let question = "How long should I knead bread dough by hand?";
    let v = ask(json!({"model": "experts", "max_tokens": 8,
        "messages": [{"role": "user", "content": question}]}))
    .await
    .json();
    let routing = &v["mycel"]["routing"]["expert"];
    assert_eq!(routing["domain"], "cooking", "{v}");
    assert_eq!(routing["served"], true);
    assert_eq!(v["model"], "expert:cooking");
    assert_eq!(v["mycel"]["served_by"], nodes[0].node.did().to_string());

    // An ensemble of three experts: three answers, the chosen one among them, agreement reported.
    let v = ask(
        json!({"model": "experts", "mode": "ensemble", "k": 3, "max_tokens": 8,
        "messages": [{"role": "user", "content": question}]}),
    )
    .await
    .json();
    let ensemble = &v["mycel"]["routing"]["ensemble"];
    let experts = ensemble["experts"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(experts.len(), 3, "{v}");
    assert_eq!(experts.iter().filter(|e| e["chosen"] == true).count(), 1);
    assert!(experts.iter().all(|e| e["agreed"].is_boolean()));
    assert!(v["choices"][0]["message"]["content"].is_string());

    attacker.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}

async fn start(
    config: Config,
    tiny: &Arc<mycel_models::ChatModel>,
    dir: &Path,
    key: Keypair,
) -> RunningNode {
    RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: Some(dir.to_path_buf()),
        key,
        config,
        models: BTreeMap::from([(TINY_MODEL_ID.to_string(), tiny.clone())]),
        info_file: None,
        ledger: None,
    })
    .await
    .unwrap()
}
