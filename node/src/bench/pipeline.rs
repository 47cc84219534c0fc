//! `mycel-node bench pipeline`: what serving a model as a sharded pipeline costs, and what a
//! failover adds, on loopback.
//!
//! One process runs a client node D holding the whole model (response cache off) and shard servers
//! bootstrapped to it on the thirds of the layers, `[0, L/3)`, `[L/3, 2L/3)`, `[2L/3, L)`.
//!
//! Throughput: the same prompt and seed `--runs` times, interleaved, answered by D alone (the plain
//! model id runs locally) and through the 3-hop pipeline (`<id>@sharded`); the texts must be equal.
//! Medians of time to first token and tokens/s, and the pipeline's throughput ratio (goal ≥ 0.60).
//!
//! Failover: a second server joins on the middle range. Each run asks for an undisturbed pipeline
//! answer (the baseline under the same machine load), then (a) kills ([`RunningNode::stop`],
//! crash-like) the middle server holding the session halfway through an answer: the client replays
//! the session's prefix on the other middle server and the answer goes on, same text. The stall is
//! the largest gap between two tokens minus the median gap of the same answer. (b) It kills the
//! middle server the client's planner would pick right before a request: while the dead server is
//! still in the client's view (until its connection is seen closed; up to three heartbeat
//! intervals if it stays open) the request first tries it and has to reroute. That window races
//! with the request, so requests that did not try the dead server are reported apart and the kill
//! is repeated (up to [`KILL_ATTEMPTS`] times per run). A fresh middle server replaces each killed
//! one, and the next run waits until the client's view holds exactly the live servers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use libp2p::PeerId;
use mycel_identity::Keypair;
use mycel_models::ChatModel;
use mycel_node::chat::ChatEvent;
use mycel_node::config::{self, Config, TINY_MODEL_ID};
use mycel_node::node::SHARDED_SUFFIX;
use mycel_node::pipeline::offers;
use mycel_node::route::plan;
use mycel_node::{RunningNode, StartOptions, models};
use tokio::sync::mpsc;
use tracing::instrument::WithSubscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt};
use tracing_subscriber::{Layer, Registry};

use super::rpc::{Sample, job, median, ms};

/// The question: open-ended, so a real model keeps generating.
const PROMPT: &str = "Tell me a long story about a lighthouse keeper.";
/// Throughput the pipeline should keep, as a share of one node's.
const GOAL_RATIO: f64 = 0.60;
/// Longest wait for the client's heartbeat view to show the expected shard servers.
const VIEW_TIMEOUT: Duration = Duration::from_secs(30);
/// Kills per run to get one request that still tries the dead server (see [`kill_then_ask`]).
const KILL_ATTEMPTS: usize = 4;
/// Longest wait for one complete answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// Options of `bench pipeline`.
#[derive(Args, Debug)]
pub struct PipelineArgs {
    /// Model to shard: `tiny` (built in) or a registry id (pulled into the data dir).
    #[arg(long, value_name = "ID", default_value = TINY_MODEL_ID)]
    model: String,
    /// Tokens generated per chat.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(2..=4096))]
    tokens: u32,
    /// Chats per path, and failovers of each kind (medians are reported).
    #[arg(long, value_name = "R", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Compute threads of the model (default: $RAYON_NUM_THREADS, else all cores).
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

/// Runs `bench pipeline`.
pub fn run(data_dir: &Path, args: &PipelineArgs, threads: usize) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(bench(data_dir, args, threads))
}

/// One answer with the arrival time (from the request) of every non-empty delta.
struct Trace {
    sample: Sample,
    arrivals: Vec<Duration>,
}

impl Trace {
    /// Gaps between consecutive deltas in ms (time to first token excluded).
    fn gaps(&self) -> Vec<f64> {
        self.arrivals
            .windows(2)
            .map(|w| ms(w[1].saturating_sub(w[0])))
            .collect()
    }

    fn median_gap(&self) -> f64 {
        median(self.gaps().into_iter())
    }

    fn max_gap(&self) -> f64 {
        self.gaps().into_iter().fold(0.0, f64::max)
    }

