//! Churn simulation: a net of `tiny` replicas loses a share of them in waves (some killed, some
//! stopped cleanly) and gains as many new ones within a join window, while clients keep asking
//! questions through forwarder nodes.
//!
//! Measured:
//! - **answered share**: queries that got a complete answer / queries asked (goal ≥ 99%). A query
//!   goes to a forwarder ("client node") through one of the four user interfaces in turn and is
//!   not retried by the client: failover is the node's job.
//! - **coverage**: every 250 ms, how many live providers each live forwarder sees up (connected
//!   and with a current heartbeat). Coverage is *full* when every forwarder sees at least `R` of
//!   them, `R` being the replica target (default: all `nodes` replicas). With the default, every
//!   wave breaks coverage (30% of the replicas are gone) and it is full again only once as many
//!   replicas joined and every forwarder found and heard each of them: the measure covers the
//!   joins, discovery (bootstrap, DHT) and heartbeats. (A small `R` such as 3 never breaks in a
//!   30-node net, where every forwarder sees every replica: it would measure nothing.)
//! - **recovery** of a wave: from its first departure until coverage is full and stays full to the
//!   end of the wave's window (missing when it never came back). Goal ≤ 15 s, with the joins
//!   themselves spread over the first 10 s. Reported too: the part after the wave's last join.
//! - **ledger agreement**: every live node's ledger state root, compared at the end; not measured
//!   while TestNet nodes run without a ledger — see [`ledger_agreement`].
//!
//! The plan (victims, kill or stop, fresh node or restart, join times, query targets) comes from a
//! seed; the timing is real.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_node::Config;
use serde::Serialize;
use tokio::sync::{RwLock, watch};

use crate::client::{self, Api, Outcome};
use crate::error::{Error, Result};
use crate::plot::{Axis, Chart, Series};
use crate::report::verdict;
use crate::rng::SimRng;
use crate::stats::{BoundedLog, Percentiles};
use crate::testnet::{Coverage, NetOptions, Role, TestNet, Topology};

/// Most query records one worker keeps (a long run at full speed stays far below).
const MAX_QUERY_RECORDS_PER_WORKER: usize = 200_000;
/// Most coverage samples kept.
const MAX_COVERAGE_SAMPLES: usize = 100_000;
/// Error messages quoted in the report.
const MAX_QUOTED_ERRORS: usize = 20;
/// Width of the buckets of the success-rate curve.
const PLOT_BUCKET: Duration = Duration::from_secs(5);
/// How long the net may take to reach full coverage before the first wave.
const SETUP_TIMEOUT: Duration = Duration::from_secs(90);

/// Parameters of a churn run.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnConfig {
    /// Provider nodes (replicas of `tiny`) at the start, and kept at that size by the joins.
    pub nodes: usize,
    /// Forwarder nodes the queries enter through; they do not churn.
    pub clients: usize,
    /// Churn waves.
    pub waves: usize,
    /// Share of the live providers that leave in each wave.
    pub churn_fraction: f64,
    /// Share of the leavers that are killed (the rest stop cleanly).
    pub kill_share: f64,
    /// Share of the joiners that are departed nodes restarting (same key and data directory); the
    /// rest are fresh nodes.
    pub restart_share: f64,
    /// Joiners arrive at random times within this long after their wave's departures.
    #[serde(with = "secs")]
    pub join_within: Duration,
    /// Steady state before the first wave.
    #[serde(with = "secs")]
    pub first_wave_after: Duration,
    /// Time from one wave's departures to the next wave's.
    #[serde(with = "secs")]
    pub wave_interval: Duration,
    /// Replica target `R` of the coverage check (`None`: all `nodes`).
    pub replicas: Option<usize>,
    /// Concurrent query loops.
    pub query_workers: usize,
    /// Pause of a query loop between two queries.
    #[serde(with = "secs")]
    pub query_pause: Duration,
    /// Deadline of one query.
    #[serde(with = "secs")]
    pub query_timeout: Duration,
    /// Tokens per answer.
    pub max_tokens: u32,
    /// How often coverage is sampled.
    #[serde(with = "secs")]
    pub sample_interval: Duration,
    /// Peers a starting node dials (the DHT finds more).
    pub bootstrap_peers: usize,
    /// Heartbeat interval of every node, in seconds. 3 rather than the 1 of `Config::loopback`:
    /// with 30+ nodes in one process, 1 s heartbeats cost enough CPU on two cores to slow every
    /// answer tenfold (measured p50 0.2–1.4 s instead of 30–50 ms); the production default is 5.
    pub heartbeat_secs: u64,
    /// Seed of the plan.
    pub seed: u64,
    /// Goal: least answered share.
    pub goal_success_rate: f64,
    /// Goal: longest recovery.
    #[serde(with = "secs")]
    pub goal_recovery: Duration,
}

