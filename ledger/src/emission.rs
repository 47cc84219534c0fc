//! Epoch emission split (specs/ledger.md §5.5): who receives an epoch's capped Mint.
//!
//! Pure. Every staked validator reports, per account, the confirmed public work and the validation
//! it saw in the epoch — the "weights" each validator sets on each account, as in Bittensor's Yuma
//! consensus. An account's weight is the **stake-weighted median** of those reports: the largest
//! value that validators holding more than half of the epoch's stake reported at least (a validator
//! that sent no report, or left the account out, reported zero). Each report is thereby clipped to
//! what the majority saw, so a clique holding less than half of the stake can neither raise its own
//! weight nor lower anyone else's.
//!
//! The emission is then split in two pools — [`WORK_POOL_BPS`] by work, the rest by validation —
//! each in proportion to the clipped weights, floored, at most [`MAX_RECIPIENTS`] recipients.
//! [`observe`] computes an honest validator's report from a ledger: confirmed, audited Claims and
//! Slashes of public jobs only (private jobs earn no emission).

use std::collections::{BTreeMap, BTreeSet};

use crate::block::BlockBody;
use crate::codec::MAX_LIST;
use crate::error::{LedgerError, Result};
use crate::ledger::Ledger;
use crate::params::BPS;
use crate::quorum::EpochInfo;
use crate::state::EscrowStatus;
use crate::types::{AccountId, Credits};

/// Share of an epoch's emission split by confirmed work, in basis points; the rest is split by
/// validation. Work is what users pay for; validation is already paid a fee per audited job
/// (`validator_share_bps`), so it gets the smaller pool.
pub const WORK_POOL_BPS: u128 = 8_000;
/// Most recipients of one Mint (the ledger's list limit); smaller shares beyond it are not minted.
pub const MAX_RECIPIENTS: usize = MAX_LIST;
/// Most accounts one report may name; a longer report is refused.
pub const MAX_REPORT_ACCOUNTS: usize = 65_536;

/// What one account contributed in an epoch, as a validator saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Contribution {
    /// Audited work: Σ price·10⁴/audit_bps over the account's confirmed Claims of public jobs that
    /// were drawn for audit (µ-credits). Unaudited Claims count for nothing: a job a worker pays
    /// to itself costs nothing when unaudited, and whoever posts the escrow can choose job ids
    /// that are not drawn; an audited job costs the validators' fee.
    pub work: Credits,
    /// Audit seats the account held in confirmed verdict quorums (Claims and Slashes).
    pub validations: u64,
}

impl Contribution {
    /// True when both parts are zero.
    pub fn is_zero(&self) -> bool {
        self.work.is_zero() && self.validations == 0
    }
}

/// One validator's weights for an epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The reporting validator (counted with its stake in the epoch's table; ignored if absent).
    pub validator: AccountId,
    /// `(account, contribution)`, strictly increasing by account.
    pub contributions: Vec<(AccountId, Contribution)>,
}

/// The clipped weights: per account, the stake-weighted median of each part over all validators
/// of `info`. Accounts whose weight is zero in both parts are left out; the result is sorted.
///
/// Errors: two reports from one validator, a report not strictly sorted, or longer than
/// [`MAX_REPORT_ACCOUNTS`].
pub fn consensus(info: &EpochInfo, reports: &[Report]) -> Result<Vec<(AccountId, Contribution)>> {
    let mut seen: BTreeSet<AccountId> = BTreeSet::new();
    let mut work: BTreeMap<AccountId, Vec<(u128, u128)>> = BTreeMap::new();
    let mut vals: BTreeMap<AccountId, Vec<(u128, u128)>> = BTreeMap::new();
    for r in reports {
        if r.contributions.len() > MAX_REPORT_ACCOUNTS {
            return Err(LedgerError::Invalid(
                "emission report names too many accounts",
            ));
        }
        if r.contributions.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(LedgerError::Invalid(
                "emission report must be strictly sorted by account",
            ));
        }
        if !seen.insert(r.validator) {
            return Err(LedgerError::Invalid(
                "two emission reports from one validator",
            ));
        }
        let stake = info.weight(&r.validator).0;
        if stake == 0 {
            continue;
        }
        for (a, c) in &r.contributions {
            if !c.work.is_zero() {
                work.entry(*a).or_default().push((c.work.0, stake));
            }
            if c.validations > 0 {
                vals.entry(*a)
                    .or_default()
                    .push((u128::from(c.validations), stake));
            }
        }
    }
    let total = info.total.0;
    let mut out: BTreeMap<AccountId, Contribution> = BTreeMap::new();
    for (a, mut v) in work {
        let m = stake_median(&mut v, total);
        if m > 0 {
            out.entry(a).or_default().work = Credits(m);
        }
    }
    for (a, mut v) in vals {
        let m = stake_median(&mut v, total);
        if m > 0 {
            // Reported counts are u64, so the median is one of them.
            out.entry(a).or_default().validations = u64::try_from(m).unwrap_or(u64::MAX);
        }
    }
    Ok(out.into_iter().collect())
}

