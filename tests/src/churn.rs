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
//! - **ledger** (on by default): every node keeps a real ledger under one genesis. Only the client
//!   nodes are staked: they never churn, so the 2/3 of the stake table that confirmation needs stays
//!   online through every wave, while the replicas (initial, restarted and fresh) keep, sync and relay
//!   the ledger without voting. A harness wallet sends credits every few seconds through a live node
//!   picked at random ([`crate::ledger::send_loop`]) and waits for each send's confirmation. Measured:
//!   sends submitted and confirmed, the time from acceptance until a node reports the send
//!   confirmed (p50/p99); **agreement**: before each next wave (traffic paused) and at the end,
//!   every live node's `ledger_info.state_root`, compared after a short settle (goal: all equal
//!   every time); **confirmed blocks lost**: every block of the wallet's chain that any node ever
//!   reported confirmed (the sender's polls, each check's reading of every node's chain) must at the
//!   end be held confirmed by every live node, restarted and fresh ones included (goal: 0). Unless
//!   `paid_jobs` is set, the clients hold no liquid credits and forward jobs unpaid, so the wallet's
//!   sends are the only ledger traffic and a paused moment is a quiet one (see
//!   [`ChurnConfig::paid_jobs`]).
//!
//! The plan (victims, kill or stop, fresh node or restart, join times, query targets) comes from a
//! seed; the timing is real.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_ledger::Credits;
use mycel_node::Config;
use serde::Serialize;
use tokio::sync::{Mutex, RwLock, watch};

use crate::client::{self, Api, Outcome};
use crate::error::{Error, Result};
use crate::ledger::{
    self, BlocksCheck, ConfirmedSeen, MAX_SENDS, RootsCheck, SendRecord, SimWallet, TrafficConfig,
};
use crate::plot::{Axis, Chart, Series};
use crate::report::{secs, verdict};
use crate::rng::SimRng;
use crate::stats::{BoundedLog, Percentiles};
use crate::testnet::{Coverage, LedgerSetup, NetOptions, Role, Stakers, TestNet, Topology};

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
    /// Whether every node keeps a ledger (the clients staked) and a wallet sends credits.
    pub ledger: bool,
    /// Whether the clients hold liquid credits, and so pay the replicas for the jobs they forward
    /// (an escrow per query, then receipts and claims). Off by default: with it, ledger traffic
    /// never pauses, so the probes find no quiet moment (they are reported, not counted: only the
    /// end check's agreement is), and on two cores the extra blocks slow the answers being
    /// measured (`--short`: p50 26 ms unpaid, 430 ms paid).
    pub paid_jobs: bool,
    /// The wallet traffic.
    pub traffic: TrafficConfig,
    /// Ledger duty period of every node (vote rebroadcast, checkpoint duty, sync with one peer).
    #[serde(with = "secs")]
    pub ledger_tick: Duration,
    /// How long a probe before each next wave waits for the state roots to agree (the probe starts
    /// this long before the wave).
    #[serde(with = "secs")]
    pub probe_settle: Duration,
    /// How long the end check waits for the roots to agree and every confirmed block to be held
    /// confirmed everywhere.
    #[serde(with = "secs")]
    pub end_settle: Duration,
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
            ledger: true,
            paid_jobs: false,
            traffic: TrafficConfig {
                interval: Duration::from_secs(3),
                amount: Credits::whole(1),
                rebroadcast_after: Duration::from_secs(5),
                confirm_timeout: Duration::from_secs(20),
                max_sends: MAX_SENDS,
            },
            ledger_tick: Duration::from_secs(1),
            probe_settle: Duration::from_secs(4),
            end_settle: Duration::from_secs(20),
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
        if self.ledger {
            let t = &self.traffic;
            if t.interval.is_zero() || t.rebroadcast_after.is_zero() || t.confirm_timeout.is_zero()
            {
                return bad("non-zero send interval, rebroadcast delay and confirmation timeout");
            }
            if t.max_sends == 0 || t.max_sends > MAX_SENDS {
                return bad("max_sends must be in 1..=1000");
            }
            let measured = self.first_wave_after + self.wave_interval * self.waves as u32;
            if measured.as_secs_f64() / t.interval.as_secs_f64() > MAX_SENDS as f64 {
                return bad("the run would send more than 1000 blocks: raise the send interval");
            }
            if self.probe_settle.is_zero()
                || self.join_within + self.probe_settle >= self.wave_interval
            {
                return bad("the probe must fit between a wave's last join and the next wave");
            }
            if !(50..=600_000).contains(&self.ledger_tick.as_millis()) {
                return bad("the ledger tick must be between 50 ms and 10 min");
            }
        }
        Ok(())
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

