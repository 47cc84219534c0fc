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

/// Largest logit tolerance [`ReplayPosition::tolerance`] searches; beyond it a token counts as
/// impossible (infinite tolerance).
pub const MAX_REPLAY_TOLERANCE: f32 = 64.0;

/// Slack for rounding between the sampler's running subtraction and the ratios computed here.
const DRAW_EPS: f64 = 1e-9;

/// One output position of an audit, seen from the validator: could the worker's sampler, with
/// the seed's draw `u` and logits within `delta` (max norm) of the validator's `logits`, have
/// emitted `token`? (specs/models.md §5.)
///
/// The worker's logits are unknown; they differ from the validator's by numeric drift
/// (weights, kernels, thread counts). Raising the emitted token by `delta` and lowering every
/// other candidate by `delta` (or the reverse) bounds where the token's interval on the draw
/// line can lie, including candidate order swaps between near-tied logits. The bounds are
/// conservative: logits within `delta` always admit the token they sample (no false reject
/// from drift within `delta`), at the cost of admitting a slightly wider set of tokens.
#[derive(Clone, Debug)]
pub struct ReplayPosition {
    kind: ReplayKind,
}

#[derive(Clone, Debug)]
enum ReplayKind {
    /// Greedy params: the token must be the argmax of some logits within delta.
    Greedy { margin: f64 },
    /// Sampled params, candidates in logit order (top_k or top_p < 1 set).
    Sorted(SortedLine),
    /// Sampled params, no truncation: candidates in id order, so drift cannot reorder them.
    /// Mass (weight) of the ids below the token, of the token, and of the ids above it.
    IdOrder {
        below: f64,
        own: f64,
        above: f64,
        t: f64,
    },
}

/// Candidates by (logit desc, id asc), as far down as the rule can reach, with prefix sums of
/// their weights exp((l − l_max) / T).
#[derive(Clone, Debug)]
struct SortedLine {
    logits: Vec<f64>,
    prefix: Vec<f64>,
    rank: usize,
    k: usize,
    top_p: Option<f64>,
    t: f64,
}

