//! End-to-end tests through the real interfaces: two nodes in one process on loopback, node A serving
//! the tiny model, node B serving nothing and bootstrapping to A. Every query goes to B over HTTP
//! (OpenAI or JSON-RPC) and must be answered by A over libp2p.

#![allow(clippy::unwrap_used)]

mod cache;
mod cli;
mod consortium;
mod devnet;
mod discovery;
mod expert_nodes;
mod experts;
mod failover;
mod harness;
mod ledger;
mod manifests;
mod metrics;
mod netns;
mod openai;
mod p2p;
mod pipeline;
mod real_model;
mod rpc;
mod sim;
