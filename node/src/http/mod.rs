//! The node's HTTP API on one port: OpenAI-compatible routes under `/v1`, and JSON-RPC 2.0 (jsonrpsee,
//! HTTP and WebSocket) on every other path, served as a tower service through axum's fallback;
//! Prometheus metrics at `GET /metrics`.

mod ledger;
mod manifests;
mod membership;
mod openai;
mod rpc;
mod serve;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower::Service;

use crate::error::{NodeError, Result};
use crate::node::Node;

pub use ledger::{block_view, parse_account};
pub use openai::{ErrorBody, ErrorObject};
pub use serve::{BODY_IDLE_TIMEOUT, HEADER_READ_TIMEOUT, serve};

/// Who is calling, as JSON-RPC methods see it (inserted into each request's extensions): state-changing
/// methods require a trusted caller — a loopback client, or one presenting the node's bearer token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Loopback address or valid bearer token.
    pub trusted: bool,
}

fn caller(node: &Node, req: &axum::extract::Request) -> Caller {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let authorization = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    classify(peer, authorization, |t| node.rpc_token_matches(t))
}

/// Who is calling, from the peer's socket address (None when unknown) and the `Authorization`
/// header: trusted when the peer is a loopback address (127.0.0.0/8, ::1, or IPv4 loopback mapped
/// into IPv6) whatever the header says, or when the header is `Bearer <token>` (scheme in any case,
/// surrounding spaces ignored) and `token_matches` accepts the token.
fn classify(
    peer: Option<std::net::SocketAddr>,
    authorization: Option<&str>,
    token_matches: impl FnOnce(&str) -> bool,
) -> Caller {
    let loopback = peer.is_some_and(|p| p.ip().to_canonical().is_loopback());
    let token = authorization
        .map(str::trim)
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .is_some_and(|t| !t.is_empty() && token_matches(t));
    Caller {
        trusted: loopback || token,
    }
}

/// A JSON-RPC module with one state-changing method: `handler(node, params)` runs for trusted
/// callers ([`Caller`]) only; others get [`error_codes::UNAUTHORIZED`].
///
/// [`error_codes::UNAUTHORIZED`]: mycel_rpc_api::error_codes::UNAUTHORIZED
fn admin_method<F, Fut>(
    node: Node,
    method: &'static str,
    handler: F,
) -> std::result::Result<jsonrpsee::RpcModule<()>, jsonrpsee::core::RegisterMethodError>
where
    F: Fn(Node, jsonrpsee::types::Params<'static>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<
            Output = std::result::Result<serde_json::Value, jsonrpsee::types::ErrorObjectOwned>,
        > + Send,
{
    let mut m = jsonrpsee::RpcModule::new(());
    m.register_async_method(method, move |params, _, ext: jsonrpsee::Extensions| {
        let (node, handler) = (node.clone(), handler.clone());
        async move {
            if !ext.get::<Caller>().is_some_and(|c| c.trusted) {
                return Err(jsonrpsee::types::ErrorObjectOwned::owned(
                    mycel_rpc_api::error_codes::UNAUTHORIZED,
                    format!(
                        "{method} is only allowed from loopback or with the node's bearer token"
                    ),
                    None::<()>,
                ));
            }
            handler(node, params).await
        }
    })?;
    Ok(m)
}

/// Largest HTTP request body (OpenAI and JSON-RPC alike).
pub const MAX_HTTP_BODY_BYTES: usize = 1024 * 1024;
/// Response header naming the DID of the node that ran the model.
pub const SERVED_BY_HEADER: &str = "x-mycel-served-by";
/// Most concurrent JSON-RPC WebSocket connections.
const MAX_RPC_CONNECTIONS: u32 = 64;
/// WebSocket ping period. jsonrpsee counts plain HTTP calls against [`MAX_RPC_CONNECTIONS`] too, so
/// WebSockets that never go away would lock every JSON-RPC client out (429) for good.
const WS_PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(15);
/// A WebSocket that answers no ping (nor anything else) for this long is closed: a vanished client
/// or a silent squatter, found by the fuzz harness (tests/src/fuzz). Clients answer pings
/// automatically.
const WS_INACTIVE_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

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

/// The answer to a JSON-RPC request whose body could not be read: 413 over the size limit, 408 when
/// it stopped arriving, 400 otherwise; the body is a JSON-RPC error response (id null).
fn body_error(e: &axum::Error) -> axum::response::Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let (mut status, mut code, mut what) = (
        StatusCode::BAD_REQUEST,
        jsonrpsee::types::error::PARSE_ERROR_CODE,
        "Parse error: malformed request body",
    );
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            (status, code, what) = (
                StatusCode::PAYLOAD_TOO_LARGE,
                jsonrpsee::types::error::INVALID_REQUEST_CODE,
                "Invalid Request: body too large",
            );
            break;
        }
        if err.is::<tower_http::timeout::TimeoutError>() {
            (status, what) = (
                StatusCode::REQUEST_TIMEOUT,
                "Parse error: the request body stopped arriving",
            );
            break;
        }
        source = err.source();
    }
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": what},
    });
    (status, axum::Json(body)).into_response()
}

