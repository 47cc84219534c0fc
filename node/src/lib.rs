//! The mycel node: one actor owns the libp2p swarm; config, routing, the inference service, ledger sync and
//! the RPC/OpenAI server sit around it.
//!
//! Empty until the node lands (issue [4/8]); nothing here claims to work yet.
