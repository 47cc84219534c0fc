//! `mycel-node sim sybil`: the goals of issue #7, each measured by a seeded simulation on the real
//! cores (specs/scoring.md §8 states the scenarios and the predicted figures).
//!
//! 1. **Routing**: 1,000 honest nodes against 4,000 Sybil nodes holding < 1 % of the stake; the
//!    requesters pick with [`crate::scoring::pick`]. Goal: ≥ 99 % of queries served by honest nodes.
//! 2. **Cheating**: a worker cheats on 10 % of its jobs. Real Escrow, Claim and Slash blocks go
//!    through a [`Ledger`] with the default [`Params`]; the audit draw is the ledger's. Goals: its
//!    expected profit from cheating is negative, and it is slashed within the predicted number of
//!    jobs.
//! 3. **Clique**: 30 % of the nodes with < 5 % of the stake report inflated work for themselves and
//!    none for the others; emission goes through [`emission::split`]. Goal: the clique's share of
//!    the emission ≤ its stake share + 2 points.
//! 4. **Byzantine stake** < 1/3 over many epochs: an attacker forks its chain every epoch, the
//!    byzantine representatives vote for both branches and the network delivers each branch first
//!    to one half of the honest representatives ([`Elections`], [`Representative`]); the byzantine
//!    coalition also forges Mint blocks. Goals: zero confirmed double-spends, zero unbacked mints
//!    accepted by the [`Ledger`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use libp2p::PeerId;
use mycel_identity::{Keypair, SecretKey, Signature};
use mycel_ledger::block::{BlockData, CheckpointBody, MintBody, SignerSig, SlashBody};
use mycel_ledger::consensus::{Elections, Representative, VoteOutcome};
use mycel_ledger::emission::{self, Contribution, Report};
use mycel_ledger::genesis::GenesisAccount;
use mycel_ledger::params::BPS;
use mycel_ledger::quorum::{self, CHECKPOINT, MINT, QuorumCert, Vote};
use mycel_ledger::receipt::sign_verdict;
use mycel_ledger::sortition;
use mycel_ledger::wallet::EscrowTerms;
use mycel_ledger::{
    AccountId, Block, BlockBody, BlockHash, Credits, EpochInfo, Genesis, JobId, Ledger, Params,
    Processed, Wallet, WorkReceipt,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

use crate::scoring::{
    self, Candidate, PickContext, Reputation, ScoringParams, Subnet, WorkOutcome, audited_work,
    required_bond,
};
use crate::sim::{GoalRow, GoalTable};
use crate::{NodeError, Result};

type SimRng = Xoshiro256PlusPlus;

/// Row of goal 1: share of queries honest nodes served.
pub const GOAL_ROUTING: &str = "queries served by honest nodes (1000 honest vs 4000 Sybils)";
/// Row of goal 2: a cheater's expected profit per cheated job.
pub const GOAL_CHEAT_PROFIT: &str = "expected profit of cheating, per cheated job";
/// Row of goal 2: jobs until a cheater is first slashed.
pub const GOAL_CHEAT_SLASH: &str = "jobs until a 10% cheater is slashed (mean, p99)";
/// Row of goal 3: the clique's share of the emission.
pub const GOAL_CLIQUE: &str = "emission share of a 30% clique with <5% stake";
/// Row of goal 4: confirmed double-spends.
pub const GOAL_DOUBLE_SPEND: &str = "confirmed double-spends, byzantine stake < 1/3";
/// Row of goal 4: Mint blocks the ledger accepted that the honest majority did not sign.
pub const GOAL_UNBACKED_MINT: &str = "forged or unbacked mints accepted by the ledger";
/// Every goal row, in table order.
pub const GOALS: [&str; 6] = [
    GOAL_ROUTING,
    GOAL_CHEAT_PROFIT,
    GOAL_CHEAT_SLASH,
    GOAL_CLIQUE,
    GOAL_DOUBLE_SPEND,
    GOAL_UNBACKED_MINT,
];

/// Tokens of a simulated job (prompt + completion): its price is this × `price_per_token`.
pub const JOB_TOKENS: u128 = 500;

/// Everything the simulation runs with; [`SybilConfig::new`] gives the scenarios.
#[derive(Clone, Debug)]
pub struct SybilConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Whether this is the short run (printed in the title).
    pub quick: bool,
    /// Ledger parameters (genesis defaults).
    pub params: Params,
    /// Goal 1.
    pub routing: RoutingScenario,
    /// Goal 2.
    pub cheating: CheatScenario,
    /// Goal 3.
    pub clique: CliqueScenario,
    /// Goal 4.
    pub byzantine: ByzantineScenario,
}

impl SybilConfig {
    /// The scenarios; `quick` shortens the runs, not the populations.
    pub fn new(seed: u64, quick: bool) -> Self {
        Self {
            seed,
            quick,
            params: Params::default(),
            routing: RoutingScenario::new(quick),
            cheating: CheatScenario::new(quick),
            clique: CliqueScenario::new(quick),
            byzantine: ByzantineScenario::new(quick),
        }
    }
}

/// Runs every scenario and returns the goal table.
pub fn run(cfg: &SybilConfig) -> Result<GoalTable> {
    let mut table = GoalTable {
        title: format!(
            "mycel-node sim sybil — seed {}{}",
            cfg.seed,
            if cfg.quick { " (quick)" } else { "" }
        ),
        ..GoalTable::default()
    };
    let r = run_routing(&cfg.routing, &cfg.params, cfg.seed)?;
    table.rows.push(r.row);
    table.notes.extend(r.notes);
    // Beyond the goal, for the record (specs/scoring.md §9): Sybils that spend their
    // stake on validator fees for audited jobs they pay to themselves.
    let stress = RoutingScenario {
        sybils_self_deal: true,
        ..cfg.routing.clone()
    };
    let st = run_routing(&stress, &cfg.params, cfg.seed)?;
    table.notes.push(format!(
        "stress (not a goal): Sybils that spend their stake on fees for audited self-paid jobs \
         leave probation with bought reputation: honest share {}",
        st.row.measured
    ));
    let c = run_cheating(&cfg.cheating, &cfg.params, cfg.seed)?;
    table.rows.extend(c.rows);
    table.notes.extend(c.notes);
    let q = run_clique(&cfg.clique, &cfg.params, cfg.seed)?;
    table.rows.push(q.row);
    table.notes.extend(q.notes);
    let b = run_byzantine(&cfg.byzantine, &cfg.params, cfg.seed)?;
    table.rows.extend(b.rows);
    table.notes.extend(b.notes);
    Ok(table)
}

/// The row and notes of a scenario with one goal.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The goal row.
    pub row: GoalRow,
    /// Context lines.
    pub notes: Vec<String>,
}

/// Rows and notes of a scenario with several goals.
#[derive(Clone, Debug)]
pub struct Outcomes {
    /// The goal rows.
    pub rows: Vec<GoalRow>,
    /// Context lines.
    pub notes: Vec<String>,
}

// ------------------------------------------------------------------------------------------------
// helpers