impl ReplayPosition {
    /// Prepares the check of `token` at a position whose validator logits are `logits`, for a
    /// worker that sampled with `params`. None when `token` is not an id of `logits`.
    pub fn new(logits: &[f32], params: &SamplingParams, token: u32) -> Option<Self> {
        let clean = |l: f32| {
            if l.is_nan() {
                f64::NEG_INFINITY
            } else {
                f64::from(l)
            }
        };
        let ti = token as usize;
        let lt = clean(*logits.get(ti)?);
        let max = logits
            .iter()
            .map(|&l| clean(l))
            .fold(f64::NEG_INFINITY, f64::max);
        if params.temperature == 0.0 || params.top_k == Some(1) {
            let margin = if lt.is_finite() {
                max - lt
            } else {
                f64::INFINITY
            };
            return Some(Self {
                kind: ReplayKind::Greedy { margin },
            });
        }
        let t = f64::from(params.temperature);
        let weight = |l: f64| ((l - max) / t).exp();
        let top_p = params.top_p.map(f64::from).filter(|p| *p < 1.0);
        if params.top_k.is_none() && top_p.is_none() {
            let (mut below, mut above) = (0.0, 0.0);
            for (i, &l) in logits.iter().enumerate() {
                match i.cmp(&ti) {
                    std::cmp::Ordering::Less => below += weight(clean(l)),
                    std::cmp::Ordering::Greater => above += weight(clean(l)),
                    std::cmp::Ordering::Equal => {}
                }
            }
            return Some(Self {
                kind: ReplayKind::IdOrder {
                    below,
                    own: weight(lt),
                    above,
                    t,
                },
            });
        }
        let n = logits.len();
        let k = params.top_k.unwrap_or(n).min(n);
        // The sampler's order: logit desc, id asc.
        let before = |i: usize, l: f64| l > lt || (l == lt && i < ti);
        let rank = logits
            .iter()
            .enumerate()
            .filter(|&(i, &l)| before(i, clean(l)))
            .count();
        // Every index the rule reads is below max(k, rank + 1) + 1 (see `admits`); without
        // top_k the sums run over all ids.
        let m = if params.top_k.is_some() {
            (k.max(rank + 1) + 1).min(n)
        } else {
            n
        };
        let mut c: Vec<(f64, usize)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (clean(l), i))
            .collect();
        let cmp = |a: &(f64, usize), b: &(f64, usize)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        if m < n {
            c.select_nth_unstable_by(m - 1, cmp);
            c.truncate(m);
        }
        c.sort_unstable_by(cmp);
        let mut prefix = Vec::with_capacity(c.len() + 1);
        prefix.push(0.0);
        let mut acc = 0.0;
        for x in &c {
            acc += weight(x.0);
            prefix.push(acc);
        }
        Some(Self {
            kind: ReplayKind::Sorted(SortedLine {
                logits: c.into_iter().map(|x| x.0).collect(),
                prefix,
                rank,
                k,
                top_p,
                t,
            }),
        })
    }

    /// Whether the worker's sampler, drawing `u` ∈ [0, 1) (`SplitMix64::next_f64`), could have
    /// emitted the token with logits within `delta` of the validator's.
    pub fn admits(&self, delta: f32, u: f64) -> bool {
        let delta = f64::from(delta.max(0.0));
        match &self.kind {
            ReplayKind::Greedy { margin } => *margin <= 2.0 * delta,
            ReplayKind::IdOrder {
                below,
                own,
                above,
                t,
            } => {
                if *own == 0.0 {
                    return false;
                }
                // Raise the token (and one side), lower the other side: f² = exp(2δ/T).
                let f2 = (2.0 * delta / t).min(600.0).exp();
                let lo = below / (below + f2 * (own + above));
                let hi = (below + own) / (below + own + above / f2);
                lo - DRAW_EPS <= u && u < hi + DRAW_EPS
            }
            ReplayKind::Sorted(line) => line.admits(delta, u),
        }
    }

    /// The smallest logit tolerance at which [`ReplayPosition::admits`] holds for draw `u`
    /// (0 when the validator's own logits give the token; infinity beyond
    /// [`MAX_REPLAY_TOLERANCE`]). For greedy params this is half the logit margin.
    pub fn tolerance(&self, u: f64) -> f32 {
        if let ReplayKind::Greedy { margin } = self.kind {
            return (margin / 2.0) as f32;
        }
        if self.admits(0.0, u) {
            return 0.0;
        }
        if !self.admits(MAX_REPLAY_TOLERANCE, u) {
            return f32::INFINITY;
        }
        let (mut lo, mut hi) = (0.0f32, MAX_REPLAY_TOLERANCE);
        for _ in 0..32 {
            let mid = 0.5 * (lo + hi);
            if self.admits(mid, u) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        hi
    }
}