/// The ledger figures of a churn run.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerReport {
    /// Nodes holding stake (the clients).
    pub stakers: Vec<usize>,
    /// Sends some node accepted.
    pub submitted: usize,
    /// Of those, sends some node reported confirmed (during the run or by the end check).
    pub confirmed: usize,
    /// Time from a send's acceptance until a node reported it confirmed (sends confirmed within
    /// the traffic's timeout).
    pub confirm_latency: Percentiles,
    /// Submission calls beyond one per send (a node gone mid-call, rebroadcasts).
    pub resubmissions: u64,
    /// Root comparisons before each next wave, the wallet's traffic paused.
    pub probes: Vec<RootsCheck>,
    /// Whether the probes count toward the agreement goal: not with paid jobs, whose escrows,
    /// receipts and claims never let the ledger rest, so no moment of the run is a quiet one.
    pub probes_in_goal: bool,
    /// The root comparison at the end.
    pub end: RootsCheck,
    /// Whether every confirmed block is held confirmed by every live node at the end.
    pub blocks: BlocksCheck,
    /// The end (and every probe, when they count) found all live nodes on one state root.
    pub agreement: bool,
    /// Goal: sends were made, every one confirmed, no confirmed block lost, roots agreed.
    pub goal_met: bool,
    /// Every send.
    pub sends: Vec<SendRecord>,
}

impl LedgerReport {
    fn build(
        stakers: Vec<usize>,
        sends: Vec<SendRecord>,
        probes: Vec<RootsCheck>,
        probes_in_goal: bool,
        end: RootsCheck,
        blocks: BlocksCheck,
        seen: &ConfirmedSeen,
    ) -> Self {
        let accepted: Vec<&SendRecord> = sends.iter().filter(|s| s.via.is_some()).collect();
        let confirmed = accepted.iter().filter(|s| seen.contains(&s.hash)).count();
        let latencies: Vec<Duration> = accepted
            .iter()
            .filter_map(|s| s.confirm_s.map(Duration::from_secs_f64))
            .collect();
        let resubmissions = sends
            .iter()
            .map(|s| u64::from(s.attempts.saturating_sub(1)))
            .sum();
        let agreement = end.equal && (!probes_in_goal || probes.iter().all(|p| p.equal));
        let all_accepted = accepted.len() == sends.len();
        Self {
            stakers,
            submitted: accepted.len(),
            confirmed,
            confirm_latency: Percentiles::of(&latencies),
            resubmissions,
            goal_met: !accepted.is_empty()
                && all_accepted
                && confirmed == accepted.len()
                && blocks.lost == 0
                && agreement,
            probes,
            probes_in_goal,
            end,
            blocks,
            agreement,
            sends,
        }
    }

