//! Teacher-forced scoring of a worker's output, for audits.
//!
//! A validator feeds prompt + output through the model once and checks that every output token
//! was a plausible choice: within the top-k of the model's logits, or within a logit margin of
//! the best token. Exact equality cannot be required (floating point differs across CPUs).

use candle_core::{D, Tensor};

use crate::chat::ChatModel;
use crate::error::{ModelsError, Result};
use crate::llama::PREFILL_CHUNK;

/// How one output token scored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenScore {
    /// The token.
    pub id: u32,
    /// Log-probability under the model (temperature 1).
    pub logprob: f32,
    /// Number of tokens with a strictly higher logit (0 = the greedy choice).
    pub rank: u32,
    /// Best logit minus this token's logit (≥ 0).
    pub margin: f32,
}

/// Acceptance tolerance of an audit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VerifyPolicy {
    /// A token is accepted when its rank is below this.
    pub top_k: u32,
    /// … or when its logit is within this of the best one.
    pub logit_margin: f32,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self {
            top_k: 40,
            logit_margin: 0.5,
        }
    }
}

/// Outcome of [`ChatModel::verify`].
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Every token was within tolerance.
    pub accepted: bool,
    /// Index of the first rejected token.
    pub first_rejected: Option<usize>,
    /// Per-token scores.
    pub scores: Vec<TokenScore>,
}

impl ChatModel {
    /// Scores `output` as a continuation of `prompt` with one teacher-forced pass.
    pub fn score(&self, prompt: &[u32], output: &[u32]) -> Result<Vec<TokenScore>> {
        if prompt.is_empty() || output.is_empty() {
            return Err(ModelsError::Tokenizer(
                "score needs a prompt and an output".into(),
            ));
        }
        let all: Vec<u32> = prompt.iter().chain(output).copied().collect();
        // The last output token's logits are not needed.
        let fed = &all[..all.len() - 1];
        let mut session = self.new_session();
        if fed.len() >= session.max_len() {
            return Err(ModelsError::ContextOverflow {
                prompt_tokens: all.len(),
                limit: session.max_len(),
            });
        }
        let first_needed = prompt.len() - 1;
        let mut scores = Vec::with_capacity(output.len());
        let mut pos = 0;
        for chunk in fed.chunks(PREFILL_CHUNK) {
            let logits = self.forward_all_logits(&mut session, chunk)?;
            for (i, row) in (pos..pos + chunk.len()).enumerate() {
                if row < first_needed {
                    continue;
                }
                let target = all[row + 1];
                scores.push(score_row(&logits.get(i)?, target)?);
            }
            pos += chunk.len();
        }
        Ok(scores)
    }

    /// Scores and applies `policy`.
    pub fn verify(&self, prompt: &[u32], output: &[u32], policy: &VerifyPolicy) -> Result<Verdict> {
        let scores = self.score(prompt, output)?;
        let first_rejected = scores
            .iter()
            .position(|s| s.rank >= policy.top_k && s.margin > policy.logit_margin);
        Ok(Verdict {
            accepted: first_rejected.is_none(),
            first_rejected,
            scores,
        })
    }
}

fn score_row(logits: &Tensor, target: u32) -> Result<TokenScore> {
    let lsm = candle_nn::ops::log_softmax(logits, D::Minus1)?.to_vec1::<f32>()?;
    let raw = logits.to_vec1::<f32>()?;
    let t = target as usize;
    let l = *raw
        .get(t)
        .ok_or_else(|| ModelsError::Tokenizer(format!("token id {target} out of range")))?;
    let best = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    Ok(TokenScore {
        id: target,
        logprob: lsm[t],
        rank: raw.iter().filter(|&&x| x > l).count() as u32,
        margin: best - l,
    })
}
