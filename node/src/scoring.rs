//! Routing score of candidate workers, probation for new identities, per-/24 and per-account caps,
//! and the randomized pick among the top candidates (specs/scoring.md). Also the gossipsub
//! application score (P5) derived from the same reputation.
//!
//! Pure: no clock, no I/O. The current epoch and the random source are arguments; the node feeds
//! [`Reputation`] from blocks the ledger confirmed (never from what a peer says about itself) and
//! builds a [`Candidate`] per provider from its stake table, ping EWMA and heartbeats.

use std::collections::HashMap;
use std::net::IpAddr;

use libp2p::PeerId;
use mycel_ledger::block::BlockBody;
use mycel_ledger::params::BPS;
use mycel_ledger::{AccountId, Block, Credits, Ledger, Params};

/// Epochs after which a reputation's decayed counters have halved (one week of one-hour epochs):
/// long enough that a steady worker keeps its standing over a day off, short enough that a
/// reputation built once and then abused fades within weeks.
pub const HALF_LIFE_EPOCHS: f64 = 168.0;
/// Decayed audited work (price scaled by 1/p, in credits) at which the volume part of a
/// reputation is 1/2.
pub const WORK_HALF_CREDITS: f64 = 100.0;
/// Weight of one failed audit against passed ones in [`Reputation::trust`]: a worker that fails
/// one audit in eleven is back to the trust of a newcomer.
pub const FAIL_WEIGHT: f64 = 10.0;
/// Most reputations a [`ReputationBook`] holds; the lowest-valued one is evicted beyond it
/// (an evicted account starts over on probation, so eviction never helps a cheater).
pub const MAX_REPUTATIONS: usize = 65_536;
/// Most candidates [`pick`] and [`distribution`] consider; later ones are ignored.
pub const MAX_CANDIDATES: usize = 1024;
/// Queue depths above this are treated as this (a heartbeat cannot push the load term to zero).
pub const MAX_QUEUE_DEPTH: u32 = 1024;

/// P5 for a perfect reputation (before `app_specific_weight`, which the spec sets to 1).
pub const P5_REPUTATION: f64 = 10.0;
/// P5 for stake at [`ScoringParams::stake_cap`].
pub const P5_STAKE: f64 = 5.0;
/// P5 per decayed failed audit (negative).
pub const P5_PER_FAILURE: f64 = -25.0;
/// Lowest P5: above libp2p's default graylist threshold (−80), so a slashed peer's own ledger
/// messages still propagate.
pub const P5_MIN: f64 = -60.0;

/// The network group a peer's address belongs to: an IPv4 /24 or an IPv6 /48. Peers of one group
/// share one cap in [`pick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subnet {
    /// First three octets of an IPv4 address (also for IPv4-mapped IPv6).
    V4([u8; 3]),
    /// First six bytes of an IPv6 address.
    V6([u8; 6]),
}

impl Subnet {
    /// The group of `ip`.
    pub fn of(ip: IpAddr) -> Subnet {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Subnet::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Subnet::of(IpAddr::V4(v4)),
                None => {
                    let o = v6.octets();
                    Subnet::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
                }
            },
        }
    }
}

/// What the ledger confirmed about one job of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkOutcome {
    /// A confirmed Claim of a public job that was not drawn for audit. It adds nothing: without an
    /// audit it cannot be told from a job the worker paid to itself, which costs nothing.
    Unaudited,
    /// A confirmed Claim of a public job that passed its audit. `work` is its price scaled by
    /// `10⁴/audit_bps` — an unbiased estimate of all the worker's work, each credit of which cost
    /// the validators' fee on an audited job.
    Passed {
        /// `price · 10⁴ / audit_bps`.
        work: Credits,
    },
    /// A confirmed Slash: the job failed its audit.
    Slashed,
}

impl WorkOutcome {
    /// The worker and outcome of a block the ledger confirmed: a Claim of a public escrow or a
    /// Slash. `None` for other kinds and for private jobs (never audited).
    pub fn from_confirmed(ledger: &Ledger, block: &Block) -> Option<(AccountId, WorkOutcome)> {
        match &block.body {
            BlockBody::Claim(c) => {
                let escrow = ledger.escrow(&c.escrow)?;
                if escrow.private {
                    return None;
                }
                let outcome = if c.verdicts.is_empty() {
                    WorkOutcome::Unaudited
                } else {
                    WorkOutcome::Passed {
                        work: audited_work(c.receipt.price, ledger.params()),
                    }
                };
                Some((block.account, outcome))
            }
            BlockBody::Slash(s) => Some((s.receipt.worker, WorkOutcome::Slashed)),
            _ => None,
        }
    }
}

