//! The node the wallet talks to: its JSON-RPC URL, the optional bearer token, the clients and how
//! their errors become [`CliError`]s.

use std::path::PathBuf;

use jsonrpsee::core::client::Error as RpcError;
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use mycel_rpc_api::error_codes;
use zeroize::Zeroizing;

use crate::error::{CliError, CliResult, Kind, io_error};

/// Environment variable that may hold the node's RPC bearer token.
pub const TOKEN_ENV: &str = "MYCEL_RPC_TOKEN";

/// A node's HTTP/JSON-RPC endpoint (`--rpc`) and where its bearer token comes from.
#[derive(Debug)]
pub struct Endpoint {
    /// Base URL, e.g. `http://127.0.0.1:7400`.
    pub url: String,
    /// `--rpc-token-file`.
    pub token_file: Option<PathBuf>,
}

/// A single-threaded async runtime for one command.
pub fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Kind::Internal, format!("starting the async runtime: {e}")))
}

impl Endpoint {
    /// The bearer token: `--rpc-token-file` (first line), else `MYCEL_RPC_TOKEN`, else none.
    fn token(&self) -> CliResult<Option<Zeroizing<String>>> {
        let token = match &self.token_file {
            Some(path) => {
                let text = Zeroizing::new(
                    std::fs::read_to_string(path)
                        .map_err(|e| io_error("reading RPC token file", path, e))?,
                );
                Some(Zeroizing::new(
                    text.lines().next().unwrap_or_default().trim().to_owned(),
                ))
            }
            None => std::env::var(TOKEN_ENV).ok().map(Zeroizing::new),
        };
        Ok(token.filter(|t| !t.trim().is_empty()))
    }

    /// `Authorization: Bearer …` when a token is configured (marked sensitive: never logged).
    fn headers(&self) -> CliResult<HeaderMap> {
        let mut headers = HeaderMap::new();
        if let Some(token) = self.token()? {
            let mut value =
                HeaderValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| {
                    CliError::new(
                        Kind::Invalid,
                        "the RPC token holds characters an HTTP header cannot carry",
                    )
                })?;
            value.set_sensitive(true);
            headers.insert("authorization", value);
        }
        Ok(headers)
    }

    /// An HTTP JSON-RPC client.
    pub fn http(&self) -> CliResult<HttpClient> {
        HttpClientBuilder::default()
            .set_headers(self.headers()?)
            .build(&self.url)
            .map_err(|e| CliError::new(Kind::Invalid, format!("bad --rpc URL `{}`: {e}", self.url)))
    }

    /// A WebSocket JSON-RPC client on the same endpoint (for subscriptions).
    pub async fn ws(&self) -> CliResult<WsClient> {
        let url = ws_url(&self.url);
        WsClientBuilder::default()
            .set_headers(self.headers()?)
            .build(&url)
            .await
            .map_err(|e| rpc_error(&url, e))
    }

    /// Maps a failed call on this endpoint to a CLI error.
    pub fn error(&self, e: RpcError) -> CliError {
        rpc_error(&self.url, e)
    }
}

/// The WebSocket URL of an HTTP endpoint.
fn ws_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    }
}

/// Maps a JSON-RPC error code (specs/rpc.md) to a kind and a message that says what to do.
fn rpc_error(url: &str, e: RpcError) -> CliError {
    match e {
        RpcError::Call(obj) => {
            let message = obj.message();
            match obj.code() {
                error_codes::MODEL_NOT_FOUND | error_codes::JOB_NOT_FOUND => {
                    CliError::new(Kind::NotFound, format!("the node refused: {message}"))
                }
                error_codes::INVALID_PARAMS => {
                    CliError::new(Kind::Invalid, format!("the node refused: {message}"))
                }
                error_codes::LEDGER_UNAVAILABLE => CliError::new(
                    Kind::Node,
                    format!(
                        "the node at {url} keeps no ledger (start it with a genesis: `genesis = \
                         \"genesis.json\"` in its config.toml, or `mycel-node devnet`), or pick \
                         another node with --rpc"
                    ),
                ),
                error_codes::BLOCK_REJECTED => CliError::new(
                    Kind::Rejected,
                    format!("the ledger refused the block: {message}"),
                ),
                error_codes::UNAUTHORIZED => CliError::new(
                    Kind::Unauthorized,
                    format!(
                        "the node at {url} accepts blocks only from its own machine or with its \
                         bearer token: set {TOKEN_ENV} or pass --rpc-token-file ({message})"
                    ),
                ),
                _ => CliError::new(Kind::Node, format!("the node refused: {message}")),
            }
        }
        other => CliError::new(
            Kind::Node,
            format!(
                "cannot reach the node at {url}: {other} (is `mycel-node up` running? see --rpc)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use jsonrpsee::types::ErrorObjectOwned;

    use super::*;

    fn call_error(code: i32) -> CliError {
        rpc_error(
            "http://node",
            RpcError::Call(ErrorObjectOwned::owned(code, "why", None::<()>)),
        )
    }

    #[test]
    fn ledger_error_codes_map_to_kinds() {
        let no_ledger = call_error(error_codes::LEDGER_UNAVAILABLE);
        assert_eq!(no_ledger.kind, Kind::Node);
        assert!(no_ledger.message.contains("keeps no ledger"));
        assert!(no_ledger.message.contains("genesis"));
        let rejected = call_error(error_codes::BLOCK_REJECTED);
        assert_eq!(rejected.kind, Kind::Rejected);
        assert!(rejected.message.contains("why"));
        let unauthorized = call_error(error_codes::UNAUTHORIZED);
        assert_eq!(unauthorized.kind, Kind::Unauthorized);
        assert!(unauthorized.message.contains(TOKEN_ENV));
        assert_eq!(call_error(error_codes::INVALID_PARAMS).kind, Kind::Invalid);
        assert_eq!(
            call_error(error_codes::MODEL_NOT_FOUND).kind,
            Kind::NotFound
        );
        assert_eq!(call_error(error_codes::JOB_NOT_FOUND).kind, Kind::NotFound);
        assert_eq!(call_error(error_codes::BUSY).kind, Kind::Node);
    }

    #[test]
    fn ws_url_follows_the_scheme() {
        assert_eq!(ws_url("http://127.0.0.1:7400"), "ws://127.0.0.1:7400");
        assert_eq!(
            ws_url("https://127.0.0.1:7400/rpc"),
            "wss://127.0.0.1:7400/rpc"
        );
        assert_eq!(ws_url("ws://x"), "ws://x");
    }

    #[test]
    fn a_token_file_becomes_a_sensitive_bearer_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret \nignored\n").expect("write");
        let endpoint = Endpoint {
            url: "http://127.0.0.1:1".into(),
            token_file: Some(path),
        };
        let headers = endpoint.headers().expect("headers");
        let value = headers.get("authorization").expect("authorization");
        assert_eq!(value.to_str().expect("ascii"), "Bearer s3cret");
        assert!(value.is_sensitive());
        assert!(!format!("{value:?}").contains("s3cret"));
    }
}