    /// One line per figure.
    fn lines(&self) -> Vec<(String, String, String)> {
        let probes_ok = self.probes.iter().filter(|p| p.equal).count();
        let unaccepted = self.sends.iter().filter(|s| s.via.is_none()).count();
        vec![
            (
                "ledger sends confirmed".into(),
                format!(
                    "{}/{} submitted{}",
                    self.confirmed,
                    self.submitted,
                    if unaccepted > 0 {
                        format!(" ({unaccepted} never accepted)")
                    } else {
                        String::new()
                    }
                ),
                format!(
                    "all: {}",
                    verdict(self.confirmed == self.submitted && unaccepted == 0)
                ),
            ),
            (
                "ledger time to confirm".into(),
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} resubmissions)",
                    self.confirm_latency.p50_ms,
                    self.confirm_latency.p99_ms,
                    self.confirm_latency.max_ms,
                    self.resubmissions
                ),
                String::new(),
            ),
            (
                "ledger agreement (one state root)".into(),
                format!(
                    "{probes_ok}/{} probes{}; end {}/{} nodes after {:.1} s ({})",
                    self.probes.len(),
                    if self.probes_in_goal {
                        ""
                    } else {
                        " (not counted: paid jobs never let the ledger rest)"
                    },
                    self.end.agreeing,
                    self.end.nodes,
                    self.end.settle_s,
                    if self.agreement { "yes" } else { "no" }
                ),
                format!(
                    "{}: {}",
                    if self.probes_in_goal {
                        "every time"
                    } else {
                        "at the end"
                    },
                    verdict(self.agreement)
                ),
            ),
            (
                "confirmed blocks lost".into(),
                format!(
                    "{} of {} confirmed blocks, on {} live nodes",
                    self.blocks.lost, self.blocks.confirmed_seen, self.blocks.nodes
                ),
                format!("0: {}", verdict(self.blocks.lost == 0)),
            ),
        ]
    }
}

/// The ledger part of a churn report.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChurnLedger {
    /// The run kept no ledger (`ledger: false`).
    Off,
    /// Measured.
    Measured(Box<LedgerReport>),
}

/// A gap after which a probe gives up waiting for the paused traffic and compares anyway.
const PROBE_GATE_WAIT: Duration = Duration::from_secs(2);