/// `price · 10⁴ / audit_bps` (saturating): what one audited job stands for.
pub fn audited_work(price: Credits, params: &Params) -> Credits {
    Credits(price.0.saturating_mul(BPS) / u128::from(params.audit_bps.max(1)))
}

/// A worker account's record of ledger-confirmed work and audits, with exponential decay
/// ([`HALF_LIFE_EPOCHS`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Reputation {
    work: f64,
    passed: f64,
    failed: f64,
    passed_total: u32,
    last_failure: Option<u64>,
    epoch: u64,
}

impl Reputation {
    /// No record, as of `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self {
            work: 0.0,
            passed: 0.0,
            failed: 0.0,
            passed_total: 0,
            last_failure: None,
            epoch,
        }
    }

    /// Decays the counters to `epoch` (no-op for an earlier epoch).
    pub fn advance(&mut self, epoch: u64) {
        if epoch <= self.epoch {
            return;
        }
        let f = 0.5f64.powf((epoch - self.epoch) as f64 / HALF_LIFE_EPOCHS);
        self.work *= f;
        self.passed *= f;
        self.failed *= f;
        self.epoch = epoch;
    }

    /// Records a confirmed outcome that happened in `epoch`.
    pub fn record(&mut self, outcome: WorkOutcome, epoch: u64) {
        self.advance(epoch);
        match outcome {
            WorkOutcome::Unaudited => {}
            WorkOutcome::Passed { work } => {
                self.work += work.0 as f64 / Credits::MICROS_PER_CREDIT as f64;
                self.passed += 1.0;
                self.passed_total = self.passed_total.saturating_add(1);
            }
            WorkOutcome::Slashed => {
                self.failed += 1.0;
                self.last_failure = Some(self.last_failure.map_or(epoch, |e| e.max(epoch)));
            }
        }
    }

    /// Audits passed, ever (not decayed): ends probation.
    pub fn audits_passed(&self) -> u32 {
        self.passed_total
    }

    /// Decayed failed audits.
    pub fn failures(&self) -> f64 {
        self.failed
    }

    /// True when an audit failed at or after `since`.
    pub fn failed_since(&self, since: u64) -> bool {
        self.last_failure.is_some_and(|e| e >= since)
    }

    /// `(passed + 1) / (passed + 2 + FAIL_WEIGHT·failed)`, in (0, 1): ½ for a newcomer.
    pub fn trust(&self) -> f64 {
        (self.passed + 1.0) / (self.passed + 2.0 + FAIL_WEIGHT * self.failed)
    }

    /// `work / (work + WORK_HALF_CREDITS)`, in [0, 1).
    pub fn volume(&self) -> f64 {
        self.work / (self.work + WORK_HALF_CREDITS)
    }

    /// `trust · volume`, in [0, 1): what routing and gossip use.
    pub fn value(&self) -> f64 {
        self.trust() * self.volume()
    }
}

/// Reputations by account, bounded by [`MAX_REPUTATIONS`].
#[derive(Clone, Debug, Default)]
pub struct ReputationBook {
    entries: HashMap<AccountId, Reputation>,
}

