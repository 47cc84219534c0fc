//! A node's own labelled examples and the private updates made from them.
//!
//! Examples (embeddings of queries whose domain the node knows, e.g. from its own experts' traffic)
//! never leave the node. What leaves is a [`CentroidUpdate`] from [`local_update`]: the clipped mean
//! plus Gaussian noise ([`super::privacy`]) and the example count rounded down to a power of two.

use std::collections::BTreeMap;

use rand::Rng;

use super::privacy::{DpParams, MAX_NOISE_NORM, add_gaussian_noise};
use super::update::CentroidUpdate;
use super::{DomainTag, ExpertsError, check_dim, check_embedding, l2_norm};

/// Most domains a node keeps examples for.
pub const MAX_LOCAL_DOMAINS: usize = 64;

/// Most examples kept per domain.
pub const MAX_LOCAL_EXAMPLES: usize = 100_000;

/// A node's labelled examples: embeddings by domain, all of one dimension, bounded.
#[derive(Clone, Debug)]
pub struct LocalData {
    dim: usize,
    examples: BTreeMap<DomainTag, Vec<Vec<f32>>>,
}

impl LocalData {
    /// Empty data of embedding dimension `dim` (1 to [`super::update::MAX_DIM`]).
    pub fn new(dim: usize) -> Result<Self, ExpertsError> {
        check_dim(dim)?;
        Ok(Self {
            dim,
            examples: BTreeMap::new(),
        })
    }

    /// Adds one example of `domain`.
    pub fn add(&mut self, domain: &DomainTag, embedding: Vec<f32>) -> Result<(), ExpertsError> {
        check_embedding(&embedding, self.dim)?;
        if !self.examples.contains_key(domain) && self.examples.len() >= MAX_LOCAL_DOMAINS {
            return Err(ExpertsError::Full("local domain table"));
        }
        let list = self.examples.entry(domain.clone()).or_default();
        if list.len() >= MAX_LOCAL_EXAMPLES {
            return Err(ExpertsError::Full("local example list"));
        }
        list.push(embedding);
        Ok(())
    }

    /// Domains with at least one example.
    pub fn domains(&self) -> impl Iterator<Item = &DomainTag> {
        self.examples.keys()
    }

    /// The examples of `domain` (empty when none).
    pub fn examples(&self, domain: &DomainTag) -> &[Vec<f32>] {
        self.examples.get(domain).map_or(&[], Vec::as_slice)
    }
}

/// Mean of `examples`, each first scaled down to L2 norm at most `clip_norm`. Fails when there are
/// no examples, their dimensions differ or are out of range, or a value is not finite.
pub fn clipped_mean(examples: &[Vec<f32>], clip_norm: f64) -> Result<Vec<f32>, ExpertsError> {
    let dim = examples.first().ok_or(ExpertsError::NoExamples)?.len();
    check_dim(dim)?;
    let mut sum = vec![0f64; dim];
    for e in examples {
        check_embedding(e, dim)?;
        let norm = f64::from(l2_norm(e));
        let scale = if norm > clip_norm {
            clip_norm / norm
        } else {
            1.0
        };
        for (s, &x) in sum.iter_mut().zip(e) {
            *s += f64::from(x) * scale;
        }
    }
    let n = examples.len() as f64;
    Ok(sum.into_iter().map(|s| (s / n) as f32).collect())
}

/// The update a node releases for `domain` in `round`: clipped mean of `examples` plus Gaussian
/// noise for `params`. Fails when the examples are empty or invalid, or too few for the noise to
/// leave a usable centroid ([`MAX_NOISE_NORM`]).
pub fn local_update<R: Rng + ?Sized>(
    domain: &DomainTag,
    round: u64,
    examples: &[Vec<f32>],
    params: &DpParams,
    rng: &mut R,
) -> Result<CentroidUpdate, ExpertsError> {
    let mut vector = clipped_mean(examples, params.clip_norm())?;
    let dim = vector.len();
    let n = examples.len();
    let sigma = params.noise_sigma(n);
    if sigma * (dim as f64).sqrt() > MAX_NOISE_NORM {
        return Err(ExpertsError::TooFewExamples {
            have: n,
            need: params.min_examples(dim),
        });
    }
    add_gaussian_noise(&mut vector, sigma, rng);
    Ok(CentroidUpdate {
        domain: domain.clone(),
        round,
        vector,
        examples: coarse_count(n),
    })
}

