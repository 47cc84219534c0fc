//! The ledger state derived from applied blocks (specs/ledger.md §3) and its encodings.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::codec::{Reader, Writer};
use crate::error::{LedgerError, Result};
use crate::params::MAX_UNBONDING;
use crate::quorum::EpochInfo;
use crate::types::{AccountId, BlockHash, Credits, JobId, domain_hash};

/// State of one account chain.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct AccountState {
    /// Height of the last block.
    pub height: u64,
    /// Hash of the last block.
    pub frontier: BlockHash,
    /// Epoch of the last block.
    pub epoch: u64,
    /// Liquid credits.
    pub balance: Credits,
    /// Bonded stake.
    pub bonded: Credits,
    /// `(amount, release_epoch)` of unstaked credits still unbonding.
    pub unbonding: Vec<(Credits, u64)>,
    /// The bound node key, if any.
    pub node_key: Option<[u8; 32]>,
}

impl AccountState {
    /// Bonded plus unbonding (all slashable stake).
    pub fn slashable(&self) -> Result<Credits> {
        let mut total = self.bonded;
        for (a, _) in &self.unbonding {
            total = total.checked_add(*a)?;
        }
        Ok(total)
    }

    /// Moves unbonding entries released at or before `epoch` to the balance.
    pub(crate) fn mature(&mut self, epoch: u64) -> Result<()> {
        let mut keep = Vec::with_capacity(self.unbonding.len());
        for (amount, release) in std::mem::take(&mut self.unbonding) {
            if release <= epoch {
                self.balance = self.balance.checked_add(amount)?;
            } else {
                keep.push((amount, release));
            }
        }
        self.unbonding = keep;
        Ok(())
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        w.u64(self.height)
            .bytes(&self.frontier.0)
            .u64(self.epoch)
            .credits(self.balance)
            .credits(self.bonded)
            .count(self.unbonding.len());
        for (a, e) in &self.unbonding {
            w.credits(*a).u64(*e);
        }
        match &self.node_key {
            Some(k) => w.u8(1).bytes(k),
            None => w.u8(0),
        };
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let height = r.u64()?;
        let frontier = r.hash()?;
        let epoch = r.u64()?;
        let balance = r.credits()?;
        let bonded = r.credits()?;
        let n = r.count(MAX_UNBONDING)?;
        let mut unbonding = Vec::with_capacity(n);
        for _ in 0..n {
            unbonding.push((r.credits()?, r.u64()?));
        }
        let node_key = match r.u8()? {
            0 => None,
            1 => Some(r.array()?),
            _ => return Err(LedgerError::Decode("node key flag")),
        };
        r.finish()?;
        Ok(Self {
            height,
            frontier,
            epoch,
            balance,
            bonded,
            unbonding,
            node_key,
        })
    }
}

/// How an escrow ended (or not yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EscrowStatus {
    /// Locked, claimable until expiry, refundable after.
    Open,
    /// Settled by this Claim block.
    Claimed(BlockHash),
    /// Refunded by this Receive block.
    Refunded(BlockHash),
}

/// An escrow created by an Escrow block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscrowState {
    /// Who locked the credits.
    pub requester: AccountId,
    /// Who may claim.
    pub worker: AccountId,
    /// The job.
    pub job_id: JobId,
    /// Locked amount (maximum price).
    pub amount: Credits,
    /// Last epoch a claim may state.
    pub expires_epoch: u64,
    /// Epoch of the Escrow block (its stake table draws the audit).
    pub epoch: u64,
    /// Private job flag.
    pub private: bool,
    /// Settlement.
    pub status: EscrowStatus,
    /// A Slash was applied for this job.
    pub slashed: bool,
}

impl EscrowState {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(180);
        w.bytes(&self.requester.0)
            .bytes(&self.worker.0)
            .bytes(&self.job_id.0)
            .credits(self.amount)
            .u64(self.expires_epoch)
            .u64(self.epoch)
            .u8(u8::from(self.private))
            .u8(u8::from(self.slashed));
        match self.status {
            EscrowStatus::Open => w.u8(0).bytes(&[0; 32]),
            EscrowStatus::Claimed(h) => w.u8(1).bytes(&h.0),
            EscrowStatus::Refunded(h) => w.u8(2).bytes(&h.0),
        };
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let requester = r.account()?;
        let worker = r.account()?;
        let job_id = r.job()?;
        let amount = r.credits()?;
        let expires_epoch = r.u64()?;
        let epoch = r.u64()?;
        let private = r.u8()? == 1;
        let slashed = r.u8()? == 1;
        let tag = r.u8()?;
        let h = r.hash()?;
        let status = match tag {
            0 => EscrowStatus::Open,
            1 => EscrowStatus::Claimed(h),
            2 => EscrowStatus::Refunded(h),
            _ => return Err(LedgerError::Decode("escrow status")),
        };
        r.finish()?;
        Ok(Self {
            requester,
            worker,
            job_id,
            amount,
            expires_epoch,
            epoch,
            private,
            status,
            slashed,
        })
    }
}

/// Key of a pending receivable: `(recipient, source block)`.
pub type PendingKey = (AccountId, BlockHash);

