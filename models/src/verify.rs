//! Teacher-forced scoring of a worker's output, for audits.
//!
//! A validator feeds prompt + output through the model once and checks that every output token
//! was a plausible choice: within the top-k of the model's logits, or within a logit margin of
//! the best token. Exact equality cannot be required (floating point differs across CPUs).

use candle_core::{D, Tensor};

use crate::chat::ChatModel;
use crate::error::{ModelsError, Result};
use crate::llama::PREFILL_CHUNK;
use crate::sampling::{SamplingParams, SplitMix64, draw_interval};

/// Sampler replay, greedy claims: largest accepted gap between the best logit and the emitted
/// token's logit (absorbs numeric drift between the worker's and the validator's weights).
pub const REPLAY_GREEDY_MARGIN: f32 = 0.5;

/// Sampler replay, sampled claims: largest accepted distance, on the normalised draw line
/// [0, 1), between the replayed draw and the emitted token's interval.
pub const REPLAY_DRAW_BAND: f64 = 0.02;

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
        let mut scores = Vec::with_capacity(output.len());
        self.teacher_forced(prompt, output, |row, target| {
            scores.push(score_row(row, target)?);
            Ok(())
        })?;
        Ok(scores)
    }

    /// Feeds prompt + output once and calls `f(logits, target)` for each output token with the
    /// logits that predicted it.
    fn teacher_forced(
        &self,
        prompt: &[u32],
        output: &[u32],
        mut f: impl FnMut(&Tensor, u32) -> Result<()>,
    ) -> Result<()> {
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
        let mut pos = 0;
        for chunk in fed.chunks(PREFILL_CHUNK) {
            let logits = self.forward_all_logits(&mut session, chunk)?;
            for (i, row) in (pos..pos + chunk.len()).enumerate() {
                if row < first_needed {
                    continue;
                }
                f(&logits.get(i)?, all[row + 1])?;
            }
            pos += chunk.len();
        }
        Ok(())
    }

    /// Per-token replay distances of `output` under the worker's claimed `params` (see
    /// [`ChatModel::verify_replay`]): for greedy params the logit margin, otherwise the
    /// distance on the normalised draw line between the replayed draw and the emitted token's
    /// interval (0 inside it, infinity when the token is outside top_k). With the scores.
    pub fn replay_distances(
        &self,
        prompt: &[u32],
        output: &[u32],
        params: &SamplingParams,
    ) -> Result<(Vec<f64>, Vec<TokenScore>)> {
        params.validate()?;
        let greedy = params.temperature == 0.0 || params.top_k == Some(1);
        let mut rng = SplitMix64::new(params.seed);
        let mut scores = Vec::with_capacity(output.len());
        let mut dist = Vec::with_capacity(output.len());
        self.teacher_forced(prompt, output, |row, target| {
            let score = score_row(row, target)?;
            dist.push(if greedy {
                f64::from(score.margin)
            } else {
                let u = rng.next_f64();
                let logits = row.to_vec1::<f32>()?;
                match draw_interval(&logits, params, target) {
                    Some((lo, _)) if u < lo => lo - u,
                    Some((_, hi)) if u >= hi => u - hi,
                    Some(_) => 0.0,
                    None => f64::INFINITY,
                }
            });
            scores.push(score);
            Ok(())
        })?;
        Ok((dist, scores))
    }

    /// Audits an output against the worker's claimed [`SamplingParams`] by replaying its
    /// sampler on this model's logits (specs/models.md §5, "sampler replay").
    ///
    /// `output` is what the worker emitted, followed by the stop token when it claims to have
    /// stopped (so a truncated answer is caught at the claimed stop). Greedy params: every token
    /// must be within [`REPLAY_GREEDY_MARGIN`] of the best logit. Otherwise the seed's draw `u`
    /// for each position is regenerated (one draw per token, as the sampler does) and the
    /// emitted token's interval on the draw line ([`crate::sampling::draw_interval`]) must lie
    /// within [`REPLAY_DRAW_BAND`] of `u`. The verdict's `first_rejected` is the first failing
    /// index.
    pub fn verify_replay(
        &self,
        prompt: &[u32],
        output: &[u32],
        params: &SamplingParams,
    ) -> Result<Verdict> {
        let greedy = params.temperature == 0.0 || params.top_k == Some(1);
        let (dist, scores) = self.replay_distances(prompt, output, params)?;
        let limit = if greedy {
            f64::from(REPLAY_GREEDY_MARGIN)
        } else {
            REPLAY_DRAW_BAND
        };
        let first_rejected = dist.iter().position(|&d| d > limit);
        Ok(Verdict {
            accepted: first_rejected.is_none(),
            first_rejected,
            scores,
        })
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