impl ReputationBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// The reputation of `account` (a fresh one as of `epoch` when unknown).
    pub fn get(&self, account: &AccountId, epoch: u64) -> Reputation {
        self.entries
            .get(account)
            .cloned()
            .unwrap_or_else(|| Reputation::new(epoch))
    }

    /// Records what a confirmed block says about its worker (see [`WorkOutcome::from_confirmed`]);
    /// `epoch` is the block's epoch. Returns the worker when something was recorded.
    pub fn record_block(
        &mut self,
        ledger: &Ledger,
        block: &Block,
        epoch: u64,
    ) -> Option<AccountId> {
        let (worker, outcome) = WorkOutcome::from_confirmed(ledger, block)?;
        self.record(worker, outcome, epoch);
        Some(worker)
    }

    /// Records an outcome for `account`.
    pub fn record(&mut self, account: AccountId, outcome: WorkOutcome, epoch: u64) {
        if !self.entries.contains_key(&account) && self.entries.len() >= MAX_REPUTATIONS {
            self.evict_lowest();
        }
        self.entries
            .entry(account)
            .or_insert_with(|| Reputation::new(epoch))
            .record(outcome, epoch);
    }

    fn evict_lowest(&mut self) {
        let lowest = self
            .entries
            .iter()
            .min_by(|a, b| a.1.value().total_cmp(&b.1.value()).then(a.0.cmp(b.0)))
            .map(|(a, _)| *a);
        if let Some(a) = lowest {
            self.entries.remove(&a);
        }
    }

    /// Number of accounts held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A peer that could serve a job, as the requester's node sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerId,
    /// The account its node key is bound to.
    pub account: AccountId,
    /// The network group of the address we reach it on.
    pub subnet: Subnet,
    /// The account's bonded stake in the latest stake table.
    pub stake: Credits,
    /// The account's ledger-confirmed record.
    pub reputation: Reputation,
    /// Our ping round-trip EWMA to it, in ms (`None` before the first pong).
    pub latency_ewma_ms: Option<f64>,
    /// Queue depth from its latest heartbeat (self-reported).
    pub queue_depth: u32,
    /// How well its advertised specialization matches the query, in [0, 1] (e.g. cosine
    /// similarity of the query embedding to its centroid; 1 for a replicated general model).
    pub specialization: f32,
    /// Epoch we first saw its account.
    pub first_seen_epoch: u64,
}

/// Routing knobs (specs/scoring.md §5 gives the defaults and their reasons).
#[derive(Clone, Debug, PartialEq)]
pub struct ScoringParams {
    /// Stake at which the stake term saturates.
    pub stake_cap: Credits,
    /// Merit every eligible candidate has, so a new honest peer is never scored zero.
    pub w_base: f64,
    /// Weight of `√(stake / stake_cap)` in the merit.
    pub w_stake: f64,
    /// Weight of [`Reputation::value`] in the merit.
    pub w_reputation: f64,
    /// Weight of specialization: the fit factor is `1 − w + w·specialization`.
    pub w_specialization: f64,
    /// Latency at which the latency factor is ½, in ms.
    pub latency_ref_ms: f64,
    /// Latency assumed before the first ping answer, in ms.
    pub unknown_latency_ms: f64,
    /// Queue depth at which the load factor is ½.
    pub load_ref: f64,
    /// Share of picks, over time, that may go to candidates on probation while an established
    /// candidate is available.
    pub probation_share: f64,
    /// Audits an account must have passed to leave probation.
    pub probation_audits: u32,
    /// Epochs an account stays on probation after it is first seen.
    pub probation_epochs: u64,
    /// Epochs an account returns to probation for after a failed audit.
    pub failure_probation_epochs: u64,
    /// Size of the shortlist the random pick draws from.
    pub top_k: usize,
    /// Most pick probability one shortlist entry (hence one /24, one account) may hold.
    pub max_share: f64,
}

impl Default for ScoringParams {
    fn default() -> Self {
        Self {
            stake_cap: Credits::whole(1_000),
            w_base: 0.05,
            w_stake: 0.45,
            w_reputation: 0.5,
            w_specialization: 0.3,
            latency_ref_ms: 200.0,
            unknown_latency_ms: 250.0,
            load_ref: 4.0,
            probation_share: 0.005,
            probation_audits: 1,
            probation_epochs: 2,
            failure_probation_epochs: HALF_LIFE_EPOCHS as u64,
            top_k: 5,
            max_share: 0.4,
        }
    }
}

/// The per-job context of a pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickContext {
    /// The current epoch.
    pub epoch: u64,
    /// The bond a worker needs for this job ([`required_bond`]); candidates below it are skipped.
    pub min_bond: Credits,
}

/// The bond a worker needs for a job of `price`: `bond_ratio_bps` of the slash target
/// `price·10⁴/audit_bps` (specs/ledger.md §4), so that cheating on the job loses money in
/// expectation. Saturates instead of overflowing.
pub fn required_bond(price: Credits, params: &Params) -> Credits {
    let p = u128::from(params.audit_bps.max(1));
    let target = price.0.saturating_mul(BPS) / p;
    Credits(target.saturating_mul(u128::from(params.bond_ratio_bps)) / BPS)
}

/// `min(1, √(stake / stake_cap))`: concave, so a modest bond already counts, and capped, so no whale
/// attracts more than a full stake term. (Concavity favours splitting stake over identities;
/// probation, the bond a job requires and the one-slot-per-account rule counter that.)
pub fn stake_term(stake: Credits, params: &ScoringParams) -> f64 {
    if params.stake_cap.is_zero() {
        return 1.0;
    }
    (stake.0 as f64 / params.stake_cap.0 as f64).sqrt().min(1.0)
}