/// The largest reported value `x` such that the stake of reporters of at least `x` is more than
/// half of `total` (0 when no such value exists). `reports` is `(value, stake)`, values > 0.
fn stake_median(reports: &mut [(u128, u128)], total: u128) -> u128 {
    reports.sort_unstable_by_key(|r| std::cmp::Reverse(r.0));
    let mut support = 0u128;
    for (value, stake) in reports.iter() {
        support = support.saturating_add(*stake);
        if support.saturating_mul(2) > total {
            return *value;
        }
    }
    0
}

/// Splits `emission` by clipped weights: [`WORK_POOL_BPS`] of it in proportion to work, the rest
/// in proportion to validations, each share floored. When more than [`MAX_RECIPIENTS`] accounts
/// have a positive amount, the largest amounts are kept (ties: lower account). The result is
/// sorted by account, amounts > 0, Σ ≤ `emission`, and no account gets more than its share of
/// the pools computed over all accounts.
pub fn allocate(
    weights: &[(AccountId, Contribution)],
    emission: Credits,
) -> Result<Vec<(AccountId, Credits)>> {
    // ⌊emission · WORK_POOL_BPS / BPS⌋ without overflow for any emission.
    let work_pool = Credits(mul_div_floor(emission.0, WORK_POOL_BPS, BPS));
    let val_pool = emission.checked_sub(work_pool)?;
    let work: Vec<u128> = weights.iter().map(|(_, c)| c.work.0).collect();
    let vals: Vec<u128> = weights
        .iter()
        .map(|(_, c)| u128::from(c.validations))
        .collect();
    let work_shares = pro_rata(work_pool.0, &work);
    let val_shares = pro_rata(val_pool.0, &vals);
    let mut out: Vec<(AccountId, Credits)> = Vec::with_capacity(weights.len());
    for (i, (a, _)) in weights.iter().enumerate() {
        let amount = Credits(work_shares[i]).checked_add(Credits(val_shares[i]))?;
        if !amount.is_zero() {
            out.push((*a, amount));
        }
    }
    if out.len() > MAX_RECIPIENTS {
        out.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        out.truncate(MAX_RECIPIENTS);
    }
    out.sort_by_key(|(a, _)| *a);
    out.dedup_by_key(|(a, _)| *a);
    Ok(out)
}

/// `pool · wᵢ / Σw`, floored, for each weight (exact, with a 256-bit intermediate product); all
/// zero when Σw = 0. Σw saturates at `u128::MAX`, which only lowers shares.
fn pro_rata(pool: u128, weights: &[u128]) -> Vec<u128> {
    let sum = weights.iter().fold(0u128, |s, w| s.saturating_add(*w));
    if sum == 0 {
        return vec![0; weights.len()];
    }
    weights
        .iter()
        .map(|w| mul_div_floor(pool, *w, sum))
        .collect()
}

/// `⌊a·b/c⌋` for `b ≤ c`, `c > 0` (so the quotient fits in 128 bits).
fn mul_div_floor(a: u128, b: u128, c: u128) -> u128 {
    if let Some(p) = a.checked_mul(b) {
        return p / c;
    }
    // 256-bit product as (hi, lo), from 64-bit halves.
    let (a1, a0) = (a >> 64, a & u128::from(u64::MAX));
    let (b1, b0) = (b >> 64, b & u128::from(u64::MAX));
    let (p00, p01, p10, p11) = (a0 * b0, a0 * b1, a1 * b0, a1 * b1);
    let mid = (p00 >> 64) + (p01 & u128::from(u64::MAX)) + (p10 & u128::from(u64::MAX));
    let lo = (p00 & u128::from(u64::MAX)) | (mid << 64);
    let hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
    // Long division of (hi, lo) by c, one bit at a time; the remainder stays below c.
    let (mut rem, mut q) = (0u128, 0u128);
    for i in (0..256).rev() {
        let bit = if i >= 128 {
            (hi >> (i - 128)) & 1
        } else {
            (lo >> i) & 1
        };
        let carry = rem >> 127;
        rem = (rem << 1) | bit;
        if carry == 1 || rem >= c {
            rem = rem.wrapping_sub(c);
            if i < 128 {
                q |= 1 << i;
            }
        }
    }
    q
}

