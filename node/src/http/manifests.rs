//! `mycel_publishManifest`: checks a signed model manifest and gossips it through this node.

use jsonrpsee::RpcModule;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use mycel_rpc_api::error_codes;
use serde_json::{Value, json};

use crate::manifest::{MANIFEST_TOPIC, Offer, Received, SignedManifest};
use crate::node::Node;

/// The JSON-RPC method name.
pub const PUBLISH_METHOD: &str = "mycel_publishManifest";

/// The module with [`PUBLISH_METHOD`]. Params: `[{"body", "signature"}]`, the signed manifest
/// `mycel-node model publish` builds. Only loopback callers and holders of the node's bearer token
/// may call it. Result: `{"status": "published" | "known", "publisher", "model", "version"}`.
pub(super) fn module(node: Node) -> Result<RpcModule<()>, jsonrpsee::core::RegisterMethodError> {
    super::admin_method(node, PUBLISH_METHOD, |node, params| async move {
        publish(&node, params).await
    })
}

async fn publish(node: &Node, params: Params<'_>) -> Result<Value, ErrorObjectOwned> {
    let invalid = |m: String| ErrorObjectOwned::owned(error_codes::INVALID_PARAMS, m, None::<()>);
    let signed: SignedManifest = params
        .one()
        .map_err(|e| invalid(format!("expected [{{body, signature}}]: {e}")))?;
    let m = match signed.verify() {
        Ok(m) => m,
        Err(e) => {
            node.metrics().manifest(&Received::Invalid(e.clone()));
            return Err(invalid(format!("manifest: {e}")));
        }
    };
    let outcome = json!({
        "publisher": m.manifest.publisher.to_string(),
        "model": m.manifest.model,
        "version": m.manifest.version,
    });
    let offer = node.manifests().offer(m);
    node.metrics().manifest(&Received::Valid(offer));
    let status = match offer {
        Offer::New => {
            node.network()
                .publish(MANIFEST_TOPIC, signed.to_bytes())
                .await
                .map_err(super::rpc::rpc_error)?;
            "published"
        }
        Offer::Known => "known",
        Offer::Stale => {
            return Err(invalid(
                "this node holds a newer version of that model from that publisher".into(),
            ));
        }
        Offer::Full => {
            return Err(invalid(
                "this node's manifest store is full of manifests it keeps".into(),
            ));
        }
    };
    let mut outcome = outcome;
    outcome["status"] = json!(status);
    Ok(outcome)
}
