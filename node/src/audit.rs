//! Audits of paid jobs (`/mycel/audit/1.0.0`, specs/wire.md "Audits").
//!
//! When the sortition draw of a job says "audited" — it depends on the escrow and on the requester's
//! countersignature of the receipt, so the worker learns it only after committing to its answer — the
//! requester, which holds the prompt, the answer and the countersigned receipt, sends them to each
//! drawn validator. A validator checks that the receipt is genuine and that it holds seats of the
//! draw, that the content matches the receipt's hashes, and replays the worker's sampler (its
//! parameters and seed, committed to by the receipt) on its own copy of the model: each emitted
//! token must lie within a logit tolerance of what the replayed draw picks
//! (`ChatModel::verify_replay`, specs/models.md §5), and the answer must end the way a generation
//! ends. It answers with a signed verdict. Once verdicts of at least 2/3 of the
//! seats agree, the requester gossips accepting ones (the worker claims with them) or posts a Slash
//! with rejecting ones.
//!
//! Private jobs are never audited (their escrows carry the flag and the ledger never draws them).

use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use mycel_identity::domains;
use mycel_ledger::AccountId;
use mycel_ledger::block::SignerSig;
use mycel_ledger::receipt::verdict_message;
use mycel_models::{ChatModel, Verdict};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::chat::{ChatAnswer, ChatJob, Drawn, MAX_ANSWER_BYTES, ModelHost};
use crate::ledger::wire::{AuditVerdicts, SettledReceipt};
use crate::ledger::{Countersigned, LedgerHandle};
use crate::network::NetworkHandle;

/// The audit request-response protocol.
pub const AUDIT_PROTOCOL: &str = "/mycel/audit/1.0.0";
/// Largest audit request (prompt, answer and token ids).
pub const MAX_AUDIT_REQUEST_BYTES: u64 = 1024 * 1024;
/// Largest audit response.
pub const MAX_AUDIT_RESPONSE_BYTES: u64 = 4 * 1024;
/// Deadline of one audit (a validator scores the whole answer once).
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(120);
/// Rounds of asking the validators that have not judged yet, and the pause before the second
/// (doubling after each round).
const AUDIT_ROUNDS: u32 = 4;
const AUDIT_RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Audits a validator runs at once; more are refused as busy.
pub const MAX_CONCURRENT_AUDITS: usize = 2;
/// Inbound audit requests queued for the auditor task.
pub const AUDIT_QUEUE: usize = 16;
/// Most output tokens an audit scores.
const MAX_AUDIT_TOKENS: usize = 4096;

/// What the requester sends a drawn validator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRequest {
    /// `receipt ‖ worker signature ‖ requester signature` (SettledReceipt encoding).
    #[serde(with = "crate::wire::byte_string")]
    pub settled: Vec<u8>,
    /// The job as the requester sent it: model, conversation (its JSON hashes to the receipt's
    /// prompt hash), sampling parameters and stop strings (hashed, with `stop_token`, into the
    /// receipt's `sampling`).
    pub job: ChatJob,
    /// The answer text (hashes to the receipt's output hash).
    pub output: String,
    /// The generated token ids (their decoding starts with `output`).
    pub token_ids: Vec<u32>,
    /// The stop token the worker's sampler drew, when it ended the answer itself.
    pub stop_token: Option<u32>,
}

/// A validator's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditResponse {
    /// A signed verdict on the receipt.
    Verdict {
        /// Whether the output passed.
        accept: bool,
        /// `sign("mycel/v1/verdict", receipt_hash ‖ accept)` by the validator's account key.
        #[serde(with = "crate::wire::byte_string")]
        signature: Vec<u8>,
    },
    /// Not judged (not drawn, no model, busy, malformed request).
    Refused(String),
}

/// An inbound audit request handed from the network to the auditor.
#[derive(Debug)]
pub struct AuditInbound {
    /// The asking peer.
    pub peer: PeerId,
    /// Answer handle for [`NetworkHandle::respond_audit`].
    pub id: u64,
    /// The request.
    pub request: AuditRequest,
}