impl ChurnConfig {
    /// The long form: 30 replicas, 10 waves 30 s apart (about 6 minutes).
    pub fn full() -> Self {
        Self {
            nodes: 30,
            clients: 3,
            waves: 10,
            churn_fraction: 0.3,
            kill_share: 0.5,
            restart_share: 0.5,
            join_within: Duration::from_secs(10),
            first_wave_after: Duration::from_secs(10),
            wave_interval: Duration::from_secs(30),
            replicas: None,
            query_workers: 4,
            query_pause: Duration::from_millis(100),
            query_timeout: Duration::from_secs(30),
            max_tokens: 16,
            sample_interval: Duration::from_millis(250),
            bootstrap_peers: 4,
            heartbeat_secs: 3,
            seed: 0x6368_7572_6e00,
            goal_success_rate: 0.99,
            goal_recovery: Duration::from_secs(15),
        }
    }

    /// `--quick`: 30 replicas, 3 waves 20 s apart (under 2 minutes of simulated time).
    pub fn quick() -> Self {
        Self {
            waves: 3,
            wave_interval: Duration::from_secs(20),
            ..Self::full()
        }
    }

    /// The test-suite form: 12 replicas, 2 clients, 2 waves 18 s apart (about a minute).
    pub fn short() -> Self {
        Self {
            nodes: 12,
            clients: 2,
            waves: 2,
            wave_interval: Duration::from_secs(18),
            first_wave_after: Duration::from_secs(5),
            query_workers: 3,
            ..Self::full()
        }
    }

    /// The replica target `R`.
    pub fn target(&self) -> usize {
        self.replicas.unwrap_or(self.nodes)
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Invalid(m.to_string()));
        if self.nodes == 0 || self.clients == 0 {
            return bad("churn needs at least one provider and one client");
        }
        if !(0.0..=1.0).contains(&self.churn_fraction)
            || !(0.0..=1.0).contains(&self.kill_share)
            || !(0.0..=1.0).contains(&self.restart_share)
        {
            return bad("shares and fractions must be in [0, 1]");
        }
        if self.join_within >= self.wave_interval {
            return bad("the join window must end before the next wave");
        }
        if self.target() == 0 || self.target() > self.nodes {
            return bad("the replica target must be in 1..=nodes");
        }
        if self.query_workers == 0 || self.sample_interval.is_zero() || self.heartbeat_secs == 0 {
            return bad("at least one query worker, non-zero sample and heartbeat intervals");
        }
        Ok(())
    }
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One query as the client saw it.
#[derive(Clone, Debug)]
struct QueryRecord {
    /// Start, since the measurement began.
    at: Duration,
    api: Api,
    latency: Duration,
    outcome: Kind,
    error: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Answered,
    Busy,
    Failed,
}

/// A coverage sample.
#[derive(Clone, Debug, Serialize)]
pub struct CoverageSample {
    /// Seconds since the measurement began.
    pub t_s: f64,
    /// What the forwarders saw.
    #[serde(flatten)]
    pub coverage: Coverage,
}

/// What happened in one wave and how the net recovered.
#[derive(Clone, Debug, Serialize)]
pub struct WaveReport {
    /// Wave number, from 1.
    pub wave: usize,
    /// Departures began, seconds since the measurement began.
    pub t_s: f64,
    /// Killed nodes (indices in the TestNet).
    pub killed: Vec<usize>,
    /// Cleanly stopped nodes.
    pub stopped: Vec<usize>,
    /// Fresh nodes that joined.
    pub joined_fresh: Vec<usize>,
    /// Departed nodes that came back with the same key and data directory.
    pub restarted: Vec<usize>,
    /// The last joiner started, seconds after the departures.
    pub joins_done_after_s: f64,
    /// Whether coverage dropped below the target during the wave's window.
    pub coverage_broke: bool,
    /// Fewest live providers any forwarder saw up during the window.
    pub min_seen: usize,
    /// Time from the departures until coverage was full for good (within the window); `None`
    /// when it was not full at the window's end.
    pub recovery_s: Option<f64>,
    /// The part of `recovery_s` after the wave's last join (discovery and heartbeat latency).
    pub recovered_after_last_join_s: Option<f64>,
}

/// Query counts for one interface or for all.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QueryCounts {
    /// Queries asked.
    pub total: u64,
    /// Complete answers.
    pub answered: u64,
    /// Refused as busy.
    pub busy: u64,
    /// Failed otherwise.
    pub failed: u64,
}

