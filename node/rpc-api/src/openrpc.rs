//! The OpenRPC document of the `mycel` namespace, returned by `rpc.discover`
//! (OpenRPC 1.2.6, <https://spec.open-rpc.org>). It is written by hand next to the trait; a test in
//! the node checks that every method it lists is served and every served method is listed.

use serde_json::{Value, json};

/// Methods the document describes, in order (subscriptions included).
pub const METHODS: [&str; 21] = [
    "mycel_nodeInfo",
    "mycel_peers",
    "mycel_models",
    "mycel_chat",
    "mycel_subscribeChat",
    "mycel_unsubscribeChat",
    "mycel_jobStatus",
    "mycel_findPeer",
    "mycel_route",
    "mycel_router",
    "mycel_revokeMembership",
    "mycel_manifests",
    "mycel_publishManifest",
    "ledger_info",
    "ledger_balance",
    "ledger_account",
    "ledger_block",
    "ledger_history",
    "ledger_submit",
    "ledger_subscribeConfirmations",
    "ledger_unsubscribeConfirmations",
];

fn string_param(name: &str) -> Value {
    json!({ "name": name, "required": true, "schema": { "type": "string" } })
}

fn ledger_errors() -> Value {
    json!([
        { "code": -32602, "message": "invalid params" },
        { "code": -32010, "message": "this node keeps no ledger" }
    ])
}

fn chat_request_param() -> Value {
    json!({ "name": "request", "required": true, "schema": { "$ref": "#/components/schemas/ChatRequest" } })
}

