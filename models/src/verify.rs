//! Scoring and auditing a worker's output (specs/models.md §5).
//!
//! Two rules. [`ChatModel::verify`] feeds prompt + output through the model once and checks
//! that every output token was a plausible choice: within the top-k of the model's logits, or
//! within a logit margin of the best token; it ignores the worker's sampling parameters.
//! [`ChatModel::verify_replay`] replays the worker's sampler (its params and seed) along the
//! worker's numeric path: each position's draw is regenerated from the seed and replayed on the
//! validator's logits ([`replay_tolerance`]), and the emitted token must lie within a logit
//! tolerance band of what the replay allows ([`first_replay_rejection`]). Exact equality cannot
//! be required: logits differ across weights (Q4_1 vs Q8_0) and kernels.

use crate::chat::{ChatModel, Session};
use crate::error::{ModelsError, Result};
use crate::llama::{PREFILL_CHUNK, StageInput, StageOutput};
use crate::sampling::{SamplingParams, SplitMix64, replay_tolerance};

/// Sampler replay: the largest logit tolerance any one position may need
/// ([`replay_tolerance`]: the drift, max norm over the vocabulary, between the worker's and the
/// validator's logits that would explain the emitted token). Greedy params thus accept a token
/// within `2 × REPLAY_LOGIT_TOLERANCE` of the best logit. Calibrated on honest Q4_1 workers
/// against a Q8_0 validator (specs/models.md §5, `examples/verify_rates.rs`).
pub const REPLAY_LOGIT_TOLERANCE: f32 = 0.5;

/// Sampler replay: a position needing more than this tolerance is "strained". Drift between a
/// Q4_1 worker and a Q8_0 validator strains about 1 position in 1000; answers of another prompt
/// or drawn with another seed strain 1 in 3 or 4.
pub const REPLAY_STRAIN_TOLERANCE: f32 = 0.25;

/// Sampler replay: at most one strained position per this many output positions (rounded up,
/// so one for outputs up to this length) is accepted.
pub const REPLAY_STRAIN_SPACING: usize = 32;