    /// How long the answer stood still beyond its usual pace: largest gap − median gap.
    fn stall(&self) -> f64 {
        self.max_gap() - self.median_gap()
    }
}

/// The client, its shard servers, and the middle layers kept for starting replacements.
struct Cluster {
    client: RunningNode,
    first: RunningNode,
    last: RunningNode,
    middles: Vec<RunningNode>,
    middle_model: Arc<ChatModel>,
    models_dir: std::path::PathBuf,
}

impl Cluster {
    async fn shutdown(self) {
        for n in self.middles {
            n.shutdown().await;
        }
        self.last.shutdown().await;
        self.first.shutdown().await;
        self.client.shutdown().await;
    }

    /// Starts one more server on the middle layers.
    async fn add_middle(&mut self, id: &str) -> Result<()> {
        let n = start(
            BTreeMap::new(),
            [(id.to_string(), self.middle_model.clone())].into(),
            Some(&self.client),
            &self.models_dir,
        )
        .await?;
        self.middles.push(n);
        Ok(())
    }

    fn middle_peers(&self) -> BTreeSet<PeerId> {
        self.middles.iter().map(|n| n.node.peer_id()).collect()
    }
}

async fn start(
    models: BTreeMap<String, Arc<ChatModel>>,
    shards: BTreeMap<String, Arc<ChatModel>>,
    bootstrap: Option<&RunningNode>,
    models_dir: &Path,
) -> Result<RunningNode> {
    let boot = match bootstrap {
        Some(n) => vec![
            n.node
                .listen_addrs()
                .first()
                .map(|a| a.to_string())
                .context("the client node has no listen address")?,
        ],
        None => Vec::new(),
    };
    let mut cfg = Config::loopback(boot);
    // Every chat must run the model.
    cfg.response_cache_entries = 0;
    Ok(RunningNode::start(StartOptions {
        shards,
        models_dir: Some(models_dir.to_path_buf()),
        key: Keypair::generate(),
        config: cfg,
        models,
        info_file: None,
        ledger: None,
    })
    .await?)
}

async fn load(id: &str, range: Option<(u32, u32)>, dir: &Path) -> Result<Arc<ChatModel>> {
    let (owned, dir) = (id.to_string(), dir.to_path_buf());
    let m = tokio::task::spawn_blocking(move || match range {
        Some((a, b)) => models::load_range(&owned, a, b, &dir),
        None => models::load(&owned, &dir, |_| {}),
    })
    .await
    .context("model loading task")?;
    let m = match range {
        Some((a, b)) => m.with_context(|| format!("loading layers [{a}, {b}) of {id}"))?,
        None => m.with_context(|| format!("loading {id}"))?,
    };
    Ok(Arc::new(m))
}

async fn bench(data_dir: &Path, args: &PipelineArgs, threads: usize) -> Result<()> {
    let dir = config::models_dir(data_dir);
    let id = args.model.as_str();
    let whole = load(id, None, &dir).await?;
    let n_layers = whole.config().n_layer as u32;
    if n_layers < 3 {
        bail!("{id} has {n_layers} layer(s): a 3-hop pipeline needs at least 3");
    }
    let thirds = [
        (0, n_layers / 3),
        (n_layers / 3, 2 * n_layers / 3),
        (2 * n_layers / 3, n_layers),
    ];
    let [first, middle, last] = thirds;
    let client = start(
        [(id.to_string(), whole)].into(),
        BTreeMap::new(),
        None,
        &dir,
    )
    .await?;
    let mut shard_nodes = Vec::new();
    for r in [first, last] {
        let m = load(id, Some(r), &dir).await?;
        shard_nodes.push(
            start(
                BTreeMap::new(),
                [(id.to_string(), m)].into(),
                Some(&client),
                &dir,
            )
            .await?,
        );
    }
    let (Some(last_node), Some(first_node)) = (shard_nodes.pop(), shard_nodes.pop()) else {
        bail!("the first and last shard servers did not start");
    };
    let mut cluster = Cluster {
        client,
        first: first_node,
        last: last_node,
        middles: Vec::new(),
        middle_model: load(id, Some(middle), &dir).await?,
        models_dir: dir,
    };
    let result = async {
        cluster.add_middle(id).await?;
        println!(
            "model {id} ({n_layers} layers, {threads} compute thread(s)), {} token(s) per chat, {} \
             run(s) per path, build: {}",
            args.tokens,
            args.runs,
            if cfg!(debug_assertions) {
                "debug (dependencies at opt-level 3)"
            } else {
                "release"
            }
        );
        println!(
            "note: every node runs in this one process on loopback and shares the same {} core(s), \
             so the pipeline's hops take turns on the CPU instead of running in parallel, and no \
             network latency beyond loopback is added",
            std::thread::available_parallelism().map_or(1, usize::from)
        );
        let before = CpuTicks::now();
        let texts = throughput(&cluster, args, thirds).await?;
        failover(&mut cluster, args, thirds, &texts).await?;
        if let (Some(before), Some(after)) = (before, CpuTicks::now()) {
            let (own, others) = after.shares_since(&before);
            println!(
                "CPU during the run: this process {:.0}%, other processes {:.0}% of the machine's \
                 cores",
                own * 100.0,
                others * 100.0
            );
        }
        Ok(())
    }
    .await;
    cluster.shutdown().await;
    result
}

