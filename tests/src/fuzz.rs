//! Robustness fuzzing: for a bounded time, seeded attackers send random and mutated messages on
//! every protocol a node speaks — libp2p streams ([`streams`]), typed request-response
//! ([`requests`]), gossip ([`gossip`]), JSON-RPC, OpenAI routes and WebSocket subscriptions
//! ([`http`]) — while the run checks that the nodes never crash, leak or corrupt their store.
//!
//! The net: three [`TestNet`] nodes serving `tiny` with a real ledger (redb files in temp dirs,
//! one genesis, a wallet sending credits the whole time), node 0 also serving layers
//! `[0, split)` of `tiny` to pipelines, and a *shard node* serving `[split, n)` (and the expert
//! router, when its embedding model is cached, so the centroid topic has a subscriber). Two
//! attacker nodes: one publishes gossip and sends typed requests, taking a fresh identity every
//! `rotate_every` (gossipsub graylists a peer after a few invalid messages — the defence working —
//! and a graylisted peer's messages would no longer reach the validators); the other opens raw
//! streams and stalls them. The attacks start from valid messages ([`seeds`]) and mutate them
//! ([`mutate`]), so most get past the first parser.
//!
//! Checked during and after ([`watch`]): every node answers a real chat over HTTP, its network
//! actor and its ledger at every probe; resident memory after warm-up stays under a generous
//! limit; no thread panics; when the attack stops, every node holds one ledger state with every
//! confirmed wallet block, and still does after each node stopped and reopened its `ledger.redb`.
//! Rates are bounded ([`FuzzConfig`]): the run measures robustness, not a flood of two cores.

mod gossip;
mod http;
mod mutate;
mod report;
mod requests;
mod seeds;
mod streams;
mod tally;
mod watch;

pub use report::{FuzzReport, Goals, LedgerFigures, Reopened, StallFigures};
pub use tally::{Counts, Outcome, Row};

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use mycel_identity::{Did, Keypair};
use mycel_ledger::{AccountId, Credits};
use mycel_models::registry::DEFAULT_EMBEDDING_MODEL;
use mycel_models::tiny::TINY_LAYERS;
use mycel_models::{StageInput, StageOutput, WireDType, hidden_to_wire};
use mycel_node::config::{Config, RouterConfig, TINY_MODEL_ID};
use mycel_node::network::NetworkHandle;
use mycel_node::{RunningNode, StartOptions, models};
use serde::Serialize;
use tokio::sync::{RwLock, watch as wch};
use tokio::task::JoinSet;

use crate::client::Api;
use crate::error::{Error, Result};
use crate::ledger::{self, ConfirmedSeen, MAX_SENDS, SimWallet, TrafficConfig};
use crate::report::secs;
use crate::rng::SimRng;
use crate::stats::Percentiles;
use crate::testnet::{LedgerSetup, NetOptions, TestNet};

use report::{GossipVerdicts, ProbeFigures, slope};
use seeds::SeedContext;
use streams::{Raw, RawAttack, StallKind, Target};
use tally::Tally;
use watch::{ProbeRecord, Probed, RssSample};

/// How long the net may take to come up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an attacker may take to connect to every target.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// In-flight attacks get this long to finish once the attack stops; the rest are dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(12);
/// Blocking threads of a side node's runtime.
const SIDE_BLOCKING_THREADS: usize = 8;
/// Most memory samples kept.
const MAX_RSS_SAMPLES: usize = 20_000;
/// Most probe records kept.
const MAX_PROBES: usize = 20_000;
/// Prompts whose real hidden states the pipeline seeds carry.
const HIDDEN_PROMPTS: [&[u32]; 3] = [&[1, 2, 3], &[7], &[5, 9, 11, 13, 17]];

/// One attacker of a run (all run by default; a subset helps to find which one a leak follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Attacker {
    /// Raw libp2p streams on every protocol.
    Streams,
    /// Stalled libp2p streams.
    Stalls,
    /// Gossip and typed requests, with identity rotation.
    Peer,
    /// JSON-RPC, OpenAI routes, WebSocket, HTTP transport abuse.
    Http,
    /// Stalled HTTP connections.
    HttpStalls,
}

impl Attacker {
    /// Every attacker.
    pub const ALL: [Attacker; 5] = [
        Attacker::Streams,
        Attacker::Stalls,
        Attacker::Peer,
        Attacker::Http,
        Attacker::HttpStalls,
    ];

    /// Parses `streams`, `stalls`, `peer`, `http` or `http-stalls`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "streams" => Some(Attacker::Streams),
            "stalls" => Some(Attacker::Stalls),
            "peer" => Some(Attacker::Peer),
            "http" => Some(Attacker::Http),
            "http-stalls" => Some(Attacker::HttpStalls),
            _ => None,
        }
    }
}

