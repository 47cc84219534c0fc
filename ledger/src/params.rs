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
            .credits(self.epoch_emission);
    }

    /// Checks ranges: shares ≤ 100 %, K ≥ 1 and ≤ 256, p > 0.
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
        Ok(())
    }
}
