//! The genesis file (specs/ledger.md §8).

use serde::{Deserialize, Serialize};

use crate::codec::Writer;
use crate::error::{LedgerError, Result};
use crate::params::Params;
use crate::types::{AccountId, BlockHash, Credits, domain_hash};

/// Serde helper: amounts as decimal strings of µ-credits (JSON numbers cannot hold u128).
pub mod amount_string {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::types::Credits;

    /// Writes the amount as a decimal string.
    pub fn serialize<S: Serializer>(v: &Credits, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.0.to_string())
    }

    /// Reads a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Credits, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<u128>()
            .map(Credits)
            .map_err(|_| serde::de::Error::custom("amount: expected a decimal string of µ-credits"))
    }
}

/// Serde helper: 32-byte values as 64 hex characters.
pub mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes 64 hex characters.
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    /// Reads 64 hex characters.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut out)
            .map_err(|_| serde::de::Error::custom("expected 64 hex characters"))?;
        Ok(out)
    }
}

/// One funded account at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    /// The account's public key (hex).
    #[serde(with = "hex32")]
    pub account: [u8; 32],
    /// Liquid balance, µ-credits.
    #[serde(with = "amount_string")]
    pub balance: Credits,
    /// Bonded stake, µ-credits (also its weight in epoch 0's table).
    #[serde(with = "amount_string", default)]
    pub stake: Credits,
}

/// The genesis of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// Network name (≤ 64 bytes).
    pub network: String,
    /// Seed of epoch 0 (hex).
    #[serde(with = "hex32")]
    pub seed: [u8; 32],
    /// Unix time (seconds) at which epoch 0 starts.
    #[serde(default)]
    pub start_time: u64,
    /// Funded accounts.
    pub accounts: Vec<GenesisAccount>,
    /// Parameters (defaults when absent).
    #[serde(default)]
    pub params: Params,
}

impl Genesis {
    /// Parses and checks a genesis JSON document.
    pub fn from_json(text: &str) -> Result<Genesis> {
        let g: Genesis =
            serde_json::from_str(text).map_err(|e| LedgerError::Genesis(e.to_string()))?;
        g.validate()?;
        Ok(g)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks names, keys, duplicates, parameters and that the supply fits in u128.
    pub fn validate(&self) -> Result<()> {
        if self.network.is_empty() || self.network.len() > 64 {
            return Err(LedgerError::Genesis(
                "network name must be 1..=64 bytes".into(),
            ));
        }
        self.params
            .validate()
            .map_err(|e| LedgerError::Genesis(e.into()))?;
        let mut seen = std::collections::HashSet::new();
        let mut supply = Credits::ZERO;
        for a in &self.accounts {
            let id = AccountId(a.account);
            id.public_key()
                .map_err(|_| LedgerError::Genesis(format!("account {id} is not a valid key")))?;
            if !seen.insert(id) {
                return Err(LedgerError::Genesis(format!("account {id} listed twice")));
            }
            supply = supply.checked_add(a.balance)?.checked_add(a.stake)?;
        }
        if self.accounts.len() > crate::codec::MAX_LIST {
            return Err(LedgerError::Genesis("too many genesis accounts".into()));
        }
        if !self.accounts.iter().any(|a| !a.stake.is_zero()) {
            return Err(LedgerError::Genesis(
                "at least one account must have stake".into(),
            ));
        }
        Ok(())
    }

    /// Accounts sorted by id.
    pub fn sorted_accounts(&self) -> Vec<GenesisAccount> {
        let mut v = self.accounts.clone();
        v.sort_by_key(|a| a.account);
        v
    }

    /// `blake3("mycel/v1/genesis" ‖ 0 ‖ canonical)`.
    pub fn hash(&self) -> [u8; 32] {
        let mut w = Writer::default();
        let name = self.network.as_bytes();
        w.count(name.len())
            .bytes(name)
            .bytes(&self.seed)
            .u64(self.start_time);
        let accounts = self.sorted_accounts();
        w.count(accounts.len());
        for a in &accounts {
            w.bytes(&a.account).credits(a.balance).credits(a.stake);
        }
        self.params.write(&mut w);
        domain_hash("mycel/v1/genesis", &[w.as_slice()])
    }

    /// The epoch at unix time `now_secs` (0 before the start).
    pub fn epoch_at(&self, now_secs: u64) -> u64 {
        now_secs.saturating_sub(self.start_time) / self.params.epoch_secs.max(1)
    }

    /// Unix time (seconds) at which `epoch` starts.
    pub fn epoch_start(&self, epoch: u64) -> u64 {
        self.start_time
            .saturating_add(epoch.saturating_mul(self.params.epoch_secs))
    }

    /// The virtual height-0 block of a genesis account.
    pub fn account_root(genesis_hash: &[u8; 32], account: &AccountId) -> BlockHash {
        BlockHash(domain_hash(
            "mycel/v1/genesis-account",
            &[genesis_hash, &account.0],
        ))
    }
}
