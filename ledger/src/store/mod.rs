//! Storage: the [`Store`] trait, an in-memory store for simulations and a redb store for nodes and
//! wallets, plus [`StoredLedger`], a ledger that commits one store transaction per applied batch.

mod memory;
pub mod redb;

use std::collections::BTreeMap;

pub use self::redb::RedbStore;
pub use memory::MemoryStore;

use crate::block::Block;
use crate::error::{LedgerError, Result};
use crate::genesis::Genesis;
use crate::ledger::{Ledger, Processed};
use crate::quorum::QuorumCert;
use crate::state::tag;
use crate::types::BlockHash;

/// The key-value tables of a store (besides blocks and their order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Account chain states (frontiers, balances, stake).
    Accounts,
    /// Pending receivables.
    Pending,
    /// Escrows.
    Escrows,
    /// Stake tables / checkpoints by epoch.
    Epochs,
    /// Minted epochs.
    Minted,
    /// Confirmed block hashes.
    Confirmed,
    /// Quorum certificates by block hash.
    Qcs,
    /// Genesis hash, supply, sequence counter.
    Meta,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 8] = [
        Table::Accounts,
        Table::Pending,
        Table::Escrows,
        Table::Epochs,
        Table::Minted,
        Table::Confirmed,
        Table::Qcs,
        Table::Meta,
    ];
    /// Tables holding derived state, with their state-root tags.
    pub(crate) const STATE: [(Table, u8); 5] = [
        (Table::Accounts, tag::ACCOUNTS),
        (Table::Pending, tag::PENDING),
        (Table::Escrows, tag::ESCROWS),
        (Table::Epochs, tag::EPOCHS),
        (Table::Minted, tag::MINTED),
    ];

    pub(crate) fn from_tag(t: u8) -> Table {
        Self::STATE
            .iter()
            .find(|(_, tg)| *tg == t)
            .map_or(Table::Meta, |(tb, _)| *tb)
    }

    /// True for the derived-state tables cleared by [`ChangeSet::clear_state`].
    pub fn is_state(self) -> bool {
        Self::STATE.iter().any(|(t, _)| *t == self)
    }
}

/// Everything one applied batch changes; written in one transaction.
#[derive(Clone, Debug, Default)]
pub struct ChangeSet {
    /// New blocks: `(hash, sequence, encoding)`.
    pub put_blocks: Vec<(BlockHash, u64, Vec<u8>)>,
    /// Rolled-back blocks: `(hash, sequence)`.
    pub del_blocks: Vec<(BlockHash, u64)>,
    /// Empty the derived-state tables before applying `put` (after a rollback).
    pub clear_state: bool,
    /// Entries to write.
    pub put: Vec<(Table, Vec<u8>, Vec<u8>)>,
    /// Entries to delete.
    pub del: Vec<(Table, Vec<u8>)>,
}

/// Everything a store holds, as loaded at open.
#[derive(Clone, Debug, Default)]
pub struct StoredData {
    /// Encoded blocks in application order: `(sequence, encoding)`.
    pub blocks: Vec<(u64, Vec<u8>)>,
    /// The key-value tables.
    pub tables: BTreeMap<Table, BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl StoredData {
    /// One table (empty when absent).
    pub fn table(&self, t: Table) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        static EMPTY: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        self.tables.get(&t).unwrap_or(&EMPTY)
    }

    /// True when nothing was ever committed.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty() && self.tables.values().all(BTreeMap::is_empty)
    }
}

/// Persistent storage of a ledger.
pub trait Store {
    /// Applies a change set atomically: after a crash either all of it or none of it is visible.
    fn commit(&mut self, changes: &ChangeSet) -> Result<()>;
    /// Loads everything.
    fn load(&self) -> Result<StoredData>;
    /// Reads one value of a key-value table.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>>;
}

/// A [`Ledger`] that persists every applied batch to a [`Store`] in one transaction.
///
/// A batch is *acknowledged* when [`StoredLedger::apply_batch`] returns `Ok`: it then survives a
/// crash. If a commit fails, the ledger refuses further work (reopen it).
#[derive(Debug)]
pub struct StoredLedger<S: Store> {
    ledger: Ledger,
    store: S,
    poisoned: bool,
}

impl<S: Store> StoredLedger<S> {
    /// Opens the store: loads its ledger, or initializes it from `genesis` when empty.
    pub fn open(store: S, genesis: &Genesis) -> Result<Self> {
        let data = store.load()?;
        let mut this = if data.is_empty() {
            Self {
                ledger: Ledger::new(genesis)?,
                store,
                poisoned: false,
            }
        } else {
            Self {
                ledger: Ledger::from_stored(genesis, data)?,
                store,
                poisoned: false,
            }
        };
        this.commit()?;
        Ok(this)
    }

    /// The ledger (read access; mutate through this type so changes are persisted).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn commit(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(LedgerError::Store(
                "a previous commit failed; reopen the ledger".into(),
            ));
        }
        let changes = self.ledger.take_changes();
        if let Err(e) = self.store.commit(&changes) {
            self.poisoned = true;
            return Err(e);
        }
        Ok(())
    }

    /// Validates and applies a batch (see [`Ledger::process_batch`]) and commits it in one
    /// transaction. The outer error is a storage failure; inner results are per block.
    pub fn apply_batch(&mut self, blocks: Vec<Block>, now: u64) -> Result<Vec<Result<Processed>>> {
        if self.poisoned {
            return Err(LedgerError::Store(
                "a previous commit failed; reopen the ledger".into(),
            ));
        }
        let out = self.ledger.process_batch(blocks, now);
        self.commit()?;
        Ok(out)
    }

    /// Applies one block and commits.
    pub fn process(&mut self, block: Block, now: u64) -> Result<Processed> {
        let mut out = self.apply_batch(vec![block], now)?;
        out.pop()
            .unwrap_or(Err(LedgerError::Invalid("empty batch")))
    }

    /// Rolls back a block and its dependents, and commits.
    pub fn rollback(&mut self, hash: &BlockHash) -> Result<Vec<Block>> {
        let out = self.ledger.rollback(hash)?;
        self.commit()?;
        Ok(out)
    }

    /// Marks a block confirmed, stores its QC, and commits.
    pub fn confirm(&mut self, hash: &BlockHash, qc: Option<&QuorumCert>) -> Result<()> {
        self.ledger.confirm(hash)?;
        let mut changes = self.ledger.take_changes();
        if let Some(qc) = qc {
            changes.put.push((Table::Qcs, hash.0.to_vec(), qc.encode()));
        }
        self.store
            .commit(&changes)
            .inspect_err(|_| self.poisoned = true)
    }

    /// The stored quorum certificate of a confirmed block.
    pub fn qc(&self, hash: &BlockHash) -> Result<Option<QuorumCert>> {
        self.store
            .get(Table::Qcs, &hash.0)?
            .map(|bytes| QuorumCert::decode(&bytes))
            .transpose()
    }

    /// Gives back the parts.
    pub fn into_parts(self) -> (Ledger, S) {
        (self.ledger, self.store)
    }
}
