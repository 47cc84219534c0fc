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

    /// Whether tokens are the argmax (temperature 0 or top_k 1): such params make no draws.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 || self.top_k == Some(1)
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

/// Picks tokens from logits according to [`SamplingParams`] (specs/models.md §4).
///
/// One position: greedy params take the argmax and make no draw; otherwise the candidates
/// are laid on a line in draw order ([`Sampler::choose`]) and the next draw `u` of the
/// seed's SplitMix64 stream picks one. Audits replay exactly this procedure
/// ([`replay_tolerance`]).
#[derive(Clone, Debug)]
pub struct Sampler {
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    greedy: bool,
    rng: SplitMix64,
    candidates: Vec<(f32, u32)>,
    cumulative: Vec<f64>,
}

impl Sampler {
    /// A sampler for validated params.
    pub fn new(params: &SamplingParams) -> Self {
        Self {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            greedy: params.is_greedy(),
            rng: SplitMix64::new(params.seed),
            candidates: Vec::new(),
            cumulative: Vec::new(),
        }
    }

    /// Chooses the next token: the argmax for greedy params (no draw), else
    /// [`Sampler::choose`] with the stream's next draw. NaN logits are treated as -inf.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.greedy {
            return argmax(logits);
        }
        let u = self.rng.next_f64();
        self.choose(logits, u)
    }

    /// The token this sampler's params pick from `logits` with the draw `u` ∈ [0, 1) (the
    /// argmax for greedy params, whatever `u`).
    ///
    /// Candidates are ordered by (logit desc, id asc) and cut to top_k; when neither top_k nor
    /// top_p < 1 truncates they stay in id order (no sort needed). Weights are
    /// exp((l − l_max) / T) in f64; top_p keeps the shortest prefix whose cumulative weight
    /// reaches p of the total. The token is the first kept candidate whose cumulative weight
    /// exceeds `u` × the kept weight.
    pub fn choose(&mut self, logits: &[f32], u: f64) -> u32 {
        if self.greedy {
            return argmax(logits);
        }
        let c = &mut self.candidates;
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
            c.select_nth_unstable_by(k - 1, draw_order);
            c.truncate(k);
        }
        if self.top_k.is_some() || self.top_p.is_some_and(|p| p < 1.0) {
            c.sort_unstable_by(draw_order);
        }
        let max = c.iter().map(|x| x.0).fold(f32::NEG_INFINITY, f32::max);
        let t = f64::from(self.temperature);
        let cum = &mut self.cumulative;
        cum.clear();
        let mut acc = 0.0;
        for x in c.iter() {
            acc += ((f64::from(x.0) - f64::from(max)) / t).exp();
            cum.push(acc);
        }
        if let Some(p) = self.top_p.filter(|p| *p < 1.0) {
            let target = f64::from(p) * acc;
            let keep = cum.partition_point(|&w| w < target) + 1;
            cum.truncate(keep.min(cum.len()));
        }
        let kept = cum[cum.len() - 1];
        let x = u * kept;
        let i = cum.partition_point(|&w| w <= x);
        c[i.min(cum.len() - 1)].1
    }
}