impl QueryCounts {
    fn add(&mut self, k: Kind) {
        self.total += 1;
        match k {
            Kind::Answered => self.answered += 1,
            Kind::Busy => self.busy += 1,
            Kind::Failed => self.failed += 1,
        }
    }

    /// Answered / asked (1 when nothing was asked).
    pub fn success_rate(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.answered as f64 / self.total as f64
        }
    }
}

/// Ledger agreement among the live nodes after the run.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum LedgerAgreement {
    /// Not measured, and why.
    NotMeasured {
        /// Why.
        reason: String,
    },
    /// Measured: how many live nodes with a ledger agree on its state root.
    Measured {
        /// Live nodes that answered `ledger_info`.
        nodes: usize,
        /// Nodes in the largest group with the same state root.
        agreeing: usize,
    },
}

/// How long the ledger check waits for the live nodes' state roots to agree.
const LEDGER_SETTLE: Duration = Duration::from_secs(15);

/// Asks every live node for `ledger_info` and compares the state roots ("equal on nodes holding
/// the same blocks"), polling up to 15 s for them to agree.
///
/// HOOK(ledger): TestNet starts nodes without a ledger (`StartOptions::ledger` is `None`), so every
/// node answers "no ledger" and this reports [`LedgerAgreement::NotMeasured`]. Once the harness
/// gives nodes a shared genesis (and the churn moves some credits), the same code measures, and
/// [`ChurnReport::goals_met`] then requires every live node to agree.
pub async fn ledger_agreement(net: &TestNet) -> LedgerAgreement {
    let started = Instant::now();
    loop {
        let mut roots: Vec<String> = Vec::new();
        let mut first_error = None;
        for i in net.live() {
            match net.rpc(i, "ledger_info", serde_json::json!([])).await {
                Ok(info) => match info["state_root"].as_str() {
                    Some(root) => roots.push(root.to_string()),
                    None => first_error = first_error.or(Some(format!("node {i}: {info}"))),
                },
                // The message alone: the report should not carry this run's addresses.
                Err(Error::Protocol { message, .. }) => {
                    first_error = first_error.or(Some(format!("node {i}: {message}")))
                }
                Err(e) => first_error = first_error.or(Some(format!("node {i}: {e}"))),
            }
        }
        if roots.is_empty() {
            return LedgerAgreement::NotMeasured {
                reason: format!(
                    "no live node keeps a ledger (TestNet starts nodes without a genesis); {}",
                    first_error.unwrap_or_else(|| "no live node".into())
                ),
            };
        }
        let agreeing = roots
            .iter()
            .map(|r| roots.iter().filter(|x| *x == r).count())
            .max()
            .unwrap_or(0);
        if agreeing == roots.len() || started.elapsed() >= LEDGER_SETTLE {
            return LedgerAgreement::Measured {
                nodes: roots.len(),
                agreeing,
            };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The outcome of a churn run.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    /// The parameters.
    pub config: ChurnConfig,
    /// Time to start the net and reach full coverage, in seconds.
    pub setup_s: f64,
    /// Measured time, in seconds.
    pub duration_s: f64,
    /// Nodes ever started (the TestNet's size at the end).
    pub nodes_started: usize,
    /// All queries.
    pub queries: QueryCounts,
    /// Answered share.
    pub success_rate: f64,
    /// Per interface.
    pub by_api: Vec<(Api, QueryCounts)>,
    /// Latency of answered queries.
    pub latency: Percentiles,
    /// Per wave.
    pub waves: Vec<WaveReport>,
    /// Longest recovery (`None` when some wave did not recover).
    pub recovery_max_s: Option<f64>,
    /// Share of samples with full coverage.
    pub coverage_full_share: f64,
    /// Ledger agreement at the end.
    pub ledger: LedgerAgreement,
    /// Goal: answered share met.
    pub success_goal_met: bool,
    /// Goal: every wave recovered in time.
    pub recovery_goal_met: bool,
    /// Some failure messages (at most 20).
    pub errors: Vec<String>,
    /// Coverage over time.
    pub coverage: Vec<CoverageSample>,
    /// Answered share per 5 s bucket: (bucket start in s, share, queries).
    pub success_curve: Vec<(f64, f64, u64)>,
}

impl ChurnReport {
    /// Whether every goal was met (ledger agreement counts once it is measured).
    pub fn goals_met(&self) -> bool {
        let ledger_ok = match self.ledger {
            LedgerAgreement::NotMeasured { .. } => true,
            LedgerAgreement::Measured { nodes, agreeing } => agreeing == nodes,
        };
        self.success_goal_met && self.recovery_goal_met && ledger_ok
    }

    /// The figures in a few lines (for the terminal).
    pub fn summary(&self) -> String {
        let rec = self
            .recovery_max_s
            .map_or("not recovered".to_string(), |s| format!("{s:.1} s"));
        format!(
            "churn: {} replicas + {} clients, {} waves of {:.0}% ({} nodes started)\n\
             queries: {} asked, {} answered, {} busy, {} failed -> success {:.2}% (goal >= {:.0}%: {})\n\
             recovery: max {rec} (goal <= {:.0} s: {}); coverage full {:.1}% of the time\n\
             latency: p50 {:.0} ms, p99 {:.0} ms\n\
             ledger agreement: {}",
            self.config.nodes,
            self.config.clients,
            self.config.waves,
            self.config.churn_fraction * 100.0,
            self.nodes_started,
            self.queries.total,
            self.queries.answered,
            self.queries.busy,
            self.queries.failed,
            self.success_rate * 100.0,
            self.config.goal_success_rate * 100.0,
            verdict(self.success_goal_met),
            self.config.goal_recovery.as_secs_f64(),
            verdict(self.recovery_goal_met),
            self.coverage_full_share * 100.0,
            self.latency.p50_ms,
            self.latency.p99_ms,
            match &self.ledger {
                LedgerAgreement::NotMeasured { reason } => format!("not measured ({reason})"),
                LedgerAgreement::Measured { nodes, agreeing } => format!("{agreeing}/{nodes}"),
            }
        )
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        s.push_str("# Churn simulation\n\n");
        s.push_str(&format!(
            "{} `tiny` replicas and {} client (forwarder) nodes on loopback, one process. {} waves, \
             {:.0} s apart: {:.0}% of the live replicas leave ({:.0}% killed, the rest stopped \
             cleanly) and as many join within {:.0} s ({:.0}% restarts with the same key and data \
             directory, the rest fresh). {} query loops ask the clients through OpenAI JSON, \
             OpenAI SSE, JSON-RPC and JSON-RPC WebSocket in turn; seed {:#x}.\n\n",
            c.nodes,
            c.clients,
            c.waves,
            c.wave_interval.as_secs_f64(),
            c.churn_fraction * 100.0,
            c.kill_share * 100.0,
            c.join_within.as_secs_f64(),
            c.restart_share * 100.0,
            c.query_workers,
            c.seed
        ));
        s.push_str("| figure | value | goal |\n|---|---|---|\n");
        s.push_str(&format!(
            "| answered | {:.2}% ({}/{}; {} busy, {} failed) | ≥ {:.0}%: {} |\n",
            self.success_rate * 100.0,
            self.queries.answered,
            self.queries.total,
            self.queries.busy,
            self.queries.failed,
            c.goal_success_rate * 100.0,
            verdict(self.success_goal_met)
        ));
        s.push_str(&format!(
            "| recovery (max over waves) | {} | ≤ {:.0} s: {} |\n",
            self.recovery_max_s
                .map_or("not recovered".into(), |v| format!("{v:.1} s")),
            c.goal_recovery.as_secs_f64(),
            verdict(self.recovery_goal_met)
        ));
        s.push_str(&format!(
            "| coverage full (every client sees ≥ {} replicas) | {:.1}% of samples | |\n",
            c.target(),
            self.coverage_full_share * 100.0
        ));
        s.push_str(&format!(
            "| latency of answers | p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms | |\n",
            self.latency.p50_ms, self.latency.p90_ms, self.latency.p99_ms, self.latency.max_ms
        ));
        s.push_str(&format!(
            "| ledger agreement | {} | |\n",
            match &self.ledger {
                LedgerAgreement::NotMeasured { reason } => format!("not measured: {reason}"),
                LedgerAgreement::Measured { nodes, agreeing } => format!("{agreeing}/{nodes}"),
            }
        ));
        s.push_str(&format!(
            "| set-up / measured time | {:.1} s / {:.1} s ({} nodes started) | |\n\n",
            self.setup_s, self.duration_s, self.nodes_started
        ));
        s.push_str("| interface | asked | answered | busy | failed |\n|---|---|---|---|---|\n");
        for (api, q) in &self.by_api {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                api.name(),
                q.total,
                q.answered,
                q.busy,
                q.failed
            ));
        }
        s.push_str(
            "\n| wave | at (s) | killed | stopped | fresh | restarted | joins done (s) | \
             fewest seen | recovery (s) | after last join (s) |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for w in &self.waves {
            s.push_str(&format!(
                "| {} | {:.1} | {} | {} | {} | {} | {:.1} | {} | {} | {} |\n",
                w.wave,
                w.t_s,
                w.killed.len(),
                w.stopped.len(),
                w.joined_fresh.len(),
                w.restarted.len(),
                w.joins_done_after_s,
                w.min_seen,
                w.recovery_s
                    .map_or("not recovered".into(), |v| format!("{v:.1}")),
                w.recovered_after_last_join_s
                    .map_or("-".into(), |v| format!("{v:.1}"))
            ));
        }
        if !self.errors.is_empty() {
            s.push_str("\nSome failures:\n\n");
            for e in &self.errors {
                s.push_str(&format!("- `{}`\n", e.replace('`', "'")));
            }
        }
        s.push_str("\nPlot: `churn.svg` (answered share per 5 s, coverage over time).\n");
        s
    }

    /// Answered share and coverage over time, waves marked, spans without full coverage shaded.
    pub fn to_svg(&self) -> String {
        let max_seen = self
            .coverage
            .iter()
            .map(|c| c.coverage.live_providers)
            .max()
            .unwrap_or(1)
            .max(self.config.target());
        let mut spans = Vec::new();
        let mut open: Option<f64> = None;
        for c in &self.coverage {
            match (c.coverage.full, open) {
                (false, None) => open = Some(c.t_s),
                (true, Some(a)) => {
                    spans.push((a, c.t_s));
                    open = None;
                }
                _ => {}
            }
        }
        if let Some(a) = open {
            spans.push((a, self.duration_s));
        }
        Chart {
            title: format!(
                "Churn: {} replicas, waves: {}, {:.0}% leave per wave",
                self.config.nodes,
                self.config.waves,
                self.config.churn_fraction * 100.0
            ),
            x_label: "time (s)".into(),
            y_label: "%".into(),
            y2_label: "replicas".into(),
            x_max: self.duration_s,
            y_max: 100.0,
            // Headroom, so the target line does not run along the top edge.
            y2_max: max_seen as f64 * 1.2,
            series: vec![
                Series {
                    name: "answered % (5 s buckets)".into(),
                    color: "#1b9e77".into(),
                    dashed: false,
                    axis: Axis::Left,
                    points: self
                        .success_curve
                        .iter()
                        .map(|&(t, r, _)| (t + PLOT_BUCKET.as_secs_f64() / 2.0, r * 100.0))
                        .collect(),
                },
                Series {
                    name: "mean % of live replicas a client sees".into(),
                    color: "#7570b3".into(),
                    dashed: false,
                    axis: Axis::Left,
                    points: self
                        .coverage
                        .iter()
                        .map(|c| (c.t_s, c.coverage.mean_seen_fraction * 100.0))
                        .collect(),
                },
                Series {
                    name: "fewest replicas a client sees".into(),
                    color: "#d95f02".into(),
                    dashed: false,
                    axis: Axis::Right,
                    points: self
                        .coverage
                        .iter()
                        .map(|c| (c.t_s, c.coverage.min_seen as f64))
                        .collect(),
                },
                Series {
                    name: "live replicas".into(),
                    color: "#666666".into(),
                    dashed: true,
                    axis: Axis::Right,
                    points: self
                        .coverage
                        .iter()
                        .map(|c| (c.t_s, c.coverage.live_providers as f64))
                        .collect(),
                },
                Series {
                    name: format!("target R = {}", self.config.target()),
                    color: "#e7298a".into(),
                    dashed: true,
                    axis: Axis::Right,
                    points: vec![
                        (0.0, self.config.target() as f64),
                        (self.duration_s, self.config.target() as f64),
                    ],
                },
            ],
            markers: self
                .waves
                .iter()
                .map(|w| (w.t_s, format!("wave {}", w.wave)))
                .collect(),
            spans,
            span_label: "coverage below target".into(),
        }
        .to_svg()
    }
}