/// Waits until the client's heartbeat view offers the middle third of the model from exactly
/// `peers` and the other thirds from their one server each.
async fn wait_for_view(
    cluster: &Cluster,
    id: &str,
    thirds: [(u32, u32); 3],
    peers: &BTreeSet<PeerId>,
) -> Result<()> {
    let deadline = Instant::now() + VIEW_TIMEOUT;
    loop {
        let seen = offers(cluster.client.node.network(), id).await;
        let on = |r: (u32, u32)| -> BTreeSet<PeerId> {
            seen.iter()
                .filter(|o| (o.from, o.to) == r)
                .map(|o| o.peer)
                .collect()
        };
        let (first, middle, last) = (thirds[0], thirds[1], thirds[2]);
        if on(first) == BTreeSet::from([cluster.first.node.peer_id()])
            && on(last) == BTreeSet::from([cluster.last.node.peer_id()])
            && on(middle) == *peers
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the client's heartbeat view did not settle within {VIEW_TIMEOUT:?}: {} middle \
                 offer(s), {} expected",
                on(middle).len(),
                peers.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks the client node, timing every delta; `on_delta(k)` runs after the k-th non-empty delta.
async fn traced(
    client: &RunningNode,
    model: &str,
    seed: u64,
    args: &PipelineArgs,
    mut on_delta: impl FnMut(usize),
) -> Result<(String, Trace)> {
    let t0 = Instant::now();
    let stream = client
        .node
        .chat(job(model, PROMPT, seed, args.tokens)?)
        .await?;
    let id = stream.id.clone();
    let trace = tokio::time::timeout(ANSWER_TIMEOUT, read(t0, stream.events, &mut on_delta))
        .await
        .with_context(|| format!("no complete answer within {ANSWER_TIMEOUT:?}"))??;
    Ok((id, trace))
}

async fn read(
    t0: Instant,
    mut events: mpsc::Receiver<ChatEvent>,
    on_delta: &mut impl FnMut(usize),
) -> Result<Trace> {
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(ev) = events.recv().await {
        match ev {
            ChatEvent::Delta(t) => {
                if !t.is_empty() {
                    arrivals.push(t0.elapsed());
                    on_delta(arrivals.len());
                }
                text.push_str(&t);
            }
            ChatEvent::Done(a) => {
                let total = t0.elapsed();
                return Ok(Trace {
                    sample: Sample {
                        ttft: arrivals.first().copied().unwrap_or(total),
                        total,
                        tokens: a.completion_tokens,
                        text,
                    },
                    arrivals,
                });
            }
            ChatEvent::Failed(e) => bail!("generation failed: {e}"),
        }
    }
    bail!("the answer ended without a final event")
}

/// Notes whether the client's pipeline code names a peer (field `peer`: a session it refused, a
/// replacement that failed) in its events, the only outside view of the peers a request tried.
struct NamedPeer {
    peer: String,
    seen: Arc<AtomicBool>,
}

impl NamedPeer {
    /// A subscriber for one request: `seen` turns true when the pipeline names `peer`.
    fn dispatch(peer: PeerId, seen: Arc<AtomicBool>) -> tracing::Dispatch {
        let layer = Self {
            peer: peer.to_string(),
            seen,
        }
        .with_filter(Targets::new().with_target("mycel_node::pipeline", tracing::Level::INFO));
        tracing::Dispatch::new(Registry::default().with(layer))
    }
}

impl<S: tracing::Subscriber> Layer<S> for NamedPeer {
    fn on_event(&self, event: &tracing::Event<'_>, _: LayerContext<'_, S>) {
        let mut field = PeerField {
            peer: &self.peer,
            found: false,
        };
        event.record(&mut field);
        if field.found {
            self.seen.store(true, Ordering::Relaxed);
        }
    }
}

struct PeerField<'a> {
    peer: &'a str,
    found: bool,
}

impl tracing::field::Visit for PeerField<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "peer" && format!("{value:?}") == self.peer {
            self.found = true;
        }
    }
}

