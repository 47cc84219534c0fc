//! Sampling: greedy, temperature, top-k, top-p, with a seeded, portable random generator.
//!
//! The generator is SplitMix64 (defined here, not taken from a crate) so that the same seed
//! and the same logits give the same tokens on every platform and crate version; audits replay
//! a worker's sampler with it.

use serde::{Deserialize, Serialize};

use crate::error::{ModelsError, Result};

/// Largest number of new tokens one request may ask for.
pub const MAX_NEW_TOKENS: usize = 4096;

/// Default number of new tokens.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// Highest accepted temperature.
pub const MAX_TEMPERATURE: f32 = 5.0;

/// Most extra stop tokens a request may name.
pub const MAX_STOP_TOKENS: usize = 16;

/// How the next token is chosen, and when generation stops.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it before softmax.
    pub temperature: f32,
    /// Keep only the k most likely tokens (None: no limit).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p (None: 1.0).
    pub top_p: Option<f32>,
    /// Random seed: same seed, model and prompt give the same output.
    pub seed: u64,
    /// Maximum new tokens (1..=[`MAX_NEW_TOKENS`]).
    pub max_tokens: usize,
    /// Extra token ids that end generation (the model's end-of-turn tokens always do).
    pub stop_tokens: Vec<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: Some(40),
            top_p: Some(0.95),
            seed: 0,
            max_tokens: DEFAULT_MAX_TOKENS,
            stop_tokens: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding with `max_tokens`.
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            seed: 0,
            max_tokens,
            stop_tokens: Vec::new(),
        }
    }

    /// Checks ranges; returns a clear error for the first bad field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelsError::InvalidSampling(m));
        if !self.temperature.is_finite() || !(0.0..=MAX_TEMPERATURE).contains(&self.temperature) {
            return bad(format!(
                "temperature {} not in [0, {MAX_TEMPERATURE}]",
                self.temperature
            ));
        }
        if self.top_k == Some(0) {
            return bad("top_k must be at least 1".into());
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad(format!("top_p {p} not in (0, 1]"));
        }
        if self.max_tokens == 0 || self.max_tokens > MAX_NEW_TOKENS {
            return bad(format!(
                "max_tokens {} not in 1..={MAX_NEW_TOKENS}",
                self.max_tokens
            ));
        }
        if self.stop_tokens.len() > MAX_STOP_TOKENS {
            return bad(format!("more than {MAX_STOP_TOKENS} stop tokens"));
        }
        Ok(())
    }
}

/// SplitMix64: tiny, fast, and fully specified (see specs/models.md).
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Picks tokens from logits according to [`SamplingParams`].
#[derive(Clone, Debug)]
pub struct Sampler {
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    rng: SplitMix64,
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    /// A sampler for validated params.
    pub fn new(params: &SamplingParams) -> Self {
        Self {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            rng: SplitMix64::new(params.seed),
            scratch: Vec::new(),
        }
    }

    /// Chooses the next token. Ties go to the lower id. NaN logits are treated as -inf.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 || self.top_k == Some(1) {
            return argmax(logits);
        }
        // Candidates ordered by logit desc, id asc: a total, platform-independent order.
        let cmp = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        let c = &mut self.scratch;
        c.clear();
        c.extend(logits.iter().enumerate().map(|(i, &l)| {
            let l = if l.is_nan() { f32::NEG_INFINITY } else { l };
            (l, i as u32)
        }));
        if c.is_empty() {
            return 0;
        }
        if let Some(k) = self.top_k
            && k < c.len()
        {
            c.select_nth_unstable_by(k - 1, cmp);
            c.truncate(k);
        }
        let need_order = self.top_p.is_some_and(|p| p < 1.0);
        if need_order || self.top_k.is_some() {
            c.sort_unstable_by(cmp);
        }
        let max = c.iter().map(|x| x.0).fold(f32::NEG_INFINITY, f32::max);
        let t = f64::from(self.temperature);
        let mut probs: Vec<f64> = c
            .iter()
            .map(|x| ((f64::from(x.0) - f64::from(max)) / t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        let mut keep = probs.len();
        if let Some(p) = self.top_p.filter(|p| *p < 1.0) {
            let target = f64::from(p) * total;
            let mut acc = 0.0;
            for (i, q) in probs.iter().enumerate() {
                acc += q;
                if acc >= target {
                    keep = i + 1;
                    break;
                }
            }
        }
        probs.truncate(keep);
        let total: f64 = probs.iter().sum();
        let mut u = self.rng.next_f64() * total;
        for (i, q) in probs.iter().enumerate() {
            if u < *q {
                return c[i].1;
            }
            u -= q;
        }
        c[keep - 1].1
    }
}