/// Parameters of a fuzz run.
#[derive(Clone, Debug, Serialize)]
pub struct FuzzConfig {
    /// Attack time.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Seed of every choice of the attackers.
    pub seed: u64,
    /// Ledger nodes serving `tiny` (the shard node comes on top).
    pub nodes: usize,
    /// Raw-stream attacks per second.
    pub p2p_rate: f64,
    /// Gossip messages and typed requests per second.
    pub peer_rate: f64,
    /// HTTP attacks per second.
    pub http_rate: f64,
    /// Attacks in flight at once, per attacker.
    pub max_in_flight: usize,
    /// Stalled streams (and, separately, stalled HTTP connections) at once.
    pub max_stalls: usize,
    /// Longest a stall is held.
    #[serde(with = "secs")]
    pub stall_hold_max: Duration,
    /// Time between two liveness probes of every node.
    #[serde(with = "secs")]
    pub probe_interval: Duration,
    /// Deadline of one probe chat.
    #[serde(with = "secs")]
    pub probe_timeout: Duration,
    /// The gossip attacker takes a fresh identity this often.
    #[serde(with = "secs")]
    pub rotate_every: Duration,
    /// Time between two wallet sends.
    #[serde(with = "secs")]
    pub send_interval: Duration,
    /// How long the end checks wait for the ledgers to agree.
    #[serde(with = "secs")]
    pub settle: Duration,
    /// Goal: RSS after warm-up stays below the warm-up peak times `1 + rss_growth_ratio` …
    pub rss_growth_ratio: f64,
    /// … plus this many MiB.
    pub rss_slack_mib: f64,
    /// The attackers that run (default: all; with fewer the coverage goal is missed).
    pub attackers: Vec<Attacker>,
    /// Where the expert router's embedding model is cached (`None`, or not cached there: no
    /// router, and the centroid topic has no subscriber).
    pub models_dir: Option<PathBuf>,
}

impl FuzzConfig {
    /// The long form: 10 minutes.
    pub fn full() -> Self {
        Self {
            duration: Duration::from_secs(600),
            seed: 0x6675_7a7a,
            nodes: 3,
            p2p_rate: 20.0,
            peer_rate: 10.0,
            http_rate: 20.0,
            max_in_flight: 8,
            max_stalls: 6,
            // Beyond the nodes' own deadlines (10 s for a stream's first frame, 20 s for a sync
            // request, 30 s for an inference request), so the report shows which ones close.
            stall_hold_max: Duration::from_secs(40),
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(20),
            rotate_every: Duration::from_secs(15),
            send_interval: Duration::from_secs(2),
            settle: Duration::from_secs(20),
            rss_growth_ratio: 0.5,
            rss_slack_mib: 128.0,
            attackers: Attacker::ALL.to_vec(),
            models_dir: None,
        }
    }

    /// `--quick`, the test-suite form: 40 s of attack (about 70 s in all), stalls held 15 s.
    pub fn quick() -> Self {
        Self {
            duration: Duration::from_secs(40),
            stall_hold_max: Duration::from_secs(15),
            ..Self::full()
        }
    }

    /// Memory samples before this are warm-up (a quarter of the run, at least 10 s).
    pub fn warmup(&self) -> Duration {
        (self.duration / 4).max(Duration::from_secs(10))
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.to_string()));
        if self.duration.is_zero() || self.nodes == 0 {
            return bad("a fuzz run needs a duration and at least one node");
        }
        for r in [self.p2p_rate, self.peer_rate, self.http_rate] {
            if !(r.is_finite() && r > 0.0 && r <= 1000.0) {
                return bad("rates must be in (0, 1000] per second");
            }
        }
        if self.max_in_flight == 0 || self.max_stalls == 0 || self.stall_hold_max.is_zero() {
            return bad("at least one attack in flight and one stall, a non-zero hold");
        }
        if self.probe_interval.is_zero() || self.rotate_every.is_zero() {
            return bad("non-zero probe and rotation intervals");
        }
        let sends = self.duration.as_secs_f64() / self.send_interval.as_secs_f64().max(1e-3);
        if sends > MAX_SENDS as f64 {
            return bad("the run would send more than 1000 wallet blocks: raise the send interval");
        }
        Ok(())
    }
}

/// A node outside the TestNet (the shard node, the attackers) on a runtime of its own.
struct SideNode {
    node: Option<RunningNode>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for SideNode {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl SideNode {
    async fn start(name: &str, opts: StartOptions) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(SIDE_BLOCKING_THREADS)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| Error::io("side node runtime", e))?;
        let started = rt
            .spawn(RunningNode::start(opts))
            .await
            .map_err(|e| Error::Invalid(format!("{name} start panicked: {e}")));
        match started {
            Ok(Ok(node)) => Ok(Self {
                node: Some(node),
                rt: Some(rt),
            }),
            Ok(Err(source)) => {
                rt.shutdown_background();
                Err(Error::Invalid(format!("{name} did not start: {source}")))
            }
            Err(e) => {
                rt.shutdown_background();
                Err(e)
            }
        }
    }

    fn node(&self) -> Result<&RunningNode> {
        self.node
            .as_ref()
            .ok_or_else(|| Error::Invalid("side node stopped".into()))
    }

    async fn stop(mut self) {
        if let (Some(node), Some(rt)) = (self.node.take(), self.rt.as_ref()) {
            let _ = rt.spawn(node.stop()).await;
        }
    }
}

/// A node with no model and no ledger that dials `targets` (an attacker).
async fn start_attacker(name: &str, key: Keypair, targets: &[Target]) -> Result<SideNode> {
    let cfg = Config::loopback(targets.iter().map(|t| t.addr.to_string()).collect());
    let node = SideNode::start(
        name,
        StartOptions {
            key,
            config: cfg,
            models: BTreeMap::new(),
            info_file: None,
            ledger: None,
            shards: BTreeMap::new(),
            models_dir: None,
        },
    )
    .await?;
    let net = node.node()?.node.network().clone();
    let want: Vec<PeerId> = targets.iter().map(|t| t.peer).collect();
    let started = Instant::now();
    loop {
        let peers = net.peers().await.unwrap_or_default();
        if want.iter().all(|w| peers.iter().any(|p| p.peer_id == *w)) {
            return Ok(node);
        }
        if started.elapsed() > CONNECT_TIMEOUT {
            return Err(Error::Timeout {
                what: format!("{name} to connect to every node"),
                secs: CONNECT_TIMEOUT.as_secs_f64(),
            });
        }
        tokio::time::sleep(crate::testnet::POLL_INTERVAL).await;
    }
}