/// A root comparison before the next wave: pauses the wallet traffic (after its send in flight),
/// compares every live node's state root for at most `settle`, and reads which wallet blocks every
/// node holds confirmed.
async fn probe(
    net: &RwLock<TestNet>,
    gate: &Mutex<()>,
    wallet: &mycel_ledger::AccountId,
    seen: &mut ConfirmedSeen,
    settle: Duration,
    t0: Instant,
) -> RootsCheck {
    let _paused = tokio::time::timeout(PROBE_GATE_WAIT, gate.lock()).await;
    let nodes = ledger::live_addrs(&*net.read().await);
    let check = ledger::compare_roots(&nodes, settle, t0).await;
    seen.harvest(&nodes, wallet, t0).await;
    check
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
    /// The ledger figures.
    pub ledger: ChurnLedger,
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

impl crate::report::Report for ChurnReport {
    /// Whether every goal was met (the ledger's when the run kept one).
    fn goals_met(&self) -> bool {
        let ledger_ok = match &self.ledger {
            ChurnLedger::Off => true,
            ChurnLedger::Measured(l) => l.goal_met,
        };
        self.success_goal_met && self.recovery_goal_met && ledger_ok
    }

    /// The figures in a few lines (for the terminal).
    fn summary(&self) -> String {
        let rec = self
            .recovery_max_s
            .map_or("not recovered".to_string(), |s| format!("{s:.1} s"));
        format!(
            "churn: {} replicas + {} clients, {} waves of {:.0}% ({} nodes started)\n\
             queries: {} asked, {} answered, {} busy, {} failed -> success {:.2}% (goal >= {:.0}%: {})\n\
             recovery: max {rec} (goal <= {:.0} s: {}); coverage full {:.1}% of the time\n\
             latency: p50 {:.0} ms, p99 {:.0} ms\n\
             {}",
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
                ChurnLedger::Off => "ledger: off".to_string(),
                ChurnLedger::Measured(l) => l
                    .lines()
                    .into_iter()
                    .map(|(what, value, goal)| if goal.is_empty() {
                        format!("{what}: {value}")
                    } else {
                        format!("{what}: {value} (goal {goal})")
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            }
        )
    }

    /// The report as Markdown.
    fn to_markdown(&self) -> String {
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
        if let ChurnLedger::Measured(l) = &self.ledger {
            s.push_str(&format!(
                "Every node keeps a ledger under one genesis. Only the clients (nodes {:?}) hold \
                 stake: they never churn, so the 2/3 of the stake table that confirmation needs stays \
                 online; replicas keep, sync and relay the ledger without voting. Clients {} for the \
                 jobs they forward. A wallet sends {} credits every {:.0} s through a random live \
                 node and waits for the confirmation. Before each next wave the traffic pauses and \
                 every live node's state root is compared (up to {:.0} s to settle); at the end, \
                 roots again, and every block any node ever reported confirmed must be held \
                 confirmed by every live node (up to {:.0} s to settle).\n\n",
                l.stakers,
                if c.paid_jobs { "pay" } else { "hold no liquid credits and do not pay" },
                c.traffic.amount.0 as f64 / Credits::MICROS_PER_CREDIT as f64,
                c.traffic.interval.as_secs_f64(),
                c.probe_settle.as_secs_f64(),
                c.end_settle.as_secs_f64(),
            ));
        }
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
        match &self.ledger {
            ChurnLedger::Off => s.push_str("| ledger | off | |\n"),
            ChurnLedger::Measured(l) => {
                for (what, value, goal) in l.lines() {
                    s.push_str(&format!("| {what} | {value} | {goal} |\n"));
                }
            }
        }
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
        if let ChurnLedger::Measured(l) = &self.ledger {
            s.push_str(
                "\n| ledger check | at (s) | live nodes | on one root | settle (s) | confirmed blocks \
                 (min–max) | applied blocks (min–max) |\n|---|---|---|---|---|---|---|\n",
            );
            let checks = l.probes.iter().map(|p| ("probe", p));
            for (what, p) in checks.chain(std::iter::once(("end", &l.end))) {
                s.push_str(&format!(
                    "| {what} | {:.1} | {} | {} | {:.1} | {}–{} | {}–{} |\n",
                    p.t_s,
                    p.nodes,
                    p.agreeing,
                    p.settle_s,
                    p.confirmed_range.0,
                    p.confirmed_range.1,
                    p.blocks_range.0,
                    p.blocks_range.1
                ));
            }
            let notes: Vec<&String> = l
                .probes
                .iter()
                .chain(std::iter::once(&l.end))
                .flat_map(|p| &p.examples)
                .chain(&l.blocks.examples)
                .take(MAX_QUOTED_ERRORS)
                .collect();
            if !notes.is_empty() {
                s.push_str("\nLedger disagreements:\n\n");
                for n in notes {
                    s.push_str(&format!("- {n}\n"));
                }
            }
            let failed: Vec<String> = l
                .sends
                .iter()
                .filter_map(|x| x.error.as_ref().map(|e| format!("t={:.1}s {e}", x.t_s)))
                .take(MAX_QUOTED_ERRORS)
                .collect();
            if !failed.is_empty() {
                s.push_str("\nWallet sends that went wrong:\n\n");
                for f in failed {
                    s.push_str(&format!("- {f}\n"));
                }
            }
        }
        if !self.errors.is_empty() {
            s.push_str("\nSome failures:\n\n");
            for e in &self.errors {
                s.push_str(&format!("- `{}`\n", e.replace('`', "'")));
            }
        }
        s.push_str(
            "\nPlot: `churn.svg` (answered share per 5 s, coverage over time, and with a ledger \
             the share of live nodes on the majority state root at each check).\n",
        );
        s
    }

    /// Answered share and coverage over time, waves marked, spans without full coverage shaded.
    fn to_svg(&self) -> String {
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
        let mut ledger_series = Vec::new();
        if let ChurnLedger::Measured(l) = &self.ledger {
            let share = |p: &RootsCheck| {
                if p.nodes == 0 {
                    0.0
                } else {
                    p.agreeing as f64 * 100.0 / p.nodes as f64
                }
            };
            ledger_series.push(Series {
                name: "ledger: % of live nodes on one state root (checks)".into(),
                color: "#e6ab02".into(),
                // Dashed: it often runs at 100% along the answered share.
                dashed: true,
                axis: Axis::Left,
                points: l
                    .probes
                    .iter()
                    .chain(std::iter::once(&l.end))
                    // The end check runs after the measured time; draw it at its edge.
                    .map(|p| (p.t_s.min(self.duration_s), share(p)))
                    .collect(),
            });
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
            ]
            .into_iter()
            .chain(ledger_series)
            .collect(),
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
            ledger: cfg.ledger.then(|| LedgerSetup {
                // The clients never churn: their stake keeps confirmation going through every wave.
                stakers: Stakers::Forwarders,
                node_balance: if cfg.paid_jobs {
                    LedgerSetup::default().node_balance
                } else {
                    Credits::ZERO
                },
                tick: cfg.ledger_tick,
                ..LedgerSetup::default()
            }),
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
    let wallet = match net.wallet_key().zip(net.genesis()) {
        Some((key, genesis)) => Some(SimWallet::new(key.clone(), genesis)?),
        None => None,
    };
    let stakers = net.live_with(Role::Forwarder);

    let net = Arc::new(RwLock::new(net));
    let t0 = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Mutex::new(()));
    let wallet_account = wallet.as_ref().map(SimWallet::account);
    let sender = wallet.map(|w| {
        tokio::spawn(ledger::send_loop(
            net.clone(),
            w,
            cfg.traffic.clone(),
            rng.next_u64(),
            t0,
            gate.clone(),
            stop_rx.clone(),
        ))
    });
    let mut seen = ConfirmedSeen::default();
    let mut probes = Vec::new();

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
        if let Some(account) = &wallet_account
            && wave + 1 < cfg.waves
        {
            let next = at + cfg.wave_interval;
            tokio::time::sleep_until((next - cfg.probe_settle).into()).await;
            let p = probe(&net, &gate, account, &mut seen, cfg.probe_settle, t0).await;
            progress(&format!(
                "ledger probe: {}/{} live nodes on one state root after {:.1}s",
                p.agreeing, p.nodes, p.settle_s
            ));
            probes.push(p);
        }
    }
    let end = t0 + cfg.first_wave_after + cfg.wave_interval * cfg.waves as u32;
    tokio::time::sleep_until(end.into()).await;
    let _ = stop_tx.send(true);
    let sends = match sender {
        Some(s) => Some(
            s.await
                .map_err(|e| Error::Invalid(format!("ledger traffic panicked: {e}")))?,
        ),
        None => None,
    };

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
    let ledger = match (sends, wallet_account) {
        (Some(sends), Some(account)) => {
            let nodes = ledger::live_addrs(&net);
            for s in sends.iter().filter(|s| s.confirm_s.is_some()) {
                seen.add(&s.hash, || match s.confirmed_by {
                    Some(n) => format!("node {n} (sender's poll)"),
                    None => "the sender's poll".into(),
                });
            }
            let started = Instant::now();
            let end = ledger::compare_roots(&nodes, cfg.end_settle, t0).await;
            let left = cfg.end_settle.saturating_sub(started.elapsed());
            let blocks = ledger::check_blocks(&nodes, &account, &mut seen, left, t0).await;
            progress(&format!(
                "ledger end: {}/{} live nodes on one state root, {} of {} confirmed blocks lost",
                end.agreeing, end.nodes, blocks.lost, blocks.confirmed_seen
            ));
            ChurnLedger::Measured(Box::new(LedgerReport::build(
                stakers,
                sends,
                probes,
                !cfg.paid_jobs,
                end,
                blocks,
                &seen,
            )))
        }
        _ => ChurnLedger::Off,
    };
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
    ledger: ChurnLedger,
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
    use crate::report::Report;

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
            ChurnLedger::Off,
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

    fn roots(t_s: f64, nodes: usize, agreeing: usize) -> RootsCheck {
        RootsCheck {
            t_s,
            nodes,
            agreeing,
            equal: nodes == agreeing,
            settle_s: 0.1,
            confirmed_range: (2, 2),
            blocks_range: (2, 2),
            examples: vec![],
        }
    }

    fn send(hash: &str, via: Option<usize>, confirm_s: Option<f64>) -> SendRecord {
        SendRecord {
            hash: hash.into(),
            t_s: 1.0,
            via,
            attempts: 2,
            confirm_s,
            confirmed_by: confirm_s.map(|_| 3),
            error: None,
        }
    }

    fn blocks(seen: usize, lost: usize) -> BlocksCheck {
        BlocksCheck {
            confirmed_seen: seen,
            lost,
            nodes: 5,
            settle_s: 0.0,
            examples: vec![],
        }
    }

    #[test]
    fn the_ledger_goal_needs_every_send_confirmed_none_lost_and_one_root_every_time() {
        let mut seen = ConfirmedSeen::default();
        seen.add("a", || "node 1".into());
        seen.add("b", || "node 2".into());
        let sends = || vec![send("a", Some(0), Some(0.2)), send("b", Some(1), Some(0.4))];
        let ok = LedgerReport::build(
            vec![3, 4],
            sends(),
            vec![roots(10.0, 5, 5)],
            true,
            roots(20.0, 5, 5),
            blocks(2, 0),
            &seen,
        );
        assert!(ok.goal_met && ok.agreement);
        assert_eq!((ok.submitted, ok.confirmed, ok.resubmissions), (2, 2, 2));
        assert_eq!(ok.confirm_latency.count, 2);
        assert_eq!(ok.confirm_latency.max_ms.round(), 400.0);

        // A probe that found two roots fails agreement even when the end agrees.
        let split = LedgerReport::build(
            vec![3, 4],
            sends(),
            vec![roots(10.0, 5, 4)],
            true,
            roots(20.0, 5, 5),
            blocks(2, 0),
            &seen,
        );
        assert!(!split.agreement && !split.goal_met);
        // With paid jobs the probes are reported, not counted; the end still is.
        let paid = |end: RootsCheck| {
            LedgerReport::build(
                vec![3, 4],
                sends(),
                vec![roots(10.0, 5, 4)],
                false,
                end,
                blocks(2, 0),
                &seen,
            )
        };
        assert!(paid(roots(20.0, 5, 5)).goal_met);
        assert!(!paid(roots(20.0, 5, 3)).goal_met);
        // A confirmed block missing somewhere at the end.
        let lost = LedgerReport::build(
            vec![3, 4],
            sends(),
            vec![],
            true,
            roots(20.0, 5, 5),
            blocks(2, 1),
            &seen,
        );
        assert!(lost.agreement && !lost.goal_met);
        // A send no node ever reported confirmed, and one no node accepted.
        let mut unconfirmed = sends();
        unconfirmed.push(send("c", Some(2), None));
        let r = LedgerReport::build(
            vec![3, 4],
            unconfirmed,
            vec![],
            true,
            roots(20.0, 5, 5),
            blocks(2, 0),
            &seen,
        );
        assert_eq!((r.submitted, r.confirmed), (3, 2));
        assert!(!r.goal_met);
        let mut unaccepted = sends();
        unaccepted.push(send("", None, None));
        let r = LedgerReport::build(
            vec![3, 4],
            unaccepted,
            vec![],
            true,
            roots(20.0, 5, 5),
            blocks(2, 0),
            &seen,
        );
        assert!(!r.goal_met);
        // No traffic at all measures nothing.
        let none = LedgerReport::build(
            vec![3],
            vec![],
            vec![],
            true,
            roots(20.0, 5, 5),
            blocks(0, 0),
            &seen,
        );
        assert!(!none.goal_met);

        // The report shows the figures and fails the run on a missed ledger goal.
        let cfg = ChurnConfig::short();
        let report = |l: LedgerReport| {
            build_report(
                &cfg,
                Duration::ZERO,
                Duration::from_secs(30),
                14,
                vec![record(1.0, Kind::Answered)],
                vec![sample(1.0, 5), sample(29.0, 5)],
                vec![wave(10.0)],
                ChurnLedger::Measured(Box::new(l)),
            )
        };
        let good = report(ok);
        assert!(good.goals_met());
        let md = good.to_markdown();
        assert!(md.contains("| confirmed blocks lost | 0 of 2"), "{md}");
        assert!(md.contains("| probe | 10.0 | 5 | 5 |"), "{md}");
        assert!(good.summary().contains("ledger sends confirmed: 2/2"));
        assert_eq!(good.to_svg().matches("<polyline").count(), 6);
        assert!(!report(lost).goals_met());
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
            ChurnLedger::Off,
        );
        assert_eq!(r.waves[0].recovery_s, None);
        assert_eq!(r.recovery_max_s, None);
        assert!(!r.recovery_goal_met);
        assert!(r.success_goal_met);
        assert!(r.to_markdown().contains("not recovered"));
    }
}