/// Builds the router for a node.
pub fn router(node: Node) -> Result<Router> {
    let mut module = rpc::module(node.clone())
        .map_err(|e| NodeError::Config(format!("JSON-RPC module: {e}")))?;
    for extra in [
        membership::module(node.clone()),
        manifests::module(node.clone()),
    ] {
        module
            .merge(extra.map_err(|e| NodeError::Config(format!("JSON-RPC module: {e}")))?)
            .map_err(|e| NodeError::Config(format!("JSON-RPC module: {e}")))?;
    }
    let (stop_handle, server_handle) = jsonrpsee::server::stop_channel();
    // The server handle lives as long as the service: dropping it would stop WebSocket sessions.
    let server_handle = std::sync::Arc::new(server_handle);
    let server_cfg = jsonrpsee::server::ServerConfig::builder()
        .max_request_body_size(MAX_HTTP_BODY_BYTES as u32)
        .max_response_body_size(MAX_HTTP_BODY_BYTES as u32)
        .max_connections(MAX_RPC_CONNECTIONS)
        .enable_ws_ping(
            jsonrpsee::server::PingConfig::new()
                .ping_interval(WS_PING_INTERVAL)
                .inactive_limit(WS_INACTIVE_LIMIT),
        )
        .build();
    let rpc_service = jsonrpsee::server::Server::builder()
        .set_config(server_cfg)
        .to_service_builder()
        .build(module, stop_handle);
    let rpc_node = node.clone();
    let fallback = move |mut req: axum::extract::Request| {
        let mut svc = rpc_service.clone();
        let _keep = server_handle.clone();
        let who = caller(&rpc_node, &req);
        req.extensions_mut().insert(who);
        async move {
            // The body is read here, under the size limit and the idle timeout, so that a body that
            // breaks off (a stall, bad chunked encoding) is answered as the client's fault, not as
            // jsonrpsee's "Internal error".
            let (parts, body) = req.into_parts();
            let bytes = match axum::body::to_bytes(body, MAX_HTTP_BODY_BYTES).await {
                Ok(bytes) => bytes,
                Err(e) => return body_error(&e),
            };
            let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn who(peer: Option<&str>, authorization: Option<&str>) -> bool {
        let peer = peer.map(|p| p.parse::<SocketAddr>().expect("socket address"));
        classify(peer, authorization, |t| t == "s3cret").trusted
    }

    #[test]
    fn loopback_peers_are_trusted_whatever_the_token() {
        for peer in [
            "127.0.0.1:5000",
            "127.8.9.10:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert!(who(Some(peer), None), "{peer}");
            assert!(who(Some(peer), Some("Bearer wrong")), "{peer}");
            assert!(who(Some(peer), Some("garbage")), "{peer}");
        }
    }

    #[test]
    fn remote_peers_need_the_right_bearer_token() {
        let remote = Some("192.0.2.7:5000");
        assert!(!who(remote, None));
        assert!(!who(remote, Some("Bearer wrong")));
        assert!(!who(remote, Some("Bearer s3cret!")));
        assert!(!who(remote, Some("Basic s3cret")));
        assert!(!who(remote, Some("s3cret")));
        assert!(!who(remote, Some("Bearer ")));
        assert!(!who(Some("[::ffff:192.0.2.7]:1"), Some("Bearer x")));
        assert!(who(remote, Some("Bearer s3cret")));
        assert!(who(remote, Some("bearer s3cret")));
        assert!(who(remote, Some("  Bearer   s3cret  ")));
        assert!(who(Some("[2001:db8::1]:443"), Some("BEARER s3cret")));
        // No peer address (not served through a socket): only the token counts.
        assert!(!who(None, None));
        assert!(who(None, Some("Bearer s3cret")));
    }

    #[test]
    fn an_empty_token_never_matches() {
        // Even a matcher that would accept anything is not asked about an empty token.
        let peer = "192.0.2.7:5000".parse().ok();
        assert!(!classify(peer, Some("Bearer"), |_| true).trusted);
        assert!(!classify(peer, Some("Bearer    "), |_| true).trusted);
    }
}