/// The gossip attacker's current identity.
#[derive(Clone)]
struct Identity {
    net: NetworkHandle,
    key: Keypair,
}

/// Spawns attacks while fewer than `max` are in flight.
struct Flights {
    set: JoinSet<()>,
    max: usize,
}

impl Flights {
    fn new(max: usize) -> Self {
        Self {
            set: JoinSet::new(),
            max,
        }
    }

    fn has_room(&mut self) -> bool {
        while self.set.try_join_next().is_some() {}
        self.set.len() < self.max
    }

    fn spawn(&mut self, f: impl Future<Output = ()> + Send + 'static) {
        self.set.spawn(f);
    }

    /// Waits up to [`DRAIN_TIMEOUT`] for the attacks in flight, then drops the rest.
    async fn drain(mut self) {
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        self.set.shutdown().await;
    }
}

/// A ticker at `rate` per second that ends when `stop` turns true.
struct Pace {
    tick: tokio::time::Interval,
    stop: wch::Receiver<bool>,
}

impl Pace {
    fn new(rate: f64, stop: wch::Receiver<bool>) -> Self {
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self { tick, stop }
    }

    /// Waits for the next tick; false once the run stops.
    async fn next(&mut self) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            _ = self.tick.tick() => !*self.stop.borrow(),
            _ = self.stop.changed() => false,
        }
    }
}

/// What the attack tasks share.
#[derive(Clone)]
struct Shared {
    tally: Arc<Tally>,
    ctx: Arc<SeedContext>,
    targets: Arc<Vec<Target>>,
}