/// CPU time used by the whole machine and by this process, in clock ticks (Linux `/proc`).
struct CpuTicks {
    busy: u64,
    total: u64,
    own: u64,
}

impl CpuTicks {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .map_while(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal …
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        let total: u64 = fields.iter().take(8).sum();
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
        let rest = own_stat.rsplit_once(')')?.1;
        let mut f = rest.split_whitespace().skip(11);
        let own = f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?;
        Some(Self {
            busy: total.saturating_sub(idle),
            total,
            own,
        })
    }

    /// Shares of all cores' time since `before` used by this process and by everything else.
    fn shares_since(&self, before: &Self) -> (f64, f64) {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let own = self.own.saturating_sub(before.own) as f64;
        let busy = self.busy.saturating_sub(before.busy) as f64;
        (own / total, (busy - own).max(0.0) / total)
    }
}

fn sharded(id: &str) -> String {
    format!("{id}{SHARDED_SUFFIX}")
}

fn seed(run: u32) -> u64 {
    1000 + u64::from(run)
}

fn layers((from, to): (u32, u32)) -> String {
    format!("[{from}, {to})")
}

/// Single node vs 3-hop pipeline; returns the answer text of each run (by seed), which every later
/// answer with the same seed must repeat.
async fn throughput(
    cluster: &Cluster,
    args: &PipelineArgs,
    thirds: [(u32, u32); 3],
) -> Result<Vec<String>> {
    let id = args.model.as_str();
    // Only one middle server yet: the route is the three thirds.
    wait_for_view(cluster, id, thirds, &cluster.middle_peers()).await?;
    println!(
        "route: client → {} → {} → {} (3 hops, one shard server each)",
        layers(thirds[0]),
        layers(thirds[1]),
        layers(thirds[2])
    );
    let mut single = Vec::new();
    let mut piped = Vec::new();
    for r in 0..args.runs {
        let (_, s) = traced(&cluster.client, id, seed(r), args, |_| {}).await?;
        let (job_id, p) = traced(&cluster.client, &sharded(id), seed(r), args, |_| {}).await?;
        if s.sample.text != p.sample.text {
            bail!(
                "the pipeline's answer differs from the whole model's for seed {}",
                seed(r)
            );
        }
        let hops = cluster
            .client
            .node
            .job_status(&job_id)
            .and_then(|s| s.pipeline)
            .map_or(0, |p| p.route.len());
        if hops != 3 {
            bail!("the pipeline answered over {hops} hop(s) instead of 3");
        }
        single.push(s);
        piped.push(p);
    }
    let ttft = |v: &[Trace]| median(v.iter().map(|t| ms(t.sample.ttft)));
    let tps = |v: &[Trace]| median(v.iter().map(|t| t.sample.tok_s()));
    let tokens = median(piped.iter().map(|t| f64::from(t.sample.tokens)));
    let (st, pt) = (ttft(&single), ttft(&piped));
    let (ss, ps) = (tps(&single), tps(&piped));
    println!(
        "single node (whole model):        TTFT {st:>8.2} ms, {ss:>7.1} tok/s (median of {}, {tokens} \
         token(s), same text on both paths)",
        args.runs
    );
    println!("pipeline (client → 3 shard hops): TTFT {pt:>8.2} ms, {ps:>7.1} tok/s");
    let ratio = ps / ss.max(1e-9);
    println!(
        "pipeline/single throughput ratio {ratio:.2} (goal ≥ {GOAL_RATIO:.2}: {})",
        if ratio >= GOAL_RATIO { "met" } else { "missed" }
    );
    println!("pipeline adds {:.2} ms to TTFT", pt - st);
    Ok(piped.into_iter().map(|t| t.sample.text).collect())
}

