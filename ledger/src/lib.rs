//! mycel's ledger: a block-lattice DAG with stake-weighted votes.
//!
//! Being built (issue [2/8]).