/// The Mint recipients of an epoch: [`consensus`] then [`allocate`].
pub fn split(
    info: &EpochInfo,
    reports: &[Report],
    emission: Credits,
) -> Result<Vec<(AccountId, Credits)>> {
    allocate(&consensus(info, reports)?, emission)
}

/// An honest validator's report for `epoch`, read from the confirmed blocks of `ledger`: for every
/// confirmed Claim stated in `epoch` of a public, unslashed escrow that was drawn for audit, the
/// worker is credited `price·10⁴/audit_bps` and each verdict signer its audit seats; for every
/// confirmed Slash stated in `epoch`, each verdict signer is credited its seats. Sorted by
/// account. Costs one pass over the ledger's blocks.
pub fn observe(ledger: &Ledger, epoch: u64) -> Vec<(AccountId, Contribution)> {
    let mut out: BTreeMap<AccountId, Contribution> = BTreeMap::new();
    for (_, block) in ledger.order() {
        if block.epoch != epoch || !ledger.is_confirmed(&block.hash()) {
            continue;
        }
        let (escrow, requester_sig, verdicts) = match &block.body {
            BlockBody::Claim(c) => {
                let Some(e) = ledger.escrow(&c.escrow) else {
                    continue;
                };
                if e.private
                    || e.slashed
                    || e.status != EscrowStatus::Claimed(block.hash())
                    || c.verdicts.is_empty()
                {
                    continue;
                }
                let p = u128::from(ledger.params().audit_bps.max(1));
                let work = c.receipt.price.0.saturating_mul(BPS) / p;
                let slot = out.entry(block.account).or_default();
                slot.work = Credits(slot.work.0.saturating_add(work));
                (c.escrow, &c.requester_sig, &c.verdicts)
            }
            BlockBody::Slash(s) => (s.escrow, &s.requester_sig, &s.verdicts),
            _ => continue,
        };
        let Some(draw) = ledger.audit_draw(&escrow, requester_sig) else {
            continue;
        };
        for v in verdicts {
            let seats = u64::try_from(draw.seats_of(&v.signer)).unwrap_or(u64::MAX);
            let slot = out.entry(v.signer).or_default();
            slot.validations = slot.validations.saturating_add(seats);
        }
    }
    out.into_iter().filter(|(_, c)| !c.is_zero()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn acct(i: u8) -> AccountId {
        AccountId([i; 32])
    }

    fn table(stakes: &[u128]) -> EpochInfo {
        let t = stakes
            .iter()
            .enumerate()
            .map(|(i, s)| (acct(u8::try_from(i).unwrap_or(u8::MAX)), Credits(*s)))
            .collect();
        EpochInfo::new(0, [0; 32], t).expect("table")
    }

    fn report(v: u8, items: &[(u8, u128, u64)]) -> Report {
        Report {
            validator: acct(v),
            contributions: items
                .iter()
                .map(|(a, w, n)| {
                    (
                        acct(*a),
                        Contribution {
                            work: Credits(*w),
                            validations: *n,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn median_clips_a_minority_clique() {
        // Validators 0..3 honest (stake 30 each = 90), validator 3 the clique (stake 10).
        let info = table(&[30, 30, 30, 10]);
        let honest = [(3u8, 100u128, 0u64), (10, 900, 0)];
        let mut reports: Vec<Report> = (0..3).map(|v| report(v, &honest)).collect();
        // The clique claims 1000× its work for account 3 and zero for account 10.
        reports.push(report(3, &[(3, 100_000, 50)]));
        let w = consensus(&info, &reports).expect("consensus");
        assert_eq!(
            w,
            vec![
                (
                    acct(3),
                    Contribution {
                        work: Credits(100),
                        validations: 0
                    }
                ),
                (
                    acct(10),
                    Contribution {
                        work: Credits(900),
                        validations: 0
                    }
                ),
            ]
        );
        let mint = allocate(&w, Credits(10_000)).expect("allocate");
        // Work pool 8000: 800 and 7200; validation pool (2000) has no weight and is not minted.
        assert_eq!(
            mint,
            vec![(acct(3), Credits(800)), (acct(10), Credits(7200))]
        );
    }

    #[test]
    fn a_majority_decides_and_exactly_half_does_not() {
        let info = table(&[50, 50]);
        // Only validator 0 (exactly half) reports: no strict majority, nothing minted.
        let w = consensus(&info, &[report(0, &[(5, 1000, 3)])]).expect("consensus");
        assert!(w.is_empty());
        // Both report different values: the median is the value both support (the lower).
        let w = consensus(
            &info,
            &[report(0, &[(5, 1000, 3)]), report(1, &[(5, 400, 9)])],
        )
        .expect("consensus");
        assert_eq!(w[0].1.work, Credits(400));
        assert_eq!(w[0].1.validations, 3);
    }

    #[test]
    fn malformed_reports_are_refused_and_outsiders_ignored() {
        let info = table(&[10, 10]);
        let dup = [report(0, &[(5, 1, 0)]), report(0, &[(5, 2, 0)])];
        assert!(consensus(&info, &dup).is_err());
        let unsorted = [report(0, &[(6, 1, 0), (5, 1, 0)])];
        assert!(consensus(&info, &unsorted).is_err());
        // Validator 9 is not in the table: its report counts for nothing.
        let w = consensus(&info, &[report(9, &[(5, 1000, 0)])]).expect("consensus");
        assert!(w.is_empty());
    }

    #[test]
    fn recipients_are_capped_keeping_the_largest() {
        let weights: Vec<(AccountId, Contribution)> = (0..300u32)
            .map(|i| {
                let mut a = [0u8; 32];
                a[..4].copy_from_slice(&i.to_be_bytes());
                (
                    AccountId(a),
                    Contribution {
                        work: Credits(u128::from(i) + 1),
                        validations: 0,
                    },
                )
            })
            .collect();
        let out = allocate(&weights, Credits::whole(10_000)).expect("allocate");
        assert_eq!(out.len(), MAX_RECIPIENTS);
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        // The 44 smallest weights (1..=44) are the ones left out.
        let smallest_kept = out.iter().map(|(_, c)| *c).min().unwrap_or_default();
        let share_45 = Credits::whole(8_000).0 * 45 / (300 * 301 / 2);
        assert_eq!(smallest_kept, Credits(share_45));
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let w = vec![
            (
                acct(1),
                Contribution {
                    work: Credits(u128::MAX / 2),
                    validations: u64::MAX,
                },
            ),
            (
                acct(2),
                Contribution {
                    work: Credits(u128::MAX / 2),
                    validations: u64::MAX,
                },
            ),
        ];
        let out = allocate(&w, Credits(u128::MAX / 4)).expect("allocate");
        let sum = out.iter().fold(0u128, |s, (_, c)| s + c.0);
        assert!(sum <= u128::MAX / 4);
        assert!(sum >= u128::MAX / 4 - 4, "nearly all minted, got {sum}");
        // The slow path agrees with exact arithmetic where both apply.
        assert_eq!(mul_div_floor(u128::MAX, 3, 4), u128::MAX / 4 * 3 + 2);
        assert_eq!(mul_div_floor(1 << 100, 1 << 90, 1 << 95), 1 << 95);
        assert_eq!(
            mul_div_floor(u128::MAX, u128::MAX - 1, u128::MAX),
            u128::MAX - 1
        );
    }

    mod ledger_view {
        use mycel_identity::{Keypair, SecretKey};

        use super::*;
        use crate::block::{Block, BlockData, SignerSig, SlashBody};
        use crate::genesis::{Genesis, GenesisAccount};
        use crate::ledger::Processed;
        use crate::params::Params;
        use crate::receipt::{WorkReceipt, sign_verdict};
        use crate::types::{BlockHash, JobId};
        use crate::wallet::{EscrowTerms, Wallet};

        fn key(i: u8) -> Keypair {
            let mut s = [0u8; 32];
            s[0] = i;
            s[1] = 0xe7;
            Keypair::from_secret(&SecretKey::from_bytes(s))
        }

        fn id(k: &Keypair) -> AccountId {
            AccountId::from_public_key(&k.public())
        }

        fn apply(l: &mut Ledger, b: Block) -> BlockHash {
            let h = b.hash();
            assert!(matches!(l.process(b, 1), Ok(Processed::Applied { .. })));
            l.confirm(&h).expect("confirm");
            h
        }

        struct World {
            ledger: Ledger,
            user: Keypair,
            worker: Keypair,
            vals: Vec<Keypair>,
        }

        impl World {
            fn job(&mut self, n: u8, private: bool) -> (BlockHash, WorkReceipt) {
                let job_id = JobId([n; 32]);
                let terms = EscrowTerms {
                    job_id,
                    worker: id(&self.worker),
                    amount: Credits::whole(5),
                    expires_epoch: 9,
                    private,
                };
                let b = Wallet::new(&self.user)
                    .escrow(&self.ledger, terms, 0)
                    .expect("escrow");
                let e = apply(&mut self.ledger, b);
                let r = WorkReceipt {
                    job_id,
                    escrow: e,
                    worker: id(&self.worker),
                    requester: id(&self.user),
                    model: [1; 32],
                    weights: [2; 32],
                    prompt_hash: [3; 32],
                    output_hash: [4; 32],
                    sampling: Some([5; 32]),
                    prompt_tokens: 1,
                    output_tokens: 2,
                    price: Credits::whole(u128::from(n)),
                };
                (e, r)
            }

            fn verdicts(&self, e: &BlockHash, r: &WorkReceipt, accept: bool) -> Vec<SignerSig> {
                let draw = self
                    .ledger
                    .audit_draw(e, &r.countersign(&self.user))
                    .expect("draw");
                let mut v: Vec<SignerSig> = self
                    .vals
                    .iter()
                    .filter(|k| draw.seats_of(&id(k)) > 0)
                    .map(|k| SignerSig {
                        signer: id(k),
                        signature: sign_verdict(k, r, accept),
                    })
                    .collect();
                v.sort_by_key(|s| s.signer);
                v
            }

            fn claim(&mut self, e: &BlockHash, r: WorkReceipt, audited: bool) {
                let v = if audited {
                    self.verdicts(e, &r, true)
                } else {
                    Vec::new()
                };
                let csig = r.countersign(&self.user);
                let b = Wallet::new(&self.worker)
                    .claim(&self.ledger, r, csig, v, 0)
                    .expect("claim");
                apply(&mut self.ledger, b);
            }
        }

        #[test]
        fn observe_counts_confirmed_public_work_and_verdict_seats() {
            let (user, worker) = (key(1), key(2));
            let vals: Vec<Keypair> = (10..13).map(key).collect();
            let mut accounts = vec![
                GenesisAccount {
                    account: *user.public().as_bytes(),
                    balance: Credits::whole(1000),
                    stake: Credits::ZERO,
                },
                GenesisAccount {
                    account: *worker.public().as_bytes(),
                    balance: Credits::ZERO,
                    stake: Credits::whole(100),
                },
            ];
            for v in &vals {
                accounts.push(GenesisAccount {
                    account: *v.public().as_bytes(),
                    balance: Credits::ZERO,
                    stake: Credits::whole(10_000),
                });
            }
            let genesis = Genesis {
                network: "mycel-test".into(),
                seed: [3; 32],
                start_time: 0,
                accounts,
                params: Params {
                    audit_bps: 10_000,
                    audit_validators: 3,
                    ..Params::default()
                },
            };
            let mut w = World {
                ledger: Ledger::new(&genesis).expect("genesis"),
                user,
                worker,
                vals,
            };
            // Job 2: public, audited, passes. Job 3: private (never audited). Job 4: public, fails
            // its audit and is slashed by validator 0.
            let (e2, r2) = w.job(2, false);
            w.claim(&e2, r2, true);
            let (e3, r3) = w.job(3, true);
            w.claim(&e3, r3, false);
            let (e4, r4) = w.job(4, false);
            let reject = w.verdicts(&e4, &r4, false);
            let reporter = &w.vals[0];
            let a = w.ledger.account(&id(reporter)).cloned().unwrap_or_default();
            let slash = Block::sign(
                BlockData {
                    account: id(reporter),
                    height: a.height + 1,
                    previous: a.frontier,
                    epoch: 0,
                    body: BlockBody::Slash(Box::new(SlashBody {
                        escrow: e4,
                        worker_sig: r4.sign_as_worker(&w.worker),
                        requester_sig: r4.countersign(&w.user),
                        receipt: r4,
                        verdicts: reject,
                    })),
                },
                reporter,
            );
            apply(&mut w.ledger, slash);

            let seen = observe(&w.ledger, 0);
            let worker_c = seen
                .iter()
                .find(|(a, _)| *a == id(&w.worker))
                .map(|(_, c)| *c)
                .unwrap_or_default();
            // Only job 2's price: the private job and the slashed one earn nothing.
            assert_eq!(worker_c.work, Credits::whole(2));
            let seats: u64 = seen.iter().map(|(_, c)| c.validations).sum();
            assert_eq!(seats, 6, "3 seats for job 2's verdicts + 3 for job 4's");
            assert!(observe(&w.ledger, 1).is_empty());
        }
    }

    /// Stakes, one report per validator as `(account, work, validations)`, and the emission.
    type World = (Vec<u128>, Vec<Vec<(u8, u128, u64)>>, u128);

    fn arb_world() -> impl Strategy<Value = World> {
        (1usize..12).prop_flat_map(|n| {
            (
                prop::collection::vec(1u128..1_000_000, n),
                prop::collection::vec(
                    prop::collection::btree_map(0u8..40, (0u128..1u128 << 80, 0u64..1000), 0..30)
                        .prop_map(|m| m.into_iter().map(|(a, (w, v))| (a, w, v)).collect()),
                    n,
                ),
                0u128..1u128 << 100,
            )
        })
    }

    proptest! {
        #[test]
        fn split_is_capped_clipped_and_deterministic((stakes, items, emission) in arb_world()) {
            let info = table(&stakes);
            let reports: Vec<Report> = items
                .iter()
                .enumerate()
                .map(|(v, it)| report(u8::try_from(v).unwrap_or(0), it))
                .collect();
            let emission = Credits(emission);
            let out = split(&info, &reports, emission).expect("split");
            let again = split(&info, &reports, emission).expect("split");
            prop_assert_eq!(&out, &again);
            let sum = out.iter().fold(0u128, |s, (_, c)| s + c.0);
            prop_assert!(sum <= emission.0);
            prop_assert!(out.len() <= MAX_RECIPIENTS);
            prop_assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(out.iter().all(|(_, c)| !c.is_zero()));

            // Each account gets at most its clipped share of each pool.
            let w = consensus(&info, &reports).expect("consensus");
            let total_work: u128 = w.iter().map(|(_, c)| c.work.0).sum();
            let total_val: u128 = w.iter().map(|(_, c)| u128::from(c.validations)).sum();
            let work_pool = emission.0 * WORK_POOL_BPS / BPS;
            let val_pool = emission.0 - work_pool;
            for (a, amount) in &out {
                let c = w.iter().find(|(x, _)| x == a).map(|(_, c)| *c).unwrap_or_default();
                // Exact bound in rationals: amount ≤ work_pool·w/W + val_pool·v/V (checked in f64
                // with a relative slack for the rounding of the comparison itself).
                let share = |pool: u128, x: u128, t: u128| {
                    if t == 0 { 0.0 } else { pool as f64 * (x as f64 / t as f64) }
                };
                let bound = share(work_pool, c.work.0, total_work)
                    + share(val_pool, u128::from(c.validations), total_val);
                prop_assert!(amount.0 as f64 <= bound * (1.0 + 1e-9) + 1.0);
            }

            // The clipped weight never exceeds what validators holding a strict majority reported.
            for (a, c) in &w {
                let support: u128 = reports
                    .iter()
                    .filter(|r| {
                        r.contributions
                            .iter()
                            .any(|(x, rc)| x == a && rc.work >= c.work)
                    })
                    .map(|r| info.weight(&r.validator).0)
                    .sum();
                prop_assert!(c.work.is_zero() || support * 2 > info.total.0);
            }
        }

        #[test]
        fn a_minority_cannot_raise_its_weight(
            honest_stake in 51u128..1000,
            clique_stake in 1u128..50,
            truth in 0u128..1_000_000,
            claim in 0u128..u128::MAX / 4,
        ) {
            // The clique holds < half: whatever it claims, the weight is the honest value, neither
            // raised above it nor lowered below it.
            let info = table(&[honest_stake * 2, clique_stake * 2]);
            let reports = [
                report(0, &[(7, truth, 1)]),
                report(1, &[(7, claim, 1_000)]),
            ];
            let w = consensus(&info, &reports).expect("consensus");
            let got = w.first().map(|(_, c)| c.work.0).unwrap_or(0);
            prop_assert_eq!(got, truth);
        }
    }
}