/// The validator side: judges inbound requests, at most [`MAX_CONCURRENT_AUDITS`] at once.
pub async fn serve(
    mut inbox: mpsc::Receiver<AuditInbound>,
    host: Arc<ModelHost>,
    ledger: LedgerHandle,
    net: NetworkHandle,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_AUDITS));
    while let Some(AuditInbound { peer, id, request }) = inbox.recv().await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let _ = net
                .respond_audit(id, AuditResponse::Refused("busy".into()))
                .await;
            continue;
        };
        let (host, ledger, net) = (host.clone(), ledger.clone(), net.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let response = match judge(request, &host, &ledger).await {
                Ok(r) => r,
                Err(why) => {
                    tracing::debug!(%peer, %why, "audit refused");
                    AuditResponse::Refused(why)
                }
            };
            let _ = net.respond_audit(id, response).await;
        });
    }
}

async fn judge(
    req: AuditRequest,
    host: &ModelHost,
    ledger: &LedgerHandle,
) -> Result<AuditResponse, String> {
    let settled = SettledReceipt::decode(&req.settled).map_err(|e| e.to_string())?;
    let for_verdict = settled.clone();
    ledger
        .audit_check(settled.clone())
        .await
        .map_err(|e| e.to_string())?;
    let job = &req.job;
    job.validate().map_err(|e| e.to_string())?;
    let model = host
        .model(&job.model)
        .ok_or_else(|| format!("this node does not serve `{}`", job.model))?;
    if req.token_ids.len() > MAX_AUDIT_TOKENS {
        return Err("too many output tokens".into());
    }
    // The content must be what the worker signed and the requester countersigned.
    let r = &settled.receipt;
    let drawn = Drawn {
        params: &job.params,
        stop: &job.stop,
        stop_token: req.stop_token,
    };
    let facts = crate::chat::job_facts(
        &job.model,
        &job.messages,
        &drawn,
        &req.output,
        r.prompt_tokens,
        r.output_tokens,
    );
    if facts.model != r.model || facts.prompt_hash != r.prompt_hash {
        return Err("model or prompt does not match the receipt".into());
    }
    if r.sampling != Some(facts.sampling) {
        return Err("sampling parameters or stop token do not match the receipt".into());
    }
    if facts.output_hash != r.output_hash || req.token_ids.len() != r.output_tokens as usize {
        return Err("output does not match the receipt".into());
    }
    let prompt_tokens = r.prompt_tokens as usize;
    let accept = tokio::task::spawn_blocking(move || {
        replay(&model, &req, prompt_tokens).map(|v| v.is_some_and(|v| v.accepted))
    })
    .await
    .map_err(|e| e.to_string())??;
    let verdict = ledger
        .sign_verdict(for_verdict, accept)
        .await
        .map_err(|e| e.to_string())?;
    Ok(AuditResponse::Verdict {
        accept,
        signature: verdict.signature.as_bytes().to_vec(),
    })
}

/// Judges an answer whose receipt matched: None when its text, prompt or ending cannot be what the
/// worker's generation produced, else the sampler replay's verdict. A stop token drawn is replayed
/// as the last position; an answer without one must have `max_tokens` tokens, or have been cut by
/// the node relaying it (a stop string completed by its last token, the answer-size limit) or by
/// the full context, and is replayed as a prefix.
fn replay(
    model: &ChatModel,
    req: &AuditRequest,
    prompt_tokens: usize,
) -> Result<Option<Verdict>, String> {
    let (job, ids) = (&req.job, &req.token_ids);
    let prompt = model
        .encode_chat(&job.messages)
        .map_err(|e| e.to_string())?;
    let decoded = model.tokenizer().decode(ids, true);
    // The tokens must spell the answer (a stop string may cut the text inside the last token).
    if prompt.len() != prompt_tokens || !decoded.starts_with(&req.output) || ids.is_empty() {
        return Ok(None);
    }
    let verdict = if let Some(stop) = req.stop_token {
        let mut drawn = ids.clone();
        drawn.push(stop);
        model.verify_replay(&prompt, &drawn, &job.params)
    } else if ids.len() == job.params.max_tokens {
        model.verify_replay(&prompt, ids, &job.params)
    } else {
        let before_last = model.tokenizer().decode(&ids[..ids.len() - 1], true);
        let stop_string_cut = job.stop.iter().any(|s| {
            let end = req.output.len() + s.len();
            decoded[req.output.len()..].starts_with(s.as_str()) && before_last.len() < end
        });
        let size_cut = req.output.len() >= MAX_ANSWER_BYTES;
        let context_full = prompt.len() + ids.len() >= model.max_context();
        if !(stop_string_cut || size_cut || context_full) {
            return Ok(None);
        }
        model.verify_replay_cut(&prompt, ids, &job.params)
    };
    verdict.map(Some).map_err(|e| e.to_string())
}

