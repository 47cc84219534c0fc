//! Deterministic stake-weighted audit draw (specs/ledger.md §7).
//!
//! The draw of a job depends on the requester's countersignature of its receipt, not only on
//! values fixed when the escrow is posted: a worker learns whether it is audited only after it has
//! committed to its output (the receipt it signed carries the output hash), so it cannot cheat on
//! exactly the jobs that will not be audited.

use mycel_identity::Signature;

use crate::params::{BPS, Params};
use crate::quorum::EpochInfo;
use crate::types::{AccountId, JobId, domain_hash};

/// Outcome of the draw for one job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDraw {
    /// Whether the job is audited.
    pub audited: bool,
    /// The K seats (a validator may hold several); empty when not audited.
    pub seats: Vec<AccountId>,
}

impl AuditDraw {
    /// Seats held by `account`.
    pub fn seats_of(&self, account: &AccountId) -> usize {
        self.seats.iter().filter(|s| *s == account).count()
    }

    /// True when `seats` seats are at least two thirds of all seats.
    pub fn is_quorum(&self, seats: usize) -> bool {
        !self.seats.is_empty() && seats * 3 >= self.seats.len() * 2
    }
}

/// Draws whether `job` is audited and by whom, from the seed and stake table of the escrow's epoch
/// and `requester_sig`, the requester's countersignature of the job's receipt.
///
/// The caller must pass a countersignature that verifies (the ledger checks it in every Claim and
/// Slash); any other value yields a draw the ledger never uses.
pub fn draw(
    info: &EpochInfo,
    job: &JobId,
    requester_sig: &Signature,
    params: &Params,
) -> AuditDraw {
    let csig = requester_sig.as_bytes();
    let r = domain_hash("mycel/v1/audit", &[&info.seed, &job.0, csig]);
    let x = u64::from_le_bytes(first::<8>(&r));
    let audited = u128::from(x) % BPS < u128::from(params.audit_bps);
    if !audited || info.total.is_zero() {
        return AuditDraw {
            audited: false,
            seats: Vec::new(),
        };
    }
    let seats = (0..params.audit_validators)
        .map(|i| {
            let h = domain_hash(
                "mycel/v1/audit-seat",
                &[&info.seed, &job.0, csig, &i.to_le_bytes()],
            );
            let target = u128::from_le_bytes(first::<16>(&h)) % info.total.0;
            pick(info, target)
        })
        .collect();
    AuditDraw {
        audited: true,
        seats,
    }
}

fn first<const N: usize>(h: &[u8; 32]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&h[..N]);
    out
}

fn pick(info: &EpochInfo, target: u128) -> AccountId {
    let mut acc = 0u128;
    for (a, s) in &info.table {
        acc = acc.saturating_add(s.0);
        if target < acc {
            return *a;
        }
    }
    // Unreachable when target < total; keep the last entry as a total function.
    info.table.last().map(|(a, _)| *a).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Credits;

    /// A distinct 64-byte value per `i` (the draw never verifies it).
    fn sig(i: u32) -> Signature {
        let mut b = [0x5au8; 64];
        b[..4].copy_from_slice(&i.to_le_bytes());
        Signature::from_bytes(b)
    }

    fn seven() -> EpochInfo {
        let table = (1..=7u8)
            .map(|i| (AccountId([i; 32]), Credits(u128::from(i) * 100)))
            .collect();
        EpochInfo::new(0, [7; 32], table).expect("table")
    }

    #[test]
    fn draw_is_deterministic_and_stake_weighted() {
        let table = vec![
            (AccountId([1; 32]), Credits(900)),
            (AccountId([2; 32]), Credits(100)),
        ];
        let info = EpochInfo::new(0, [7; 32], table).expect("table");
        let params = Params {
            audit_bps: 10_000,
            audit_validators: 50,
            ..Params::default()
        };
        let a = draw(&info, &JobId([3; 32]), &sig(0), &params);
        assert_eq!(a, draw(&info, &JobId([3; 32]), &sig(0), &params));
        assert!(a.audited);
        let heavy = a.seats_of(&AccountId([1; 32]));
        assert!(
            heavy > 35,
            "900/1000 stake should hold most of 50 seats, got {heavy}"
        );
        let mut audited = 0;
        let p = Params::default();
        for i in 0..2000u32 {
            let mut j = [0u8; 32];
            j[..4].copy_from_slice(&i.to_le_bytes());
            audited += usize::from(draw(&info, &JobId(j), &sig(0), &p).audited);
        }
        assert!(
            (120..280).contains(&audited),
            "p = 10 % of 2000 jobs, got {audited}"
        );
    }

    /// For one escrow (seed and job id fixed), whether the job is audited and who holds the seats
    /// are decided by the requester's countersignature: a worker knowing only the escrow cannot tell.
    #[test]
    fn draw_changes_with_the_requester_signature() {
        let info = seven();
        let job = JobId([3; 32]);
        let p = Params::default();
        let audited = (0..2000u32)
            .filter(|i| draw(&info, &job, &sig(*i), &p).audited)
            .count();
        assert!(
            (120..280).contains(&audited),
            "p = 10 % of 2000 countersignatures, got {audited}"
        );
        let all = Params {
            audit_bps: 10_000,
            ..Params::default()
        };
        let mut seatings: Vec<Vec<AccountId>> = (0..200u32)
            .map(|i| draw(&info, &job, &sig(i), &all).seats)
            .collect();
        assert_eq!(
            draw(&info, &job, &sig(5), &all).seats,
            seatings[5],
            "deterministic"
        );
        seatings.sort();
        seatings.dedup();
        assert!(
            seatings.len() > 150,
            "7 seats over 7 validators: 200 signatures gave only {} seatings",
            seatings.len()
        );
    }

    /// The draw hashes exactly the bytes specs/ledger.md §7 lists, recomputed here by hand.
    #[test]
    fn draw_follows_the_spec_byte_layout() {
        let info = seven();
        let job = JobId([3; 32]);
        let all = Params {
            audit_bps: 10_000,
            ..Params::default()
        };
        let hash = |parts: &[&[u8]]| {
            let mut h = blake3::Hasher::new();
            for p in parts {
                h.update(p);
            }
            *h.finalize().as_bytes()
        };
        for i in 0..50u32 {
            let s = sig(i);
            let r = hash(&[b"mycel/v1/audit", &[0], &info.seed, &job.0, s.as_bytes()]);
            let x = u64::from_le_bytes(first::<8>(&r));
            for bps in [1_000u32, 5_000] {
                let p = Params {
                    audit_bps: bps,
                    ..Params::default()
                };
                assert_eq!(
                    draw(&info, &job, &s, &p).audited,
                    x % 10_000 < u64::from(bps)
                );
            }
            let seats: Vec<AccountId> = (0..all.audit_validators)
                .map(|k| {
                    let h = hash(&[
                        b"mycel/v1/audit-seat",
                        &[0],
                        &info.seed,
                        &job.0,
                        s.as_bytes(),
                        &k.to_le_bytes(),
                    ]);
                    let target = u128::from_le_bytes(first::<16>(&h)) % info.total.0;
                    let mut acc = 0;
                    info.table
                        .iter()
                        .find(|(_, stake)| {
                            acc += stake.0;
                            target < acc
                        })
                        .map(|(a, _)| *a)
                        .expect("target < total")
                })
                .collect();
            assert_eq!(draw(&info, &job, &s, &all).seats, seats);
        }
    }
}
