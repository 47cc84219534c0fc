//! JSON-RPC 2.0 API of a mycel node: `#[rpc(server, client)]` traits and their DTOs, shared by the node
//! (server) and the wallet (client).
//!
//! Place in the architecture: `wallet-cli` (client) → this crate → `mycel-node` (server). The methods are
//! in the `mycel` namespace (`mycel_nodeInfo`, `mycel_peers`, `mycel_models`, `mycel_chat`,
//! `mycel_subscribeChat`, `mycel_jobStatus`, `mycel_route`, `mycel_router`, `mycel_manifests`); the normative
//! description, including error codes, is `specs/rpc.md`. DTOs carry DIDs and PeerIds as strings so this
//! crate stays free of the identity and models crates' types.

// The OpenRPC document is one large `json!` literal.
#![recursion_limit = "256"]

use jsonrpsee::core::{RpcResult, SubscriptionResult};
use jsonrpsee::proc_macros::rpc;
use serde::{Deserialize, Serialize};

pub mod ledger;
pub mod openrpc;

/// JSON-RPC error codes of the `mycel` namespace (besides the standard -32700..-32603).
pub mod error_codes {
    /// Invalid parameters (standard JSON-RPC code): empty messages, out-of-range sampling values, …
    pub const INVALID_PARAMS: i32 = -32602;
    /// No node serving the requested model was found (locally or on the network).
    pub const MODEL_NOT_FOUND: i32 = -32001;
    /// Every provider that was tried failed or timed out.
    pub const UPSTREAM_FAILED: i32 = -32002;
    /// The node is at its concurrency limit; retry later.
    pub const BUSY: i32 = -32003;
    /// Generation failed inside the model.
    pub const INFERENCE_FAILED: i32 = -32004;
    /// `mycel_jobStatus`: no job with that id is known here (never taken by this node, or evicted:
    /// the node remembers only its latest jobs).
    pub const JOB_NOT_FOUND: i32 = -32005;
    /// The node keeps no ledger (it was started without a genesis file).
    pub const LEDGER_UNAVAILABLE: i32 = -32010;
    /// The ledger refused the block (invalid, a fork of a confirmed block, insufficient funds, …);
    /// the message says which rule failed.
    pub const BLOCK_REJECTED: i32 = -32011;
    /// The request is not allowed from this client: a state-changing method from a non-loopback
    /// address without the node's bearer token.
    pub const UNAUTHORIZED: i32 = -32020;
}

/// What a node says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node key's DID (`did:key:z6Mk…`).
    pub did: String,
    /// The libp2p PeerId of the same key.
    pub peer_id: String,
    /// Listen multiaddrs, each ending in `/p2p/<peer_id>`.
    pub listen_addrs: Vec<String>,
    /// Base URL of the HTTP API (JSON-RPC and OpenAI-compatible).
    pub http_url: String,
    /// Models this node serves itself.
    pub models: Vec<String>,
    /// Software version of the node.
    pub version: String,
    /// Layer ranges this node serves to pipelines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardInfo>,
    /// Models served in a version adopted from a signed manifest (the others serve the
    /// registry's version, 0).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_versions: Vec<ModelVersion>,
}

/// The version of a model a node serves, adopted from a publisher's signed manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// Model id.
    pub model: String,
    /// The manifest's version.
    pub version: u64,
    /// sha256 of the weights file (64 hex).
    pub sha256: String,
    /// DID of the manifest's publisher.
    pub publisher: String,
}

/// A signed model manifest a node knows (`mycel_manifests`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestInfo {
    /// DID of the publisher that signed it.
    pub publisher: String,
    /// Model id.
    pub model: String,
    /// Version.
    pub version: u64,
    /// Weights file name.
    pub file: String,
    /// sha256 of the weights file (64 hex).
    pub sha256: String,
    /// Size of the weights file in bytes.
    pub size: u64,
    /// Transformer layers.
    pub layers: u32,
    /// When the publisher signed it, Unix seconds.
    pub issued_at: u64,
    /// Whether this node's config trusts the publisher.
    pub trusted: bool,
    /// Whether this node serves this version.
    pub adopted: bool,
}