/// The OpenRPC document for this node software version.
pub fn document(version: &str) -> Value {
    json!({
        "openrpc": "1.2.6",
        "info": {
            "title": "mycel node JSON-RPC API",
            "version": version,
            "description": "Node info, peers, models, chat, job status, model manifests and ledger of a mycel node. Normative description: specs/rpc.md.",
            "license": { "name": "Apache-2.0" }
        },
        "methods": [
            {
                "name": "mycel_nodeInfo",
                "summary": "What the node says about itself.",
                "params": [],
                "result": { "name": "info", "schema": { "$ref": "#/components/schemas/NodeInfo" } }
            },
            {
                "name": "mycel_peers",
                "summary": "Connected peers.",
                "params": [],
                "result": { "name": "peers", "schema": { "type": "array", "items": { "$ref": "#/components/schemas/PeerInfo" } } }
            },
            {
                "name": "mycel_models",
                "summary": "Models served here and by connected peers.",
                "params": [],
                "result": { "name": "models", "schema": { "type": "array", "items": { "$ref": "#/components/schemas/ModelInfo" } } }
            },
            {
                "name": "mycel_chat",
                "summary": "Answers a conversation, locally or through a peer that serves the model.",
                "params": [chat_request_param()],
                "result": { "name": "answer", "schema": { "$ref": "#/components/schemas/ChatResponse" } },
                "errors": [
                    { "code": -32602, "message": "invalid params" },
                    { "code": -32001, "message": "model not found" },
                    { "code": -32002, "message": "every provider failed" },
                    { "code": -32003, "message": "busy" },
                    { "code": -32004, "message": "generation failed" }
                ]
            },
            {
                "name": "mycel_subscribeChat",
                "summary": "WebSocket subscription: streams the answer as `mycel_chatChunk` notifications.",
                "params": [chat_request_param()],
                "result": { "name": "subscription", "schema": { "type": "string" } }
            },
            {
                "name": "mycel_unsubscribeChat",
                "summary": "Ends a `mycel_subscribeChat` subscription.",
                "params": [string_param("subscription")],
                "result": { "name": "unsubscribed", "schema": { "type": "boolean" } }
            },
            {
                "name": "mycel_jobStatus",
                "summary": "State, provider, token counts and payment of a chat job this node took, by its completion id (`chatcmpl-…`). The node remembers its latest 4096 jobs.",
                "params": [string_param("id")],
                "result": { "name": "job", "schema": { "$ref": "#/components/schemas/JobStatus" } },
                "errors": [
                    { "code": -32602, "message": "invalid params" },
                    { "code": -32005, "message": "job not found" }
                ]
            },
            {
                "name": "mycel_findPeer",
                "summary": "Where the holder of a DID can be reached: its DID → PeerId record from the DHT (`did/<did>`), signed by the DID's key and verified by this node; null when none is found.",
                "params": [string_param("did")],
                "result": { "name": "record", "schema": { "oneOf": [{ "type": "null" }, { "type": "object", "required": ["did", "peer_id", "addrs", "issued_ms"], "properties": {
                    "did": { "type": "string" }, "peer_id": { "type": "string" },
                    "addrs": { "type": "array", "items": { "type": "string" } }, "issued_ms": { "type": "integer" } } }] } },
                "errors": [{ "code": -32602, "message": "invalid params (not a did:key)" }]
            },
            {
                "name": "mycel_route",
                "summary": "Where the model `experts` would send a query: the nearest domain of this node's expert router, its cosine similarity, the runner-up, the expert model id and whether a node serves it.",
                "params": [string_param("query")],
                "result": { "name": "route", "schema": { "$ref": "#/components/schemas/RouteInfo" } },
                "errors": [
                    { "code": -32602, "message": "invalid params" },
                    { "code": -32001, "message": "this node runs no expert router" }
                ]
            },
            {
                "name": "mycel_router",
                "summary": "The expert router's state: domains with the peer updates held, updates left out by the robust aggregation, update rounds released and the privacy budget (ε, δ) they spent.",
                "params": [],
                "result": { "name": "router", "schema": { "$ref": "#/components/schemas/RouterInfo" } },
                "errors": [{ "code": -32001, "message": "this node runs no expert router" }]
            },
            {
                "name": "mycel_revokeMembership",
                "summary": "Consortium mode: applies a membership revocation signed by a trusted issuer (the JSON `mycel credential revoke` writes) and gossips it; the revoked member is disconnected and blocked everywhere. Loopback or bearer token only.",
                "params": [{ "name": "revocation", "required": true, "schema": { "type": "object", "required": ["version", "consortium", "subject", "issuer", "issued_at", "signature"], "properties": { "version": { "type": "integer" }, "consortium": { "type": "string" }, "subject": { "type": "string" }, "issuer": { "type": "string" }, "issued_at": { "type": "integer" }, "signature": { "type": "string" } } } }],
                "result": { "name": "outcome", "schema": { "type": "object", "properties": { "status": { "type": "string", "enum": ["applied", "known"] }, "subject": { "type": "string" } } } },
                "errors": [
                    { "code": -32602, "message": "invalid params, not in consortium mode, or revocation refused" },
                    { "code": -32020, "message": "unauthorized" }
                ]
            },
            {
                "name": "mycel_manifests",
                "summary": "The signed model manifests this node holds (the latest per publisher and model, at most 256), whether its config trusts each publisher and whether it serves that version.",
                "params": [],
                "result": { "name": "manifests", "schema": { "type": "array", "items": { "$ref": "#/components/schemas/ManifestInfo" } } }
            },
            {
                "name": "mycel_publishManifest",
                "summary": "Checks a signed model manifest (the envelope `mycel-node model publish` builds), keeps it and gossips it on `mycel/manifests/1`. Loopback or bearer token only.",
                "params": [{ "name": "manifest", "required": true, "schema": { "type": "object", "required": ["body", "signature"], "properties": { "body": { "type": "string", "description": "JSON text of the manifest" }, "signature": { "type": "string", "description": "hex Ed25519 signature over body in the mycel/v1/manifest domain" } } } }],
                "result": { "name": "outcome", "schema": { "type": "object", "required": ["status", "publisher", "model", "version"], "properties": { "status": { "type": "string", "enum": ["published", "known"] }, "publisher": { "type": "string" }, "model": { "type": "string" }, "version": { "type": "integer" } } } },
                "errors": [
                    { "code": -32602, "message": "invalid params (a manifest that does not verify, or older than the one held)" },
                    { "code": -32020, "message": "unauthorized" }
                ]
            },
            {
                "name": "ledger_info",
                "summary": "Network, epochs, block counts, state root and the parameters wallets need.",
                "params": [],
                "result": { "name": "info", "schema": { "$ref": "#/components/schemas/LedgerInfo" } },
                "errors": ledger_errors()
            },
            {
                "name": "ledger_balance",
                "summary": "Balances of an account (DID or 64-hex key); zero when unknown.",
                "params": [string_param("account")],
                "result": { "name": "balance", "schema": { "$ref": "#/components/schemas/BalanceInfo" } },
                "errors": ledger_errors()
            },
            {
                "name": "ledger_account",
                "summary": "Chain head, balances and receivables of an account; null when it has neither.",
                "params": [string_param("account")],
                "result": { "name": "account", "schema": { "oneOf": [{ "$ref": "#/components/schemas/AccountView" }, { "type": "null" }] } },
                "errors": ledger_errors()
            },
            {
                "name": "ledger_block",
                "summary": "A block by hash (64 hex); null when unknown.",
                "params": [string_param("hash")],
                "result": { "name": "block", "schema": { "oneOf": [{ "$ref": "#/components/schemas/BlockView" }, { "type": "null" }] } },
                "errors": ledger_errors()
            },
            {
                "name": "ledger_history",
                "summary": "The latest blocks of an account's chain, newest first.",
                "params": [string_param("account"), { "name": "limit", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } }],
                "result": { "name": "blocks", "schema": { "type": "array", "items": { "$ref": "#/components/schemas/BlockView" } } },
                "errors": ledger_errors()
            },
            {
                "name": "ledger_submit",
                "summary": "Validates, applies and gossips a wallet-signed block (canonical encoding, hex). Loopback clients or the node's bearer token only.",
                "params": [string_param("block")],
                "result": { "name": "submitted", "schema": { "$ref": "#/components/schemas/SubmitResult" } },
                "errors": [
                    { "code": -32602, "message": "invalid params" },
                    { "code": -32010, "message": "this node keeps no ledger" },
                    { "code": -32011, "message": "block rejected" },
                    { "code": -32020, "message": "unauthorized" }
                ]
            },
            {
                "name": "ledger_subscribeConfirmations",
                "summary": "WebSocket subscription: a `ledger_confirmation` notification per block the node confirms.",
                "params": [],
                "result": { "name": "subscription", "schema": { "type": "string" } },
                "errors": ledger_errors()
            },
            {
                "name": "ledger_unsubscribeConfirmations",
                "summary": "Ends a `ledger_subscribeConfirmations` subscription.",
                "params": [string_param("subscription")],
                "result": { "name": "unsubscribed", "schema": { "type": "boolean" } }
            }
        ],
        "components": { "schemas": {
            "NodeInfo": { "type": "object", "required": ["did", "peer_id", "listen_addrs", "http_url", "models", "version"], "properties": {
                "did": { "type": "string" }, "peer_id": { "type": "string" },
                "listen_addrs": { "type": "array", "items": { "type": "string" } },
                "http_url": { "type": "string" }, "models": { "type": "array", "items": { "type": "string" } },
                "version": { "type": "string" },
                "shards": { "type": "array", "items": { "$ref": "#/components/schemas/ShardInfo" } },
                "model_versions": { "type": "array", "items": { "type": "object", "required": ["model", "version", "sha256", "publisher"], "properties": {
                    "model": { "type": "string" }, "version": { "type": "integer" }, "sha256": { "type": "string" }, "publisher": { "type": "string" } } } } } },
            "ManifestInfo": { "type": "object", "required": ["publisher", "model", "version", "file", "sha256", "size", "layers", "issued_at", "trusted", "adopted"], "properties": {
                "publisher": { "type": "string" }, "model": { "type": "string" }, "version": { "type": "integer" },
                "file": { "type": "string" }, "sha256": { "type": "string" }, "size": { "type": "integer" },
                "layers": { "type": "integer" }, "issued_at": { "type": "integer" },
                "trusted": { "type": "boolean" }, "adopted": { "type": "boolean" } } },
            "ShardInfo": { "type": "object", "required": ["model", "from", "to"], "properties": {
                "model": { "type": "string" }, "from": { "type": "integer" }, "to": { "type": "integer" } } },
            "PeerInfo": { "type": "object", "required": ["peer_id", "addrs", "models"], "properties": {
                "peer_id": { "type": "string" }, "did": { "type": ["string", "null"] },
                "addrs": { "type": "array", "items": { "type": "string" } },
                "models": { "type": "array", "items": { "type": "string" } },
                "rtt_ms": { "type": ["integer", "null"] }, "agent": { "type": ["string", "null"] },
                "tok_s": { "type": "integer" }, "free_mem_mib": { "type": "integer" }, "version": { "type": "string" },
                "shards": { "type": "array", "items": { "$ref": "#/components/schemas/ShardInfo" } } } },
            "ModelInfo": { "type": "object", "required": ["id", "local", "served_by"], "properties": {
                "id": { "type": "string" }, "local": { "type": "boolean" },
                "served_by": { "type": "array", "items": { "type": "string" } } } },
            "ChatMessage": { "type": "object", "required": ["role", "content"], "properties": {
                "role": { "type": "string", "enum": ["system", "user", "assistant"] }, "content": { "type": "string" } } },
            "ChatRequest": { "type": "object", "required": ["messages"], "additionalProperties": false, "properties": {
                "model": { "type": "string" },
                "messages": { "type": "array", "minItems": 1, "items": { "$ref": "#/components/schemas/ChatMessage" } },
                "temperature": { "type": "number", "minimum": 0, "maximum": 2 },
                "top_p": { "type": "number", "exclusiveMinimum": 0, "maximum": 1 },
                "max_tokens": { "type": "integer", "minimum": 1 },
                "seed": { "type": "integer", "minimum": 0 },
                "stop": { "type": "array", "items": { "type": "string" } },
                "private": { "type": "boolean" },
                "mode": { "type": "string", "enum": ["single", "ensemble"] },
                "k": { "type": "integer", "minimum": 1, "maximum": 8 } } },
            "Usage": { "type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"], "properties": {
                "prompt_tokens": { "type": "integer" }, "completion_tokens": { "type": "integer" }, "total_tokens": { "type": "integer" } } },
            "ChatResponse": { "type": "object", "required": ["id", "model", "content", "finish_reason", "usage", "served_by", "served_by_peer", "remote", "latency_ms"], "properties": {
                "id": { "type": "string" }, "model": { "type": "string" }, "content": { "type": "string" },
                "finish_reason": { "type": "string", "enum": ["stop", "length"] },
                "usage": { "$ref": "#/components/schemas/Usage" },
                "served_by": { "type": "string" }, "served_by_peer": { "type": "string" },
                "remote": { "type": "boolean" }, "latency_ms": { "type": "integer" },
                "cached": { "type": "boolean" }, "routing": { "type": "object" } } },
            "RouteInfo": { "type": "object", "required": ["served"], "properties": {
                "domain": { "type": ["string", "null"] }, "similarity": { "type": ["number", "null"] },
                "runner_up": { "type": ["string", "null"] }, "expert": { "type": ["string", "null"] },
                "served": { "type": "boolean" } } },
            "RouterInfo": { "type": "object", "required": ["domains", "rejected", "rounds", "epsilon", "delta"], "properties": {
                "domains": { "type": "array", "items": { "type": "object", "properties": { "domain": { "type": "string" }, "updates": { "type": "integer" } } } },
                "rejected": { "type": "array", "items": { "type": "object", "properties": { "peer": { "type": "string" }, "domain": { "type": "string" }, "rule": { "type": "string" } } } },
                "rounds": { "type": "integer" }, "epsilon": { "type": ["number", "null"] }, "delta": { "type": ["number", "null"] } } },
            "ChatChunk": { "type": "object", "required": ["delta", "served_by", "remote"], "properties": {
                "delta": { "type": "string" }, "finish_reason": { "type": ["string", "null"] },
                "usage": { "oneOf": [{ "$ref": "#/components/schemas/Usage" }, { "type": "null" }] },
                "served_by": { "type": "string" }, "remote": { "type": "boolean" },
                "error": { "type": ["string", "null"] }, "id": { "type": "string" },
                "cached": { "type": "boolean" } } },
            "JobStatus": { "type": "object", "required": ["id", "model", "state", "remote", "cached", "created_ms"], "properties": {
                "id": { "type": "string" }, "model": { "type": "string" },
                "state": { "type": "string", "enum": ["running", "done", "failed"] },
                "served_by": { "type": ["string", "null"] }, "remote": { "type": "boolean" },
                "cached": { "type": "boolean" }, "created_ms": { "type": "integer" },
                "finished_ms": { "type": ["integer", "null"] },
                "prompt_tokens": { "type": ["integer", "null"] }, "completion_tokens": { "type": ["integer", "null"] },
                "finish_reason": { "type": ["string", "null"], "enum": ["stop", "length", null] },
                "error": { "type": ["string", "null"] },
                "payment": { "oneOf": [{ "type": "null" }, { "type": "object", "required": ["escrow", "job_id"], "properties": {
                    "escrow": { "type": "string" }, "job_id": { "type": "string" } } }] },
                "pipeline": { "type": "object", "required": ["route", "failovers", "disputed", "spans"], "properties": {
                    "route": { "type": "array", "items": { "type": "object", "properties": { "did": { "type": "string" }, "from": { "type": "integer" }, "to": { "type": "integer" } } } },
                    "failovers": { "type": "integer" }, "disputed": { "type": "integer" }, "spans": { "type": "integer" } } } } },
            "LedgerInfo": { "type": "object", "properties": {
                "network": { "type": "string" }, "genesis_hash": { "type": "string" },
                "epoch": { "type": "integer" }, "table_epoch": { "type": "integer" },
                "epoch_secs": { "type": "integer" }, "start_time": { "type": "integer" },
                "blocks": { "type": "integer" }, "confirmed": { "type": "integer" },
                "unchecked": { "type": "integer" }, "elections": { "type": "integer" },
                "state_root": { "type": "string" }, "supply": { "$ref": "#/components/schemas/Amount" },
                "open_work_bits": { "type": "integer" }, "price_per_token": { "$ref": "#/components/schemas/Amount" },
                "node_account": { "type": "string" }, "node_weight": { "$ref": "#/components/schemas/Amount" } } },
            "Amount": { "type": "string", "pattern": "^[0-9]+$", "description": "µ-credits (10^6 per credit) as a decimal string" },
            "BalanceInfo": { "type": "object", "required": ["account", "liquid", "bonded", "unbonding", "receivable"], "properties": {
                "account": { "type": "string" }, "liquid": { "$ref": "#/components/schemas/Amount" },
                "bonded": { "$ref": "#/components/schemas/Amount" },
                "unbonding": { "type": "array", "items": { "type": "object", "properties": {
                    "amount": { "$ref": "#/components/schemas/Amount" }, "release_epoch": { "type": "integer" } } } },
                "receivable": { "$ref": "#/components/schemas/Amount" } } },
            "AccountView": { "type": "object", "required": ["account", "public_key", "open", "height", "frontier", "epoch", "balance", "receivable"], "properties": {
                "account": { "type": "string" }, "public_key": { "type": "string" }, "open": { "type": "boolean" },
                "height": { "type": "integer" }, "frontier": { "type": "string" }, "epoch": { "type": "integer" },
                "balance": { "$ref": "#/components/schemas/BalanceInfo" },
                "receivable": { "type": "array", "items": { "type": "object", "properties": {
                    "source": { "type": "string" }, "amount": { "$ref": "#/components/schemas/Amount" } } } },
                "node_key": { "type": ["string", "null"] } } },
            "BlockView": { "type": "object", "required": ["hash", "kind", "account", "height", "previous", "epoch", "confirmed", "body", "raw"], "properties": {
                "hash": { "type": "string" }, "kind": { "type": "string" }, "account": { "type": "string" },
                "height": { "type": "integer" }, "previous": { "type": "string" }, "epoch": { "type": "integer" },
                "confirmed": { "type": "boolean" }, "body": { "type": "object" }, "raw": { "type": "string" } } },
            "SubmitResult": { "type": "object", "required": ["hash", "status"], "properties": {
                "hash": { "type": "string" }, "status": { "type": "string", "enum": ["applied", "queued", "contested"] } } },
            "ConfirmationView": { "type": "object", "required": ["hash", "account", "height", "kind", "epoch"], "properties": {
                "hash": { "type": "string" }, "account": { "type": "string" }, "height": { "type": "integer" },
                "kind": { "type": "string" }, "epoch": { "type": "integer" } } }
        } }
    })
}
