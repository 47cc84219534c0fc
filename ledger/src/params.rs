//! Consensus parameters fixed by genesis (specs/ledger.md §4).

use serde::{Deserialize, Serialize};

use crate::codec::Writer;
use crate::types::Credits;

/// Most blocks waiting for a dependency in the unchecked pool; the oldest is evicted beyond it.
pub const MAX_UNCHECKED: usize = 4096;
/// Most unbonding entries per account (an Unstake beyond it is invalid until some mature).
pub const MAX_UNBONDING: usize = 16;
/// Basis-point denominator.
pub const BPS: u128 = 10_000;

/// Parameters every node of a network must agree on; part of the genesis hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Params {
    /// Leading zero bits of the proof of work of an Open without source.
    pub open_work_bits: u32,
    /// Epochs between Unstake and the credits becoming liquid.
    pub unbonding_epochs: u64,
    /// Audit probability p, in basis points.
    pub audit_bps: u32,
    /// Validator seats K drawn per audited job.
    pub audit_validators: u32,
    /// Validators' share v of a price, in basis points.
    pub validator_share_bps: u32,
    /// Reporter's share of a slashed amount, in basis points (the rest is burned).
    pub reporter_share_bps: u32,
    /// Mint cap per epoch, in µ-credits (a decimal string in JSON).
    #[serde(with = "crate::genesis::amount_string")]
    pub epoch_emission: Credits,
    /// Length of an epoch in seconds; epoch `e` starts at `start_time + e·epoch_secs` (§8).
    pub epoch_secs: u64,
    /// Price of one generated or prompt token, in µ-credits (what a requester escrows per token).
    #[serde(with = "crate::genesis::amount_string")]
    pub price_per_token: Credits,
    /// Worker bond a requester's node asks for, as basis points of the slash target `price·10⁴/p`
    /// (10000: the bond covers a full slash of the job, so cheating is unprofitable in expectation).
    pub bond_ratio_bps: u32,
}

impl Default for Params {
    fn default() -> Self {
        Self {
            open_work_bits: 16,
            unbonding_epochs: 14,
            audit_bps: 1000,
            audit_validators: 7,
            validator_share_bps: 1000,
            reporter_share_bps: 5000,
            epoch_emission: Credits::whole(10_000),
            epoch_secs: 3600,
            price_per_token: Credits(100),
            bond_ratio_bps: 10_000,
        }
    }
}

impl Params {
    pub(crate) fn write(&self, w: &mut Writer) {
        w.u32(self.open_work_bits)
            .u64(self.unbonding_epochs)
            .u32(self.audit_bps)
            .u32(self.audit_validators)
            .u32(self.validator_share_bps)
            .u32(self.reporter_share_bps)
            .credits(self.epoch_emission)
            .u64(self.epoch_secs)
            .credits(self.price_per_token)
            .u32(self.bond_ratio_bps);
    }

    /// Checks ranges: shares ≤ 100 %, K ≥ 1 and ≤ 256, p > 0, an epoch between 1 s and a year.
    pub fn validate(&self) -> Result<(), &'static str> {
        let bps = |v: u32| u128::from(v) <= BPS;
        if !(bps(self.audit_bps) && bps(self.validator_share_bps) && bps(self.reporter_share_bps)) {
            return Err("basis points above 10000");
        }
        if self.audit_bps == 0 {
            return Err("audit_bps must be > 0 (the slash target divides by it)");
        }
        if self.audit_validators == 0 || self.audit_validators > 256 {
            return Err("audit_validators must be in 1..=256");
        }
        if self.open_work_bits > 64 {
            return Err("open_work_bits must be ≤ 64");
        }
        if self.epoch_secs == 0 || self.epoch_secs > 365 * 86_400 {
            return Err("epoch_secs must be in 1..=31536000");
        }
        if self.bond_ratio_bps > 100 * BPS as u32 {
            return Err("bond_ratio_bps must be ≤ 1000000");
        }
        Ok(())
    }
}
