//! `mycel-node bench p2p`: what serving a chat from another node over libp2p costs, on loopback.
//!
//! One process runs a provider (the model, response cache off) and a forwarder bootstrapped to it.
//! Round trip: `--rtt-samples` requests on the request-response protocol `/mycel/infer/1.0.0` that
//! the provider answers at once (a model it does not serve), p50/p99. Chat: the same prompt and seed
//! `--runs` times, interleaved, answered locally by the provider and remotely through the forwarder
//! (over `/mycel/infer-stream/1.0.0`): medians of time to first token and tokens/s, the time the remote
//! path adds and its throughput ratio (goals: ≤ 5 ms and ≥ 0.95, issue #5).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use mycel_identity::Keypair;
use mycel_node::config::{self, Config, TINY_MODEL_ID};
use mycel_node::wire::InferResponse;
use mycel_node::{RunningNode, StartOptions, models};

use super::rpc::{Sample, job, median, ms, percentile, routed};

/// Options of `bench p2p`.
#[derive(Args, Debug)]
pub struct P2pArgs {
    /// Model the provider serves: `tiny` (built in) or a registry id (pulled into the data dir).
    #[arg(long, value_name = "ID", default_value = TINY_MODEL_ID)]
    model: String,
    /// Tokens generated per chat.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    tokens: u32,
    /// Chats per path (medians are reported).
    #[arg(long, value_name = "R", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Request-response round trips measured.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rtt_samples: u32,
    /// Compute threads of the model (default: $RAYON_NUM_THREADS, else all cores).
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

/// Runs `bench p2p`.
pub fn run(data_dir: &Path, args: &P2pArgs, threads: usize) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(bench(data_dir, args, threads))
}

async fn start(
    models: std::collections::BTreeMap<String, Arc<mycel_models::ChatModel>>,
    bootstrap: Vec<String>,
) -> Result<RunningNode> {
    let mut cfg = Config::loopback(bootstrap);
    // Every chat must run the model.
    cfg.response_cache_entries = 0;
    Ok(RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: Keypair::generate(),
        config: cfg,
        models,
        info_file: None,
        ledger: None,
    })
    .await?)
}

async fn bench(data_dir: &Path, args: &P2pArgs, threads: usize) -> Result<()> {
    let cache = config::models_dir(data_dir);
    let id = args.model.clone();
    let model = tokio::task::spawn_blocking(move || models::load(&id, &cache, |_| {}))
        .await
        .context("model loading task")?
        .with_context(|| format!("loading {}", args.model))?;
    let provider = start([(args.model.clone(), Arc::new(model))].into(), Vec::new()).await?;
    let boot = provider
        .node
        .listen_addrs()
        .first()
        .map(|a| a.to_string())
        .context("the provider has no listen address")?;
    let forwarder = start(Default::default(), vec![boot]).await?;
    let result = measure(&provider, &forwarder, args, threads).await;
    forwarder.shutdown().await;
    provider.shutdown().await;
    result
}

async fn measure(
    provider: &RunningNode,
    forwarder: &RunningNode,
    args: &P2pArgs,
    threads: usize,
) -> Result<()> {
    // The forwarder knows the provider's model once a heartbeat arrived.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !forwarder
        .node
        .models()
        .await?
        .iter()
        .any(|m| m.id == args.model)
    {
        if Instant::now() > deadline {
            bail!("the forwarder never heard the provider's heartbeat");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "model {} ({threads} compute thread(s)), {} token(s) per chat, {} run(s) per path, loopback, \
         build: {}",
        args.model,
        args.tokens,
        args.runs,
        if cfg!(debug_assertions) {
            "debug (dependencies at opt-level 3)"
        } else {
            "release"
        }
    );

    // Round trips: a job for a model the provider does not serve is refused at once.
    let peer = provider.node.peer_id();
    let probe = job("not-served-here", "ping", 1, 1)?;
    let mut rtts = Vec::with_capacity(args.rtt_samples as usize);
    for _ in 0..args.rtt_samples {
        let t0 = Instant::now();
        match forwarder.node.network().infer(peer, probe.clone()).await? {
            Ok(InferResponse::Error { .. }) => rtts.push(ms(t0.elapsed())),
            Ok(InferResponse::Answer(_)) => {
                bail!("the provider answered a model it does not serve")
            }
            Err(e) => bail!("request-response failed: {e}"),
        }
    }
    rtts.sort_by(f64::total_cmp);
    println!(
        "request-response round trip ({} samples): p50 {:.3} ms, p99 {:.3} ms",
        rtts.len(),
        percentile(&rtts, 0.5),
        percentile(&rtts, 0.99)
    );

    // Chats, interleaved so both paths see the same machine load.
    let prompt = "Tell me something about the sea.";
    let mut local: Vec<Sample> = Vec::new();
    let mut remote: Vec<Sample> = Vec::new();
    for r in 0..args.runs {
        let seed = 1000 + u64::from(r);
        let l = routed(&provider.node, job(&args.model, prompt, seed, args.tokens)?).await?;
        let f = routed(
            &forwarder.node,
            job(&args.model, prompt, seed, args.tokens)?,
        )
        .await?;
        if l.text != f.text {
            bail!("the remote answer differs from the local one for seed {seed}");
        }
        local.push(l);
        remote.push(f);
    }
    let ttft = |v: &[Sample]| median(v.iter().map(|s| ms(s.ttft)));
    let tps = |v: &[Sample]| median(v.iter().map(Sample::tok_s));
    let (lt, rt) = (ttft(&local), ttft(&remote));
    let (ls, rs) = (tps(&local), tps(&remote));
    println!("local  (provider answers itself):    TTFT {lt:.2} ms, {ls:.1} tok/s");
    println!("remote (forwarder → provider):       TTFT {rt:.2} ms, {rs:.1} tok/s");
    let added = rt - lt;
    let ratio = rs / ls.max(1e-9);
    println!(
        "remote adds {added:.2} ms to TTFT (goal ≤ 5 ms: {}), throughput ratio {ratio:.3} (goal ≥ 0.95: {})",
        if added <= 5.0 { "met" } else { "missed" },
        if ratio >= 0.95 { "met" } else { "missed" }
    );
    Ok(())
}
