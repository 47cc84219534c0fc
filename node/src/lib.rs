//! The mycel node: one actor owns the libp2p swarm; config, routing, the inference service and the
//! RPC/OpenAI server sit around it.
//!
//! Data flow: HTTP ([`http`]: OpenAI routes and JSON-RPC) → [`node::Node`] (routing: local model or a
//! provider found in the DHT or in heartbeats) → [`chat::ModelHost`] (local generation) or a peer:
//! tokens stream over [`infer_stream`] (`/mycel/infer-stream/1.0.0`), with [`network`]'s
//! request-response `/mycel/infer/1.0.0` as the whole-answer fallback. [`network`] is the swarm actor
//! (DHT, gossip [`heartbeat`]s, identify, ping, mDNS). [`config`] and [`node_key`] set a node up;
//! [`models`] pulls and loads weights. Wire formats are in `specs/wire.md`, the RPC in `specs/rpc.md`.
//!
//! [`peers`] tracks liveness and ranks providers; [`metrics`] is the Prometheus registry behind
//! `GET /metrics`. [`jobs`] remembers the latest chat jobs (`mycel_jobStatus`); [`cache`] answers
//! exact repeats of deterministic requests without running the model.
//!
//! Model updates: [`manifest`] is the signed manifest a publisher gossips ("version N of model M is
//! this file"), checked before it is forwarded; [`adoption`] fetches, verifies and swaps in newer
//! versions from trusted publishers and re-publishes the manifests a node holds.
//!
//! [`membership`] is consortium mode: the membership handshake, revocations and the pnet key.
//!
//! [`scoring`] is the routing-score core (probation, caps, randomized pick) behind provider ranking;
//! [`sim`] holds the seeded simulations behind `mycel-node sim`. [`ledger`] runs the node's ledger
//! (sync, votes, paid jobs) and [`audit`] the validators' re-execution.
//!
//! Sharded pipelines: [`shard`] serves layer ranges on `/mycel/shard/1.0.0` and moves automatic ranges
//! ([`rebalance`]); [`pipeline`] is the client (route from [`route`], hop-by-hop relay, failover with
//! replay, signed span commitments). Experts: [`experts`] is the pure federated-router core,
//! [`federation`] runs it in the node (embedding model, centroid gossip, routing).

pub mod adoption;
pub mod audit;
pub mod cache;
pub mod chat;
pub mod config;
pub mod devnet;
pub mod error;
pub mod experts;
pub mod federation;
pub mod heartbeat;
pub mod http;
pub mod infer_stream;
pub mod jobs;
pub mod ledger;
pub mod manifest;
pub mod membership;
pub mod metrics;
pub mod models;
pub mod network;
pub mod node;
pub mod node_key;
pub mod peer_record;
pub mod peers;
pub mod pipeline;
pub mod rebalance;
pub mod route;
pub mod scoring;
pub mod shard;
pub mod sim;
pub mod wire;

pub use config::Config;
pub use error::{NodeError, Result};
pub use node::{Node, RunningNode, StartOptions};