/// One planned join.
struct Join {
    after: Duration,
    restart: bool,
}

/// Runs a churn simulation; `progress` receives one line per step.
pub async fn run(cfg: &ChurnConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<ChurnReport> {
    cfg.check()?;
    let setup_started = Instant::now();
    let mut rng = SimRng::new(cfg.seed);
    let net = TestNet::start(
        cfg.nodes + cfg.clients,
        NetOptions {
            forwarders: cfg.clients,
            topology: Topology::Random {
                peers: cfg.bootstrap_peers,
            },
            seed: cfg.seed,
            config: Config {
                heartbeat_interval_secs: cfg.heartbeat_secs,
                ..Config::loopback(Vec::new())
            },
        },
    )
    .await?;
    progress(&format!(
        "started {} nodes in {:.1}s; waiting for every client to see {} replicas",
        net.len(),
        setup_started.elapsed().as_secs_f64(),
        cfg.target()
    ));
    net.wait_covered(cfg.target(), SETUP_TIMEOUT).await?;
    let setup = setup_started.elapsed();
    let clients: Vec<SocketAddr> = net
        .live_with(Role::Forwarder)
        .into_iter()
        .map(|i| net.http_addr(i))
        .collect::<Result<_>>()?;
    progress(&format!("covered after {:.1}s", setup.as_secs_f64()));

    let net = Arc::new(RwLock::new(net));
    let t0 = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);

    let sampler = tokio::spawn(sample_coverage(
        net.clone(),
        cfg.target(),
        cfg.sample_interval,
        t0,
        stop_rx.clone(),
    ));
    let mut workers = Vec::with_capacity(cfg.query_workers);
    for w in 0..cfg.query_workers {
        workers.push(tokio::spawn(query_loop(
            clients.clone(),
            cfg.clone(),
            rng.next_u64(),
            w,
            t0,
            stop_rx.clone(),
        )));
    }

    let mut waves = Vec::with_capacity(cfg.waves);
    for wave in 0..cfg.waves {
        let at = t0 + cfg.first_wave_after + cfg.wave_interval * wave as u32;
        tokio::time::sleep_until(at.into()).await;
        let w = run_wave(&net, cfg, &mut rng, wave + 1, t0).await?;
        progress(&format!(
            "wave {}: {} killed, {} stopped, {} fresh, {} restarted",
            w.wave,
            w.killed.len(),
            w.stopped.len(),
            w.joined_fresh.len(),
            w.restarted.len()
        ));
        waves.push(w);
    }
    let end = t0 + cfg.first_wave_after + cfg.wave_interval * cfg.waves as u32;
    tokio::time::sleep_until(end.into()).await;
    let _ = stop_tx.send(true);

    let mut records = Vec::new();
    for w in workers {
        let log = w
            .await
            .map_err(|e| Error::Invalid(format!("query loop panicked: {e}")))?;
        records.extend_from_slice(log.items());
    }
    let samples = sampler
        .await
        .map_err(|e| Error::Invalid(format!("sampler panicked: {e}")))?;
    let duration = t0.elapsed();
    let net = Arc::try_unwrap(net)
        .map_err(|_| Error::Invalid("the TestNet is still shared".into()))?
        .into_inner();
    let ledger = ledger_agreement(&net).await;
    let nodes_started = net.len();
    net.shutdown().await;

    Ok(build_report(
        cfg,
        setup,
        duration,
        nodes_started,
        records,
        samples.items().to_vec(),
        waves,
        ledger,
    ))
}