/// Where `token` lies on the sampler's draw line for `logits` under `params` (non-greedy):
/// the candidates (top_k by logit desc, id asc; all ids in id order when neither top_k nor
/// top_p < 1 truncates) laid end to end with their weights, normalised
/// by the total weight the sampler keeps after top_p, so that the draw `u` is in [0, 1).
/// Returns the token's interval `[lo, hi)`; a candidate cut by top_p lies at or beyond 1, a
/// token outside top_k yields None. Used by audits to replay a worker's draws
/// (specs/models.md §5).
pub fn draw_interval(logits: &[f32], params: &SamplingParams, token: u32) -> Option<(f64, f64)> {
    let cmp = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    let mut c: Vec<(f32, u32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (if l.is_nan() { f32::NEG_INFINITY } else { l }, i as u32))
        .collect();
    // Same order as `Sampler::sample`: by (logit desc, id asc) when top_k or top_p < 1
    // truncates, otherwise in id order.
    if params.top_k.is_some() || params.top_p.is_some_and(|p| p < 1.0) {
        c.sort_unstable_by(cmp);
    }
    if let Some(k) = params.top_k {
        c.truncate(k);
    }
    let max = c.iter().map(|x| x.0).fold(f32::NEG_INFINITY, f32::max);
    if c.is_empty() {
        return None;
    }
    let t = f64::from(params.temperature);
    let w: Vec<f64> = c
        .iter()
        .map(|x| ((f64::from(x.0) - f64::from(max)) / t).exp())
        .collect();
    let total: f64 = w.iter().sum();
    let mut kept = total;
    if let Some(p) = params.top_p.filter(|p| *p < 1.0) {
        let target = f64::from(p) * total;
        let mut acc = 0.0;
        for q in &w {
            acc += q;
            if acc >= target {
                kept = acc;
                break;
            }
        }
    }
    let mut lo = 0.0;
    for (x, q) in c.iter().zip(&w) {
        if x.1 == token {
            return Some((lo / kept, (lo + q) / kept));
        }
        lo += q;
    }
    None
}

/// Index of the largest logit (lowest index on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs for seed 0 (published SplitMix64 test vector).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn greedy_and_ties() {
        let mut s = Sampler::new(&SamplingParams::greedy(1));
        assert_eq!(s.sample(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
    }

    #[test]
    fn same_seed_same_draws_and_top_k_respected() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = SamplingParams {
            temperature: 1.0,
            top_k: Some(5),
            top_p: Some(0.9),
            seed: 42,
            ..SamplingParams::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p);
            (0..50).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        let a = draw(&p);
        assert_eq!(a, draw(&p));
        let other = SamplingParams {
            seed: 43,
            ..p.clone()
        };
        assert_ne!(a, draw(&other));
        // top-5 by (logit desc, id asc): the five ids with the highest logit value 3.0.
        let mut top: Vec<u32> = (0..100u32).collect();
        top.sort_by(|&x, &y| {
            logits[y as usize]
                .total_cmp(&logits[x as usize])
                .then(x.cmp(&y))
        });
        let allowed = &top[..5];
        assert!(a.iter().all(|t| allowed.contains(t)));
    }

    #[test]
    fn top_p_small_keeps_only_the_best() {
        let logits = [0.0, 5.0, 1.0, 4.9];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.01),
            seed: 7,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(&p);
        assert!((0..20).all(|_| s.sample(&logits) == 1));
    }

    #[test]
    fn draw_interval_contains_the_sampled_draw() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = SamplingParams {
            temperature: 0.7,
            top_k: Some(20),
            top_p: Some(0.9),
            seed: 5,
            ..SamplingParams::default()
        };
        let mut s = Sampler::new(&p);
        let mut rng = SplitMix64::new(p.seed);
        for _ in 0..100 {
            let t = s.sample(&logits);
            let u = rng.next_f64();
            let iv = draw_interval(&logits, &p, t);
            assert!(
                iv.is_some_and(|(lo, hi)| lo - 1e-9 <= u && u < hi + 1e-9),
                "{iv:?} {u}"
            );
        }
    }

    #[test]
    fn validation() {
        assert!(SamplingParams::default().validate().is_ok());
        let bad = |f: fn(&mut SamplingParams)| {
            let mut p = SamplingParams::default();
            f(&mut p);
            p.validate().is_err()
        };
        assert!(bad(|p| p.temperature = -1.0));
        assert!(bad(|p| p.temperature = f32::NAN));
        assert!(bad(|p| p.top_k = Some(0)));
        assert!(bad(|p| p.top_p = Some(0.0)));
        assert!(bad(|p| p.max_tokens = 0));
        assert!(bad(|p| p.max_tokens = MAX_NEW_TOKENS + 1));
    }
}
