//! `mycel sign` and `mycel verify`: detached signatures in the `mycel/v1/detached` domain.

use std::path::Path;

use mycel_identity::{Did, Signature, domains};
use serde_json::json;

use crate::Report;
use crate::context::{Context, read_input};
use crate::error::CliResult;

/// Signs a file with a key from the keystore.
pub fn sign(key: &str, input: &Path, ctx: &Context) -> CliResult<Report> {
    let bytes = read_input(input)?;
    let pair = ctx.unlock(key)?;
    let signature = pair.sign(domains::DETACHED, &bytes);
    let did = Did::from_public_key(pair.public());
    ctx.detail(format!("signed {} bytes as {did}", bytes.len()));
    Ok(Report::new(
        signature.to_hex(),
        json!({ "did": did, "signature": signature, "domain": domains::DETACHED.name(), "bytes": bytes.len() }),
    ))
}

/// Verifies a detached signature.
pub fn verify(did: &str, sig: &str, input: &Path) -> CliResult<Report> {
    let did = Did::parse(did)?;
    let signature = Signature::from_hex(sig)?;
    let bytes = read_input(input)?;
    did.public_key()
        .verify(domains::DETACHED, &bytes, &signature)?;
    Ok(Report::new(
        format!("valid signature by {did}"),
        json!({ "did": did, "valid": true }),
    ))
}