async fn run_wave(
    net: &RwLock<TestNet>,
    cfg: &ChurnConfig,
    rng: &mut SimRng,
    wave: usize,
    t0: Instant,
) -> Result<WaveReport> {
    let started = Instant::now();
    let (mut killed, mut stopped) = (Vec::new(), Vec::new());
    {
        let mut net = net.write().await;
        let live = net.live_with(Role::Provider);
        let n = (live.len() as f64 * cfg.churn_fraction).round() as usize;
        for victim in rng.choose(&live, n) {
            if rng.unit() < cfg.kill_share {
                net.kill(victim).await?;
                killed.push(victim);
            } else {
                net.stop(victim).await?;
                stopped.push(victim);
            }
        }
    }
    let mut joins: Vec<Join> = (0..killed.len() + stopped.len())
        .map(|_| Join {
            after: cfg.join_within.mul_f64(rng.unit()),
            restart: rng.unit() < cfg.restart_share,
        })
        .collect();
    joins.sort_by_key(|j| j.after);
    let (mut fresh, mut restarted) = (Vec::new(), Vec::new());
    for join in joins {
        tokio::time::sleep_until((started + join.after).into()).await;
        let mut net = net.write().await;
        let departed: Vec<usize> = (0..net.len())
            .filter(|&i| !net.is_live(i) && net.role(i).is_ok_and(|r| r == Role::Provider))
            .collect();
        if join.restart && !departed.is_empty() {
            let i = departed[rng.below(departed.len())];
            net.restart(i).await?;
            restarted.push(i);
        } else {
            fresh.push(net.add_node(Role::Provider).await?);
        }
    }
    Ok(WaveReport {
        wave,
        t_s: started.duration_since(t0).as_secs_f64(),
        killed,
        stopped,
        joined_fresh: fresh,
        restarted,
        joins_done_after_s: started.elapsed().as_secs_f64(),
        coverage_broke: false,
        min_seen: 0,
        recovery_s: None,
        recovered_after_last_join_s: None,
    })
}