/// The whole derived state. Maps are public for reading; only the ledger mutates them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Account chains.
    pub accounts: HashMap<AccountId, AccountState>,
    /// Amounts waiting for a Receive.
    pub pending: HashMap<PendingKey, Credits>,
    /// Escrows by Escrow block hash.
    pub escrows: HashMap<BlockHash, EscrowState>,
    /// `(requester, job)` pairs in use (derived from escrows).
    pub jobs: HashSet<(AccountId, JobId)>,
    /// Stake tables by epoch.
    pub epochs: BTreeMap<u64, EpochInfo>,
    /// Mint block of each minted epoch.
    pub minted: BTreeMap<u64, BlockHash>,
    /// Total supply.
    pub supply: Credits,
}

/// Table tags used by the state root and the stores.
pub(crate) mod tag {
    pub const ACCOUNTS: u8 = 1;
    pub const PENDING: u8 = 2;
    pub const ESCROWS: u8 = 3;
    pub const EPOCHS: u8 = 4;
    pub const MINTED: u8 = 5;
}

pub(crate) fn pending_key(k: &PendingKey) -> Vec<u8> {
    let mut v = Vec::with_capacity(64);
    v.extend_from_slice(&k.0.0);
    v.extend_from_slice(&k.1.0);
    v
}

pub(crate) fn decode_pending_key(bytes: &[u8]) -> Result<PendingKey> {
    let mut r = Reader::new(bytes);
    let k = (r.account()?, r.hash()?);
    r.finish()?;
    Ok(k)
}

impl State {
    /// Every state entry as `(tag, key, value)`, in no particular order.
    pub(crate) fn entries(&self) -> Vec<(u8, Vec<u8>, Vec<u8>)> {
        let mut out =
            Vec::with_capacity(self.accounts.len() + self.pending.len() + self.escrows.len());
        for (k, v) in &self.accounts {
            out.push((tag::ACCOUNTS, k.0.to_vec(), v.encode()));
        }
        for (k, v) in &self.pending {
            out.push((tag::PENDING, pending_key(k), v.0.to_le_bytes().to_vec()));
        }
        for (k, v) in &self.escrows {
            out.push((tag::ESCROWS, k.0.to_vec(), v.encode()));
        }
        for (k, v) in &self.epochs {
            out.push((tag::EPOCHS, k.to_be_bytes().to_vec(), v.encode()));
        }
        for (k, v) in &self.minted {
            out.push((tag::MINTED, k.to_be_bytes().to_vec(), v.0.to_vec()));
        }
        out
    }

    /// Rebuilds a state from entries and a supply.
    pub(crate) fn from_entries(
        entries: impl IntoIterator<Item = (u8, Vec<u8>, Vec<u8>)>,
        supply: Credits,
    ) -> Result<Self> {
        let mut s = State {
            supply,
            ..State::default()
        };
        let bad = |what: &str| LedgerError::Corrupt(format!("bad {what} entry"));
        for (t, k, v) in entries {
            match t {
                tag::ACCOUNTS => {
                    let id = AccountId(k.as_slice().try_into().map_err(|_| bad("account"))?);
                    s.accounts.insert(id, AccountState::decode(&v)?);
                }
                tag::PENDING => {
                    let amount =
                        u128::from_le_bytes(v.as_slice().try_into().map_err(|_| bad("pending"))?);
                    s.pending.insert(decode_pending_key(&k)?, Credits(amount));
                }
                tag::ESCROWS => {
                    let id = BlockHash(k.as_slice().try_into().map_err(|_| bad("escrow"))?);
                    let e = EscrowState::decode(&v)?;
                    s.jobs.insert((e.requester, e.job_id));
                    s.escrows.insert(id, e);
                }
                tag::EPOCHS => {
                    let info = EpochInfo::decode(&v)?;
                    s.epochs.insert(info.epoch, info);
                }
                tag::MINTED => {
                    let e = u64::from_be_bytes(k.as_slice().try_into().map_err(|_| bad("minted"))?);
                    s.minted.insert(
                        e,
                        BlockHash(v.as_slice().try_into().map_err(|_| bad("minted"))?),
                    );
                }
                _ => return Err(bad("unknown table")),
            }
        }
        Ok(s)
    }

    /// The state root (specs/ledger.md §3): equal for equal states, whatever the insertion order.
    pub fn root(&self) -> [u8; 32] {
        let mut entries = self.entries();
        entries.sort_unstable();
        let mut h = blake3::Hasher::new();
        h.update(b"mycel/v1/state-root\0");
        for (t, k, v) in &entries {
            h.update(&[*t]);
            h.update(&(k.len() as u32).to_le_bytes());
            h.update(k);
            h.update(&(v.len() as u32).to_le_bytes());
            h.update(v);
        }
        h.update(&self.supply.0.to_le_bytes());
        *h.finalize().as_bytes()
    }

    /// Recomputes the supply from balances, stakes, pending amounts and open escrows.
    pub fn computed_supply(&self) -> Result<Credits> {
        let mut total = Credits::ZERO;
        for a in self.accounts.values() {
            total = total.checked_add(a.balance)?.checked_add(a.slashable()?)?;
        }
        for p in self.pending.values() {
            total = total.checked_add(*p)?;
        }
        for e in self.escrows.values() {
            if e.status == EscrowStatus::Open {
                total = total.checked_add(e.amount)?;
            }
        }
        Ok(total)
    }
}

/// The seed of a new epoch: `blake3("mycel/v1/epoch-seed" ‖ 0 ‖ prev seed ‖ epoch ‖ table)`.
pub fn next_seed(prev: &[u8; 32], new_epoch: u64, table_message: &[u8]) -> [u8; 32] {
    domain_hash(
        "mycel/v1/epoch-seed",
        &[prev, &new_epoch.to_le_bytes(), table_message],
    )
}
