//! The OpenRPC document of the `mycel` namespace, returned by `rpc.discover`
//! (OpenRPC 1.2.6, <https://spec.open-rpc.org>). It is written by hand next to the trait; a test in
//! the node checks that every method it lists is served and every served method is listed.

use serde_json::{Value, json};

/// Methods the document describes, in order (subscriptions included).
pub const METHODS: [&str; 6] = [
    "mycel_nodeInfo",
    "mycel_peers",
    "mycel_models",
    "mycel_chat",
    "mycel_chatStream",
    "mycel_chatStreamUnsubscribe",
];

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
            "description": "Node info, peers, models and chat of a mycel node. Normative description: specs/rpc.md.",
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
                "name": "mycel_chatStream",
                "summary": "WebSocket subscription: streams the answer as `mycel_chatChunk` notifications.",
                "params": [chat_request_param()],
                "result": { "name": "subscription", "schema": { "type": "string" } }
            },
            {
                "name": "mycel_chatStreamUnsubscribe",
                "summary": "Ends a `mycel_chatStream` subscription.",
                "params": [{ "name": "subscription", "required": true, "schema": { "type": "string" } }],
                "result": { "name": "unsubscribed", "schema": { "type": "boolean" } }
            }
        ],
        "components": { "schemas": {
            "NodeInfo": { "type": "object", "required": ["did", "peer_id", "listen_addrs", "http_url", "models", "version"], "properties": {
                "did": { "type": "string" }, "peer_id": { "type": "string" },
                "listen_addrs": { "type": "array", "items": { "type": "string" } },
                "http_url": { "type": "string" }, "models": { "type": "array", "items": { "type": "string" } },
                "version": { "type": "string" } } },
            "PeerInfo": { "type": "object", "required": ["peer_id", "addrs", "models"], "properties": {
                "peer_id": { "type": "string" }, "did": { "type": ["string", "null"] },
                "addrs": { "type": "array", "items": { "type": "string" } },
                "models": { "type": "array", "items": { "type": "string" } },
                "rtt_ms": { "type": ["integer", "null"] }, "agent": { "type": ["string", "null"] } } },
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
                "stop": { "type": "array", "items": { "type": "string" } } } },
            "Usage": { "type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"], "properties": {
                "prompt_tokens": { "type": "integer" }, "completion_tokens": { "type": "integer" }, "total_tokens": { "type": "integer" } } },
            "ChatResponse": { "type": "object", "required": ["id", "model", "content", "finish_reason", "usage", "served_by", "served_by_peer", "remote", "latency_ms"], "properties": {
                "id": { "type": "string" }, "model": { "type": "string" }, "content": { "type": "string" },
                "finish_reason": { "type": "string", "enum": ["stop", "length"] },
                "usage": { "$ref": "#/components/schemas/Usage" },
                "served_by": { "type": "string" }, "served_by_peer": { "type": "string" },
                "remote": { "type": "boolean" }, "latency_ms": { "type": "integer" } } },
            "ChatChunk": { "type": "object", "required": ["delta", "served_by", "remote"], "properties": {
                "delta": { "type": "string" }, "finish_reason": { "type": ["string", "null"] },
                "usage": { "oneOf": [{ "$ref": "#/components/schemas/Usage" }, { "type": "null" }] },
                "served_by": { "type": "string" }, "remote": { "type": "boolean" },
                "error": { "type": ["string", "null"] } } }
        } }
    })
}