/// The replay rule on per-position tolerances ([`PromptReplay::tolerances`]) of an output of
/// `output_len` positions: the index of the first position that breaks it, or None when every
/// position needs at most [`REPLAY_LOGIT_TOLERANCE`] and at most
/// `ceil(output_len / REPLAY_STRAIN_SPACING)` need more than [`REPLAY_STRAIN_TOLERANCE`].
pub fn first_replay_rejection(tolerances: &[f32], output_len: usize) -> Option<usize> {
    let allowed = output_len.div_ceil(REPLAY_STRAIN_SPACING).max(1);
    let mut strained = 0;
    for (i, &t) in tolerances.iter().enumerate() {
        if t.is_nan() || t > REPLAY_LOGIT_TOLERANCE {
            return Some(i);
        }
        if t > REPLAY_STRAIN_TOLERANCE {
            strained += 1;
            if strained > allowed {
                return Some(i);
            }
        }
    }
    None
}

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
    /// Scores `output` as a continuation of `prompt` with one teacher-forced (batched) pass.
    ///
    /// The batched pass is fast but its logits are not the worker's: CPU kernels give results
    /// that depend on how many positions run together, and the quantized matmuls amplify the
    /// difference (specs/models.md §5). Use [`ChatModel::verify_replay`] to replay a sampler.
    pub fn score(&self, prompt: &[u32], output: &[u32]) -> Result<Vec<TokenScore>> {
        check_lengths(self, prompt, output)?;
        let all: Vec<u32> = prompt.iter().chain(output).copied().collect();
        // The last output token's logits are not needed.
        let fed = &all[..all.len() - 1];
        let mut session = self.new_session();
        let first_needed = prompt.len() - 1;
        let mut scores = Vec::with_capacity(output.len());
        let mut pos = 0;
        for chunk in fed.chunks(PREFILL_CHUNK) {
            let logits = self.forward_all_logits(&mut session, chunk)?;
            for (i, row) in (pos..pos + chunk.len()).enumerate() {
                if row < first_needed {
                    continue;
                }
                let l = logits.get(i)?.to_vec1::<f32>()?;
                scores.push(score_logits(&l, all[row + 1])?);
            }
            pos += chunk.len();
        }
        Ok(scores)
    }

    /// Prepares sampler replays of outputs of `prompt` (specs/models.md §5): prefills the prompt
    /// the way generation does, so that replays see the logits a worker with these weights saw.
    pub fn replay_prompt(&self, prompt: &[u32]) -> Result<PromptReplay<'_>> {
        if prompt.is_empty() {
            return Err(ModelsError::Tokenizer("replay needs a prompt".into()));
        }
        let mut session = self.new_session();
        if prompt.len() >= session.max_len() {
            return Err(ModelsError::ContextOverflow {
                prompt_tokens: prompt.len(),
                limit: session.max_len(),
            });
        }
        let mut first = None;
        for chunk in prompt.chunks(PREFILL_CHUNK) {
            first = Some(self.last_logits(&mut session, chunk)?);
        }
        let first = first.ok_or_else(|| ModelsError::Tokenizer("empty prompt".into()))?;
        Ok(PromptReplay {
            model: self,
            session,
            prompt_len: prompt.len(),
            fed: Vec::new(),
            logits: vec![first],
        })
    }

    /// Audits an output against the worker's claimed [`SamplingParams`] by replaying its
    /// sampler (specs/models.md §5, "sampler replay").
    ///
    /// `output` is what the worker emitted followed by the stop token it drew, if any
    /// ([`crate::Completion::stop_token`]), so a truncated answer is caught at the claimed
    /// stop. Its shape must be a generation's ([`PromptReplay::first_shape_error`]). Each
    /// position's logits are computed like the worker's (prompt prefill, then one token at a
    /// time), the seed's draw `u` is regenerated (one per position for sampled params, none for
    /// greedy ones), and each position gets the logit tolerance that would explain its token
    /// ([`replay_tolerance`]): none may exceed [`REPLAY_LOGIT_TOLERANCE`], and few may exceed
    /// [`REPLAY_STRAIN_TOLERANCE`] ([`first_replay_rejection`]). The verdict's scores end at
    /// the first rejected position (none for a wrong shape).
    pub fn verify_replay(
        &self,
        prompt: &[u32],
        output: &[u32],
        params: &SamplingParams,
    ) -> Result<Verdict> {
        self.replay_prompt(prompt)?.verify(output, params)
    }

    /// [`ChatModel::verify_replay`] for an output its generator did not end itself: the
    /// consumer cut it (a stop string, a size limit) or the context filled. Checked like a
    /// generation's prefix ([`PromptReplay::verify_cut`]); why it ended is the caller's to check.
    pub fn verify_replay_cut(
        &self,
        prompt: &[u32],
        output: &[u32],
        params: &SamplingParams,
    ) -> Result<Verdict> {
        self.replay_prompt(prompt)?.verify_cut(output, params)
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

    /// Feeds `ids` to the session and returns the last position's logits.
    fn last_logits(&self, session: &mut Session, ids: &[u32]) -> Result<Vec<f32>> {
        match self.forward_stage(session, StageInput::Tokens(ids))? {
            StageOutput::Logits(l) => Ok(l.to_vec1::<f32>()?),
            StageOutput::Hidden(_) => Err(ModelsError::LayerRange(
                "this instance does not end at the last layer".into(),
            )),
        }
    }
}

/// Sampler replays of outputs of one prompt (from [`ChatModel::replay_prompt`]).
///
/// Holds the prompt's KV cache and the logits of the output replayed last, so replays of
/// outputs sharing a prefix (e.g. a receipt and its forgeries) recompute only from where they
/// differ. A position's logits depend only on the tokens before it and are computed the same
/// way whatever the order of replays. Memory: one logits vector per cached position (vocab × 4
/// bytes, 192 KiB for SmolLM2), at most the session's context length.
pub struct PromptReplay<'m> {
    model: &'m ChatModel,
    session: Session,
    prompt_len: usize,
    /// Output tokens in the cache after the prompt.
    fed: Vec<u32>,
    /// `logits[i]` predicts output token `i` (so `logits.len() == fed.len() + 1`).
    logits: Vec<Vec<f32>>,
}

