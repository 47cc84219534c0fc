//! TestNet harness, simulations and end-to-end tests that span several mycel crates.
//!
//! Place in the architecture: above everything. [`testnet::TestNet`] starts N real
//! `mycel_node::RunningNode`s in one process on loopback, each with its own key, data directory and
//! runtime, and lets a test kill, stop, restart, partition and slow them down; optionally every node
//! keeps a real ledger under one genesis the harness writes. [`client`] talks to them through the
//! user-facing interfaces (OpenAI HTTP and SSE, JSON-RPC over HTTP and WebSocket); [`ledger`] sends
//! a wallet's credits through the `ledger_*` methods and checks that the nodes agree.
//! On top sit three simulations, each a library module run by a binary (long form) and by the
//! integration tests (short form) through the same code:
//!
//! - [`churn`]: ≥ 30 replicas, repeated waves in which 30% of them leave (killed or stopped) and new
//!   ones join, while clients keep asking; measures the answered share and the time until every
//!   forwarder sees enough replicas again, and whether every node ends on one ledger state with no
//!   confirmed block lost (`cargo run -p mycel-tests --bin churn`).
//! - [`load`]: a 5-node net under hundreds of concurrent streaming clients; measures errors,
//!   time-to-first-token and total latency percentiles, and process memory over time
//!   (`cargo run -p mycel-tests --bin load`).
//! - [`fuzz`]: seeded attackers send random and mutated messages on every p2p protocol, RPC method
//!   and OpenAI route of a small net for a bounded time; the nodes must keep answering, stay
//!   within a memory bound, never panic, and keep one readable ledger
//!   (`cargo run -p mycel-tests --bin fuzz`).
//!
//! Reports are written as JSON, Markdown and a hand-written SVG plot ([`report`], [`plot`]), with
//! percentiles from [`stats`] and memory from [`memory`]. Many nodes in one process need
//! single-threaded model compute ([`process`]); the binaries and the test suite arrange it.

pub mod churn;
pub mod client;
pub mod delay;
pub mod error;
pub mod fuzz;
pub mod ledger;
pub mod load;
pub mod memory;
pub mod plot;
pub mod process;
pub mod report;
pub mod rng;
pub mod stats;
pub mod testnet;

pub use error::{Error, Result};
pub use testnet::{Coverage, NetOptions, Role, TestNet, Topology};
