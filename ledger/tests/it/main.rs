//! Integration tests of mycel-ledger, in one binary: codec, invariants, forks, crash consistency.

#![allow(clippy::unwrap_used)]

mod codec;
mod common;
mod crash;
mod flows;
mod fork_sim;
mod invariants;
