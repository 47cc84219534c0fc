//! Typed request-response attacks through the attacker node's own network handle: inference
//! jobs, ledger sync and audit requests that decode fine but carry values the node must refuse
//! (out-of-range sampling, unknown models, huge heights, bogus receipts). They reach the
//! handlers' validation, past the CBOR decoder that the raw-stream attacker mostly hits.

use std::time::Duration;

use mycel_node::audit::AuditResponse;
use mycel_node::ledger::wire::SyncResponse;
use mycel_node::network::NetworkHandle;
use mycel_node::wire::{InferErrorCode, InferResponse};

use super::seeds::{self, SeedContext};
use super::streams::{Target, shaped_typed};
use super::tally::{Outcome, Tally};
use crate::rng::SimRng;

/// Longest wait for a typed answer (the request itself lives on in the attacker's swarm until the
/// protocol timeout; the attacker bounds its requests in flight).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(8);

/// A typed request kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Typed {
    /// `/mycel/infer/1.0.0` with a [`mycel_node::chat::ChatJob`].
    Infer,
    /// `/mycel/ledger-sync/1.0.0` with a sync request.
    Sync,
    /// `/mycel/audit/1.0.0` with an audit request.
    Audit,
}

impl Typed {
    /// Every kind.
    pub const ALL: [Typed; 3] = [Typed::Infer, Typed::Sync, Typed::Audit];

    fn name(self) -> &'static str {
        match self {
            Typed::Infer => mycel_node::wire::INFER_PROTOCOL,
            Typed::Sync => mycel_node::ledger::wire::SYNC_PROTOCOL,
            Typed::Audit => mycel_node::audit::AUDIT_PROTOCOL,
        }
    }
}

/// Sends one typed request of `kind` to `target` through `net`; records and returns the outcome.
pub async fn attack(
    rng: &mut SimRng,
    net: &NetworkHandle,
    ctx: &SeedContext,
    tally: &Tally,
    target: &Target,
    kind: Typed,
) -> Outcome {
    let valid = rng.below(6) == 0;
    let (outcome, mutation) = match kind {
        Typed::Infer => {
            let seed = seeds::chat_job(rng);
            let (job, m) = if valid {
                (seed, "valid")
            } else {
                shaped_typed(rng, &seed)
            };
            let reply = tokio::time::timeout(ANSWER_TIMEOUT, net.infer(target.peer, job)).await;
            let o = match reply {
                Err(_) => Outcome::Timeout,
                Ok(Err(_)) | Ok(Ok(Err(_))) => Outcome::Failed,
                Ok(Ok(Ok(InferResponse::Answer(_)))) => Outcome::Accepted,
                Ok(Ok(Ok(InferResponse::Error {
                    code: InferErrorCode::Busy,
                    ..
                }))) => Outcome::Busy,
                Ok(Ok(Ok(InferResponse::Error { .. }))) => Outcome::Refused,
            };
            (o, m)
        }
        Typed::Sync => {
            let seed = seeds::sync_request(rng, ctx);
            let (req, m) = if valid {
                (seed, "valid")
            } else {
                shaped_typed(rng, &seed)
            };
            let o = match tokio::time::timeout(ANSWER_TIMEOUT, net.sync(target.peer, req)).await {
                Err(_) => Outcome::Timeout,
                Ok(Err(_)) => Outcome::Failed,
                Ok(Ok(SyncResponse::Error(m))) if m == "busy" => Outcome::Busy,
                Ok(Ok(SyncResponse::Error(_))) => Outcome::Refused,
                Ok(Ok(_)) => Outcome::Accepted,
            };
            (o, m)
        }
        Typed::Audit => {
            let seed = seeds::audit_request(rng);
            let (req, m) = if valid {
                (seed, "valid")
            } else {
                shaped_typed(rng, &seed)
            };
            let o = match tokio::time::timeout(ANSWER_TIMEOUT, net.audit(target.peer, req)).await {
                Err(_) => Outcome::Timeout,
                Ok(Err(_)) => Outcome::Failed,
                Ok(Ok(AuditResponse::Refused(m))) if m == "busy" => Outcome::Busy,
                Ok(Ok(AuditResponse::Refused(_))) => Outcome::Refused,
                Ok(Ok(AuditResponse::Verdict { .. })) => Outcome::Accepted,
            };
            (o, m)
        }
    };
    tally.record("request", kind.name(), mutation, outcome);
    outcome
}