impl SortedLine {
    fn admits(&self, delta: f64, u: f64) -> bool {
        let n = self.logits.len();
        let r = self.rank;
        let lt = self.logits[r];
        let wt = self.prefix[r + 1] - self.prefix[r];
        if wt == 0.0 {
            return false;
        }
        // Weight of the first `i` candidates other than the token.
        let sum_skip = |i: usize| {
            if r < i {
                self.prefix[(i + 1).min(n)] - wt
            } else {
                self.prefix[i.min(n)]
            }
        };
        let f2 = (2.0 * delta / self.t).min(600.0).exp();
        // Candidates certainly before the token: more than 2δ above it.
        let n_above = self.logits.partition_point(|&l| l > lt + 2.0 * delta);
        if n_above >= self.k {
            return false; // cannot be in top_k
        }
        // Lowest start of the token's interval: certain predecessors lowered, the token and
        // the rest of top_k raised.
        let s_above = self.prefix[n_above];
        let rest_max = sum_skip(self.k - 1) - s_above;
        let lo = s_above / (s_above + f2 * (wt + rest_max));
        if self.top_p.is_some_and(|p| lo >= p) {
            return false; // cut by top_p however the logits drifted
        }
        if u < lo - DRAW_EPS {
            return false;
        }
        // Highest end: every candidate within 2δ above or below moved before the token (up to
        // k − 1 of them) and raised with it; the remaining top_k candidates lowered.
        let n_near = self.logits.partition_point(|&l| l >= lt - 2.0 * delta);
        let b = (n_near - 1).min(self.k - 1);
        let before_max = sum_skip(b);
        let rest_min = sum_skip(self.k - 1) - before_max;
        let upto = before_max + wt;
        let hi = match self.top_p {
            // The kept mass is at least p of the top_k mass.
            Some(p) => (upto / (p * (upto + rest_min / f2))).min(1.0),
            None => upto / (upto + rest_min / f2),
        };
        u < hi + DRAW_EPS
    }
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
    fn the_sampled_token_replays_exactly() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        for (top_k, top_p) in [
            (Some(20), Some(0.9)),
            (None, None),
            (None, Some(0.8)),
            (Some(7), None),
            (Some(100), None),
        ] {
            let p = SamplingParams {
                temperature: 0.7,
                top_k,
                top_p,
                seed: 5,
                ..SamplingParams::default()
            };
            let mut s = Sampler::new(&p);
            let mut rng = SplitMix64::new(p.seed);
            for _ in 0..200 {
                let t = s.sample(&logits);
                let u = rng.next_f64();
                let pos = ReplayPosition::new(&logits, &p, t).unwrap();
                assert_eq!(pos.tolerance(u), 0.0, "{top_k:?} {top_p:?} token {t} u {u}");
            }
        }
    }

    #[test]
    fn another_token_needs_a_tolerance() {
        // Two clear favourites: 0 takes [0, ~0.73) of the line, 1 the rest; the tail is tiny.
        let mut logits = vec![-10.0f32; 30];
        logits[0] = 3.0;
        logits[1] = 2.3;
        let p = SamplingParams {
            temperature: 0.7,
            top_k: Some(40),
            top_p: Some(0.95),
            ..SamplingParams::default()
        };
        let at = |t: u32, u: f64| ReplayPosition::new(&logits, &p, t).unwrap().tolerance(u);
        assert_eq!(at(0, 0.2), 0.0);
        assert_eq!(at(1, 0.9), 0.0);
        // 1 instead of 0 at u = 0.2: the pair must swap order, ≥ 0.35 each way.
        let swap = at(1, 0.2);
        assert!(swap > 0.3 && swap < 0.4, "{swap}");
        // A tail token is cut by top_p unless the logits moved by several units.
        assert!(at(5, 0.5) > 5.0);
        assert!(ReplayPosition::new(&logits, &p, 99).is_none());
        let greedy = SamplingParams::greedy(1);
        let g = ReplayPosition::new(&logits, &greedy, 1).unwrap();
        assert!((g.tolerance(0.5) - 0.35).abs() < 1e-6);
        assert!(g.admits(0.35, 0.0) && !g.admits(0.34, 0.0));
    }

    proptest::proptest! {
        /// Soundness: whatever the worker's logits within δ of the validator's, the token its
        /// sampler draws is admitted at δ (drift within the tolerance never rejects).
        #[test]
        fn drift_within_the_tolerance_is_admitted(
            base in proptest::collection::vec(-6.0f32..6.0, 2..40),
            noise in proptest::collection::vec(-1.0f32..1.0, 40),
            delta in 0.0f32..1.5,
            temperature in 0.2f32..2.0,
            top_k in proptest::option::of(1usize..45),
            top_p in proptest::option::of(0.05f32..1.0),
            seed: u64,
        ) {
            let worker: Vec<f32> = base.iter().zip(&noise).map(|(l, e)| l + e * delta).collect();
            let p = SamplingParams {
                temperature,
                top_k,
                top_p,
                seed,
                ..SamplingParams::default()
            };
            let mut s = Sampler::new(&p);
            let mut rng = SplitMix64::new(seed);
            let t = s.sample(&worker);
            let u = if p.temperature == 0.0 || top_k == Some(1) { 0.0 } else { rng.next_f64() };
            let pos = ReplayPosition::new(&base, &p, t).unwrap();
            proptest::prop_assert!(pos.admits(delta * 1.0001 + 1e-6, u), "tolerance {}", pos.tolerance(u));
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