/// Kills middle servers mid-answer and right before requests, each run next to an undisturbed
/// pipeline answer (same seed) measured under the same machine load.
async fn failover(
    cluster: &mut Cluster,
    args: &PipelineArgs,
    thirds: [(u32, u32); 3],
    texts: &[String],
) -> Result<()> {
    let id = args.model.clone();
    let model = sharded(&id);
    cluster.add_middle(&id).await?;
    println!(
        "failover: a second server on {} joins; per run an undisturbed answer, one whose middle \
         server is killed mid-answer, and one started right after the middle server it would use \
         is killed (a fresh middle server replaces each killed one)",
        layers(thirds[1]),
    );
    let mut undisturbed: Vec<Trace> = Vec::new();
    let mut mid_answer: Vec<Trace> = Vec::new();
    let mut kill_points = Vec::new();
    let mut tried: Vec<Trace> = Vec::new();
    let mut untried: Vec<Trace> = Vec::new();
    let mut session_failovers = 0;
    for r in 0..args.runs {
        let expected = &texts[r as usize];
        wait_for_view(cluster, &id, thirds, &cluster.middle_peers()).await?;
        let (_, base) = traced(&cluster.client, &model, seed(r), args, |_| {}).await?;
        if base.sample.text != *expected {
            bail!("run {r}: the pipeline's answer over two middle servers differs");
        }

        // (a) The middle server of the session dies halfway through the answer.
        let kill_at = (base.arrivals.len() / 2).max(1);
        let mut killer = None;
        let middles = &mut cluster.middles;
        let on_delta = |k: usize| {
            if k != kill_at || killer.is_some() {
                return;
            }
            let holding: Vec<usize> = (0..middles.len())
                .filter(|&i| middles[i].node.shard_sessions() > 0)
                .collect();
            if let [i] = holding[..] {
                killer = Some(tokio::spawn(middles.remove(i).stop()));
            }
        };
        let (job_id, trace) = traced(&cluster.client, &model, seed(r), args, on_delta).await?;
        let Some(killer) = killer else {
            bail!(
                "run {r}: no single middle server held the session at token {kill_at} (answer of {} \
                 token(s))",
                trace.arrivals.len()
            );
        };
        killer.await.context("stopping the middle server")?;
        if trace.sample.text != *expected {
            bail!("run {r}: the answer after the failover differs from the undisturbed one");
        }
        let counted = failovers(cluster, &job_id);
        if counted != 1 {
            bail!("run {r}: the client counted {counted} failover(s) instead of 1");
        }
        kill_points.push(kill_at);
        mid_answer.push(trace);
        undisturbed.push(base);
        cluster.add_middle(&id).await?;

        // (b) The middle server the client would route over dies right before the request. The
        // client forgets a peer as soon as its connection closes, which races with the request:
        // when the request did not try the dead server, kill again (a bounded number of times).
        for _ in 0..KILL_ATTEMPTS {
            wait_for_view(cluster, &id, thirds, &cluster.middle_peers()).await?;
            let (job_id, trace, hit) = kill_then_ask(cluster, args, thirds, seed(r)).await?;
            if trace.sample.text != *expected {
                bail!("run {r}: the answer after a dead server differs from the undisturbed one");
            }
            session_failovers += failovers(cluster, &job_id);
            cluster.add_middle(&id).await?;
            if hit {
                tried.push(trace);
                break;
            }
            untried.push(trace);
        }
    }

    let med = |v: &[Trace], f: fn(&Trace) -> f64| median(v.iter().map(f));
    let ttft = |t: &Trace| ms(t.sample.ttft);
    let total = |t: &Trace| ms(t.sample.total);
    let base_ttft = med(&undisturbed, ttft);
    let base_total = med(&undisturbed, total);
    println!(
        "undisturbed pipeline:          TTFT {base_ttft:>8.2} ms, total {base_total:>8.1} ms, \
         inter-token gap median {:.2} ms, max {:.2} ms (max − median {:.2} ms)",
        med(&undisturbed, Trace::median_gap),
        med(&undisturbed, Trace::max_gap),
        med(&undisturbed, Trace::stall)
    );
    println!(
        "middle server dies mid-answer: TTFT {:>8.2} ms, total {:>8.1} ms, inter-token gap median \
         {:.2} ms, max {:.2} ms (killed after token {} of {}; 1 failover each, same text)",
        med(&mid_answer, ttft),
        med(&mid_answer, total),
        med(&mid_answer, Trace::median_gap),
        med(&mid_answer, Trace::max_gap),
        median(kill_points.iter().map(|&k| k as f64)),
        median(undisturbed.iter().map(|t| t.arrivals.len() as f64)),
    );
    let stalls: Vec<String> = mid_answer
        .iter()
        .map(|t| format!("{:.0}", t.stall()))
        .collect();
    println!(
        "failover adds {:.0} ms to the answer (max − median inter-token gap, median of {} run(s): \
         {} ms; total latency {:+.1} ms)",
        med(&mid_answer, Trace::stall),
        mid_answer.len(),
        stalls.join(", "),
        med(&mid_answer, total) - base_total
    );
    let per_run = |v: &[Trace]| -> String {
        v.iter()
            .map(|t| format!("{:.1}", ttft(t)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if tried.is_empty() {
        println!(
            "request right after its middle server was killed: no request tried the dead server in \
             {} attempt(s) (the client had always dropped it already)",
            untried.len()
        );
    } else {
        let kill_ttft = med(&tried, ttft);
        println!(
            "request right after its middle server was killed (tries it first): TTFT \
             {kill_ttft:.2} ms vs {base_ttft:.2} ms undisturbed ({:+.2} ms), total {:.1} ms \
             (median of {}: {} ms)",
            kill_ttft - base_ttft,
            med(&tried, total),
            tried.len(),
            per_run(&tried)
        );
    }
    println!(
        "  the dead server refuses the session and the client replans before the first step \
         ({session_failovers} mid-session failover(s) counted); {} more request(s) found it \
         already dropped from the client's view (it forgets a peer once its connection closes){}",
        untried.len(),
        if untried.is_empty() {
            String::new()
        } else {
            format!(": TTFT {} ms", per_run(&untried))
        }
    );
    Ok(())
}

/// Failovers the client counted for a job.
fn failovers(cluster: &Cluster, job_id: &str) -> u32 {
    cluster
        .client
        .node
        .job_status(job_id)
        .and_then(|s| s.pipeline)
        .map_or(0, |p| p.failovers)
}

/// Kills the middle server the client's planner picks, then asks at once; returns the job id, the
/// answer, and whether the request tried the dead server.
async fn kill_then_ask(
    cluster: &mut Cluster,
    args: &PipelineArgs,
    thirds: [(u32, u32); 3],
    seed: u64,
) -> Result<(String, Trace, bool)> {
    let seen = offers(cluster.client.node.network(), &args.model).await;
    let route = plan(&seen, 0, thirds[2].1, &[]).context("no route over the shard servers")?;
    let planned = route
        .iter()
        .find(|h| (h.from, h.to) == thirds[1])
        .map(|h| h.peer)
        .context("the planned route skips the middle range")?;
    let i = cluster
        .middles
        .iter()
        .position(|n| n.node.peer_id() == planned)
        .context("the planned middle server is not one of ours")?;
    cluster.middles.remove(i).stop().await;
    let hit = Arc::new(AtomicBool::new(false));
    let watch = NamedPeer::dispatch(planned, hit.clone());
    let (job_id, trace) = traced(&cluster.client, &sharded(&args.model), seed, args, |_| {})
        .with_subscriber(watch)
        .await?;
    Ok((job_id, trace, hit.load(Ordering::Relaxed)))
}
