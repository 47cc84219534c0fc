//! The node's HTTP API on one port: OpenAI-compatible routes under `/v1`, and JSON-RPC 2.0 (jsonrpsee,
//! HTTP and WebSocket) on every other path, served as a tower service through axum's fallback;
//! Prometheus metrics at `GET /metrics`.

mod openai;
mod rpc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower::Service;

use crate::error::{NodeError, Result};
use crate::node::Node;

pub use openai::{ErrorBody, ErrorObject};

/// Largest HTTP request body (OpenAI and JSON-RPC alike).
pub const MAX_HTTP_BODY_BYTES: usize = 1024 * 1024;
/// Response header naming the DID of the node that ran the model.
pub const SERVED_BY_HEADER: &str = "x-mycel-served-by";
/// Most concurrent JSON-RPC WebSocket connections.
const MAX_RPC_CONNECTIONS: u32 = 64;

/// `GET /metrics`: Prometheus (OpenMetrics text) scrape of the node's metrics.
async fn metrics(axum::extract::State(node): axum::extract::State<Node>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        node.metrics().encode(),
    )
}

/// JSON-RPC 2.0: "the Server MUST NOT reply to a Notification". jsonrpsee answers a lone
/// notification over HTTP with the body `null`; a real response is always an object or an array, so
/// that body is turned into `204 No Content` with no body. (HTTP JSON-RPC responses are built whole
/// in memory by jsonrpsee, bounded by `MAX_HTTP_BODY_BYTES`; WebSocket upgrades are not 200 and
/// pass untouched.)
async fn no_reply_to_notifications(resp: axum::response::Response) -> axum::response::Response {
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, MAX_HTTP_BODY_BYTES).await {
        Ok(bytes) if matches!(bytes.trim_ascii(), b"" | b"null") => {
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(bytes) => axum::response::Response::from_parts(parts, axum::body::Body::from(bytes)),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Builds the router for a node.
pub fn router(node: Node) -> Result<Router> {
    let module = rpc::module(node.clone())
        .map_err(|e| NodeError::Config(format!("JSON-RPC module: {e}")))?;
    let (stop_handle, server_handle) = jsonrpsee::server::stop_channel();
    // The server handle lives as long as the service: dropping it would stop WebSocket sessions.
    let server_handle = std::sync::Arc::new(server_handle);
    let server_cfg = jsonrpsee::server::ServerConfig::builder()
        .max_request_body_size(MAX_HTTP_BODY_BYTES as u32)
        .max_response_body_size(MAX_HTTP_BODY_BYTES as u32)
        .max_connections(MAX_RPC_CONNECTIONS)
        .build();
    let rpc_service = jsonrpsee::server::Server::builder()
        .set_config(server_cfg)
        .to_service_builder()
        .build(module, stop_handle);
    let fallback = move |req: axum::extract::Request| {
        let mut svc = rpc_service.clone();
        let _keep = server_handle.clone();
        async move {
            match svc.call(req).await {
                Ok(resp) => no_reply_to_notifications(resp.into_response()).await,
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            }
        }
    };
    Ok(Router::new()
        .route("/v1/models", get(openai::list_models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/metrics", get(metrics))
        .with_state(node)
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_HTTP_BODY_BYTES)))
}