/// A layer range served to pipelines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// Model id.
    pub model: String,
    /// First layer.
    pub from: u32,
    /// Last layer (exclusive).
    pub to: u32,
}

/// A connected peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's PeerId.
    pub peer_id: String,
    /// The peer's DID, when its PeerId inlines an Ed25519 key.
    pub did: Option<String>,
    /// Addresses the peer is connected on.
    pub addrs: Vec<String>,
    /// Models the peer announced in its latest verified heartbeat.
    pub models: Vec<String>,
    /// Last measured ping round trip, in milliseconds.
    pub rtt_ms: Option<u64>,
    /// The peer's identify agent string.
    pub agent: Option<String>,
    /// Layer ranges the peer announced in its latest verified heartbeat.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardInfo>,
    /// Tokens per second it generated recently (from its heartbeat).
    #[serde(default)]
    pub tok_s: u32,
    /// Memory available on its host, MiB (0: unknown).
    #[serde(default)]
    pub free_mem_mib: u64,
    /// Its software version (empty until a heartbeat arrived).
    #[serde(default)]
    pub version: String,
}

/// A model reachable through this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model id (registry id, or `tiny` for the built-in test model).
    pub id: String,
    /// Whether this node serves it itself.
    pub local: bool,
    /// DIDs of the nodes known to serve it (this node included when `local`).
    pub served_by: Vec<String>,
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// Parameters of `mycel_chat`. Absent fields take the node's defaults (see specs/rpc.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// Model id; the node's first served model (or the default chat model) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation, oldest first; must not be empty.
    pub messages: Vec<ChatMessage>,
    /// Sampling temperature in [0, 2]; 0 is greedy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass in (0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Maximum new tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Random seed (same seed, model and prompt give the same answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Strings that end the answer (not included in it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// A private job: only peers above the node's trust threshold may serve it, it is never shown to
    /// validators (never audited) and earns no emission (specs/rpc.md, "Private jobs").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// With the model `experts`: `single` (default, the nearest domain's expert) or `ensemble`
    /// (ask `k` experts and return the consensus answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Experts an ensemble asks (1..=8, default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<u32>,
}

/// Token counts of an answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the templated prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// Sum of both.
    pub total_tokens: u32,
}

/// The answer to `mycel_chat`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Request id (`chatcmpl-…`), also used in logs.
    pub id: String,
    /// Model that answered.
    pub model: String,
    /// The assistant's answer.
    pub content: String,
    /// `stop` (end of turn or a stop string) or `length` (token or context limit).
    pub finish_reason: String,
    /// Token counts.
    pub usage: Usage,
    /// DID of the node that ran the model.
    pub served_by: String,
    /// PeerId of the node that ran the model.
    pub served_by_peer: String,
    /// Whether the answer came from another node over libp2p.
    pub remote: bool,
    /// Wall time from request to answer as measured by the node that took the request, in ms.
    pub latency_ms: u64,
    /// Whether the node answered from its response cache (an exact repeat of a deterministic
    /// request) without running the model; `served_by` then names the node that first answered it.
    #[serde(default)]
    pub cached: bool,
    /// For the model `experts`: the domain chosen, or the ensemble's experts and who agreed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<serde_json::Value>,
}

/// One notification of `mycel_subscribeChat`: a piece of the answer; the last one has `finish_reason`
/// and `usage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// New answer text (may be empty on the last chunk).
    pub delta: String,
    /// Set on the last chunk: `stop` or `length`.
    pub finish_reason: Option<String>,
    /// Set on the last chunk.
    pub usage: Option<Usage>,
    /// DID of the node that runs the model.
    pub served_by: String,
    /// Whether that node is another node.
    pub remote: bool,
    /// Set (alone) when generation failed after the stream started.
    pub error: Option<String>,
    /// The job id (`chatcmpl-…`, for `mycel_jobStatus`); the same on every chunk of an answer.
    #[serde(default)]
    pub id: String,
    /// Whether the answer comes from the node's response cache (see [`ChatResponse::cached`]).
    #[serde(default)]
    pub cached: bool,
}