impl std::fmt::Debug for PromptReplay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptReplay")
            .field("prompt_len", &self.prompt_len)
            .field("fed", &self.fed.len())
            .finish()
    }
}

/// Per-position outcome of [`PromptReplay::tolerances`].
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// For each replayed position, the smallest logit tolerance at which its token is admitted
    /// ([`replay_tolerance`]; 0 when the replayed draw gives the token, for greedy params half
    /// the logit margin).
    pub tolerances: Vec<f32>,
    /// The positions' scores.
    pub scores: Vec<TokenScore>,
}

impl PromptReplay<'_> {
    /// The validator's logits predicting `output[i]` (`i < output.len()`), computed like the
    /// worker's: one token at a time after the prompt, reusing what an earlier call cached.
    pub fn logits(&mut self, output: &[u32], i: usize) -> Result<&[f32]> {
        if i >= output.len() {
            return Err(ModelsError::Tokenizer(format!(
                "position {i} is past the output ({} tokens)",
                output.len()
            )));
        }
        self.logits_at(output, i)
    }

    fn logits_at(&mut self, output: &[u32], i: usize) -> Result<&[f32]> {
        // Keep the cached part that `output` shares; `logits[i]` needs `output[..i]` fed.
        let common = self
            .fed
            .iter()
            .zip(&output[..i])
            .take_while(|(a, b)| a == b)
            .count();
        if common < i && common < self.fed.len() {
            self.fed.truncate(common);
            self.logits.truncate(common + 1);
            self.session.truncate(self.prompt_len + common);
        }
        while self.fed.len() < i {
            let id = output[self.fed.len()];
            if self.session.len() + 1 >= self.session.max_len() {
                return Err(ModelsError::ContextOverflow {
                    prompt_tokens: self.prompt_len + output.len(),
                    limit: self.session.max_len(),
                });
            }
            let l = self.model.last_logits(&mut self.session, &[id])?;
            self.fed.push(id);
            self.logits.push(l);
        }
        Ok(&self.logits[i])
    }

    /// Replays `output` under `params` and returns each position's required tolerance, stopping
    /// after the first position whose tolerance exceeds `give_up_above`.
    pub fn tolerances(
        &mut self,
        output: &[u32],
        params: &SamplingParams,
        give_up_above: f32,
    ) -> Result<Replay> {
        params.validate()?;
        if output.is_empty() {
            return Err(ModelsError::Tokenizer("replay needs an output".into()));
        }
        let mut rng = SplitMix64::new(params.seed);
        let mut tolerances = Vec::with_capacity(output.len());
        let mut scores = Vec::with_capacity(output.len());
        for (i, &token) in output.iter().enumerate() {
            // One draw per position, as the sampler makes (none when greedy).
            let u = if params.is_greedy() {
                0.0
            } else {
                rng.next_f64()
            };
            let logits = self.logits_at(output, i)?;
            let tol = replay_tolerance(logits, params, token, u)
                .ok_or_else(|| ModelsError::Tokenizer(format!("token id {token} out of range")))?;
            scores.push(score_logits(logits, token)?);
            tolerances.push(tol);
            if tol > give_up_above {
                break;
            }
        }
        Ok(Replay { tolerances, scores })
    }

    /// Applies the replay rule to a receipt's output (see [`ChatModel::verify_replay`]): first
    /// its shape ([`PromptReplay::first_shape_error`]), then the per-position tolerances
    /// ([`first_replay_rejection`]).
    pub fn verify(&mut self, output: &[u32], params: &SamplingParams) -> Result<Verdict> {
        let shape_error = self.first_shape_error(output, params);
        self.verify_shaped(output, params, shape_error)
    }

    /// Applies the replay rule to a prefix of a generation (see
    /// [`ChatModel::verify_replay_cut`]): no stop token inside, at most `max_tokens` tokens,
    /// then the per-position tolerances ([`first_replay_rejection`]).
    pub fn verify_cut(&mut self, output: &[u32], params: &SamplingParams) -> Result<Verdict> {
        let shape_error = output
            .iter()
            .position(|t| self.is_stop(t, params))
            .or((output.len() > params.max_tokens).then_some(params.max_tokens));
        self.verify_shaped(output, params, shape_error)
    }

    fn verify_shaped(
        &mut self,
        output: &[u32],
        params: &SamplingParams,
        shape_error: Option<usize>,
    ) -> Result<Verdict> {
        params.validate()?;
        if let Some(i) = shape_error {
            return Ok(Verdict {
                accepted: false,
                first_rejected: Some(i),
                scores: Vec::new(),
            });
        }
        let r = self.tolerances(output, params, REPLAY_LOGIT_TOLERANCE)?;
        let first_rejected = first_replay_rejection(&r.tolerances, output.len());
        let mut scores = r.scores;
        if let Some(i) = first_rejected {
            scores.truncate(i + 1);
        }
        Ok(Verdict {
            accepted: first_rejected.is_none(),
            first_rejected,
            scores,
        })
    }

    /// Whether `output` has the shape of a generation under `params` (the generator stops
    /// after its first stop token, or after `max_tokens` other tokens): ending with a stop
    /// token (the model's or one of `params.stop_tokens`) after at most `max_tokens − 1`
    /// tokens, or without one after exactly `max_tokens`. None when it has; otherwise the
    /// index of the first token that cannot be where it is: the token after a stop, the token
    /// beyond `max_tokens`, or the last token of an output that ends early without a stop.
    pub fn first_shape_error(&self, output: &[u32], params: &SamplingParams) -> Option<usize> {
        let is_stop = |t: &u32| self.is_stop(t, params);
        let n = output.len();
        let end = output.iter().position(is_stop).map_or(n, |j| j + 1);
        if end < n {
            return Some(end);
        }
        if n > params.max_tokens {
            return Some(params.max_tokens);
        }
        let stopped = output.last().is_some_and(is_stop);
        if !stopped && n < params.max_tokens {
            return Some(n.saturating_sub(1));
        }
        None
    }

    /// Whether `t` ends a generation under `params` (the model's or the caller's stop tokens).
    fn is_stop(&self, t: &u32, params: &SamplingParams) -> bool {
        self.model.stop_token_ids().contains(t) || params.stop_tokens.contains(t)
    }
}

