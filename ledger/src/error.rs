//! The ledger crate's one error type.

use crate::types::{AccountId, BlockHash, Credits};

/// A dependency a block is waiting for (it sits in the unchecked pool until it arrives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dependency {
    /// A block (previous, source or escrow) that is not known yet.
    Block(BlockHash),
    /// The stake table of an epoch that has no checkpoint yet.
    Epoch(u64),
}

/// Everything that can go wrong decoding, validating, applying or storing ledger data.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Bytes that are not a canonical encoding.
    #[error("decode: {0}")]
    Decode(&'static str),
    /// A block, receipt or vote signature does not verify.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
    /// A key in a block is not a valid Ed25519 public key.
    #[error("invalid public key in {0}")]
    BadKey(&'static str),
    /// The block was already applied.
    #[error("block {0} is already known")]
    AlreadyKnown(BlockHash),
    /// A dependency is missing; the block is kept in the unchecked pool.
    #[error("waiting for {0:?}")]
    Gap(Dependency),
    /// Another block already occupies this `(account, height)`: a fork, to be resolved by votes.
    #[error("fork: account {account} height {height} already holds {existing}")]
    Fork {
        /// The chain.
        account: AccountId,
        /// The contested height.
        height: u64,
        /// The block already applied there.
        existing: BlockHash,
    },
    /// The escrow was already settled (claimed or refunded) by another block: a conflict for votes.
    #[error("escrow {escrow} already settled by {existing}")]
    EscrowConflict {
        /// The escrow.
        escrow: BlockHash,
        /// The block that settled it.
        existing: BlockHash,
    },
    /// The block breaks a validation rule of specs/ledger.md §5.
    #[error("invalid block: {0}")]
    Invalid(&'static str),
    /// Not enough liquid (or bonded) credits.
    #[error("insufficient funds: need {need}, have {have}")]
    InsufficientFunds {
        /// Required amount.
        need: Credits,
        /// Available amount.
        have: Credits,
    },
    /// Checked arithmetic overflowed.
    #[error("arithmetic overflow")]
    Overflow,
    /// A quorum certificate does not reach its threshold or has bad signers.
    #[error("quorum certificate rejected: {0}")]
    Quorum(&'static str),
    /// The block claims an epoch beyond the caller's current epoch + 1.
    #[error("block epoch {block} is ahead of the current epoch {now}")]
    FromFuture {
        /// Epoch stated by the block.
        block: u64,
        /// Caller's current epoch.
        now: u64,
    },
    /// A confirmed block cannot be rolled back.
    #[error("block {0} is confirmed and cannot be rolled back")]
    Confirmed(BlockHash),
    /// Unknown block, account or escrow in a query.
    #[error("not found: {0}")]
    NotFound(String),
    /// Genesis file problems.
    #[error("genesis: {0}")]
    Genesis(String),
    /// Storage failure (redb or file I/O). The message names the operation.
    #[error("store: {0}")]
    Store(String),
    /// The stored data does not match a replay of its blocks.
    #[error("store is inconsistent: {0}")]
    Corrupt(String),
}

impl LedgerError {
    /// True when the block may become valid later (it waits in the unchecked pool).
    pub fn is_gap(&self) -> bool {
        matches!(self, LedgerError::Gap(_))
    }
}

/// Result alias for this crate.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;
