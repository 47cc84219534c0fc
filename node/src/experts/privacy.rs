//! Differential privacy of centroid updates: the Gaussian mechanism and the budget accountant.
//!
//! **Mechanism.** An update is the mean of a node's n examples of one domain, each first clipped to
//! L2 norm C ([`DpParams::clip_norm`], default 1: MiniLM embeddings are unit vectors). Replacing one
//! example moves that mean by at most Δ = 2C/n (its L2 sensitivity), so adding N(0, σ²) to every
//! coordinate with
//!
//! σ = Δ · √(2 ln(1.25/δ)) / ε
//!
//! makes the release (ε, δ)-differentially private (the classical Gaussian mechanism, Dwork & Roth,
//! *The Algorithmic Foundations of Differential Privacy*, Theorem A.1). That bound is proved for
//! ε < 1 and is unsafe well above it, so [`DpParams::new`] refuses ε > 1 (ε = 1 is the customary
//! limit). The count n is published only rounded down to a power of two.
//!
//! **Usefulness.** The noise vector's norm is about σ·√dim. Above [`MAX_NOISE_NORM`] an update is
//! mostly noise: it informs the aggregate less than it disturbs it, and the aggregator can no longer
//! tell it from a crafted one, so [`crate::experts::local_update`] refuses to release it and says how many
//! examples are needed ([`DpParams::min_examples`]: 190 per domain at ε = 1, δ = 10⁻⁵, 384 dims).
//!
//! **Budget.** One round releases at most one update per domain; the domains' example sets are
//! disjoint, so a round costs (ε, δ) once (parallel composition). Over k rounds
//! [`PrivacyAccountant`] reports the smaller ε of basic composition (kε, kδ) and advanced composition
//! (Dwork, Rothblum & Vadhan): ε√(2k ln(1/δ′)) + kε(e^ε − 1) with δ′ = δ, at total δ kδ + δ′.

use rand::{Rng, RngExt};

use super::ExpertsError;

/// Default per-example clip norm: the norm of an embedding (MiniLM vectors are unit vectors).
pub const DEFAULT_CLIP_NORM: f64 = 1.0;

/// Largest per-round ε: the classical Gaussian mechanism is proved for ε < 1 only.
pub const MAX_EPSILON: f64 = 1.0;

/// Largest per-round δ. δ is the probability that the guarantee fails outright; it must stay far
/// below 1/n for n examples.
pub const MAX_DELTA: f64 = 1e-3;

/// Largest expected noise norm (σ·√dim) of a released update; see the module docs.
pub const MAX_NOISE_NORM: f64 = 1.0;

/// Per-round privacy parameters of a node's updates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpParams {
    epsilon: f64,
    delta: f64,
    clip_norm: f64,
}

impl DpParams {
    /// (ε, δ) per round, with the default clip norm. ε must be in (0, 1] and δ in (0, 10⁻³].
    pub fn new(epsilon: f64, delta: f64) -> Result<Self, ExpertsError> {
        if !(epsilon > 0.0 && epsilon <= MAX_EPSILON) {
            return Err(ExpertsError::BadPrivacy(format!(
                "ε = {epsilon} is outside (0, {MAX_EPSILON}]: the Gaussian mechanism's bound does not hold"
            )));
        }
        if !(delta > 0.0 && delta <= MAX_DELTA) {
            return Err(ExpertsError::BadPrivacy(format!(
                "δ = {delta} is outside (0, {MAX_DELTA}]"
            )));
        }
        Ok(Self {
            epsilon,
            delta,
            clip_norm: DEFAULT_CLIP_NORM,
        })
    }

    /// The same parameters with per-example clip norm `clip_norm` in (0, 1].
    pub fn with_clip_norm(self, clip_norm: f64) -> Result<Self, ExpertsError> {
        if !(clip_norm > 0.0 && clip_norm <= DEFAULT_CLIP_NORM) {
            return Err(ExpertsError::BadPrivacy(format!(
                "clip norm {clip_norm} is outside (0, {DEFAULT_CLIP_NORM}]"
            )));
        }
        Ok(Self { clip_norm, ..self })
    }

    /// ε per round.
    pub fn epsilon(&self) -> f64 {
        self.epsilon
    }

    /// δ per round.
    pub fn delta(&self) -> f64 {
        self.delta
    }

    /// Per-example L2 clip norm C.
    pub fn clip_norm(&self) -> f64 {
        self.clip_norm
    }

    /// L2 sensitivity of the mean of `examples` clipped examples to replacing one: 2C/n.
    pub fn sensitivity(&self, examples: usize) -> f64 {
        2.0 * self.clip_norm / examples.max(1) as f64
    }

    /// Standard deviation of the noise on each coordinate of the mean of `examples` examples.
    pub fn noise_sigma(&self, examples: usize) -> f64 {
        self.sensitivity(examples) * (2.0 * (1.25 / self.delta).ln()).sqrt() / self.epsilon
    }

    /// Fewest examples whose noisy mean in `dim` dimensions stays under [`MAX_NOISE_NORM`].
    pub fn min_examples(&self, dim: usize) -> usize {
        // σ(n)·√dim = σ(1)·√dim / n ≤ MAX_NOISE_NORM.
        let n = self.noise_sigma(1) * (dim as f64).sqrt() / MAX_NOISE_NORM;
        n.ceil() as usize
    }
}

