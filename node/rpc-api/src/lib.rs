//! JSON-RPC 2.0 API of a mycel node: `#[rpc(server, client)]` traits and their DTOs, shared by the node
//! (server) and the wallet (client).
//!
//! Empty until the query APIs land (issue [5/8]); nothing here claims to work yet.