/// The routing score of a candidate, > 0 and finite for any input:
/// `merit · fit · latency factor · load factor` (specs/scoring.md §2).
pub fn score(c: &Candidate, params: &ScoringParams) -> f64 {
    let finite = |x: f64, or: f64| if x.is_finite() { x } else { or };
    let merit = params.w_base.max(1e-9)
        + params.w_stake.max(0.0) * stake_term(c.stake, params)
        + params.w_reputation.max(0.0) * finite(c.reputation.value(), 0.0).clamp(0.0, 1.0);
    let spec = finite(f64::from(c.specialization), 0.0).clamp(0.0, 1.0);
    let w_spec = finite(params.w_specialization, 0.0).clamp(0.0, 1.0);
    let fit = (1.0 - w_spec + w_spec * spec).max(1e-9);
    let latency = c
        .latency_ewma_ms
        .filter(|l| l.is_finite() && *l >= 0.0)
        .unwrap_or(params.unknown_latency_ms)
        .max(0.0);
    let lat_ref = params.latency_ref_ms.max(1e-9);
    let load = f64::from(c.queue_depth.min(MAX_QUEUE_DEPTH));
    let load_ref = params.load_ref.max(1e-9);
    let s = merit * fit / (1.0 + latency / lat_ref) / (1.0 + load / load_ref);
    finite(s, 0.0).max(f64::MIN_POSITIVE)
}

/// True while `c` may only get the probation share: fewer than `probation_audits` passed audits,
/// first seen less than `probation_epochs` ago, or an audit failed within
/// `failure_probation_epochs`.
pub fn on_probation(c: &Candidate, params: &ScoringParams, epoch: u64) -> bool {
    c.reputation.audits_passed() < params.probation_audits
        || epoch < c.first_seen_epoch.saturating_add(params.probation_epochs)
        || c.reputation
            .failed_since(epoch.saturating_sub(params.failure_probation_epochs))
}

/// The probability with which [`pick`] returns each candidate (0 for ineligible ones and those
/// beyond [`MAX_CANDIDATES`]); sums to 1, or is all zero when no candidate is eligible.
///
/// Eligible = stake ≥ `ctx.min_bond`. Eligible candidates split into established and probation
/// pools; the probation pool gets `probation_share` of the mass when both are non-empty (all of it
/// when no established candidate exists). Within a pool: candidates by score, best first, fill a
/// shortlist of `top_k` admitting at most one per /24 and one per account; the shortlist's scores
/// are capped so that none holds more than `max(max_share, 1/len)` of the pool, and the pool's
/// mass is split in proportion to the capped scores.
pub fn distribution(cands: &[Candidate], ctx: &PickContext, params: &ScoringParams) -> Vec<f64> {
    let mut probs = vec![0.0; cands.len()];
    let considered = &cands[..cands.len().min(MAX_CANDIDATES)];
    let mut established: Vec<(usize, f64)> = Vec::new();
    let mut probation: Vec<(usize, f64)> = Vec::new();
    for (i, c) in considered.iter().enumerate() {
        if c.stake < ctx.min_bond {
            continue;
        }
        let s = score(c, params);
        if on_probation(c, params, ctx.epoch) {
            probation.push((i, s));
        } else {
            established.push((i, s));
        }
    }
    let share = finite_share(params.probation_share);
    let (mass_e, mass_p) = match (established.is_empty(), probation.is_empty()) {
        (true, true) => return probs,
        (false, true) => (1.0, 0.0),
        (true, false) => (0.0, 1.0),
        (false, false) => (1.0 - share, share),
    };
    for (pool, mass) in [(established, mass_e), (probation, mass_p)] {
        if mass <= 0.0 || pool.is_empty() {
            continue;
        }
        let short = shortlist(considered, pool, params.top_k.max(1));
        let weights = cap_shares(
            &short.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            finite_share(params.max_share),
        );
        let total: f64 = weights.iter().sum();
        for ((i, _), w) in short.iter().zip(&weights) {
            probs[*i] += mass * w / total;
        }
    }
    probs
}

