//! mycel's ledger: a block-lattice DAG with stake-weighted votes (specs/ledger.md).
//!
//! Place in the architecture: below the node and the wallet, above `mycel-identity`. Pure — no
//! clock, no network, no async: epochs and randomness are arguments. The node feeds it blocks and
//! votes from gossip and persists it through a [`store::Store`]; the wallet builds and signs blocks
//! with [`wallet::Wallet`] against a local ledger file.
//!
//! - [`block`]: block kinds and their canonical codec; [`receipt`]: work receipts and verdicts.
//! - [`ledger::Ledger`]: validation and state transition, batches, unchecked pool, rollback.
//! - [`quorum`]: stake tables, votes, quorum certificates; [`consensus`]: elections and forks.
//! - [`sortition`]: the audit draw; [`emission`]: the epoch emission split; [`store`]: redb and
//!   in-memory stores.

pub mod block;
pub mod codec;
pub mod consensus;
pub mod emission;
pub mod error;
pub mod genesis;
pub mod ledger;
pub mod params;
pub mod quorum;
pub mod receipt;
pub mod sortition;
pub mod state;
pub mod store;
pub mod types;
pub mod unchecked;
pub mod wallet;

pub use block::{Block, BlockBody, BlockData, Kind};
pub use error::{Dependency, LedgerError, Result};
pub use genesis::{Genesis, GenesisAccount};
pub use ledger::{Balance, Ledger, Processed};
pub use params::Params;
pub use quorum::{EpochInfo, QuorumCert, Vote};
pub use receipt::WorkReceipt;
pub use store::{MemoryStore, RedbStore, Store, StoredLedger};
pub use types::{AccountId, BlockHash, Credits, JobId};
pub use wallet::{ChainView, Wallet};
