//! Deterministic stake-weighted audit draw (specs/ledger.md §7).

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

/// Draws whether `job` is audited and by whom, from the epoch's seed and stake table.
pub fn draw(info: &EpochInfo, job: &JobId, params: &Params) -> AuditDraw {
    let r = domain_hash("mycel/v1/audit", &[&info.seed, &job.0]);
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
                &[&info.seed, &job.0, &i.to_le_bytes()],
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
        let a = draw(&info, &JobId([3; 32]), &params);
        assert_eq!(a, draw(&info, &JobId([3; 32]), &params));
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
            audited += usize::from(draw(&info, &JobId(j), &p).audited);
        }
        assert!(
            (120..280).contains(&audited),
            "p = 10 % of 2000 jobs, got {audited}"
        );
    }
}