/// Where a job stands (`mycel_jobStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Taken and not finished: finding a provider, queued or generating.
    Running,
    /// Answered completely.
    Done,
    /// Ended without a complete answer (`error` says why).
    Failed,
}

/// The escrow that pays for a job forwarded to another node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPayment {
    /// Hash of the Escrow block on this node's chain (64 hex; see `ledger_block`).
    pub escrow: String,
    /// The job id the escrow and the worker's receipt name (64 hex).
    pub job_id: String,
}

/// What a node remembers about a chat job it took (`mycel_jobStatus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job id: the completion id of the answer (`chatcmpl-…`).
    pub id: String,
    /// Model id.
    pub model: String,
    /// Running, done or failed.
    pub state: JobState,
    /// DID of the node that runs (or ran) the model; absent until a provider started answering.
    pub served_by: Option<String>,
    /// Whether that node is another node.
    pub remote: bool,
    /// Whether the answer came from the response cache (no model ran for this job).
    pub cached: bool,
    /// When the node took the job, Unix milliseconds.
    pub created_ms: u64,
    /// When it finished (done or failed), Unix milliseconds.
    pub finished_ms: Option<u64>,
    /// Tokens in the templated prompt (when done).
    pub prompt_tokens: Option<u32>,
    /// Tokens generated (when done).
    pub completion_tokens: Option<u32>,
    /// `stop` or `length` (when done).
    pub finish_reason: Option<String>,
    /// Why the job failed (when failed).
    pub error: Option<String>,
    /// The escrow paying for the job, when this node paid a provider for it (the latest one if
    /// the job failed over to another provider).
    pub payment: Option<JobPayment>,
    /// For a job served by a sharded pipeline: its route and what happened on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<PipelineStatus>,
}

/// A sharded pipeline job's route and counters (`mycel_jobStatus`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStatus {
    /// The hops in use when the job ended, first layers first.
    pub route: Vec<PipelineHop>,
    /// Hops replaced after their server failed.
    pub failovers: u32,
    /// Replayed steps whose output contradicted a failed server's signed commitment.
    pub disputed: u32,
    /// Signed span commitments received and checked.
    pub spans: u32,
}

/// One hop of a pipeline route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineHop {
    /// DID of the shard server.
    pub did: String,
    /// First layer.
    pub from: u32,
    /// Last layer (exclusive).
    pub to: u32,
}

/// Where the model `experts` would send a query (`mycel_route`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    /// The nearest domain (none: no domain is similar enough; the default model answers).
    pub domain: Option<String>,
    /// Cosine similarity of the query to that domain's centroid.
    pub similarity: Option<f32>,
    /// The next nearest domain.
    pub runner_up: Option<String>,
    /// The expert's model id (`expert:<domain>`).
    pub expert: Option<String>,
    /// Whether this node or a peer serves that expert.
    pub served: bool,
}

/// Where the holder of a DID can be reached (`mycel_findPeer`): its signed DHT record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecordInfo {
    /// The DID.
    pub did: String,
    /// Its PeerId.
    pub peer_id: String,
    /// Listen multiaddrs ending in `/p2p/<peer_id>`.
    pub addrs: Vec<String>,
    /// When the holder signed the record, Unix milliseconds.
    pub issued_ms: u64,
}

/// The expert router's state (`mycel_router`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterInfo {
    /// Domains routed to, with the peer updates held for each.
    pub domains: Vec<RouterDomain>,
    /// Peer updates the robust aggregation left out.
    pub rejected: Vec<RejectedUpdate>,
    /// Update rounds this node released.
    pub rounds: u64,
    /// Privacy budget spent by those rounds: ε (none: updates are not noised, not private).
    pub epsilon: Option<f64>,
    /// And δ.
    pub delta: Option<f64>,
}