/// Asks one validator for its verdict; None when it refused, failed or timed out.
async fn ask(
    net: &NetworkHandle,
    v: AccountId,
    request: AuditRequest,
) -> Option<(AccountId, bool, mycel_identity::Signature)> {
    let peer = v.did().ok()?.peer_id();
    let resp = tokio::time::timeout(AUDIT_TIMEOUT, net.audit(peer, request))
        .await
        .ok()?
        .ok()?;
    match resp {
        AuditResponse::Verdict { accept, signature } => {
            let sig: [u8; 64] = signature.as_slice().try_into().ok()?;
            Some((v, accept, mycel_identity::Signature::from_bytes(sig)))
        }
        AuditResponse::Refused(why) => {
            tracing::info!(validator = %v, %why, "validator did not judge");
            None
        }
    }
}

/// The verdicts among `answers` that say `accept` and carry a valid signature.
fn agreeing(
    answers: &[(AccountId, bool, mycel_identity::Signature)],
    hash: &[u8; 32],
    accept: bool,
) -> Vec<SignerSig> {
    let message = verdict_message(hash, accept);
    answers
        .iter()
        .filter(|(_, a, _)| *a == accept)
        .filter(|(v, _, sig)| {
            v.public_key()
                .is_ok_and(|k| k.verify(domains::VERDICT, &message, sig).is_ok())
        })
        .map(|(v, _, sig)| SignerSig {
            signer: *v,
            signature: *sig,
        })
        .collect()
}

/// The requester side: asks every drawn validator (other than the job's parties) and acts once
/// verdicts of 2/3 of the seats agree.
pub async fn drive(
    net: NetworkHandle,
    ledger: LedgerHandle,
    job: ChatJob,
    answer: ChatAnswer,
    countersigned: Countersigned,
) {
    let Countersigned { settled, audit } = countersigned;
    let Some(draw) = audit else {
        return;
    };
    let r = &settled.receipt;
    let mut validators: Vec<_> = draw.seats.clone();
    validators.sort();
    validators.dedup();
    validators.retain(|v| *v != r.worker && *v != r.requester);
    let request = AuditRequest {
        settled: settled.encode(),
        job,
        output: answer.text,
        token_ids: answer.token_ids,
        stop_token: answer.stop_token,
    };
    // Validators that refused (the escrow had not reached them yet, say) or did not answer are asked
    // again, after a growing pause, until 2/3 of the seats agree or the rounds run out.
    let hash = r.hash();
    let mut answers: Vec<(AccountId, bool, mycel_identity::Signature)> = Vec::new();
    let mut pending = validators;
    for round in 0..AUDIT_ROUNDS {
        if round > 0 {
            tokio::time::sleep(AUDIT_RETRY_PAUSE * (1 << (round - 1))).await;
        }
        let asks = pending.iter().map(|v| ask(&net, *v, request.clone()));
        let got: Vec<_> = futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        pending.retain(|v| !got.iter().any(|(a, ..)| a == v));
        answers.extend(got);
        for accept in [true, false] {
            let verdicts = agreeing(&answers, &hash, accept);
            let seats: usize = verdicts.iter().map(|v| draw.seats_of(&v.signer)).sum();
            if draw.is_quorum(seats) {
                let outcome = AuditVerdicts {
                    settled: settled.clone(),
                    accept,
                    verdicts,
                };
                match ledger.audit_outcome(outcome).await {
                    Ok(()) => tracing::info!(escrow = %r.escrow, accept, "audit settled"),
                    Err(e) => tracing::warn!(error = %e, "audit outcome not applied"),
                }
                return;
            }
        }
        if pending.is_empty() {
            break;
        }
    }
    let said: Vec<String> = answers
        .iter()
        .map(|(v, a, _)| format!("{v}: {a}"))
        .collect();
    tracing::info!(
        escrow = %r.escrow,
        seats = ?draw.seats,
        verdicts = ?said,
        "audit inconclusive: too few verdicts agreed"
    );
}