fn rng_for(seed: u64, scenario: u64) -> SimRng {
    SimRng::seed_from_u64(seed ^ scenario.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A ledger key derived from the seed, a scenario tag and an index.
fn ledger_key(seed: u64, tag: u8, i: u64) -> Keypair {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&seed.to_le_bytes());
    s[8..16].copy_from_slice(&i.to_le_bytes());
    s[16] = tag;
    s[17] = 0x51;
    Keypair::from_secret(&SecretKey::from_bytes(s))
}

fn id(k: &Keypair) -> AccountId {
    AccountId::from_public_key(&k.public())
}

fn random_bytes(rng: &mut SimRng) -> [u8; 32] {
    let mut b = [0u8; 32];
    rng.fill(&mut b);
    b
}

/// A stand-in for a requester's countersignature of a receipt, which the audit draw hashes
/// (specs/ledger.md §7): 64 bytes nobody but the requester can predict.
fn random_countersignature(rng: &mut SimRng) -> Signature {
    let mut b = [0u8; 64];
    rng.fill(&mut b);
    Signature::from_bytes(b)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut SimRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn ledger_err(e: mycel_ledger::LedgerError) -> NodeError {
    NodeError::Ledger(format!("simulation: {e}"))
}

fn job_price(params: &Params) -> Credits {
    Credits(params.price_per_token.0.saturating_mul(JOB_TOKENS))
}

fn percent(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

// ------------------------------------------------------------------------------------------------
// 1. routing

/// Goal 1: Sybil nodes against honest ones under the routing score.
#[derive(Clone, Debug)]
pub struct RoutingScenario {
    /// Honest nodes (established ones plus `newcomers`).
    pub honest: usize,
    /// Honest nodes that joined at the start, still on probation.
    pub newcomers: usize,
    /// Sybil nodes.
    pub sybils: usize,
    /// The Sybils' share of all stake.
    pub sybil_stake_share: f64,
    /// /24 subnets the Sybils spread over.
    pub sybil_subnets: usize,
    /// Whether the Sybils left probation by auditing jobs they paid to themselves, with a fee
    /// budget equal to their stake (a stress case beyond the goal).
    pub sybils_self_deal: bool,
    /// Epochs simulated.
    pub epochs: u64,
    /// Queries per epoch (network-wide).
    pub queries_per_epoch: usize,
    /// Candidates a requester learns per query (a DHT provider lookup returns a random subset).
    pub candidates_per_query: usize,
    /// Queries between two heartbeats (queue depths are refreshed at this pace).
    pub tick: usize,
    /// Routing knobs.
    pub scoring: ScoringParams,
    /// Target share of queries served by honest nodes.
    pub target: f64,
}

impl RoutingScenario {
    /// The scenario.
    pub fn new(quick: bool) -> Self {
        Self {
            honest: 1000,
            newcomers: 50,
            sybils: 4000,
            sybil_stake_share: 0.008,
            sybil_subnets: 200,
            sybils_self_deal: false,
            epochs: if quick { 6 } else { 24 },
            queries_per_epoch: if quick { 2_000 } else { 5_000 },
            candidates_per_query: 64,
            tick: 100,
            scoring: ScoringParams::default(),
            target: 0.99,
        }
    }
}

struct SimPeer {
    cand: Candidate,
    sybil: bool,
    assigned: u32,
}

/// First epoch of the simulated window (established peers were first seen well before).
const ROUTING_EPOCH0: u64 = 10_000;

/// Runs goal 1.
pub fn run_routing(s: &RoutingScenario, params: &Params, seed: u64) -> Result<Outcome> {
    let mut rng = rng_for(seed, 1);
    let price = job_price(params);
    let min_bond = required_bond(price, params);
    let mut peers: Vec<SimPeer> = Vec::with_capacity(s.honest + s.sybils);
    let mut honest_stake = 0u128;
    for i in 0..s.honest {
        // Stake: log-normal, median 200 credits, never below the bond a job needs.
        let stake = Credits::whole(1)
            .0
            .saturating_mul((200.0 * (normal(&mut rng)).exp()) as u128)
            .max(min_bond.0);
        honest_stake += stake;
        let newcomer = i < s.newcomers;
        let mut reputation = Reputation::new(ROUTING_EPOCH0);
        if !newcomer {
            // A history of audited work: log-uniform between 5 and 2,000 passed audits of ordinary
            // jobs (50 to 20,000 jobs: from a few days to months of serving).
            let passes = (5.0 * 400f64.powf(rng.random::<f64>())) as u32;
            for _ in 0..passes {
                reputation.record(
                    WorkOutcome::Passed {
                        work: audited_work(price, params),
                    },
                    ROUTING_EPOCH0,
                );
            }
        }
        // 10 % of honest nodes sit in 20 shared hosting /24s; the rest each in their own.
        let subnet = if rng.random_bool(0.1) {
            Subnet::V4([100, 64, rng.random_range(0..20u8)])
        } else {
            let b = random_bytes(&mut rng);
            Subnet::V4([b[0] | 0x80, b[1], b[2]])
        };
        // 5 % of operators run two nodes under one account.
        let account = if i > 0 && rng.random_bool(0.05) {
            peers[i - 1].cand.account
        } else {
            AccountId(random_bytes(&mut rng))
        };
        let latency = (80.0 * (0.7 * normal(&mut rng)).exp()).clamp(10.0, 2_000.0);
        peers.push(SimPeer {
            cand: Candidate {
                peer: sim_peer_id(seed, i)?,
                account,
                subnet,
                stake: Credits(stake),
                reputation,
                latency_ewma_ms: Some(latency),
                queue_depth: 0,
                specialization: rng.random_range(0.3..1.0f32),
                first_seen_epoch: if newcomer {
                    ROUTING_EPOCH0
                } else {
                    ROUTING_EPOCH0 - 500
                },
            },
            sybil: false,
            assigned: 0,
        });
    }
    // Sybil stake: `share` of the total, split evenly; each at least the bond a job needs (the
    // worst case: every Sybil is eligible).
    let share = s.sybil_stake_share.clamp(0.0, 0.999);
    let sybil_total = (honest_stake as f64 * share / (1.0 - share)) as u128;
    let per_sybil = Credits((sybil_total / s.sybils.max(1) as u128).max(min_bond.0));
    let sybil_total = per_sybil.0 * s.sybils as u128;
    for j in 0..s.sybils {
        let mut reputation = Reputation::new(ROUTING_EPOCH0);
        if s.sybils_self_deal {
            // Fee budget = their stake, spent on audited self-paid jobs: each audited job costs
            // the validators' fee and credits price/p of audited work.
            let fee = price.0 * u128::from(params.validator_share_bps) / BPS;
            let jobs = (per_sybil.0 / fee.max(1)).clamp(1, 10_000);
            for _ in 0..jobs {
                reputation.record(
                    WorkOutcome::Passed {
                        work: audited_work(price, params),
                    },
                    ROUTING_EPOCH0 - 10,
                );
            }
        }
        peers.push(SimPeer {
            cand: Candidate {
                peer: sim_peer_id(seed, s.honest + j)?,
                account: AccountId(random_bytes(&mut rng)),
                subnet: Subnet::V4([
                    198,
                    u8::try_from(j % s.sybil_subnets.max(1) / 256).unwrap_or(0),
                    u8::try_from(j % s.sybil_subnets.max(1) % 256).unwrap_or(0),
                ]),
                stake: per_sybil,
                reputation,
                // Sybils sit in a data centre next to the requesters and lie in their heartbeats:
                // empty queues and a perfect match for every query.
                latency_ewma_ms: Some(15.0),
                queue_depth: 0,
                specialization: 1.0,
                first_seen_epoch: if s.sybils_self_deal {
                    ROUTING_EPOCH0 - 10
                } else {
                    ROUTING_EPOCH0
                },
            },
            sybil: true,
            assigned: 0,
        });
    }

    // The audit draw uses a stake table of the 200 largest honest stakers.
    let mut by_stake: Vec<(AccountId, Credits)> = peers
        .iter()
        .filter(|p| !p.sybil)
        .map(|p| (p.cand.account, p.cand.stake))
        .collect();
    by_stake.sort_by_key(|(_, stake)| Reverse(*stake));
    by_stake.truncate(200);
    by_stake.sort_by_key(|(a, _)| *a);
    by_stake.dedup_by_key(|(a, _)| *a);

    let (mut honest_served, mut sybil_served, mut unserved) = (0u64, 0u64, 0u64);
    let mut sybil_established = 0u64;
    let mut sybil_graduated = 0usize;
    for e in 0..s.epochs {
        let epoch = ROUTING_EPOCH0 + e;
        let info =
            EpochInfo::new(epoch, random_bytes(&mut rng), by_stake.clone()).map_err(ledger_err)?;
        let ctx = PickContext { epoch, min_bond };
        let mut outcomes: Vec<(usize, WorkOutcome)> = Vec::new();
        for q in 0..s.queries_per_epoch {
            if q % s.tick.max(1) == 0 {
                for p in &mut peers {
                    p.cand.queue_depth = if p.sybil { 0 } else { p.assigned };
                    p.assigned = 0;
                }
            }
            let idx = sample_distinct(&mut rng, peers.len(), s.candidates_per_query);
            let cands: Vec<Candidate> = idx.iter().map(|i| peers[*i].cand.clone()).collect();
            let Some(k) = scoring::pick(&cands, &ctx, &s.scoring, &mut rng) else {
                unserved += 1;
                continue;
            };
            let w = idx[k];
            peers[w].assigned += 1;
            if peers[w].sybil {
                sybil_served += 1;
                if !scoring::on_probation(&peers[w].cand, &s.scoring, epoch) {
                    sybil_established += 1;
                }
            } else {
                honest_served += 1;
            }
            // Everyone serves correctly here (Sybils too, to earn their way out of probation).
            let job = JobId(random_bytes(&mut rng));
            let csig = random_countersignature(&mut rng);
            let outcome = if sortition::draw(&info, &job, &csig, params).audited {
                WorkOutcome::Passed {
                    work: audited_work(price, params),
                }
            } else {
                WorkOutcome::Unaudited
            };
            outcomes.push((w, outcome));
        }
        // Claims are confirmed by the end of the epoch; reputations follow the ledger.
        for (w, o) in outcomes {
            peers[w].cand.reputation.record(o, epoch);
        }
    }
    let end = ROUTING_EPOCH0 + s.epochs;
    for p in peers.iter().filter(|p| p.sybil) {
        if !scoring::on_probation(&p.cand, &s.scoring, end) {
            sybil_graduated += 1;
        }
    }
    let served = honest_served + sybil_served;
    let share = if served == 0 {
        0.0
    } else {
        honest_served as f64 / served as f64
    };
    let row = GoalRow {
        goal: GOAL_ROUTING,
        measured: percent(share),
        target: format!("≥ {}", percent(s.target)),
        pass: served > 0 && share >= s.target,
    };
    let notes = vec![format!(
        "routing: {served} queries ({unserved} unserved), {} Sybils hold {} of stake ({} each, bond \
         for a job {}); Sybils served {sybil_served} ({sybil_established} after leaving probation), \
         {sybil_graduated} off probation at the end; probation share {}, top-{} pick, max share {}",
        s.sybils,
        percent(sybil_total as f64 / (sybil_total + honest_stake) as f64),
        per_sybil,
        min_bond,
        percent(s.scoring.probation_share),
        s.scoring.top_k,
        percent(s.scoring.max_share),
    )];
    Ok(Outcome { row, notes })
}

fn sim_peer_id(seed: u64, i: usize) -> Result<PeerId> {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&seed.to_le_bytes());
    b[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    b[16] = 0x9e;
    libp2p::identity::Keypair::ed25519_from_bytes(b)
        .map(|k| k.public().to_peer_id())
        .map_err(|e| NodeError::InvalidRequest(format!("simulated peer key: {e}")))
}

/// `k` distinct indices below `n` (all of them when `k ≥ n`).
fn sample_distinct(rng: &mut SimRng, n: usize, k: usize) -> Vec<usize> {
    if k >= n {
        return (0..n).collect();
    }
    let mut out: Vec<usize> = Vec::with_capacity(k);
    while out.len() < k {
        let i = rng.random_range(0..n);
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

// ------------------------------------------------------------------------------------------------
// 2. cheating worker

/// Goal 2: a worker cheating on a share of its jobs.
#[derive(Clone, Debug)]
pub struct CheatScenario {
    /// Share of jobs the worker cheats on (serves garbage without computing).
    pub cheat_rate: f64,
    /// Jobs run through a real ledger (Escrow, Claim or Slash blocks).
    pub ledger_jobs: usize,
    /// Cheating workers simulated with the ledger's audit draw to time the first slash.
    pub slash_trials: usize,
    /// Tolerance on the predicted figures (0.1 = 10 %).
    pub tolerance: f64,
}

impl CheatScenario {
    /// The scenario.
    pub fn new(quick: bool) -> Self {
        Self {
            cheat_rate: 0.1,
            // The goal needs at least one audited cheat (slashed through the ledger): ~p·rate·jobs
            // = 10 expected in the quick run, none with probability e⁻¹⁰ (400 jobs left 2 %).
            ledger_jobs: if quick { 1_000 } else { 2_000 },
            slash_trials: if quick { 5_000 } else { 20_000 },
            tolerance: 0.1,
        }
    }
}

/// The spec's prediction of the jobs until a worker cheating on `rate` of its jobs is first slashed:
/// `(mean, p99)` of a geometric law with success probability `p·rate`.
pub fn predicted_jobs_to_slash(params: &Params, rate: f64) -> (f64, f64) {
    let q = params.audit_bps as f64 / BPS as f64 * rate;
    if q <= 0.0 {
        return (f64::INFINITY, f64::INFINITY);
    }
    let p99 = if q >= 1.0 {
        1.0
    } else {
        (0.01f64.ln() / (1.0 - q).ln()).ceil()
    };
    (1.0 / q, p99)
}

#[derive(Default)]
struct Bucket {
    n: u64,
    sum: i128,
}

impl Bucket {
    fn add(&mut self, delta: i128) {
        self.n += 1;
        self.sum += delta;
    }
    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }
}

fn wealth(ledger: &Ledger, a: &AccountId) -> i128 {
    let b = ledger.balance(a);
    let unbonding: u128 = b.unbonding.iter().map(|(c, _)| c.0).sum();
    i128::try_from(b.liquid.0 + b.bonded.0 + unbonding).unwrap_or(i128::MAX)
}

/// Runs goal 2.
pub fn run_cheating(s: &CheatScenario, params: &Params, seed: u64) -> Result<Outcomes> {
    let mut rng = rng_for(seed, 2);
    let price = job_price(params);
    let bond = required_bond(price, params);
    let requester = ledger_key(seed, 2, 0);
    let worker = ledger_key(seed, 2, 1);
    let validators: Vec<Keypair> = (0..7).map(|i| ledger_key(seed, 2, 10 + i)).collect();
    let mut accounts = vec![
        GenesisAccount {
            account: *requester.public().as_bytes(),
            balance: Credits(price.0 * (s.ledger_jobs as u128 + 1)),
            stake: Credits::ZERO,
        },
        GenesisAccount {
            account: *worker.public().as_bytes(),
            balance: Credits(bond.0 * 10),
            stake: Credits(bond.0 * 4),
        },
    ];
    accounts.extend(validators.iter().map(|v| GenesisAccount {
        account: *v.public().as_bytes(),
        balance: Credits::ZERO,
        stake: Credits::whole(10_000),
    }));
    let genesis = Genesis {
        network: "mycel-sim".into(),
        seed: random_bytes(&mut rng),
        start_time: 0,
        accounts,
        params: Params {
            open_work_bits: 0,
            ..params.clone()
        },
    };
    let mut ledger = Ledger::new(&genesis).map_err(ledger_err)?;
    let w_id = id(&worker);
    let r_id = id(&requester);
    let apply = |ledger: &mut Ledger, b: Block| -> Result<()> {
        match ledger.process(b, 0).map_err(ledger_err)? {
            Processed::Applied { .. } => Ok(()),
            Processed::Queued(d) => Err(NodeError::Ledger(format!(
                "simulation: block waits for {d:?}"
            ))),
        }
    };
    let (mut honest_audited, mut honest_plain) = (Bucket::default(), Bucket::default());
    let (mut cheat_audited, mut cheat_plain) = (Bucket::default(), Bucket::default());
    let mut slash_rule_ok = 0u64;
    let mut slash_rule_bad = 0u64;
    for j in 0..s.ledger_jobs {
        let job_id = JobId(random_bytes(&mut rng));
        let terms = EscrowTerms {
            job_id,
            worker: w_id,
            amount: price,
            expires_epoch: 10,
            private: false,
        };
        let escrow = Wallet::new(&requester)
            .escrow(&ledger, terms, 0)
            .map_err(ledger_err)?;
        let e_hash = escrow.hash();
        apply(&mut ledger, escrow)?;
        let cheat = rng.random_bool(s.cheat_rate);
        let mut output = [0u8; 32];
        output[..8].copy_from_slice(&(j as u64).to_le_bytes());
        output[8] = u8::from(cheat);
        let receipt = WorkReceipt {
            job_id,
            escrow: e_hash,
            worker: w_id,
            requester: r_id,
            model: [1; 32],
            weights: [2; 32],
            prompt_hash: [3; 32],
            output_hash: output,
            sampling: Some([4; 32]),
            prompt_tokens: 100,
            output_tokens: 400,
            price,
        };
        // The requester countersigns what was delivered; the draw follows from that signature.
        let csig = receipt.countersign(&requester);
        let draw = ledger
            .audit_draw(&e_hash, &csig)
            .ok_or_else(|| NodeError::Ledger("simulation: no audit draw".into()))?;
        let before = wealth(&ledger, &w_id);
        // Validators re-run the job: an honest output passes, garbage fails.
        let verdicts = |accept: bool| -> Vec<SignerSig> {
            let mut v: Vec<SignerSig> = validators
                .iter()
                .filter(|k| draw.seats_of(&id(k)) > 0)
                .map(|k| SignerSig {
                    signer: id(k),
                    signature: sign_verdict(k, &receipt, accept),
                })
                .collect();
            v.sort_by_key(|x| x.signer);
            v
        };
        if cheat && draw.audited {
            let reporter = &validators[0];
            let slashable = ledger
                .account(&w_id)
                .map(|a| a.slashable())
                .transpose()
                .map_err(ledger_err)?
                .unwrap_or_default();
            let rep = ledger.account(&id(reporter)).cloned().unwrap_or_default();
            let slash = Block::sign(
                BlockData {
                    account: id(reporter),
                    height: rep.height + 1,
                    previous: rep.frontier,
                    epoch: 0,
                    body: BlockBody::Slash(Box::new(SlashBody {
                        escrow: e_hash,
                        receipt: receipt.clone(),
                        worker_sig: receipt.sign_as_worker(&worker),
                        requester_sig: csig,
                        verdicts: verdicts(false),
                    })),
                },
                reporter,
            );
            apply(&mut ledger, slash)?;
            let cut = before - wealth(&ledger, &w_id);
            let rule = price
                .mul_div(BPS, u128::from(params.audit_bps))
                .map_err(ledger_err)?
                .min(slashable);
            if i128::try_from(rule.0).ok() == Some(cut) {
                slash_rule_ok += 1;
            } else {
                slash_rule_bad += 1;
            }
            cheat_audited.add(-cut);
        } else {
            let v = if draw.audited {
                verdicts(true)
            } else {
                Vec::new()
            };
            let claim = Wallet::new(&worker)
                .claim(&ledger, receipt.clone(), csig, v, 0)
                .map_err(ledger_err)?;
            apply(&mut ledger, claim)?;
            let gain = wealth(&ledger, &w_id) - before;
            match (cheat, draw.audited) {
                (false, true) => honest_audited.add(gain),
                (false, false) => honest_plain.add(gain),
                (true, _) => cheat_plain.add(gain),
            }
        }
        // Requesters only route to a worker whose bond covers the job: top it up when needed.
        let bonded = ledger.balance(&w_id).bonded;
        if bonded < bond {
            let top_up = Credits(bond.0 * 4 - bonded.0);
            if ledger.balance(&w_id).liquid >= top_up {
                let b = Wallet::new(&worker)
                    .stake(&ledger, top_up, 0)
                    .map_err(ledger_err)?;
                apply(&mut ledger, b)?;
            }
        }
    }

    // Expected profit of cheating on one job, against serving it honestly, counting the saved
    // compute at the whole price (the most favourable case for the cheater), from the amounts the
    // ledger actually moved and the audit probability p of the parameters.
    let p = params.audit_bps as f64 / BPS as f64;
    let price_f = price.0 as f64;
    let fallback = |b: &Bucket, v: f64| b.mean().unwrap_or(v);
    let pay_plain = fallback(&honest_plain, price_f);
    let pay_audited = fallback(
        &honest_audited,
        price_f * (1.0 - params.validator_share_bps as f64 / BPS as f64),
    );
    let cheat_pay = fallback(&cheat_plain, price_f);
    let slash = -fallback(
        &cheat_audited,
        -(price_f * BPS as f64 / params.audit_bps.max(1) as f64),
    );
    let saved_compute = price_f;
    let profit = (1.0 - p) * (cheat_pay - pay_plain) + p * (-slash - pay_audited) + saved_compute;
    let profit_row = GoalRow {
        goal: GOAL_CHEAT_PROFIT,
        measured: format!(
            "{:+.4} cr ({:+.1} % of price)",
            profit / Credits::MICROS_PER_CREDIT as f64,
            100.0 * profit / price_f
        ),
        target: "< 0".into(),
        pass: profit < 0.0 && slash_rule_bad == 0 && cheat_audited.n > 0,
    };

    let slash_row = run_slash_times(s, params, params, seed)?;
    let notes = vec![format!(
        "cheating: {} ledger jobs at {} each (bond {}): {} audited honest, {} audited cheats \
         slashed (cut = min(price·10⁴/audit_bps, bond) on {}/{}), {} cheats unaudited; \
         {} trials for the slash time",
        s.ledger_jobs,
        price,
        bond,
        honest_audited.n,
        cheat_audited.n,
        slash_rule_ok,
        slash_rule_ok + slash_rule_bad,
        cheat_plain.n,
        s.slash_trials,
    )];
    Ok(Outcomes {
        rows: vec![profit_row, slash_row],
        notes,
    })
}

/// Jobs until a worker cheating on `cheat_rate` of its jobs is first slashed, over `slash_trials`
/// workers, with the audit draw of the ledger under `actual`, against the spec's prediction
/// ([`predicted_jobs_to_slash`]) for `predicted`.
pub fn run_slash_times(
    s: &CheatScenario,
    predicted: &Params,
    actual: &Params,
    seed: u64,
) -> Result<GoalRow> {
    let mut rng = rng_for(seed, 5);
    let mut table: Vec<(AccountId, Credits)> = (0..7)
        .map(|_| (AccountId(random_bytes(&mut rng)), Credits::whole(10_000)))
        .collect();
    table.sort_by_key(|(a, _)| *a);
    let info = EpochInfo::new(0, random_bytes(&mut rng), table).map_err(ledger_err)?;
    let (pred_mean, pred_p99) = predicted_jobs_to_slash(predicted, s.cheat_rate);
    let cap = (pred_mean * 50.0).min(1e7) as u64;
    let mut times: Vec<u64> = Vec::with_capacity(s.slash_trials);
    for _ in 0..s.slash_trials {
        let mut n = 0u64;
        loop {
            n += 1;
            if rng.random_bool(s.cheat_rate) && {
                let job = JobId(random_bytes(&mut rng));
                let csig = random_countersignature(&mut rng);
                sortition::draw(&info, &job, &csig, actual).audited
            } {
                break;
            }
            if n >= cap {
                break;
            }
        }
        times.push(n);
    }
    times.sort_unstable();
    let mean = times.iter().sum::<u64>() as f64 / times.len().max(1) as f64;
    let p99 = times
        .get((times.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or(0) as f64;
    Ok(GoalRow {
        goal: GOAL_CHEAT_SLASH,
        measured: format!("{mean:.1}, {p99:.0}"),
        target: format!(
            "≤ {:.0}, ≤ {:.0} (spec {:.0}, {:.0} +{:.0} %)",
            pred_mean * (1.0 + s.tolerance),
            pred_p99 * (1.0 + s.tolerance),
            pred_mean,
            pred_p99,
            100.0 * s.tolerance
        ),
        pass: !times.is_empty()
            && mean <= pred_mean * (1.0 + s.tolerance)
            && p99 <= pred_p99 * (1.0 + s.tolerance),
    })
}

// ------------------------------------------------------------------------------------------------
// 3. clique

/// Goal 3: a clique inflating its own work and validation reports.
#[derive(Clone, Debug)]
pub struct CliqueScenario {
    /// Nodes, each a worker and a staked validator (≤ 256: one Mint pays at most 256 accounts).
    pub nodes: usize,
    /// Share of the nodes in the clique.
    pub clique_share: f64,
    /// The clique's share of the stake.
    pub clique_stake_share: f64,
    /// Factor by which clique validators inflate clique members' contributions (they report zero
    /// for everyone else).
    pub inflation: u128,
    /// Epochs simulated.
    pub epochs: u64,
    /// Allowed excess over the stake share (0.02 = 2 points).
    pub slack: f64,
}

impl CliqueScenario {
    /// The scenario.
    pub fn new(quick: bool) -> Self {
        Self {
            nodes: 250,
            clique_share: 0.3,
            clique_stake_share: 0.045,
            inflation: 100,
            epochs: if quick { 20 } else { 100 },
            slack: 0.02,
        }
    }
}

/// Runs goal 3.
pub fn run_clique(s: &CliqueScenario, params: &Params, seed: u64) -> Result<Outcome> {
    let mut rng = rng_for(seed, 3);
    let n = s.nodes.clamp(2, emission::MAX_RECIPIENTS);
    let n_clique = ((n as f64 * s.clique_share).round() as usize).clamp(1, n - 1);
    let accounts: Vec<AccountId> = (0..n).map(|_| AccountId(random_bytes(&mut rng))).collect();
    let is_clique = |i: usize| i < n_clique;
    // Stakes: random weights, scaled so the clique holds exactly its stake share.
    let raw: Vec<f64> = (0..n).map(|_| (0.8 * normal(&mut rng)).exp()).collect();
    let raw_clique: f64 = raw[..n_clique].iter().sum();
    let raw_honest: f64 = raw[n_clique..].iter().sum();
    let total_stake = 1e12; // µ-credits: one million credits
    let stake: Vec<u128> = (0..n)
        .map(|i| {
            let part = if is_clique(i) {
                s.clique_stake_share * raw[i] / raw_clique
            } else {
                (1.0 - s.clique_stake_share) * raw[i] / raw_honest
            };
            ((total_stake * part) as u128).max(1)
        })
        .collect();
    let mut table: Vec<(AccountId, Credits)> = accounts
        .iter()
        .zip(&stake)
        .map(|(a, s)| (*a, Credits(*s)))
        .collect();
    table.sort_by_key(|(a, _)| *a);
    let clique_stake: u128 = (0..n_clique).map(|i| stake[i]).sum();
    let all_stake: u128 = stake.iter().sum();
    let stake_share = clique_stake as f64 / all_stake as f64;

    let price = job_price(params);
    let (mut minted_clique, mut minted_all) = (0u128, 0u128);
    let (mut mean_clique, mut mean_all) = (0.0f64, 0.0f64);
    for epoch in 0..s.epochs {
        let info =
            EpochInfo::new(epoch, random_bytes(&mut rng), table.clone()).map_err(ledger_err)?;
        // True contributions. Audited work: each node's in proportion to a random capacity, the
        // clique's together equal to its stake share (a worker's bond bounds the jobs it may take).
        let cap: Vec<f64> = (0..n).map(|_| (0.5 * normal(&mut rng)).exp()).collect();
        let cap_clique: f64 = cap[..n_clique].iter().sum();
        let cap_honest: f64 = cap[n_clique..].iter().sum();
        let epoch_work = audited_work(price, params).0 as f64 * 2_000.0;
        let work: Vec<u128> = (0..n)
            .map(|i| {
                let part = if is_clique(i) {
                    stake_share * cap[i] / cap_clique
                } else {
                    (1.0 - stake_share) * cap[i] / cap_honest
                };
                (epoch_work * part) as u128
            })
            .collect();
        // Validation: the seats of 300 audited jobs, drawn by the ledger's sortition.
        let mut seats: HashMap<AccountId, u64> = HashMap::new();
        let audit_all = Params {
            audit_bps: 10_000,
            ..params.clone()
        };
        for _ in 0..300 {
            let job = JobId(random_bytes(&mut rng));
            let csig = random_countersignature(&mut rng);
            let d = sortition::draw(&info, &job, &csig, &audit_all);
            for a in d.seats {
                *seats.entry(a).or_default() += 1;
            }
        }
        let truth: Vec<(AccountId, Contribution)> = (0..n)
            .map(|i| {
                (
                    accounts[i],
                    Contribution {
                        work: Credits(work[i]),
                        validations: seats.get(&accounts[i]).copied().unwrap_or(0),
                    },
                )
            })
            .collect();
        let mut reports: Vec<Report> = Vec::with_capacity(n);
        for (v, validator) in accounts.iter().enumerate() {
            let mut contributions: Vec<(AccountId, Contribution)> = if is_clique(v) {
                truth[..n_clique]
                    .iter()
                    .map(|(a, c)| {
                        (
                            *a,
                            Contribution {
                                work: Credits(c.work.0.saturating_mul(s.inflation)),
                                validations: c
                                    .validations
                                    .saturating_mul(u64::try_from(s.inflation).unwrap_or(1)),
                            },
                        )
                    })
                    .collect()
            } else {
                // An honest validator that lags sees 90–100 % of some accounts' latest work.
                truth
                    .iter()
                    .map(|(a, c)| {
                        let seen = if rng.random_bool(0.1) {
                            rng.random_range(0.9..1.0)
                        } else {
                            1.0
                        };
                        (
                            *a,
                            Contribution {
                                work: Credits((c.work.0 as f64 * seen) as u128),
                                validations: c.validations,
                            },
                        )
                    })
                    .collect()
            };
            contributions.sort_by_key(|(a, _)| *a);
            reports.push(Report {
                validator: *validator,
                contributions,
            });
        }
        let mint = emission::split(&info, &reports, params.epoch_emission).map_err(ledger_err)?;
        for (a, c) in &mint {
            minted_all += c.0;
            if accounts[..n_clique].contains(a) {
                minted_clique += c.0;
            }
        }
        // Context: what a stake-weighted mean of the same reports (no clipping) would give.
        let (c, t) = unclipped_shares(&info, &reports, &accounts[..n_clique]);
        mean_clique += c;
        mean_all += t;
    }
    let share = if minted_all == 0 {
        0.0
    } else {
        minted_clique as f64 / minted_all as f64
    };
    let limit = stake_share + s.slack;
    let row = GoalRow {
        goal: GOAL_CLIQUE,
        measured: percent(share),
        target: format!("≤ {} (stake {} + 2)", percent(limit), percent(stake_share)),
        pass: minted_all > 0 && share <= limit,
    };
    let notes = vec![format!(
        "clique: {n_clique} of {n} nodes, {} of stake, report ×{} for themselves and 0 for others; \
         minted {} over {} epochs; a stake-weighted mean instead of the median would give the \
         clique {}",
        percent(stake_share),
        s.inflation,
        Credits(minted_all),
        s.epochs,
        percent(if mean_all > 0.0 {
            mean_clique / mean_all
        } else {
            0.0
        }),
    )];
    Ok(Outcome { row, notes })
}

/// Emission shares (clique, total) if each account's weight were the stake-weighted mean of the
/// reports (no clipping), with the same pools.
fn unclipped_shares(info: &EpochInfo, reports: &[Report], clique: &[AccountId]) -> (f64, f64) {
    let mut work: HashMap<AccountId, f64> = HashMap::new();
    let mut vals: HashMap<AccountId, f64> = HashMap::new();
    let total = info.total.0 as f64;
    for r in reports {
        let w = info.weight(&r.validator).0 as f64 / total;
        for (a, c) in &r.contributions {
            *work.entry(*a).or_default() += w * c.work.0 as f64;
            *vals.entry(*a).or_default() += w * c.validations as f64;
        }
    }
    let work_pool = emission::WORK_POOL_BPS as f64 / BPS as f64;
    let share = |m: &HashMap<AccountId, f64>, pool: f64| -> (f64, f64) {
        let t: f64 = m.values().sum();
        if t <= 0.0 {
            return (0.0, 0.0);
        }
        let c: f64 = m
            .iter()
            .filter(|(a, _)| clique.contains(a))
            .map(|(_, v)| v)
            .sum();
        (pool * c / t, pool)
    };
    let (wc, wt) = share(&work, work_pool);
    let (vc, vt) = share(&vals, 1.0 - work_pool);
    (wc + vc, wt + vt)
}

// ------------------------------------------------------------------------------------------------
// 4. byzantine stake

/// Goal 4: forks and forged mints under byzantine stake.
#[derive(Clone, Debug)]
pub struct ByzantineScenario {
    /// Representatives (all staked).
    pub reps: usize,
    /// Byzantine stake is added greedily while it stays strictly below this share.
    pub byzantine_below: f64,
    /// Epochs simulated (one fork and one Mint per epoch).
    pub epochs: u64,
    /// Extra delay the attacker imposes on messages crossing the partition.
    pub cross_delay: u64,
    /// Random delay added to every message (1..=jitter).
    pub jitter: u64,
}

impl ByzantineScenario {
    /// The scenario.
    pub fn new(quick: bool) -> Self {
        Self {
            reps: 20,
            byzantine_below: 1.0 / 3.0,
            epochs: if quick { 300 } else { 10_000 },
            cross_delay: 50,
            jitter: 5,
        }
    }
}

#[derive(Clone, Copy)]
enum Msg {
    Block(usize),
    Vote(Vote),
}

struct HonestRep {
    key: Keypair,
    group: usize,
}

/// Runs goal 4.
pub fn run_byzantine(s: &ByzantineScenario, params: &Params, seed: u64) -> Result<Outcomes> {
    let mut rng = rng_for(seed, 4);
    let reps: Vec<Keypair> = (0..s.reps.max(4) as u64)
        .map(|i| ledger_key(seed, 4, i))
        .collect();
    let stakes: Vec<u128> = reps
        .iter()
        .map(|_| rng.random_range(10..=1_000u128))
        .collect();
    let total: u128 = stakes.iter().sum();
    // Byzantine set: random order, greedily, staying strictly below the bound.
    let mut order: Vec<usize> = (0..reps.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut byz = vec![false; reps.len()];
    let mut byz_stake = 0u128;
    for &i in &order {
        if ((byz_stake + stakes[i]) as f64) < s.byzantine_below * total as f64 {
            byz[i] = true;
            byz_stake += stakes[i];
        }
    }
    let attacker = ledger_key(seed, 4, 1_000);
    let sinks = [ledger_key(seed, 4, 1_001), ledger_key(seed, 4, 1_002)];
    let mut accounts: Vec<GenesisAccount> = reps
        .iter()
        .zip(&stakes)
        .map(|(k, st)| GenesisAccount {
            account: *k.public().as_bytes(),
            balance: Credits::ZERO,
            stake: Credits::whole(*st),
        })
        .collect();
    accounts.push(GenesisAccount {
        account: *attacker.public().as_bytes(),
        balance: Credits::whole(1_000_000),
        stake: Credits::ZERO,
    });
    let genesis = Genesis {
        network: "mycel-sim".into(),
        seed: random_bytes(&mut rng),
        start_time: 0,
        accounts,
        params: Params {
            open_work_bits: 0,
            ..params.clone()
        },
    };
    let mut ledger = Ledger::new(&genesis).map_err(ledger_err)?;
    let table = ledger.latest_epoch().table.clone();
    let honest_keys: Vec<&Keypair> = reps
        .iter()
        .enumerate()
        .filter(|(i, _)| !byz[*i])
        .map(|(_, k)| k)
        .collect();
    let byz_keys: Vec<&Keypair> = reps
        .iter()
        .enumerate()
        .filter(|(i, _)| byz[*i])
        .map(|(_, k)| k)
        .collect();
    let all_keys: Vec<&Keypair> = reps.iter().collect();
    let poster = honest_keys
        .first()
        .copied()
        .ok_or_else(|| NodeError::InvalidRequest("no honest representative".into()))?;
    let forger = byz_keys.first().copied();
    let sorted_qc = |signers: &[&Keypair], domain, msg: &[u8]| -> Vec<SignerSig> {
        let mut qc: Vec<SignerSig> = signers
            .iter()
            .map(|k| quorum::sign_qc(k, domain, msg))
            .collect();
        qc.sort_by_key(|x| x.signer);
        qc
    };

    let mut double_spends = 0u64;
    let mut decided = 0u64;
    let mut unbacked = 0u64;
    let mut forged_accepted = 0u64;
    let mut forged_rejected = 0u64;
    let mut honest_mints = 0u64;
    let mut expected_supply = ledger.state().supply;
    for e in 0..s.epochs {
        let info = ledger
            .epoch_info(e)
            .cloned()
            .ok_or_else(|| NodeError::Ledger(format!("simulation: no table for epoch {e}")))?;

        // --- the fork of epoch e: two sends at one height of the attacker's chain (its blocks are
        // not applied here; only the election over them matters).
        let previous = BlockHash(random_bytes(&mut rng));
        let branches: Vec<Block> = sinks
            .iter()
            .map(|sink| {
                Block::sign(
                    BlockData {
                        account: id(&attacker),
                        height: e + 1,
                        previous,
                        epoch: e,
                        body: BlockBody::Send {
                            destination: id(sink),
                            amount: Credits::whole(100),
                        },
                    },
                    &attacker,
                )
            })
            .collect();
        // The attacker splits the honest stake in two halves (greedy on a random order).
        let mut honest: Vec<HonestRep> = Vec::new();
        let mut half = [0u128; 2];
        let mut idx: Vec<usize> = (0..reps.len()).filter(|i| !byz[*i]).collect();
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.random_range(0..=i));
        }
        for i in idx {
            let g = usize::from(half[1] < half[0]);
            half[g] += stakes[i];
            honest.push(HonestRep {
                key: reps[i].clone(),
                group: g,
            });
        }
        let outcome = fork_round(s, &mut rng, &info, &branches, &honest, &byz_keys);
        if outcome.double_spend {
            double_spends += 1;
        }
        if outcome.decided {
            decided += 1;
        }

        // --- ledger: checkpoint e+1, forged mints, the honest mint of epoch e.
        let now = e + 1;
        // Everyone signs the (unchanged) stake table: byzantine representatives gain nothing by
        // stalling the epochs.
        let cp_msg = CheckpointBody::signed_message(e + 1, &table);
        let cp = next_block(
            &ledger,
            poster,
            now,
            BlockBody::Checkpoint(Box::new(CheckpointBody {
                new_epoch: e + 1,
                table: table.clone(),
                qc: sorted_qc(&all_keys, CHECKPOINT, &cp_msg),
            })),
        );
        ledger.process(cp, now).map_err(ledger_err)?;

        let reports = mint_reports(&mut rng, &info, params, &reps, &byz);
        let recipients =
            emission::split(&info, &reports, params.epoch_emission).map_err(ledger_err)?;
        let msg = MintBody::signed_message(e, &recipients);
        let honest_qc = sorted_qc(&honest_keys, MINT, &msg);
        let mut forgeries: Vec<Block> = Vec::new();
        if let Some(f) = forger {
            let grab = vec![(id(f), params.epoch_emission)];
            let grab_msg = MintBody::signed_message(e, &grab);
            // (a) only the byzantine coalition signs: less than 2/3 of the stake.
            forgeries.push(next_block(
                &ledger,
                f,
                now,
                BlockBody::Mint(Box::new(MintBody {
                    mint_epoch: e,
                    recipients: grab.clone(),
                    qc: sorted_qc(&byz_keys, MINT, &grab_msg),
                })),
            ));
            // (b) every representative listed, the honest signatures made by a byzantine key.
            let forged_sig = f.sign(MINT, &grab_msg);
            let mut fake: Vec<SignerSig> = reps
                .iter()
                .map(|k| SignerSig {
                    signer: id(k),
                    signature: if byz_keys.iter().any(|b| id(b) == id(k)) {
                        k.sign(MINT, &grab_msg)
                    } else {
                        forged_sig
                    },
                })
                .collect();
            fake.sort_by_key(|x| x.signer);
            forgeries.push(next_block(
                &ledger,
                f,
                now,
                BlockBody::Mint(Box::new(MintBody {
                    mint_epoch: e,
                    recipients: grab,
                    qc: fake,
                })),
            ));
            // (c) the honest QC on recipients altered in the forger's favour.
            let mut altered = recipients.clone();
            if let Some(first) = altered.first_mut() {
                first.1 = Credits(first.1.0.saturating_sub(1).max(1));
            }
            match altered.iter_mut().find(|(a, _)| *a == id(f)) {
                Some(slot) => slot.1 = Credits(slot.1.0 + 1),
                None => {
                    altered.push((id(f), Credits(1)));
                    altered.sort_by_key(|(a, _)| *a);
                }
            }
            forgeries.push(next_block(
                &ledger,
                f,
                now,
                BlockBody::Mint(Box::new(MintBody {
                    mint_epoch: e,
                    recipients: altered,
                    qc: honest_qc.clone(),
                })),
            ));
        }
        let honest_mint = next_block(
            &ledger,
            poster,
            now,
            BlockBody::Mint(Box::new(MintBody {
                mint_epoch: e,
                recipients: recipients.clone(),
                qc: honest_qc,
            })),
        );
        for b in forgeries.drain(..) {
            judge_mint(
                &mut ledger,
                b,
                now,
                &info,
                &mut forged_accepted,
                &mut unbacked,
                &mut forged_rejected,
            );
        }
        let replay_body = honest_mint.body.clone();
        if ledger.process(honest_mint, now).is_ok() {
            honest_mints += 1;
            let minted = recipients.iter().map(|(_, c)| c.0).sum::<u128>();
            expected_supply = expected_supply
                .checked_add(Credits(minted))
                .map_err(ledger_err)?;
        }
        if let Some(f) = forger {
            // (d) after the honest mint: the same body again, from the forger's chain.
            let replay = next_block(&ledger, f, now, replay_body);
            judge_mint(
                &mut ledger,
                replay,
                now,
                &info,
                &mut forged_accepted,
                &mut unbacked,
                &mut forged_rejected,
            );
        }
    }
    // Every Mint the ledger holds must carry a valid ≥ 2/3 QC of its epoch's table.
    let mut mint_blocks = 0u64;
    for (_, b) in ledger.order() {
        if let BlockBody::Mint(m) = &b.body {
            mint_blocks += 1;
            let ok = ledger.epoch_info(m.mint_epoch).is_some_and(|info| {
                quorum::check_stake_qc(
                    info,
                    MINT,
                    &MintBody::signed_message(m.mint_epoch, &m.recipients),
                    &m.qc,
                )
                .is_ok()
            });
            if !ok {
                unbacked += 1;
            }
        }
    }
    let supply_ok = ledger.state().supply == expected_supply;
    if !supply_ok {
        unbacked += 1;
    }
    let byz_share = byz_stake as f64 / total as f64;
    let rows = vec![
        GoalRow {
            goal: GOAL_DOUBLE_SPEND,
            measured: format!("{double_spends} in {} epochs", s.epochs),
            target: "0".into(),
            pass: double_spends == 0,
        },
        GoalRow {
            goal: GOAL_UNBACKED_MINT,
            measured: format!("{} of {mint_blocks} mints", forged_accepted + unbacked),
            target: "0".into(),
            pass: forged_accepted == 0 && unbacked == 0 && honest_mints == s.epochs,
        },
    ];
    let notes = vec![format!(
        "byzantine: {} representatives, {} byzantine with {} of stake voting for both branches; \
         forks decided in {decided}/{} epochs (the rest stall: safety over liveness); \
         {forged_rejected} forged mints rejected, {honest_mints} honest mints; supply {}",
        reps.len(),
        byz.iter().filter(|b| **b).count(),
        percent(byz_share),
        s.epochs,
        if supply_ok {
            "matches the honest mints"
        } else {
            "DIFFERS from the honest mints"
        },
    )];
    Ok(Outcomes { rows, notes })
}

/// The next block of `key`'s chain in `ledger`, stating epoch `now`.
fn next_block(ledger: &Ledger, key: &Keypair, now: u64, body: BlockBody) -> Block {
    let a = ledger.account(&id(key)).cloned().unwrap_or_default();
    Block::sign(
        BlockData {
            account: id(key),
            height: a.height + 1,
            previous: a.frontier,
            epoch: now.max(a.epoch),
            body,
        },
        key,
    )
}

/// Offers a forged Mint to the ledger: rejected is right; accepted counts as forged, and as unbacked
/// too when its QC does not verify against the epoch's table.
fn judge_mint(
    ledger: &mut Ledger,
    b: Block,
    now: u64,
    info: &EpochInfo,
    accepted: &mut u64,
    unbacked: &mut u64,
    rejected: &mut u64,
) {
    let BlockBody::Mint(m) = &b.body else {
        return;
    };
    let message = MintBody::signed_message(m.mint_epoch, &m.recipients);
    let qc = m.qc.clone();
    match ledger.process(b, now) {
        Ok(_) => {
            *accepted += 1;
            if quorum::check_stake_qc(info, MINT, &message, &qc).is_err() {
                *unbacked += 1;
            }
        }
        Err(_) => *rejected += 1,
    }
}

/// Emission reports for the consensus scenario: the seats each representative held in the
/// epoch's audits; byzantine ones report ×100 for themselves.
fn mint_reports(
    rng: &mut SimRng,
    info: &EpochInfo,
    params: &Params,
    reps: &[Keypair],
    byz: &[bool],
) -> Vec<Report> {
    let audit_all = Params {
        audit_bps: 10_000,
        ..params.clone()
    };
    let mut seats: HashMap<AccountId, u64> = HashMap::new();
    for _ in 0..20 {
        let job = JobId(random_bytes(rng));
        let csig = random_countersignature(rng);
        for a in sortition::draw(info, &job, &csig, &audit_all).seats {
            *seats.entry(a).or_default() += 1;
        }
    }
    let mut truth: Vec<(AccountId, Contribution)> = seats
        .iter()
        .map(|(a, n)| {
            (
                *a,
                Contribution {
                    work: Credits::ZERO,
                    validations: *n,
                },
            )
        })
        .collect();
    truth.sort_by_key(|(a, _)| *a);
    reps.iter()
        .enumerate()
        .map(|(i, k)| {
            let me = id(k);
            let contributions = if byz[i] {
                vec![(
                    me,
                    Contribution {
                        work: Credits::whole(1_000_000),
                        validations: 1_000_000,
                    },
                )]
            } else {
                truth.clone()
            };
            Report {
                validator: me,
                contributions,
            }
        })
        .collect()
}

struct ForkOutcome {
    /// Both branches hold a valid QC, or two honest representatives confirmed different branches.
    double_spend: bool,
    /// At least one honest representative confirmed a branch.
    decided: bool,
}

/// The attacker's network: a message queue ordered by delivery time.
#[derive(Default)]
struct Net {
    /// `(delivery time, message index)`; the index breaks ties in sending order.
    queue: BinaryHeap<Reverse<(u64, usize)>>,
    msgs: Vec<(usize, Msg)>,
}

impl Net {
    fn send(&mut self, at: u64, to: usize, m: Msg) {
        let i = self.msgs.len();
        self.msgs.push((to, m));
        self.queue.push(Reverse((at, i)));
    }

    fn pop(&mut self) -> Option<(u64, usize, Msg)> {
        let Reverse((at, i)) = self.queue.pop()?;
        let (to, m) = *self.msgs.get(i)?;
        Some((at, to, m))
    }
}

/// One fork election among the honest representatives, with the attacker scheduling delivery:
/// each half of the honest stake sees "its" branch and the votes for it first, the rest
/// `cross_delay` later; byzantine votes for both branches reach everyone at once.
fn fork_round(
    s: &ByzantineScenario,
    rng: &mut SimRng,
    info: &EpochInfo,
    branches: &[Block],
    honest: &[HonestRep],
    byz_keys: &[&Keypair],
) -> ForkOutcome {
    let n = honest.len();
    let hashes: Vec<BlockHash> = branches.iter().map(Block::hash).collect();
    let branch_of = |h: &BlockHash| hashes.iter().position(|x| x == h).unwrap_or(0);
    let mut elections: Vec<Elections> = (0..n).map(|_| Elections::new()).collect();
    let mut reps: Vec<Representative> = honest
        .iter()
        .map(|h| Representative::new(h.key.clone()))
        .collect();
    let mut confirmed: Vec<Option<BlockHash>> = vec![None; n];
    let mut net = Net::default();
    for (i, h) in honest.iter().enumerate() {
        for b in 0..branches.len() {
            let late = if b == h.group { 0 } else { s.cross_delay };
            net.send(late + rng.random_range(0..=s.jitter), i, Msg::Block(b));
        }
    }
    // Every final vote the attacker can lay hands on, valid or not, for its QC attempts.
    let mut all_finals: HashMap<(AccountId, BlockHash), Vote> = HashMap::new();
    for k in byz_keys {
        for b in &hashes {
            for is_final in [false, true] {
                let v = Vote::sign(k, *b, info.epoch, is_final, 0);
                if is_final {
                    all_finals.insert((v.voter, v.block), v);
                }
                for i in 0..n {
                    net.send(1 + rng.random_range(0..=s.jitter), i, Msg::Vote(v));
                }
            }
        }
        // A final vote in an honest representative's name for each branch, signed with the
        // byzantine key: worthless unless signatures go unchecked.
        if let Some(h) = honest.first() {
            for b in &hashes {
                let mut forged = Vote::sign(k, *b, info.epoch, true, 0);
                forged.voter = id(&h.key);
                all_finals
                    .entry((forged.voter, forged.block))
                    .or_insert(forged);
                for i in 0..n {
                    net.send(1, i, Msg::Vote(forged));
                }
            }
        }
    }
    // Signature checks, once per distinct vote (what a node's verification cache does).
    let mut sig_ok: HashMap<(AccountId, [u8; 64]), bool> = HashMap::new();
    while let Some((now, to, m)) = net.pop() {
        let mut pending: Vec<Vote> = Vec::new();
        let mut out: Vec<Vote> = Vec::new();
        match m {
            Msg::Block(b) => {
                pending.extend(elections[to].add_candidate(&branches[b]));
                if let Some(v) = reps[to].on_candidate(&branches[b], info.epoch) {
                    out.push(v);
                    pending.push(v);
                }
            }
            Msg::Vote(v) => pending.push(v),
        }
        let mut k = 0;
        while k < pending.len() {
            let v = pending[k];
            k += 1;
            let ok = *sig_ok
                .entry((v.voter, v.signature.to_bytes()))
                .or_insert_with(|| v.verify().is_ok());
            if !ok {
                continue;
            }
            if v.is_final {
                all_finals.insert((v.voter, v.block), v);
            }
            let root = match elections[to].add_vote(v, info) {
                VoteOutcome::Counted(r) => r,
                VoteOutcome::Confirmed { root, winner } => {
                    confirmed[to] = Some(winner);
                    root
                }
                _ => continue,
            };
            if let Some(e) = elections[to].get(&root) {
                for nv in reps[to].on_update(e, info) {
                    out.push(nv);
                    pending.push(nv);
                }
            }
        }
        for v in out {
            let b = branch_of(&v.block);
            for (j, h) in honest.iter().enumerate() {
                if j == to {
                    continue;
                }
                let late = if h.group == b { 0 } else { s.cross_delay };
                net.send(
                    now + 1 + late + rng.random_range(0..=s.jitter),
                    j,
                    Msg::Vote(v),
                );
            }
        }
    }
    // The attacker's best QC per branch: every final vote it holds (forged ones included), and
    // failing that the ones whose signatures verified. A branch is confirmable when either passes
    // `QuorumCert::verify`.
    let mut confirmable = 0;
    for b in &hashes {
        let mut votes: Vec<Vote> = all_finals
            .values()
            .filter(|v| v.block == *b)
            .copied()
            .collect();
        votes.sort_by_key(|v| v.voter);
        let valid: Vec<Vote> = votes
            .iter()
            .filter(|v| {
                sig_ok
                    .get(&(v.voter, v.signature.to_bytes()))
                    .copied()
                    .unwrap_or_else(|| v.verify().is_ok())
            })
            .copied()
            .collect();
        let weight: u128 = valid.iter().map(|v| info.weight(&v.voter).0).sum();
        let all_count = votes.len();
        let ok = QuorumCert { block: *b, votes }.verify(info).is_ok()
            || (valid.len() < all_count
                && EpochInfo::is_quorum(Credits(weight), info.total)
                && QuorumCert {
                    block: *b,
                    votes: valid,
                }
                .verify(info)
                .is_ok());
        if ok {
            confirmable += 1;
        }
    }
    let mut winners: Vec<BlockHash> = confirmed.iter().flatten().copied().collect();
    winners.sort();
    winners.dedup();
    ForkOutcome {
        double_spend: confirmable > 1 || winners.len() > 1,
        decided: !winners.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A routing run small enough for a unit test.
    fn small_routing() -> RoutingScenario {
        RoutingScenario {
            epochs: 2,
            queries_per_epoch: 1_500,
            ..RoutingScenario::new(true)
        }
    }

    #[test]
    fn routing_goal_holds_and_fails_without_probation_or_with_rich_sybils() {
        let params = Params::default();
        let ok = run_routing(&small_routing(), &params, 3).expect("run");
        assert!(ok.row.pass, "{:?}", ok.row);
        // No probation cap: the lying, nearby Sybils take most of the traffic.
        let open_door = RoutingScenario {
            scoring: ScoringParams {
                probation_share: 1.0,
                ..ScoringParams::default()
            },
            ..small_routing()
        };
        let r = run_routing(&open_door, &params, 3).expect("run");
        assert!(!r.row.pass, "{:?}", r.row);
        // Sybils holding half the stake and buying their way out of probation with it.
        let rich = RoutingScenario {
            sybil_stake_share: 0.5,
            sybils_self_deal: true,
            ..small_routing()
        };
        let r = run_routing(&rich, &params, 3).expect("run");
        assert!(!r.row.pass, "{:?}", r.row);
    }

    #[test]
    fn cheating_goals_fail_with_a_thin_bond_or_rare_audits() {
        let small = CheatScenario {
            ledger_jobs: 300,
            slash_trials: 500,
            ..CheatScenario::new(true)
        };
        let ok = run_cheating(&small, &Params::default(), 5).expect("run");
        assert!(ok.rows.iter().all(|r| r.pass), "{:?}", ok.rows);
        // A bond of a tenth of the slash target: cheating pays.
        let thin = Params {
            bond_ratio_bps: 1_000,
            ..Params::default()
        };
        let r = run_cheating(&small, &thin, 5).expect("run");
        let profit = r.rows.iter().find(|r| r.goal == GOAL_CHEAT_PROFIT);
        assert!(profit.is_some_and(|r| !r.pass), "{:?}", r.rows);
        // The spec's prediction is for the default p: with p = 2 % slashing takes 5× longer.
        let rare = Params {
            audit_bps: 200,
            ..Params::default()
        };
        let trials = CheatScenario {
            ledger_jobs: 50,
            ..small
        };
        let r = run_slash_times(&trials, &Params::default(), &rare, 5).expect("run");
        assert!(!r.pass, "{r:?}");
    }

    #[test]
    fn clique_goal_fails_when_the_clique_holds_the_stake_median() {
        let small = CliqueScenario {
            epochs: 3,
            ..CliqueScenario::new(true)
        };
        let ok = run_clique(&small, &Params::default(), 9).expect("run");
        assert!(ok.row.pass, "{:?}", ok.row);
        let majority = CliqueScenario {
            clique_stake_share: 0.6,
            ..small
        };
        let r = run_clique(&majority, &Params::default(), 9).expect("run");
        assert!(!r.row.pass, "{:?}", r.row);
    }

    #[test]
    fn safety_goals_fail_with_a_third_or_two_thirds_byzantine() {
        let small = ByzantineScenario {
            epochs: 6,
            ..ByzantineScenario::new(true)
        };
        let ok = run_byzantine(&small, &Params::default(), 11).expect("run");
        assert!(ok.rows.iter().all(|r| r.pass), "{:?}", ok.rows);
        // ≥ 1/3 byzantine: the partition gets both branches confirmed.
        let third = ByzantineScenario {
            byzantine_below: 0.45,
            ..small.clone()
        };
        let r = run_byzantine(&third, &Params::default(), 11).expect("run");
        let ds = r.rows.iter().find(|r| r.goal == GOAL_DOUBLE_SPEND);
        assert!(ds.is_some_and(|r| !r.pass), "{:?}", r.rows);
        // ≥ 2/3 byzantine: the coalition's own Mint goes through.
        let most = ByzantineScenario {
            byzantine_below: 0.9,
            ..small
        };
        let r = run_byzantine(&most, &Params::default(), 11).expect("run");
        let mint = r.rows.iter().find(|r| r.goal == GOAL_UNBACKED_MINT);
        assert!(mint.is_some_and(|r| !r.pass), "{:?}", r.rows);
    }

    #[test]
    fn predictions_match_the_spec() {
        let (mean, p99) = predicted_jobs_to_slash(&Params::default(), 0.1);
        assert!((mean - 100.0).abs() < 1e-9);
        assert_eq!(p99, 459.0);
    }

    #[test]
    fn same_seed_same_table() {
        let small = ByzantineScenario {
            epochs: 3,
            ..ByzantineScenario::new(true)
        };
        let a = run_byzantine(&small, &Params::default(), 2).expect("run");
        let b = run_byzantine(&small, &Params::default(), 2).expect("run");
        assert_eq!(a.rows, b.rows);
        assert_eq!(a.notes, b.notes);
        let r1 = run_routing(&small_routing(), &Params::default(), 2).expect("run");
        let r2 = run_routing(&small_routing(), &Params::default(), 2).expect("run");
        assert_eq!(r1.row, r2.row);
    }
}