/// The sampler's candidate order: logit desc, then id asc (a total, platform-independent order).
fn draw_order(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Largest logit tolerance [`replay_tolerance`] searches; beyond it a token counts as
/// impossible (infinite tolerance).
pub const MAX_REPLAY_TOLERANCE: f32 = 64.0;

/// Slack for rounding between the sampler's cumulative sums and the ratios computed here.
const DRAW_EPS: f64 = 1e-9;

/// Audit of one output position (specs/models.md §5): the smallest logit tolerance δ such
/// that a worker whose logits lie within δ (max norm over the vocabulary) of the validator's
/// `logits` could have emitted `token` at this position with the draw `u` under `params`.
///
/// - 0 when the validator's own replay of the draw gives `token`
///   ([`Sampler::choose`]`(logits, u)`: exactly the worker's procedure).
/// - Greedy params: half the logit margin (best logit − the token's): moving every logit by δ
///   closes a gap of 2δ.
/// - Sampled params: found by bisection on [`DriftBounds::admits`]; infinity when even
///   [`MAX_REPLAY_TOLERANCE`] does not admit the token.
///
/// None when `token` is not an id of `logits`.
pub fn replay_tolerance(
    logits: &[f32],
    params: &SamplingParams,
    token: u32,
    u: f64,
) -> Option<f32> {
    let lt = *logits.get(token as usize)?;
    if Sampler::new(params).choose(logits, u) == token {
        return Some(0.0);
    }
    if params.is_greedy() {
        let best = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        return Some(if lt.is_nan() {
            f32::INFINITY
        } else {
            (best - lt) / 2.0
        });
    }
    let bounds = DriftBounds::new(logits, params, token)?;
    if !bounds.admits(f64::from(MAX_REPLAY_TOLERANCE), u) {
        return Some(f32::INFINITY);
    }
    let (mut lo, mut hi) = (0.0f32, MAX_REPLAY_TOLERANCE);
    for _ in 0..32 {
        let mid = 0.5 * (lo + hi);
        if bounds.admits(f64::from(mid), u) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// Where a token can lie on the draw line of a sampled position when the logits may be off by
/// up to δ each: the worker's logits are unknown, and differ from the validator's by numeric
/// drift (weights, kernels). Moving each logit by at most δ moves the token's interval on the
/// line, and can swap it with candidates within 2δ of it; [`DriftBounds::admits`] computes the
/// lowest possible start and the highest possible end of the interval over all such moves
/// (exactly, except that the top_p cut is bounded by p of the top_k mass) and admits the token
/// when `u` lies between them. So drift within δ never rejects an honest token
/// (property-tested), while a token that no such drift could produce is rejected.
#[derive(Clone, Debug)]
enum DriftBounds {
    /// Candidates in logit order (top_k or top_p < 1 set).
    Sorted(SortedLine),
    /// No truncation: candidates in id order, so drift cannot reorder them. Mass (weight) of
    /// the ids below the token, of the token, and of the ids above it.
    IdOrder {
        below: f64,
        own: f64,
        above: f64,
        t: f64,
    },
}

/// Candidates by (logit desc, id asc), as far down as the bounds can reach, with prefix sums
/// of their weights exp((l − l_max) / T).
#[derive(Clone, Debug)]
struct SortedLine {
    logits: Vec<f64>,
    prefix: Vec<f64>,
    rank: usize,
    k: usize,
    top_p: Option<f64>,
    t: f64,
}

impl DriftBounds {
    /// Bounds for `token` (an id of `logits`) under sampled (not greedy) `params`.
    fn new(logits: &[f32], params: &SamplingParams, token: u32) -> Option<Self> {
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
            return Some(Self::IdOrder {
                below,
                own: weight(lt),
                above,
                t,
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
        // Every index `admits` reads is below max(k, rank + 1) + 1; without top_k the sums
        // run over all ids.
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
        Some(Self::Sorted(SortedLine {
            logits: c.into_iter().map(|x| x.0).collect(),
            prefix,
            rank,
            k,
            top_p,
            t,
        }))
    }

    /// Whether a sampler drawing `u` could have emitted the token from logits within `delta`
    /// of the validator's.
    fn admits(&self, delta: f64, u: f64) -> bool {
        match self {
            Self::IdOrder {
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
            Self::Sorted(line) => line.admits(delta, u),
        }
    }
}

impl SortedLine {
    fn admits(&self, delta: f64, u: f64) -> bool {
        let n = self.logits.len();
        let k = self.k;
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
        let top_k_mass = sum_skip(k - 1);
        // A logit moved by x scales its weight by exp(x / T); e = exp(δ / T).
        let e = (delta / self.t).min(300.0).exp();
        // Lowest start of the token's interval: the token and every other top_k candidate
        // raised by δ, the candidates more than 2δ above it (before it whatever the drift)
        // lowered by δ.
        let n_above = self.logits.partition_point(|&l| l > lt + 2.0 * delta);
        if n_above >= k {
            return false; // cannot be in top_k
        }
        let s_above = self.prefix[n_above];
        let lo = s_above / (s_above + e * e * (wt + top_k_mass - s_above));
        if self.top_p.is_some_and(|p| lo >= p) {
            return false; // cut by top_p however the logits drifted
        }
        if u < lo - DRAW_EPS {
            return false;
        }
        // Highest end: the token moved by c ∈ [−δ, δ], every candidate that can then precede
        // it (l + δ ≥ lt + c, at most k − 1 of them) raised by δ, the rest of top_k lowered by
        // δ. Moving a candidate before the token only raises the end, so for each count of
        // predecessors the best c is the largest that admits them: c = δ, or c = l_j − lt + δ
        // for the j-th candidate below the token (within 2δ of it).
        let end = |before_n: usize, c: f64| -> f64 {
            let before = sum_skip(before_n.min(k - 1));
            let upto = before * e + wt * (c / self.t).min(300.0).exp();
            let rest = (top_k_mass - before) / e;
            match self.top_p {
                // The kept mass is at least p of the top_k mass.
                Some(p) => (upto / (p * (upto + rest))).min(1.0),
                None => upto / (upto + rest),
            }
        };
        let not_below = self.logits.partition_point(|&l| l >= lt);
        let mut hi = end(not_below - 1, delta);
        let near = self.logits.partition_point(|&l| l >= lt - 2.0 * delta);
        // Indices in not_below..near are below the token (r < j), so j candidates precede it.
        for j in not_below..near.min(k) {
            if u < hi + DRAW_EPS {
                break;
            }
            hi = hi.max(end(j, self.logits[j] - lt + delta));
        }
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
                let tol = replay_tolerance(&logits, &p, t, u).expect("an id of the logits");
                assert_eq!(tol, 0.0, "{top_k:?} {top_p:?} token {t} u {u}");
                // Only the drawn token replays exactly.
                let other = (t + 1) % 50;
                let tol = replay_tolerance(&logits, &p, other, u).expect("an id of the logits");
                assert!(tol > 0.0, "{top_k:?} {top_p:?} token {other} u {u}");
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
        let at = |t: u32, u: f64| replay_tolerance(&logits, &p, t, u).expect("an id of the logits");
        assert_eq!(at(0, 0.2), 0.0);
        assert_eq!(at(1, 0.9), 0.0);
        // 1 instead of 0 at u = 0.2: the pair must swap order, ≥ 0.35 each way.
        let swap = at(1, 0.2);
        assert!(swap > 0.3 && swap < 0.4, "{swap}");
        // A tail token is cut by top_p unless the logits moved by several units.
        assert!(at(5, 0.5) > 5.0);
        assert!(replay_tolerance(&logits, &p, 99, 0.5).is_none());
        // Greedy: half the margin, whatever the draw.
        let greedy = SamplingParams::greedy(1);
        let g = |t: u32| replay_tolerance(&logits, &greedy, t, 0.9).expect("an id of the logits");
        assert_eq!(g(0), 0.0);
        assert!((g(1) - 0.35).abs() < 1e-6, "{}", g(1));
    }

    proptest::proptest! {
        /// Soundness: whatever the worker's logits within δ of the validator's, the token its
        /// sampler draws is admitted at δ (drift within the tolerance never rejects).
        #[test]
        fn drift_within_the_tolerance_is_admitted(
            base in proptest::collection::vec(-6.0f32..6.0, 2..40),
            noise in proptest::collection::vec(
                proptest::prop_oneof![-1.0f32..1.0, proptest::strategy::Just(-1.0f32), proptest::strategy::Just(1.0f32)],
                40,
            ),
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
            let u = if p.is_greedy() { 0.0 } else { rng.next_f64() };
            let tol = replay_tolerance(&base, &p, t, u).expect("an id of the logits");
            proptest::prop_assert!(tol <= delta * 1.0001 + 1e-6, "tolerance {} for drift {}", tol, delta);
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