#[cfg(test)]
mod tests {
    use mycel_models::{ChatMessage, LoadOptions, tiny};

    use super::*;
    use crate::chat::SamplingRequest;

    fn job(max_tokens: u64, stop: Vec<String>) -> ChatJob {
        ChatJob::new(
            "tiny".into(),
            vec![ChatMessage::user("audit this answer")],
            &SamplingRequest {
                temperature: Some(0.9),
                seed: Some(3),
                max_tokens: Some(max_tokens),
                ..Default::default()
            },
            stop,
        )
        .expect("valid job")
    }

    /// Generates `job`'s answer (room for every token, so generation never waits).
    fn generate(model: &ChatModel, job: &ChatJob) -> mycel_models::Completion {
        let (tx, _rx) = mpsc::channel(mycel_models::sampling::MAX_NEW_TOKENS);
        model
            .generate(&mut model.new_session(), &job.messages, &job.params, &tx)
            .expect("generation")
    }

    fn judged(model: &ChatModel, req: &AuditRequest) -> Option<bool> {
        let prompt = model.encode_chat(&req.job.messages).expect("prompt").len();
        replay(model, req, prompt)
            .expect("replay")
            .map(|v| v.accepted)
    }

    #[test]
    fn an_answer_must_end_the_way_a_generation_ends() {
        let model = tiny::tiny_model(7, &LoadOptions::default()).expect("tiny model");
        let tok = model.tokenizer();
        let full = job(8, vec![]);
        let c = generate(&model, &full);
        assert!(c.token_ids.len() >= 4, "too short to test");
        let request = |job: &ChatJob, ids: &[u32], output: String, stop_token| AuditRequest {
            settled: Vec::new(),
            job: job.clone(),
            output,
            token_ids: ids.to_vec(),
            stop_token,
        };
        // The generation as it ended: accepted.
        let honest = request(&full, &c.token_ids, c.text.clone(), c.stop_token);
        assert_eq!(judged(&model, &honest), Some(true));
        // Cut short with no reason: not a generation's end.
        let ids = &c.token_ids[..3];
        let short = request(&full, ids, tok.decode(ids, true), None);
        assert_eq!(judged(&model, &short), None);
        // Cut by a stop string that the first token completes (the tiny model's tokens are
        // bytes that decode to U+FFFD each): replayed as a prefix.
        let stop = tok.decode(&c.token_ids[..1], true);
        assert!(!stop.is_empty());
        let with_stop = job(8, vec![stop]);
        let cut = request(&with_stop, &c.token_ids[..1], String::new(), None);
        assert_eq!(judged(&model, &cut), Some(true));
        // A token after the one completing the stop string is not the relay's cut.
        let late = request(&with_stop, &c.token_ids[..2], String::new(), None);
        assert_eq!(judged(&model, &late), None);
        // A stop token the sampler did not draw here: rejected by the replay.
        let other_stop = model.stop_token_ids()[0];
        let mut forged = request(&full, ids, tok.decode(ids, true), Some(other_stop));
        assert_eq!(judged(&model, &forged), Some(false));
        // Text that the tokens do not spell.
        forged.stop_token = c.stop_token;
        forged.output = "something else".into();
        assert_eq!(judged(&model, &forged), None);
    }
}