/// `n` rounded down to a power of two (and to `u32`): the count is published only coarsely.
fn coarse_count(n: usize) -> u32 {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    if n == 0 { 0 } else { 1 << n.ilog2() }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::*;

    fn tag(s: &str) -> DomainTag {
        s.parse().expect("valid tag")
    }

    #[test]
    fn local_data_is_validated_and_bounded() {
        assert_eq!(
            LocalData::new(0).err(),
            Some(ExpertsError::DimensionOutOfRange(0))
        );
        assert!(LocalData::new(crate::experts::update::MAX_DIM + 1).is_err());
        let mut d = LocalData::new(2).expect("dim");
        let cooking = tag("cooking");
        assert_eq!(d.add(&cooking, vec![1.0, 0.0]), Ok(()));
        assert!(matches!(
            d.add(&cooking, vec![1.0]),
            Err(ExpertsError::Dimension { .. })
        ));
        assert_eq!(
            d.add(&cooking, vec![f32::NAN, 0.0]),
            Err(ExpertsError::NonFinite)
        );
        assert_eq!(d.examples(&cooking).len(), 1);
        assert!(d.examples(&tag("sports")).is_empty());
        for i in 1..MAX_LOCAL_DOMAINS {
            assert_eq!(d.add(&tag(&format!("d{i}")), vec![0.0, 1.0]), Ok(()));
        }
        assert_eq!(
            d.add(&tag("one-too-many"), vec![0.0, 1.0]),
            Err(ExpertsError::Full("local domain table"))
        );
        assert_eq!(d.domains().count(), MAX_LOCAL_DOMAINS);
    }

    #[test]
    fn examples_are_clipped_before_averaging() {
        // A long example counts no more than a unit one.
        let mean = clipped_mean(&[vec![10.0, 0.0], vec![0.0, 1.0]], 1.0).expect("mean");
        assert_eq!(mean, vec![0.5, 0.5]);
        let mean = clipped_mean(&[vec![0.6, 0.8]], 0.5).expect("mean");
        assert!((l2_norm(&mean) - 0.5).abs() < 1e-6);
        assert_eq!(clipped_mean(&[], 1.0), Err(ExpertsError::NoExamples));
        assert!(matches!(
            clipped_mean(&[vec![1.0], vec![1.0, 0.0]], 1.0),
            Err(ExpertsError::Dimension { .. })
        ));
        assert_eq!(
            clipped_mean(&[vec![f32::INFINITY]], 1.0),
            Err(ExpertsError::NonFinite)
        );
    }

    #[test]
    fn updates_carry_noise_of_the_mechanism_and_no_raw_example() {
        let dim = 384;
        let params = DpParams::new(1.0, 1e-5).expect("valid");
        let n = 400;
        let examples: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let mut e = vec![0.0; dim];
                e[i % 4] = 1.0;
                e
            })
            .collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let u = local_update(&tag("cooking"), 3, &examples, &params, &mut rng).expect("update");
        assert_eq!((u.round, u.examples, u.vector.len()), (3, 256, dim));
        // The mean is 0.25 on the first four coordinates, 0 elsewhere; the rest is noise of σ.
        let sigma = params.noise_sigma(n);
        let rest = &u.vector[4..];
        let sd = (rest.iter().map(|x| x * x).sum::<f32>() / rest.len() as f32).sqrt();
        assert!(
            (f64::from(sd) / sigma - 1.0).abs() < 0.1,
            "sd {sd} σ {sigma}"
        );
        assert!(
            u.vector[..4]
                .iter()
                .all(|x| (x - 0.25).abs() < 5.0 * sigma as f32)
        );
        assert!(examples.iter().all(|e| e != &u.vector));
        // Two releases of the same data differ (fresh noise).
        let again = local_update(&tag("cooking"), 3, &examples, &params, &mut rng).expect("update");
        assert_ne!(again.vector, u.vector);
    }

    #[test]
    fn too_few_examples_are_refused_with_the_number_needed() {
        let params = DpParams::new(1.0, 1e-5).expect("valid");
        let examples = vec![vec![1.0f32; 384]; 10];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        assert_eq!(
            local_update(&tag("cooking"), 0, &examples, &params, &mut rng),
            Err(ExpertsError::TooFewExamples {
                have: 10,
                need: 190
            })
        );
        assert_eq!(
            local_update(&tag("cooking"), 0, &[], &params, &mut rng),
            Err(ExpertsError::NoExamples)
        );
    }

    #[test]
    fn counts_are_published_coarsely() {
        assert_eq!(
            [0, 1, 2, 3, 4, 7, 8, 190, 1000].map(coarse_count),
            [0, 1, 2, 2, 4, 4, 8, 128, 512]
        );
        assert_eq!(coarse_count(usize::MAX), 1 << 31);
    }
}