fn finite_share(x: f64) -> f64 {
    if x.is_finite() {
        x.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The best `k` of `pool` by score (ties: lower index), at most one per subnet and per account.
fn shortlist(cands: &[Candidate], mut pool: Vec<(usize, f64)>, k: usize) -> Vec<(usize, f64)> {
    let k = k.min(pool.len());
    pool.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut subnets: Vec<Subnet> = Vec::with_capacity(k);
    let mut accounts: Vec<AccountId> = Vec::with_capacity(k);
    let mut out = Vec::with_capacity(k);
    for (i, s) in pool {
        let c = &cands[i];
        if subnets.contains(&c.subnet) || accounts.contains(&c.account) {
            continue;
        }
        subnets.push(c.subnet);
        accounts.push(c.account);
        out.push((i, s));
        if out.len() == k {
            break;
        }
    }
    out
}

/// Lowers the largest weights to a common level so that none exceeds `cap` of the total
/// (`cap` is raised to `1/len` when smaller, the only feasible level). Order is preserved; weights
/// below the level are unchanged.
fn cap_shares(weights: &[f64], cap: f64) -> Vec<f64> {
    let n = weights.len();
    if n == 0 {
        return Vec::new();
    }
    let cap = cap.max(1.0 / n as f64);
    let mut sorted: Vec<f64> = weights.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    // With the top j weights lowered to L and the rest unchanged (sum R): L = cap·(j·L + R).
    let mut rest: f64 = sorted.iter().sum();
    for (j, w) in sorted.iter().enumerate() {
        let denom = 1.0 - cap * j as f64;
        if denom <= 1e-12 {
            break;
        }
        let level = cap * rest / denom;
        if *w <= level {
            return weights.iter().map(|x| x.min(level)).collect();
        }
        rest -= w;
    }
    vec![1.0; n]
}

/// Picks a candidate: a draw from [`distribution`] with one `u64` of `rng`. `None` when no
/// candidate is eligible.
pub fn pick<R: rand::Rng + ?Sized>(
    cands: &[Candidate],
    ctx: &PickContext,
    params: &ScoringParams,
    rng: &mut R,
) -> Option<usize> {
    let probs = distribution(cands, ctx, params);
    // 53 random bits → uniform in [0, 1).
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    let mut last = None;
    for (i, p) in probs.iter().enumerate() {
        if *p <= 0.0 {
            continue;
        }
        acc += p;
        last = Some(i);
        if u < acc {
            return Some(i);
        }
    }
    // Rounding left the cumulative sum a hair below 1.
    last
}

/// The gossipsub application-specific score (P5) of a peer whose account has `reputation` and
/// `stake`, for `app_specific_weight = 1` (specs/scoring.md §6):
/// `10·value + 5·stake term − 25·failures`, floored at −60.
pub fn gossip_app_score(reputation: &Reputation, stake: Credits, params: &ScoringParams) -> f64 {
    let s = P5_REPUTATION * reputation.value()
        + P5_STAKE * stake_term(stake, params)
        + P5_PER_FAILURE * reputation.failures();
    if s.is_finite() { s.max(P5_MIN) } else { P5_MIN }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;

    fn peer(i: u32) -> PeerId {
        let mut seed = [0u8; 32];
        seed[..4].copy_from_slice(&i.to_le_bytes());
        match libp2p::identity::Keypair::ed25519_from_bytes(seed) {
            Ok(k) => k.public().to_peer_id(),
            Err(e) => panic!("test key: {e}"),
        }
    }

    fn established(n: u32) -> Reputation {
        let mut r = Reputation::new(0);
        for _ in 0..n {
            r.record(
                WorkOutcome::Passed {
                    work: Credits::whole(10),
                },
                0,
            );
        }
        r
    }

    fn cand(i: u32, stake: u128, rep: Reputation) -> Candidate {
        Candidate {
            peer: peer(i),
            account: AccountId([u8::try_from(i % 251).unwrap_or(0); 32]),
            subnet: Subnet::V4([10, u8::try_from(i % 251).unwrap_or(0), 0]),
            stake: Credits::whole(stake),
            reputation: rep,
            latency_ewma_ms: Some(100.0),
            queue_depth: 1,
            specialization: 0.5,
            first_seen_epoch: 0,
        }
    }

    const CTX: PickContext = PickContext {
        epoch: 100,
        min_bond: Credits::ZERO,
    };

    #[test]
    fn subnet_groups_v4_v6_and_mapped() {
        let a = Subnet::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        let b = Subnet::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200)));
        let c = Subnet::of(IpAddr::V4(Ipv4Addr::new(192, 0, 3, 7)));
        let mapped = Subnet::of(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped()));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, mapped);
        let v6a = Subnet::of(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 1)));
        let v6b = Subnet::of(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 9, 0, 0, 0, 1)));
        assert_eq!(v6a, v6b);
    }

    #[test]
    fn reputation_trust_volume_decay_and_failure() {
        let mut r = Reputation::new(0);
        assert_eq!(r.value(), 0.0);
        assert!((r.trust() - 0.5).abs() < 1e-12);
        r.record(WorkOutcome::Unaudited, 0);
        assert_eq!(r, Reputation::new(0), "unaudited work counts for nothing");
        r.record(
            WorkOutcome::Passed {
                work: Credits::whole(100),
            },
            0,
        );
        assert!((r.volume() - 0.5).abs() < 1e-12);
        assert!((r.trust() - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.audits_passed(), 1);
        r.advance(HALF_LIFE_EPOCHS as u64);
        assert!((r.volume() - 50.0 / 150.0).abs() < 1e-9, "work halved");
        let before = r.value();
        r.record(WorkOutcome::Slashed, 200);
        assert!(r.value() < before / 4.0, "a failed audit costs most of it");
        assert!(r.failed_since(200) && !r.failed_since(201));
        // Decay is monotone and never goes back in time.
        r.advance(100);
        assert!(r.failed_since(150));
    }

    #[test]
    fn probation_rules() {
        let p = ScoringParams::default();
        let fresh = cand(1, 100, Reputation::new(0));
        assert!(on_probation(&fresh, &p, 100), "no audited work");
        let mut young = cand(2, 100, established(3));
        young.first_seen_epoch = 99;
        assert!(on_probation(&young, &p, 100), "too young");
        assert!(!on_probation(&young, &p, 101));
        let mut failed = cand(3, 100, established(30));
        failed.reputation.record(WorkOutcome::Slashed, 50);
        assert!(on_probation(&failed, &p, 100));
        assert!(!on_probation(
            &failed,
            &p,
            50 + p.failure_probation_epochs + 1
        ));
    }

    #[test]
    fn required_bond_follows_the_slash_rule() {
        let params = Params::default();
        // p = 10 %, ratio 100 %: bond = price / p.
        assert_eq!(
            required_bond(Credits::whole(1), &params),
            Credits::whole(10)
        );
        let half = Params {
            bond_ratio_bps: 5_000,
            ..Params::default()
        };
        assert_eq!(required_bond(Credits::whole(1), &half), Credits::whole(5));
        assert_eq!(
            required_bond(Credits(u128::MAX), &params),
            Credits(u128::MAX / BPS)
        );
    }

    #[test]
    fn bond_below_the_job_excludes_a_candidate() {
        let p = ScoringParams::default();
        let cands = vec![cand(1, 5, established(5)), cand(2, 50, established(5))];
        let ctx = PickContext {
            epoch: 100,
            min_bond: Credits::whole(10),
        };
        let d = distribution(&cands, &ctx, &p);
        assert_eq!(d, vec![0.0, 1.0]);
        let none = PickContext {
            min_bond: Credits::whole(1000),
            ..ctx
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        assert_eq!(pick(&cands, &none, &p, &mut rng), None);
    }

    #[test]
    fn one_subnet_or_account_gets_one_slot() {
        let p = ScoringParams::default();
        // Ten strong peers in one /24 and one weak peer elsewhere.
        let mut cands: Vec<Candidate> = (0..10)
            .map(|i| {
                let mut c = cand(i, 1000, established(50));
                c.subnet = Subnet::V4([1, 2, 3]);
                c
            })
            .collect();
        cands.push(cand(20, 1, established(1)));
        let d = distribution(&cands, &CTX, &p);
        let group: f64 = d[..10].iter().sum();
        // Two shortlist entries only: the cap (0.4) is infeasible, so each gets half.
        assert!((group - 0.5).abs() < 1e-9, "{d:?}");
        assert!((d[10] - 0.5).abs() < 1e-9);
        // Same with one account over many subnets.
        let mut cands: Vec<Candidate> = (0..10)
            .map(|i| {
                let mut c = cand(i, 1000, established(50));
                c.account = AccountId([7; 32]);
                c
            })
            .collect();
        cands.extend((20..25).map(|i| cand(i, 1, established(1))));
        let d = distribution(&cands, &CTX, &p);
        let group: f64 = d[..10].iter().sum();
        assert!(group <= p.max_share + 1e-9, "{group}");
    }

    #[test]
    fn extreme_params_do_not_panic() {
        let p = ScoringParams {
            top_k: usize::MAX,
            max_share: f64::NAN,
            probation_share: f64::INFINITY,
            w_base: f64::NAN,
            latency_ref_ms: 0.0,
            load_ref: -1.0,
            ..ScoringParams::default()
        };
        let mut c = cand(1, 10, established(2));
        c.latency_ewma_ms = Some(f64::NAN);
        c.specialization = f32::NAN;
        c.queue_depth = u32::MAX;
        let cands = vec![c, cand(2, 10, Reputation::new(0))];
        let d = distribution(&cands, &CTX, &p);
        assert!((d.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{d:?}");
        assert!(score(&cands[0], &p) > 0.0);
    }

    #[test]
    fn pick_follows_the_distribution() {
        let p = ScoringParams::default();
        let mut cands: Vec<Candidate> = (0..8)
            .map(|i| cand(i, 100 * u128::from(i + 1), established(i + 1)))
            .collect();
        cands.push(cand(30, 5000, Reputation::new(0)));
        let d = distribution(&cands, &CTX, &p);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let n = 200_000;
        let mut counts = vec![0usize; cands.len()];
        for _ in 0..n {
            if let Some(i) = pick(&cands, &CTX, &p, &mut rng) {
                counts[i] += 1;
            }
        }
        for (i, (c, q)) in counts.iter().zip(&d).enumerate() {
            let f = *c as f64 / n as f64;
            let sd = (q * (1.0 - q) / n as f64).sqrt();
            assert!(
                (f - q).abs() <= 5.0 * sd + 1e-9,
                "candidate {i}: {f} vs {q}"
            );
        }
        assert!(
            (d[8] - p.probation_share).abs() < 1e-12,
            "probation peer gets exactly its share"
        );
    }

    #[test]
    fn gossip_score_crosses_the_thresholds_as_specified() {
        let p = ScoringParams::default();
        let fresh = Reputation::new(0);
        assert_eq!(gossip_app_score(&fresh, Credits::ZERO, &p), 0.0);
        let mut good = Reputation::new(0);
        for _ in 0..100 {
            good.record(
                WorkOutcome::Passed {
                    work: Credits::whole(100),
                },
                0,
            );
        }
        let top = gossip_app_score(&good, p.stake_cap, &p);
        assert!(
            top > 10.0 && top <= 15.0,
            "PX accepted from the best: {top}"
        );
        let mut bad = good.clone();
        bad.record(WorkOutcome::Slashed, 0);
        let one = gossip_app_score(&bad, p.stake_cap, &p);
        assert!(
            one < -10.0 && one > -50.0,
            "below gossip, above publish: {one}"
        );
        for _ in 0..10 {
            bad.record(WorkOutcome::Slashed, 0);
        }
        assert_eq!(gossip_app_score(&bad, p.stake_cap, &p), P5_MIN);
    }

    #[test]
    fn book_is_bounded_and_evicts_the_lowest() {
        let mut book = ReputationBook::new();
        for i in 0..(MAX_REPUTATIONS as u32 + 10) {
            let mut a = [0u8; 32];
            a[..4].copy_from_slice(&i.to_le_bytes());
            let outcome = WorkOutcome::Passed {
                work: Credits::whole(1 + u128::from(i % 7)),
            };
            book.record(AccountId(a), outcome, 0);
        }
        assert_eq!(book.len(), MAX_REPUTATIONS);
    }

    fn arb_rep() -> impl Strategy<Value = Reputation> {
        (0u32..40, 0u32..3, 0u128..500).prop_map(|(passed, failed, work)| {
            let mut r = Reputation::new(0);
            for _ in 0..passed {
                r.record(
                    WorkOutcome::Passed {
                        work: Credits::ZERO,
                    },
                    0,
                );
            }
            r.record(
                WorkOutcome::Passed {
                    work: Credits::whole(work),
                },
                0,
            );
            for _ in 0..failed {
                r.record(WorkOutcome::Slashed, 0);
            }
            r
        })
    }

    prop_compose! {
        fn arb_cand()(
            i in 0u32..1000,
            subnet in 0u8..6,
            account in 0u8..6,
            stake in 0u128..5000,
            rep in arb_rep(),
            latency in prop::option::of(0.0f64..2000.0),
            queue in 0u32..50,
            spec in 0.0f32..=1.0,
            seen in 0u64..120,
        ) -> Candidate {
            Candidate {
                peer: peer(i),
                account: AccountId([account; 32]),
                subnet: Subnet::V4([subnet, 0, 0]),
                stake: Credits::whole(stake),
                reputation: rep,
                latency_ewma_ms: latency,
                queue_depth: queue,
                specialization: spec,
                first_seen_epoch: seen,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn score_is_monotone_in_stake_and_reputation(
            c in arb_cand(),
            more_stake in 0u128..10_000,
            extra_passes in 0u32..5,
            extra_work in 0u128..1000,
        ) {
            let p = ScoringParams::default();
            let base = score(&c, &p);
            prop_assert!(base.is_finite() && base > 0.0);
            let mut richer = c.clone();
            richer.stake = Credits(c.stake.0 + Credits::whole(more_stake).0);
            prop_assert!(score(&richer, &p) >= base);
            let mut better = c.clone();
            for _ in 0..extra_passes {
                better.reputation.record(WorkOutcome::Passed { work: Credits::ZERO }, 0);
            }
            better.reputation.record(WorkOutcome::Passed { work: Credits::whole(extra_work) }, 0);
            prop_assert!(score(&better, &p) >= base);
            // And strictly below the stake cap.
            if c.stake < p.stake_cap && more_stake > 0 {
                prop_assert!(score(&richer, &p) > base);
            }
        }

        #[test]
        fn distribution_respects_probation_and_caps(
            cands in prop::collection::vec(arb_cand(), 0..40),
            min_bond in 0u128..100,
            epoch in 0u64..200,
        ) {
            let p = ScoringParams::default();
            let ctx = PickContext { epoch, min_bond: Credits::whole(min_bond) };
            let d = distribution(&cands, &ctx, &p);
            prop_assert_eq!(d.len(), cands.len());
            let total: f64 = d.iter().sum();
            let eligible: Vec<usize> =
                (0..cands.len()).filter(|i| cands[*i].stake >= ctx.min_bond).collect();
            if eligible.is_empty() {
                prop_assert_eq!(total, 0.0);
                return Ok(());
            }
            prop_assert!((total - 1.0).abs() < 1e-9);
            for (i, q) in d.iter().enumerate() {
                prop_assert!(*q >= 0.0);
                if cands[i].stake < ctx.min_bond {
                    prop_assert_eq!(*q, 0.0);
                }
            }
            let probation = |i: usize| on_probation(&cands[i], &p, epoch);
            let any_established = eligible.iter().any(|i| !probation(*i));
            let prob_mass: f64 = (0..cands.len()).filter(|i| probation(*i)).map(|i| d[i]).sum();
            if any_established {
                prop_assert!(prob_mass <= p.probation_share + 1e-9);
            }
            // Within each pool: at most one candidate per /24 and per account has a chance, and
            // none holds more than max(max_share, 1/m) of the pool's mass (m = its shortlist).
            for in_probation in [false, true] {
                let members: Vec<usize> = (0..cands.len())
                    .filter(|i| d[*i] > 0.0 && probation(*i) == in_probation)
                    .collect();
                if members.is_empty() {
                    continue;
                }
                prop_assert!(members.len() <= p.top_k);
                let mass: f64 = members.iter().map(|i| d[*i]).sum();
                let cap = p.max_share.max(1.0 / members.len() as f64);
                for (x, i) in members.iter().enumerate() {
                    prop_assert!(d[*i] <= mass * cap + 1e-9);
                    for j in &members[x + 1..] {
                        prop_assert!(cands[*i].subnet != cands[*j].subnet);
                        prop_assert!(cands[*i].account != cands[*j].account);
                    }
                }
            }
        }

        #[test]
        fn probation_peers_never_exceed_their_share_in_the_long_run(
            cands in prop::collection::vec(arb_cand(), 2..20),
            seed in any::<u64>(),
        ) {
            let p = ScoringParams { probation_share: 0.05, ..ScoringParams::default() };
            let ctx = PickContext { epoch: 150, min_bond: Credits::ZERO };
            let any_established = cands.iter().any(|c| !on_probation(c, &p, ctx.epoch));
            prop_assume!(any_established);
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let n = 4000;
            let mut hits = 0usize;
            for _ in 0..n {
                if let Some(i) = pick(&cands, &ctx, &p, &mut rng)
                    && on_probation(&cands[i], &p, ctx.epoch)
                {
                    hits += 1;
                }
            }
            // Binomial(n, ≤ 0.05): mean 200, sd ≈ 13.8; 6 sd above the share never happens.
            prop_assert!(hits <= 200 + 83, "{hits} of {n}");
        }
    }
}
