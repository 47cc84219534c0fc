//! `mycel_revokeMembership`: publishes a signed consortium membership revocation through this node.

use jsonrpsee::RpcModule;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use mycel_identity::revocation::Revocation;
use mycel_rpc_api::error_codes;
use serde_json::{Value, json};

use crate::error::NodeError;
use crate::node::Node;

/// The JSON-RPC method name.
pub const REVOKE_METHOD: &str = "mycel_revokeMembership";

/// The module with [`REVOKE_METHOD`]. Params: `[revocation]`, the JSON object `mycel credential
/// revoke` writes. Only loopback callers and holders of the node's bearer token may call it.
/// Result: `{"status": "applied" | "known", "subject": "<did>"}`.
pub(super) fn module(node: Node) -> Result<RpcModule<()>, jsonrpsee::core::RegisterMethodError> {
    super::admin_method(node, REVOKE_METHOD, |node, params| async move {
        revoke(&node, params).await
    })
}

async fn revoke(node: &Node, params: Params<'_>) -> Result<Value, ErrorObjectOwned> {
    let invalid = |m: String| ErrorObjectOwned::owned(error_codes::INVALID_PARAMS, m, None::<()>);
    let revocation: Revocation = params
        .one()
        .map_err(|e| invalid(format!("expected [revocation]: {e}")))?;
    revocation
        .verify()
        .map_err(|e| invalid(format!("revocation: {e}")))?;
    let subject = revocation.subject;
    match node.network().revoke_membership(revocation).await {
        Ok(new) => Ok(json!({
            "status": if new { "applied" } else { "known" },
            "subject": subject,
        })),
        Err(NodeError::InvalidRequest(m)) => Err(invalid(m)),
        Err(e) => Err(super::rpc::rpc_error(e)),
    }
}