/// Adds N(0, σ²) to every coordinate of `v` (Box–Muller on `rng`).
pub fn add_gaussian_noise<R: Rng + ?Sized>(v: &mut [f32], sigma: f64, rng: &mut R) {
    for pair in v.chunks_mut(2) {
        // 1 − U is in (0, 1], so the logarithm is finite.
        let r = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt() * sigma;
        let theta = std::f64::consts::TAU * rng.random::<f64>();
        for (x, z) in pair.iter_mut().zip([theta.cos(), theta.sin()]) {
            *x += (r * z) as f32;
        }
    }
}

/// How composition bounded a [`Budget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Composition {
    /// (kε, kδ).
    Basic,
    /// Dwork–Rothblum–Vadhan advanced composition with δ′ = δ.
    Advanced,
}

/// A cumulative privacy budget: the whole release history is (ε, δ)-DP.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Total ε.
    pub epsilon: f64,
    /// Total δ.
    pub delta: f64,
    /// Which bound gave it (the one with the smaller ε).
    pub composition: Composition,
}

/// Counts a node's release rounds and reports the privacy budget they spent.
#[derive(Clone, Debug)]
pub struct PrivacyAccountant {
    per_round: DpParams,
    rounds: u64,
}

impl PrivacyAccountant {
    /// An accountant for updates released with `per_round`.
    pub fn new(per_round: DpParams) -> Self {
        Self {
            per_round,
            rounds: 0,
        }
    }

    /// Records one round of releases (any number of domains; see the module docs).
    pub fn record_round(&mut self) {
        self.rounds = self.rounds.saturating_add(1);
    }

    /// Rounds recorded.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// The budget spent so far: the smaller-ε of basic and advanced composition.
    pub fn spent(&self) -> Budget {
        let (eps, delta) = (self.per_round.epsilon, self.per_round.delta);
        let k = self.rounds as f64;
        let basic = Budget {
            epsilon: k * eps,
            delta: k * delta,
            composition: Composition::Basic,
        };
        if self.rounds == 0 {
            return basic;
        }
        let advanced = Budget {
            epsilon: eps * (2.0 * k * (1.0 / delta).ln()).sqrt() + k * eps * eps.exp_m1(),
            delta: k * delta + delta,
            composition: Composition::Advanced,
        };
        if advanced.epsilon < basic.epsilon {
            advanced
        } else {
            basic
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-12)
    }

    #[test]
    fn parameters_outside_the_mechanisms_range_are_refused() {
        assert!(DpParams::new(1.0, 1e-5).is_ok());
        for (eps, delta) in [
            (0.0, 1e-5),
            (1.5, 1e-5),
            (f64::NAN, 1e-5),
            (0.5, 0.0),
            (0.5, 0.1),
            (0.5, f64::NAN),
        ] {
            assert!(DpParams::new(eps, delta).is_err(), "ε {eps} δ {delta}");
        }
        let p = DpParams::new(0.5, 1e-5).expect("valid");
        assert!(p.with_clip_norm(0.5).is_ok());
        assert!(p.with_clip_norm(0.0).is_err());
        assert!(p.with_clip_norm(2.0).is_err());
    }

    #[test]
    fn sigma_is_the_classical_gaussian_mechanism() {
        let p = DpParams::new(1.0, 1e-5).expect("valid");
        // Δ = 2/100; √(2 ln 125000) = 4.8448.
        assert!(close(p.sensitivity(100), 0.02, 1e-12));
        assert!(close(p.noise_sigma(100), 0.02 * 4.844_805, 1e-5));
        // Halving ε doubles σ; halving the clip norm halves it.
        let half = DpParams::new(0.5, 1e-5).expect("valid");
        assert!(close(
            half.noise_sigma(100),
            2.0 * p.noise_sigma(100),
            1e-12
        ));
        let clipped = p.with_clip_norm(0.5).expect("valid");
        assert!(close(
            clipped.noise_sigma(100),
            0.5 * p.noise_sigma(100),
            1e-12
        ));
        // 2·4.8448·√384 / 1.0 = 189.9 → 190 examples.
        assert_eq!(p.min_examples(384), 190);
        assert!(p.noise_sigma(190) * 384f64.sqrt() <= MAX_NOISE_NORM);
        assert!(p.noise_sigma(189) * 384f64.sqrt() > MAX_NOISE_NORM);
    }

    #[test]
    fn noise_has_the_requested_spread() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let mut v = vec![0.0f32; 20_001];
        add_gaussian_noise(&mut v, 0.3, &mut rng);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let sd = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!(close(sd, 0.3, 0.03), "sd {sd}");
        assert!(v.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn accountant_reports_the_smaller_composition() {
        let mut a = PrivacyAccountant::new(DpParams::new(0.1, 1e-5).expect("valid"));
        assert_eq!(
            a.spent(),
            Budget {
                epsilon: 0.0,
                delta: 0.0,
                composition: Composition::Basic
            }
        );
        a.record_round();
        let one = a.spent();
        assert_eq!(one.composition, Composition::Basic);
        assert!(close(one.epsilon, 0.1, 1e-12) && close(one.delta, 1e-5, 1e-12));
        for _ in 1..1000 {
            a.record_round();
        }
        assert_eq!(a.rounds(), 1000);
        let many = a.spent();
        // 0.1·√(2000 ln 10⁵) + 1000·0.1·(e^0.1 − 1) = 15.174 + 10.517 = 25.69 < 100 = kε.
        assert_eq!(many.composition, Composition::Advanced);
        assert!(close(many.epsilon, 25.69, 1e-3), "{}", many.epsilon);
        assert!(close(many.delta, 1001.0 * 1e-5, 1e-12));
    }
}