/// One domain of [`RouterInfo`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterDomain {
    /// Domain tag.
    pub domain: String,
    /// Peer updates held.
    pub updates: u32,
}

/// A peer update left out of an aggregate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedUpdate {
    /// The sender's PeerId.
    pub peer: String,
    /// The update's domain.
    pub domain: String,
    /// `direction`, `distance` or `otherdomain`.
    pub rule: String,
}

/// The `mycel` JSON-RPC namespace served by every node.
#[rpc(server, client, namespace = "mycel")]
pub trait MycelApi {
    /// `mycel_nodeInfo`: the node's identity and addresses.
    #[method(name = "nodeInfo")]
    async fn node_info(&self) -> RpcResult<NodeInfo>;

    /// `mycel_peers`: currently connected peers.
    #[method(name = "peers")]
    async fn peers(&self) -> RpcResult<Vec<PeerInfo>>;

    /// `mycel_models`: models served locally or announced by connected peers.
    #[method(name = "models")]
    async fn models(&self) -> RpcResult<Vec<ModelInfo>>;

    /// `mycel_chat`: answers a conversation, locally or through a peer that serves the model.
    #[method(name = "chat")]
    async fn chat(&self, request: ChatRequest) -> RpcResult<ChatResponse>;

    /// `mycel_subscribeChat` (WebSocket): like `mycel_chat`, streamed as `mycel_chatChunk`
    /// notifications; the server ends the subscription after the last chunk.
    #[subscription(name = "subscribeChat" => "chatChunk", unsubscribe = "unsubscribeChat", item = ChatChunk)]
    async fn subscribe_chat(&self, request: ChatRequest) -> SubscriptionResult;

    /// `mycel_jobStatus`: a job this node took (by its completion id), or
    /// [`error_codes::JOB_NOT_FOUND`].
    #[method(name = "jobStatus")]
    async fn job_status(&self, id: String) -> RpcResult<JobStatus>;

    /// `mycel_findPeer`: the verified DHT record of where the holder of `did` can be reached (null
    /// when none is found).
    #[method(name = "findPeer")]
    async fn find_peer(&self, did: String) -> RpcResult<Option<PeerRecordInfo>>;

    /// `mycel_route`: where the model `experts` would send `query`.
    #[method(name = "route")]
    async fn route(&self, query: String) -> RpcResult<RouteInfo>;

    /// `mycel_router`: the expert router's domains, rejected updates and privacy budget.
    #[method(name = "router")]
    async fn router(&self) -> RpcResult<RouterInfo>;

    /// `mycel_manifests`: the signed model manifests this node holds (the latest per publisher
    /// and model), whether it trusts their publishers and which versions it serves.
    #[method(name = "manifests")]
    async fn manifests(&self) -> RpcResult<Vec<ManifestInfo>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_request_rejects_unknown_fields_and_defaults_optionals() {
        let ok: ChatRequest =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}]}"#)
                .expect("minimal request parses");
        assert_eq!(ok.model, None);
        assert!(ok.stop.is_empty());
        let bad = serde_json::from_str::<ChatRequest>(r#"{"messages":[],"tempreature":1}"#);
        assert!(
            bad.is_err(),
            "a misspelt field must be an error, not ignored"
        );
    }

    #[test]
    fn job_state_is_lowercase_and_new_fields_default_for_older_nodes() {
        assert_eq!(
            serde_json::to_string(&JobState::Running).expect("serializes"),
            "\"running\""
        );
        let old_chunk: ChatChunk = serde_json::from_str(
            r#"{"delta":"hi","finish_reason":null,"usage":null,"served_by":"did:key:z","remote":false,"error":null}"#,
        )
        .expect("a chunk without id and cached parses");
        assert!(old_chunk.id.is_empty());
        assert!(!old_chunk.cached);
    }
}