/// Rejects an empty prompt or output, and a pair that does not fit the context.
fn check_lengths(model: &ChatModel, prompt: &[u32], output: &[u32]) -> Result<()> {
    if prompt.is_empty() || output.is_empty() {
        return Err(ModelsError::Tokenizer(
            "score needs a prompt and an output".into(),
        ));
    }
    let limit = model.max_context();
    if prompt.len() + output.len() > limit {
        return Err(ModelsError::ContextOverflow {
            prompt_tokens: prompt.len() + output.len(),
            limit,
        });
    }
    Ok(())
}

fn score_logits(raw: &[f32], target: u32) -> Result<TokenScore> {
    let t = target as usize;
    let l = *raw
        .get(t)
        .ok_or_else(|| ModelsError::Tokenizer(format!("token id {target} out of range")))?;
    let best = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // log-softmax at temperature 1, in f64.
    let sum: f64 = raw
        .iter()
        .filter(|x| !x.is_nan())
        .map(|&x| (f64::from(x) - f64::from(best)).exp())
        .sum();
    Ok(TokenScore {
        id: target,
        logprob: ((f64::from(l) - f64::from(best)) - sum.ln()) as f32,
        rank: raw.iter().filter(|&&x| x > l).count() as u32,
        margin: best - l,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_rule_bounds_every_position_and_counts_strained_ones() {
        assert_eq!(first_replay_rejection(&[0.0, 0.1, 0.5], 3), None);
        assert_eq!(first_replay_rejection(&[0.0, 0.51, 0.0], 3), Some(1));
        assert_eq!(first_replay_rejection(&[0.0, f32::NAN], 2), Some(1));
        assert_eq!(first_replay_rejection(&[f32::INFINITY], 1), Some(0));
        // One strained position per 32 (rounded up).
        assert_eq!(first_replay_rejection(&[0.3, 0.0, 0.3], 24), Some(2));
        let mut t = vec![0.0; 40];
        t[3] = 0.3;
        t[30] = 0.3;
        assert_eq!(first_replay_rejection(&t, 40), None);
        t[35] = 0.26;
        assert_eq!(first_replay_rejection(&t, 40), Some(35));
    }
}