/// The raw-stream attacker: every protocol on every target, reconnecting when gossipsub stops
/// taking its streams.
async fn raw_loop(
    cfg: FuzzConfig,
    sh: Shared,
    net: NetworkHandle,
    me: Vec<u8>,
    stop: wch::Receiver<bool>,
) {
    let mut rng = SimRng::new(cfg.seed ^ 0x7261_7700);
    let mut pace = Pace::new(cfg.p2p_rate, stop);
    let mut flights = Flights::new(cfg.max_in_flight);
    let mut meshsub: HashMap<PeerId, u32> = HashMap::new();
    while pace.next().await {
        if !flights.has_room() {
            continue;
        }
        let target = sh.targets[rng.below(sh.targets.len())].clone();
        let proto = Raw::ALL[rng.below(Raw::ALL.len())];
        let reconnect = proto == Raw::Gossipsub && {
            let n = meshsub.entry(target.peer).or_default();
            *n += 1;
            if *n > streams::MESHSUB_STREAMS_PER_CONNECTION {
                *n = 1;
                true
            } else {
                false
            }
        };
        let (sh, net, me, seed) = (sh.clone(), net.clone(), me.clone(), rng.next_u64());
        flights.spawn(async move {
            if reconnect {
                // A new connection gets a fresh gossipsub handler.
                let _ = net.block_peer(target.peer).await;
                let _ = net.unblock_peer(target.peer).await;
                let _ = net.dial(target.addr.clone()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let mut rng = SimRng::new(seed);
            let mut control = net.stream_control();
            let mut a = RawAttack {
                rng: &mut rng,
                control: &mut control,
                me,
                ctx: &sh.ctx,
                tally: &sh.tally,
            };
            streams::attack(&mut a, &target, proto).await;
        });
    }
    flights.drain().await;
}

/// Stalled streams: up to `max_stalls` at once, each held up to `stall_hold_max`.
async fn stall_loop(
    cfg: FuzzConfig,
    sh: Shared,
    net: NetworkHandle,
    figures: Arc<Mutex<StallFigures>>,
    stop: wch::Receiver<bool>,
) {
    let mut rng = SimRng::new(cfg.seed ^ 0x7374_616c);
    let rate = (cfg.max_stalls as f64 / 4.0).max(0.5);
    let mut pace = Pace::new(rate, stop);
    let mut flights = Flights::new(cfg.max_stalls);
    while pace.next().await {
        if !flights.has_room() {
            continue;
        }
        let target = sh.targets[rng.below(sh.targets.len())].clone();
        let proto = Raw::STALLABLE[rng.below(Raw::STALLABLE.len())];
        let kind = StallKind::ALL[rng.below(StallKind::ALL.len())];
        let hold = hold_time(&mut rng, cfg.stall_hold_max);
        let (sh, net, figures, seed) = (sh.clone(), net.clone(), figures.clone(), rng.next_u64());
        flights.spawn(async move {
            let mut rng = SimRng::new(seed);
            let mut control = net.stream_control();
            let mut a = RawAttack {
                rng: &mut rng,
                control: &mut control,
                me: Vec::new(),
                ctx: &sh.ctx,
                tally: &sh.tally,
            };
            let (o, open) = streams::stall(&mut a, &target, proto, kind, hold).await;
            count_stall(&figures, o, open);
        });
    }
    // Stalls end on their own within their hold; no need to wait for them.
    flights.set.shutdown().await;
}

/// Half the stalls are held the whole `max` (beyond the nodes' deadlines, so whether the node
/// closes them shows), the rest for a uniform time in [1 s, max].
fn hold_time(rng: &mut SimRng, max: Duration) -> Duration {
    if rng.below(2) == 0 {
        return max;
    }
    Duration::from_secs_f64(1.0 + rng.unit() * (max.as_secs_f64() - 1.0).max(0.0))
}

fn count_stall(figures: &Mutex<StallFigures>, o: Outcome, open: Duration) {
    if let Ok(mut f) = figures.lock() {
        f.started += 1;
        match o {
            Outcome::Closed => {
                f.closed_by_node += 1;
                f.longest_closed_s = f.longest_closed_s.max(open.as_secs_f64());
            }
            Outcome::Refused => f.answered += 1,
            Outcome::Timeout => f.held_to_the_end += 1,
            _ => {}
        }
    }
}

/// The gossip and typed-request attacker.
async fn peer_loop(
    cfg: FuzzConfig,
    sh: Shared,
    identity: Arc<Mutex<Identity>>,
    stop: wch::Receiver<bool>,
) {
    let mut rng = SimRng::new(cfg.seed ^ 0x7065_6572);
    let mut pace = Pace::new(cfg.peer_rate, stop);
    let mut flights = Flights::new(cfg.max_in_flight);
    let mut seq = 1_000_000u64;
    let mut last_valid: Option<Vec<u8>> = None;
    let mut current: Option<PeerId> = None;
    while pace.next().await {
        let Ok(id) = identity.lock().map(|i| i.clone()) else {
            break;
        };
        if current != Some(id.key.peer_id()) {
            current = Some(id.key.peer_id());
            last_valid = None;
        }
        if rng.below(10) < 6 {
            let topic = gossip::TOPICS[rng.below(gossip::TOPICS.len())];
            let mut p = gossip::Publisher {
                net: &id.net,
                key: &id.key,
                seq: &mut seq,
                last_valid: &mut last_valid,
            };
            gossip::attack(&mut rng, &mut p, &sh.ctx, &sh.tally, topic).await;
            continue;
        }
        if !flights.has_room() {
            continue;
        }
        let target = sh.targets[rng.below(sh.targets.len())].clone();
        let kind = requests::Typed::ALL[rng.below(requests::Typed::ALL.len())];
        let (sh, seed) = (sh.clone(), rng.next_u64());
        flights.spawn(async move {
            let mut rng = SimRng::new(seed);
            requests::attack(&mut rng, &id.net, &sh.ctx, &sh.tally, &target, kind).await;
        });
    }
    flights.drain().await;
}

/// Gives the gossip attacker a fresh identity every `rotate_every`.
async fn rotate_loop(
    cfg: FuzzConfig,
    targets: Arc<Vec<Target>>,
    mut current: SideNode,
    identity: Arc<Mutex<Identity>>,
    rotations: Arc<AtomicU64>,
    mut stop: wch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(cfg.rotate_every) => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        let key = Keypair::generate();
        let Ok(fresh) = start_attacker("gossip-attacker", key.clone(), &targets).await else {
            continue;
        };
        let Ok(net) = fresh.node().map(|n| n.node.network().clone()) else {
            continue;
        };
        if let Ok(mut id) = identity.lock() {
            *id = Identity { net, key };
        }
        rotations.fetch_add(1, Ordering::Relaxed);
        let old = std::mem::replace(&mut current, fresh);
        old.stop().await;
    }
    current.stop().await;
}

/// The HTTP attacker.
async fn http_loop(cfg: FuzzConfig, sh: Shared, key: Keypair, stop: wch::Receiver<bool>) {
    let mut rng = SimRng::new(cfg.seed ^ 0x6874_7470);
    let mut pace = Pace::new(cfg.http_rate, stop);
    let mut flights = Flights::new(cfg.max_in_flight);
    while pace.next().await {
        if !flights.has_room() {
            continue;
        }
        let addr = sh.targets[rng.below(sh.targets.len())].http;
        let (sh, key, seed) = (sh.clone(), key.clone(), rng.next_u64());
        flights.spawn(async move {
            let mut rng = SimRng::new(seed);
            let mut a = http::HttpAttack {
                rng: &mut rng,
                ctx: &sh.ctx,
                key: &key,
                tally: &sh.tally,
            };
            http::attack(&mut a, addr).await;
        });
    }
    flights.drain().await;
}

/// Stalled HTTP connections.
async fn http_stall_loop(
    cfg: FuzzConfig,
    sh: Shared,
    figures: Arc<Mutex<StallFigures>>,
    stop: wch::Receiver<bool>,
) {
    let mut rng = SimRng::new(cfg.seed ^ 0x736c_6f77);
    let rate = (cfg.max_stalls as f64 / 4.0).max(0.5);
    let mut pace = Pace::new(rate, stop);
    let mut flights = Flights::new(cfg.max_stalls);
    while pace.next().await {
        if !flights.has_room() {
            continue;
        }
        let addr = sh.targets[rng.below(sh.targets.len())].http;
        let kind = http::HttpStall::ALL[rng.below(http::HttpStall::ALL.len())];
        let hold = hold_time(&mut rng, cfg.stall_hold_max);
        let (sh, figures) = (sh.clone(), figures.clone());
        flights.spawn(async move {
            let (o, open) = http::stall(&sh.tally, addr, kind, hold).await;
            count_stall(&figures, o, open);
        });
    }
    flights.set.shutdown().await;
}

/// Probes every node every `probe_interval`, cycling through the HTTP chat interfaces.
async fn probe_loop(
    cfg: FuzzConfig,
    net: Arc<RwLock<TestNet>>,
    probed: Vec<Probed>,
    ctx: Arc<SeedContext>,
    t0: Instant,
    mut stop: wch::Receiver<bool>,
) -> Vec<ProbeRecord> {
    let apis = [Api::OpenAi, Api::Rpc, Api::OpenAiStream];
    let mut records = Vec::new();
    let mut round = 0usize;
    loop {
        for node in &probed {
            let api = apis[round % apis.len()];
            let r = watch::probe(&net, node, api, cfg.probe_timeout, round as u64, t0).await;
            if let Some(e) = r.epoch {
                ctx.epoch.fetch_max(e, Ordering::Relaxed);
            }
            if records.len() < MAX_PROBES {
                records.push(r);
            }
        }
        round += 1;
        tokio::select! {
            _ = tokio::time::sleep(cfg.probe_interval) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    records
}

/// Samples this process's RSS every second.
async fn rss_loop(tally: Arc<Tally>, t0: Instant, mut stop: wch::Receiver<bool>) -> Vec<RssSample> {
    let mut samples = Vec::new();
    loop {
        let sent = tally.rows().iter().map(|r| r.counts.sent).sum();
        if samples.len() < MAX_RSS_SAMPLES {
            samples.push(RssSample {
                t_s: t0.elapsed().as_secs_f64(),
                rss_mib: watch::rss_mib(),
                sent,
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return samples;
        }
    }
}

/// `mycel_gossip_messages_total` (accepted, rejected) of the node at `addr`.
async fn gossip_counters(addr: SocketAddr) -> (u64, u64) {
    let Ok(reply) = crate::client::get(addr, "/metrics").await else {
        return (0, 0);
    };
    let value = |outcome: &str| {
        let key = format!("mycel_gossip_messages_total{{outcome=\"{outcome}\"}}");
        reply
            .body
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    (value("accepted"), value("rejected"))
}

async fn gossip_totals(targets: &[Target]) -> (u64, u64) {
    let mut total = (0, 0);
    for t in targets {
        let (a, r) = gossip_counters(t.http).await;
        total.0 += a;
        total.1 += r;
    }
    total
}

/// Real hidden states of layers `[0, split)` of `tiny` for a few prompts.
fn hidden_seeds(split: u32) -> Result<Vec<(u32, Vec<u8>)>> {
    let scratch = std::env::temp_dir();
    let model = models::load_range(TINY_MODEL_ID, 0, split, &scratch)
        .map_err(|e| Error::Invalid(format!("loading tiny [0, {split}): {e}")))?;
    let mut out = Vec::new();
    for ids in HIDDEN_PROMPTS {
        let mut session = model.new_session();
        let states = model
            .forward_stage(&mut session, StageInput::Tokens(ids))
            .map_err(|e| Error::Invalid(format!("running tiny [0, {split}): {e}")))?;
        if let StageOutput::Hidden(t) = states {
            let h = hidden_to_wire(&t, 0)
                .map_err(|e| Error::Invalid(format!("hidden states of tiny: {e}")))?;
            out.push((ids.len() as u32, h.encode(WireDType::F32)));
        }
    }
    Ok(out)
}

/// Runs a fuzz campaign; `progress` receives one line per step.
pub async fn run(cfg: &FuzzConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<FuzzReport> {
    cfg.check()?;
    let panic_baseline = watch::count_panics();
    let setup_started = Instant::now();
    let net = TestNet::start(
        cfg.nodes,
        NetOptions {
            seed: cfg.seed,
            ledger: Some(LedgerSetup::default()),
            ..NetOptions::default()
        },
    )
    .await?;
    net.wait_connected(SETUP_TIMEOUT).await?;

    // Pipelines: node 0 serves the first half of tiny's layers, the shard node the rest.
    let split = TINY_LAYERS / 2;
    let first = tokio::task::spawn_blocking(move || {
        models::load_range(TINY_MODEL_ID, 0, split, &std::env::temp_dir())
    })
    .await
    .map_err(|e| Error::Invalid(format!("loading a shard panicked: {e}")))?
    .map_err(|source| Error::Node { index: 0, source })?;
    net.node(0)?
        .node
        .serve_shard(TINY_MODEL_ID, Arc::new(first))
        .await
        .map_err(|source| Error::Node { index: 0, source })?;
    let hidden = tokio::task::spawn_blocking(move || hidden_seeds(split))
        .await
        .map_err(|e| Error::Invalid(format!("computing hidden states panicked: {e}")))??;
    let second = tokio::task::spawn_blocking(move || {
        models::load_range(TINY_MODEL_ID, split, TINY_LAYERS, &std::env::temp_dir())
    })
    .await
    .map_err(|e| Error::Invalid(format!("loading a shard panicked: {e}")))?
    .map_err(|e| Error::Invalid(format!("loading the second shard: {e}")))?;
    let vocab = second.config().vocab_size as u32;

    let mut bootstrap = Vec::new();
    for i in net.live() {
        bootstrap.push(net.p2p_addr(i)?.to_string());
    }
    let mut shard_cfg = Config::loopback(bootstrap);
    let router_dir = cfg
        .models_dir
        .clone()
        .filter(|d| models::is_cached(DEFAULT_EMBEDDING_MODEL, d));
    if router_dir.is_some() {
        shard_cfg.router = Some(RouterConfig {
            update_interval_secs: 5,
            ..RouterConfig::default()
        });
    }
    let shard_key = Keypair::generate();
    let shard_node = SideNode::start(
        "shard-node",
        StartOptions {
            key: shard_key.clone(),
            config: shard_cfg,
            models: BTreeMap::new(),
            info_file: None,
            ledger: None,
            shards: [(TINY_MODEL_ID.to_string(), Arc::new(second))].into(),
            models_dir: router_dir.clone(),
        },
    )
    .await?;

    let mut targets = Vec::new();
    let mut probed = Vec::new();
    for i in net.live() {
        targets.push(Target {
            label: format!("node {i}"),
            peer: net.peer_id(i)?,
            addr: net.p2p_addr(i)?,
            http: net.http_addr(i)?,
            shard: (i == 0).then_some((0, split)),
        });
        probed.push(Probed {
            label: format!("node {i}"),
            index: Some(i),
            http: net.http_addr(i)?,
            net: None,
            ledger: true,
        });
    }
    let sn = shard_node.node()?;
    let shard_addr = sn
        .node
        .listen_addrs()
        .into_iter()
        .next()
        .ok_or_else(|| Error::Invalid("the shard node has no listen address".into()))?;
    targets.push(Target {
        label: "shard node".into(),
        peer: sn.node.peer_id(),
        addr: shard_addr,
        http: sn.http_addr,
        shard: Some((split, TINY_LAYERS)),
    });
    probed.push(Probed {
        label: "shard node".into(),
        index: None,
        http: sn.http_addr,
        net: Some(sn.node.network().clone()),
        ledger: false,
    });
    let targets = Arc::new(targets);

    let info = net.ledger_info(0).await?;
    let genesis = net
        .genesis()
        .cloned()
        .ok_or_else(|| Error::Invalid("the TestNet has no ledger".into()))?;
    let wallet_key = net
        .wallet_key()
        .cloned()
        .ok_or_else(|| Error::Invalid("the TestNet has no wallet".into()))?;
    let wallet_account = AccountId::from_public_key(&wallet_key.public());
    let mut dids: Vec<Did> = Vec::new();
    for i in net.live() {
        dids.push(*net.did(i)?);
    }
    let ctx = Arc::new(SeedContext {
        wallet: wallet_account,
        dids,
        epoch: AtomicU64::new(info.epoch),
        open_work_bits: info.open_work_bits,
        n_layers: TINY_LAYERS,
        split,
        vocab,
        hidden,
    });

    let raw_key = Keypair::generate();
    let raw_attacker = start_attacker("raw-attacker", raw_key.clone(), &targets).await?;
    let raw_net = raw_attacker.node()?.node.network().clone();
    let gossip_key = Keypair::generate();
    let gossip_attacker = start_attacker("gossip-attacker", gossip_key.clone(), &targets).await?;
    let identity = Arc::new(Mutex::new(Identity {
        net: gossip_attacker.node()?.node.network().clone(),
        key: gossip_key,
    }));
    let setup = setup_started.elapsed();
    progress(&format!(
        "{} nodes up ({} with a ledger, the shard node {} the expert router) in {:.1} s; \
         attacking for {:.0} s",
        targets.len(),
        cfg.nodes,
        if router_dir.is_some() {
            "with"
        } else {
            "without"
        },
        setup.as_secs_f64(),
        cfg.duration.as_secs_f64()
    ));

    let gossip_before = gossip_totals(&targets).await;
    let net = Arc::new(RwLock::new(net));
    let tally = Arc::new(Tally::default());
    let sh = Shared {
        tally: tally.clone(),
        ctx: ctx.clone(),
        targets: targets.clone(),
    };
    let (stop_tx, stop_rx) = wch::channel(false);
    let t0 = Instant::now();
    let wallet = SimWallet::new(wallet_key.clone(), &genesis)?;
    let traffic = tokio::spawn(ledger::send_loop(
        net.clone(),
        wallet,
        TrafficConfig {
            interval: cfg.send_interval,
            amount: Credits::whole(1),
            rebroadcast_after: Duration::from_secs(5),
            confirm_timeout: Duration::from_secs(20),
            max_sends: MAX_SENDS,
        },
        cfg.seed,
        t0,
        Arc::new(tokio::sync::Mutex::new(())),
        stop_rx.clone(),
    ));
    let p2p_stalls = Arc::new(Mutex::new(StallFigures::default()));
    let http_stalls = Arc::new(Mutex::new(StallFigures::default()));
    let rotations = Arc::new(AtomicU64::new(0));
    let me = raw_key.peer_id().to_bytes();
    let mut attackers = JoinSet::new();
    let runs = |a: Attacker| cfg.attackers.contains(&a);
    if runs(Attacker::Streams) {
        attackers.spawn(raw_loop(
            cfg.clone(),
            sh.clone(),
            raw_net.clone(),
            me,
            stop_rx.clone(),
        ));
    }
    if runs(Attacker::Stalls) {
        attackers.spawn(stall_loop(
            cfg.clone(),
            sh.clone(),
            raw_net.clone(),
            p2p_stalls.clone(),
            stop_rx.clone(),
        ));
    }
    if runs(Attacker::Peer) {
        attackers.spawn(peer_loop(
            cfg.clone(),
            sh.clone(),
            identity.clone(),
            stop_rx.clone(),
        ));
        attackers.spawn(rotate_loop(
            cfg.clone(),
            targets.clone(),
            gossip_attacker,
            identity.clone(),
            rotations.clone(),
            stop_rx.clone(),
        ));
    } else {
        gossip_attacker.stop().await;
    }
    if runs(Attacker::Http) {
        attackers.spawn(http_loop(
            cfg.clone(),
            sh.clone(),
            raw_key.clone(),
            stop_rx.clone(),
        ));
    }
    if runs(Attacker::HttpStalls) {
        attackers.spawn(http_stall_loop(
            cfg.clone(),
            sh.clone(),
            http_stalls.clone(),
            stop_rx.clone(),
        ));
    }
    let prober = tokio::spawn(probe_loop(
        cfg.clone(),
        net.clone(),
        probed.clone(),
        ctx.clone(),
        t0,
        stop_rx.clone(),
    ));
    let sampler = tokio::spawn(rss_loop(tally.clone(), t0, stop_rx.clone()));

    let mut next_note = t0 + Duration::from_secs(30).min(cfg.duration / 2);
    while t0.elapsed() < cfg.duration {
        tokio::time::sleep(Duration::from_secs(1).min(cfg.duration.saturating_sub(t0.elapsed())))
            .await;
        if Instant::now() >= next_note {
            next_note += Duration::from_secs(30);
            let sent: u64 = tally.rows().iter().map(|r| r.counts.sent).sum();
            progress(&format!(
                "{:.0} s: {sent} messages, RSS {:.0} MiB",
                t0.elapsed().as_secs_f64(),
                watch::rss_mib()
            ));
        }
    }
    let _ = stop_tx.send(true);
    let duration = t0.elapsed();
    progress("attack over; waiting for the attacks in flight");
    while let Some(r) = attackers.join_next().await {
        r.map_err(|e| Error::Invalid(format!("an attacker task failed: {e}")))?;
    }
    let mut probes = prober
        .await
        .map_err(|e| Error::Invalid(format!("the prober failed: {e}")))?;
    let rss = sampler
        .await
        .map_err(|e| Error::Invalid(format!("the sampler failed: {e}")))?;
    let sends = traffic
        .await
        .map_err(|e| Error::Invalid(format!("the wallet traffic failed: {e}")))?;

    // One more round once the attack is over: every node must still answer.
    for (k, node) in probed.iter().enumerate() {
        let r = watch::probe(
            &net,
            node,
            Api::OpenAi,
            cfg.probe_timeout,
            1000 + k as u64,
            t0,
        )
        .await;
        probes.push(r);
    }
    let gossip_after = gossip_totals(&targets).await;
    raw_attacker.stop().await;
    shard_node.stop().await;

    progress("checking the ledgers");
    let mut net = Arc::try_unwrap(net)
        .map_err(|_| Error::Invalid("the TestNet is still shared".into()))?
        .into_inner();
    let ledger = check_ledgers(cfg, &mut net, &wallet_account, &sends, t0, progress).await;
    net.shutdown().await;

    let (panics, panic_messages) = watch::panics_since(panic_baseline);
    Ok(build_report(Parts {
        cfg,
        targets: &targets,
        router: router_dir.is_some(),
        setup,
        duration,
        rotations: rotations.load(Ordering::Relaxed) as u32,
        tally: &tally,
        p2p_stalls: p2p_stalls.lock().map(|f| f.clone()).unwrap_or_default(),
        http_stalls: http_stalls.lock().map(|f| f.clone()).unwrap_or_default(),
        gossip: GossipVerdicts {
            accepted: gossip_after.0.saturating_sub(gossip_before.0),
            rejected: gossip_after.1.saturating_sub(gossip_before.1),
        },
        probes,
        rss,
        panics,
        panic_messages,
        ledger,
    }))
}

/// After the attack: the roots agree and hold every confirmed wallet block; then every node
/// stops, reopens its store, and the same holds again.
async fn check_ledgers(
    cfg: &FuzzConfig,
    net: &mut TestNet,
    wallet: &AccountId,
    sends: &[ledger::SendRecord],
    t0: Instant,
    progress: &(dyn Fn(&str) + Sync),
) -> LedgerFigures {
    let addrs = ledger::live_addrs(net);
    let mut seen = ConfirmedSeen::default();
    seen.harvest(&addrs, wallet, t0).await;
    let end = ledger::compare_roots(&addrs, cfg.settle, t0).await;
    let blocks = ledger::check_blocks(&addrs, wallet, &mut seen, cfg.settle, t0).await;
    let submitted: Vec<&ledger::SendRecord> = sends.iter().filter(|s| s.via.is_some()).collect();
    let confirmed = submitted
        .iter()
        .filter(|s| s.confirm_s.is_some() || seen.contains(&s.hash))
        .count();

    let mut reopened = Vec::new();
    for (i, _) in &addrs {
        match net.ledger_info(*i).await {
            Ok(info) => reopened.push(Reopened {
                node: *i,
                confirmed_before: info.confirmed,
                blocks_before: info.blocks,
                root_before: info.state_root,
                confirmed_after: None,
                root_after: None,
                error: None,
            }),
            Err(e) => reopened.push(Reopened {
                node: *i,
                confirmed_before: 0,
                blocks_before: 0,
                root_before: String::new(),
                confirmed_after: None,
                root_after: None,
                error: Some(format!("ledger_info before stopping: {e}")),
            }),
        }
    }
    progress("stopping every node and reopening its store");
    for (i, _) in &addrs {
        let _ = net.stop(*i).await;
    }
    for r in &mut reopened {
        if let Err(e) = net.restart(r.node).await {
            r.error.get_or_insert(format!("restart: {e}"));
        }
    }
    let _ = net.wait_connected(SETUP_TIMEOUT).await;
    for r in &mut reopened {
        match net.ledger_info(r.node).await {
            Ok(info) => {
                r.confirmed_after = Some(info.confirmed);
                r.root_after = Some(info.state_root);
            }
            Err(e) => {
                r.error
                    .get_or_insert(format!("ledger_info after restart: {e}"));
            }
        }
    }
    let addrs = ledger::live_addrs(net);
    let reopened_roots = ledger::compare_roots(&addrs, cfg.settle, t0).await;
    let reopened_blocks = ledger::check_blocks(&addrs, wallet, &mut seen, cfg.settle, t0).await;
    LedgerFigures {
        submitted: submitted.len(),
        confirmed,
        end,
        blocks,
        reopened,
        reopened_roots,
        reopened_blocks,
    }
}

/// What the report is built from.
struct Parts<'a> {
    cfg: &'a FuzzConfig,
    targets: &'a [Target],
    router: bool,
    setup: Duration,
    duration: Duration,
    rotations: u32,
    tally: &'a Tally,
    p2p_stalls: StallFigures,
    http_stalls: StallFigures,
    gossip: GossipVerdicts,
    probes: Vec<ProbeRecord>,
    rss: Vec<RssSample>,
    panics: u64,
    panic_messages: Vec<String>,
    ledger: LedgerFigures,
}

/// Families every run must have attacked.
const FAMILIES: [&str; 6] = ["p2p", "request", "gossip", "rpc", "http", "ws"];

fn build_report(p: Parts<'_>) -> FuzzReport {
    let rows = p.tally.rows();
    let mut families: BTreeMap<&'static str, Counts> = BTreeMap::new();
    let mut totals = Counts::default();
    for r in &rows {
        families.entry(r.family).or_default().merge(&r.counts);
        totals.merge(&r.counts);
    }
    let coverage = FAMILIES
        .iter()
        .all(|f| families.get(f).is_some_and(|c| c.sent > 0))
        && streams::Raw::ALL.iter().all(|proto| {
            rows.iter()
                .any(|r| r.family == "p2p" && r.name == proto.id())
        })
        && http::methods()
            .iter()
            .all(|m| rows.iter().any(|r| r.family == "rpc" && r.name == *m));
    let families: Vec<Row> = families
        .into_iter()
        .map(|(family, counts)| Row {
            family,
            name: "(family total)".into(),
            counts,
        })
        .collect();

    let warmup = p.cfg.warmup().as_secs_f64();
    let warm_peak = p
        .rss
        .iter()
        .filter(|r| r.t_s < warmup)
        .map(|r| r.rss_mib)
        .fold(0.0, f64::max);
    let limit = warm_peak * (1.0 + p.cfg.rss_growth_ratio) + p.cfg.rss_slack_mib;
    let after: Vec<(f64, f64)> = p
        .rss
        .iter()
        .filter(|r| r.t_s >= warmup)
        .map(|r| (r.t_s, r.rss_mib))
        .collect();
    let memory = warm_peak > 0.0 && after.iter().all(|(_, m)| *m <= limit);
    let rss_min = p
        .rss
        .iter()
        .map(|r| r.rss_mib)
        .fold(f64::INFINITY, f64::min);
    let rss_max = p.rss.iter().map(|r| r.rss_mib).fold(0.0, f64::max);

    let answered: Vec<Duration> = p
        .probes
        .iter()
        .filter(|r| r.answered)
        .map(|r| Duration::from_secs_f64(r.latency_s))
        .collect();
    let failures: Vec<ProbeRecord> = p.probes.iter().filter(|r| !r.ok()).cloned().collect();
    let probes = ProbeFigures {
        asked: p.probes.len(),
        ok: p.probes.len() - failures.len(),
        answered: answered.len(),
        latency: Percentiles::of(&answered),
        failures,
    };
    let nodes_alive_every_round = probes.failures.is_empty() && probes.asked > 0;

    let l = &p.ledger;
    let ledger_ok = l.end.equal
        && l.blocks.lost == 0
        && l.reopened_roots.equal
        && l.reopened_blocks.lost == 0
        && l.reopened_roots.nodes == p.cfg.nodes;
    let stores_reopen = l.reopened.len() == p.cfg.nodes
        && l.reopened.iter().all(|r| {
            r.error.is_none() && r.confirmed_after.is_some_and(|c| c >= r.confirmed_before)
        });
    let goals = Goals {
        alive: nodes_alive_every_round,
        memory,
        no_panics: p.panics == 0,
        ledger: ledger_ok,
        stores_reopen,
        sends_confirmed: l.submitted > 0 && l.confirmed == l.submitted,
        coverage,
    };
    FuzzReport {
        config: p.cfg.clone(),
        targets: p.targets.iter().map(|t| t.label.clone()).collect(),
        router: p.router,
        setup_s: p.setup.as_secs_f64(),
        duration_s: p.duration.as_secs_f64(),
        rotations: p.rotations,
        rows,
        families,
        totals,
        mutations: p.tally.mutations(),
        server_errors: p.tally.examples(),
        p2p_stalls: p.p2p_stalls,
        http_stalls: p.http_stalls,
        gossip_verdicts: p.gossip,
        probes,
        rss_min_mib: if rss_min.is_finite() { rss_min } else { 0.0 },
        rss_max_mib: rss_max,
        rss_warmup_peak_mib: warm_peak,
        rss_limit_mib: limit,
        rss_slope_mib_per_min: slope(&after) * 60.0,
        rss: p.rss,
        panics: p.panics,
        panic_messages: p.panic_messages,
        ledger: p.ledger,
        goals,
    }
}