async fn sample_coverage(
    net: Arc<RwLock<TestNet>>,
    replicas: usize,
    every: Duration,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> BoundedLog<CoverageSample> {
    let mut log = BoundedLog::new(MAX_COVERAGE_SAMPLES);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return log,
        }
        let coverage = net.read().await.coverage(replicas).await;
        if let Ok(coverage) = coverage {
            log.push(CoverageSample {
                t_s: t0.elapsed().as_secs_f64(),
                coverage,
            });
        }
    }
}

async fn query_loop(
    clients: Vec<SocketAddr>,
    cfg: ChurnConfig,
    seed: u64,
    worker: usize,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> BoundedLog<QueryRecord> {
    const PROMPTS: [&str; 4] = [
        "What is a mycelium?",
        "Name three colours.",
        "Tell me about the forest.",
        "Why is the sky blue?",
    ];
    let mut rng = SimRng::new(seed);
    let mut log = BoundedLog::new(MAX_QUERY_RECORDS_PER_WORKER);
    let mut n = worker;
    while !*stop.borrow() {
        let api = Api::ALL[n % Api::ALL.len()];
        n += 1;
        let addr = clients[rng.below(clients.len())];
        let mut query = TestNet::tiny_query(PROMPTS[rng.below(PROMPTS.len())], rng.next_u64());
        query.max_tokens = cfg.max_tokens;
        let at = t0.elapsed();
        let started = Instant::now();
        let outcome = client::ask(api, addr, &query, cfg.query_timeout).await;
        let (kind, error) = match outcome {
            Outcome::Answered(_) => (Kind::Answered, None),
            Outcome::Busy(e) => (Kind::Busy, Some(format!("{}: busy: {e}", api.name()))),
            Outcome::Failed(e) => (Kind::Failed, Some(format!("{}: {e}", api.name()))),
        };
        log.push(QueryRecord {
            at,
            api,
            latency: started.elapsed(),
            outcome: kind,
            error,
        });
        tokio::select! {
            _ = tokio::time::sleep(cfg.query_pause) => {}
            _ = stop.changed() => {}
        }
    }
    log
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    cfg: &ChurnConfig,
    setup: Duration,
    duration: Duration,
    nodes_started: usize,
    mut records: Vec<QueryRecord>,
    samples: Vec<CoverageSample>,
    mut waves: Vec<WaveReport>,
    ledger: LedgerAgreement,
) -> ChurnReport {
    records.sort_by_key(|r| r.at);
    let mut queries = QueryCounts::default();
    let mut by_api: Vec<(Api, QueryCounts)> = Api::ALL
        .iter()
        .map(|&a| (a, QueryCounts::default()))
        .collect();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    for r in &records {
        queries.add(r.outcome);
        if let Some((_, c)) = by_api.iter_mut().find(|(a, _)| *a == r.api) {
            c.add(r.outcome);
        }
        if r.outcome == Kind::Answered {
            latencies.push(r.latency);
        }
        if let Some(e) = &r.error
            && errors.len() < MAX_QUOTED_ERRORS
        {
            errors.push(format!("t={:.1}s {e}", r.at.as_secs_f64()));
        }
    }
    let mut success_curve = Vec::new();
    let bucket = PLOT_BUCKET.as_secs_f64();
    let buckets = (duration.as_secs_f64() / bucket).ceil() as usize;
    for b in 0..buckets {
        let (lo, hi) = (b as f64 * bucket, (b + 1) as f64 * bucket);
        let mut c = QueryCounts::default();
        for r in records
            .iter()
            .filter(|r| (lo..hi).contains(&r.at.as_secs_f64()))
        {
            c.add(r.outcome);
        }
        if c.total > 0 {
            success_curve.push((lo, c.success_rate(), c.total));
        }
    }
    // Recovery: each wave's window runs from its departures to the next wave's (or the end).
    let ends: Vec<f64> = waves
        .iter()
        .skip(1)
        .map(|w| w.t_s)
        .chain(std::iter::once(duration.as_secs_f64()))
        .collect();
    for (w, end) in waves.iter_mut().zip(ends) {
        let window: Vec<&CoverageSample> = samples
            .iter()
            .filter(|s| s.t_s >= w.t_s && s.t_s < end)
            .collect();
        w.coverage_broke = window.iter().any(|s| !s.coverage.full);
        w.min_seen = window
            .iter()
            .map(|s| s.coverage.min_seen)
            .min()
            .unwrap_or(0);
        w.recovery_s = match window.last() {
            Some(last) if last.coverage.full => {
                let last_bad = window.iter().rposition(|s| !s.coverage.full);
                Some(match last_bad {
                    // Full from the first sample after the last bad one.
                    Some(k) => window.get(k + 1).map_or(0.0, |s| s.t_s - w.t_s),
                    None => 0.0,
                })
            }
            _ => None,
        };
        w.recovered_after_last_join_s = w.recovery_s.map(|r| (r - w.joins_done_after_s).max(0.0));
    }
    let recovery_max_s = waves
        .iter()
        .map(|w| w.recovery_s)
        .try_fold(0.0f64, |m, r| r.map(|r| m.max(r)));
    let coverage_full_share = if samples.is_empty() {
        0.0
    } else {
        samples.iter().filter(|s| s.coverage.full).count() as f64 / samples.len() as f64
    };
    let success_rate = queries.success_rate();
    ChurnReport {
        config: cfg.clone(),
        setup_s: setup.as_secs_f64(),
        duration_s: duration.as_secs_f64(),
        nodes_started,
        success_goal_met: queries.total > 0 && success_rate >= cfg.goal_success_rate,
        recovery_goal_met: !samples.is_empty()
            && recovery_max_s.is_some_and(|r| r <= cfg.goal_recovery.as_secs_f64()),
        queries,
        success_rate,
        by_api,
        latency: Percentiles::of(&latencies),
        waves,
        recovery_max_s,
        coverage_full_share,
        ledger,
        errors,
        coverage: samples,
        success_curve,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: f64, min_seen: usize) -> CoverageSample {
        CoverageSample {
            t_s,
            coverage: Coverage {
                live_providers: 10,
                forwarders: 2,
                min_seen,
                mean_seen_fraction: 0.5,
                replicas: 3,
                full: min_seen >= 3,
            },
        }
    }

    fn wave(t_s: f64) -> WaveReport {
        WaveReport {
            wave: 1,
            t_s,
            killed: vec![],
            stopped: vec![],
            joined_fresh: vec![],
            restarted: vec![],
            joins_done_after_s: 0.0,
            coverage_broke: false,
            min_seen: 0,
            recovery_s: None,
            recovered_after_last_join_s: None,
        }
    }

    fn record(at: f64, outcome: Kind) -> QueryRecord {
        QueryRecord {
            at: Duration::from_secs_f64(at),
            api: Api::OpenAi,
            latency: Duration::from_millis(10),
            outcome,
            error: None,
        }
    }

    #[test]
    fn recovery_is_measured_from_the_wave_to_the_last_return_to_full_coverage() {
        let cfg = ChurnConfig::short();
        // Wave 1 at 10 s: breaks at 11, flaps back at 12, breaks at 13, full from 16 on.
        // Wave 2 at 30 s: never breaks. Run ends at 50 s.
        let mut samples = vec![sample(9.0, 5), sample(10.5, 5), sample(11.0, 2)];
        samples.extend([sample(12.0, 3), sample(13.0, 1), sample(16.0, 4)]);
        samples.extend([sample(25.0, 4), sample(31.0, 4), sample(49.0, 4)]);
        let records = vec![record(1.0, Kind::Answered), record(2.0, Kind::Failed)];
        let r = build_report(
            &cfg,
            Duration::ZERO,
            Duration::from_secs(50),
            14,
            records,
            samples,
            vec![wave(10.0), wave(30.0)],
            LedgerAgreement::NotMeasured { reason: "x".into() },
        );
        assert_eq!(r.waves[0].recovery_s, Some(6.0));
        assert!(r.waves[0].coverage_broke);
        assert_eq!(r.waves[0].min_seen, 1);
        assert_eq!(r.waves[1].recovery_s, Some(0.0));
        assert!(!r.waves[1].coverage_broke);
        assert_eq!(r.recovery_max_s, Some(6.0));
        assert!(r.recovery_goal_met);
        assert_eq!(r.success_rate, 0.5);
        assert!(!r.success_goal_met);
        assert!(!r.goals_met());
        let svg = r.to_svg();
        assert_eq!(svg.matches("<polyline").count(), 5);
        assert!(r.to_markdown().contains("| 1 | 10.0 |"));
    }

    #[test]
    fn a_wave_that_ends_below_target_did_not_recover() {
        let cfg = ChurnConfig::short();
        let samples = vec![sample(1.0, 5), sample(11.0, 1), sample(19.0, 2)];
        let r = build_report(
            &cfg,
            Duration::ZERO,
            Duration::from_secs(20),
            14,
            vec![record(1.0, Kind::Answered)],
            samples,
            vec![wave(10.0)],
            LedgerAgreement::NotMeasured { reason: "x".into() },
        );
        assert_eq!(r.waves[0].recovery_s, None);
        assert_eq!(r.recovery_max_s, None);
        assert!(!r.recovery_goal_met);
        assert!(r.success_goal_met);
        assert!(r.to_markdown().contains("not recovered"));
    }
}
