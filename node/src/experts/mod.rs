//! Expert routing and the federated router (domain centroids from signed, robustly aggregated updates).
//!
//! An *expert* is a model or system prompt specialised in a domain (`cooking`, `finance`, …). A query
//! is embedded with MiniLM ([`mycel_models::EmbeddingModel`], unit vectors) and sent to the domain
//! whose centroid is nearest. The network learns the centroids without any node sharing its data:
//!
//! 1. [`local`]: a node keeps labelled examples ([`LocalData`]) and releases, per round and domain,
//!    a [`CentroidUpdate`] made by [`local_update`]: the mean of its examples, each clipped to
//!    `clip_norm`, plus Gaussian noise for differential privacy ([`privacy`]: [`DpParams`], and the
//!    [`PrivacyAccountant`] that reports the (ε, δ) spent over the rounds).
//! 2. [`update`]: updates are signed with the node key and gossiped on [`CENTROID_TOPIC`];
//!    [`CentroidUpdate::verify`] bounds and checks every field before anything else reads it.
//! 3. [`federated`]: [`FederatedRouter`] keeps the latest update per (peer, domain), bounded, and
//!    aggregates each domain robustly: reputation-weighted coordinate-wise median, rejection of the
//!    updates that disagree with it ([`RejectRule`]), reputation-weighted mean of the survivors.
//! 4. [`router`]: the aggregate is a [`RoutingTable`]; [`RoutingTable::route`] picks the nearest
//!    centroid, or none when even the nearest is not similar enough.
//! 5. [`ensemble`]: when k experts answer, [`medoid`] picks the answer the others agree with most.
//!
//! Everything here is pure: randomness comes in as an argument, time as a round number; the node
//! wires it to gossip, the embedding model and the ledger's reputations. specs/models.md ("Experts
//! and the federated router") is the normative description.

pub mod ensemble;
pub mod federated;
pub mod local;
pub mod privacy;
pub mod router;
pub mod update;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use ensemble::{AGREEMENT_THRESHOLD, Consensus, medoid};
pub use federated::{Aggregate, FederatedRouter, Refusal, RejectRule, Rejection};
pub use local::{LocalData, clipped_mean, local_update};
pub use privacy::{Budget, Composition, DpParams, PrivacyAccountant};
pub use router::{MIN_SIMILARITY, RouteChoice, RoutingTable};
pub use update::{CENTROID_TOPIC, CentroidUpdate, UpdateRejected};

/// Longest domain tag, in bytes.
pub const MAX_DOMAIN_TAG_LEN: usize = 32;

/// Weight of a peer whose reputation is 0 (or unknown): new nodes count a little, never nothing, so
/// a network of newcomers still learns; reputations above it count as they are (at most 1).
pub const REPUTATION_FLOOR: f64 = 0.05;

/// Errors of the local side: bad configuration or bad local data (peer data is refused with
/// [`UpdateRejected`] or [`Refusal`] instead).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExpertsError {
    /// A domain tag outside `[a-z0-9-]{1,32}`.
    #[error("domain tag {0:?} is not 1–32 characters of [a-z0-9-]")]
    BadDomainTag(String),
    /// Privacy parameters out of their valid range.
    #[error("privacy parameters: {0}")]
    BadPrivacy(String),
    /// An embedding of the wrong dimension.
    #[error("embedding has {got} dimensions, expected {expected}")]
    Dimension {
        /// The dimension required.
        expected: usize,
        /// The dimension given.
        got: usize,
    },
    /// An embedding dimension outside 1 to [`update::MAX_DIM`].
    #[error("embedding dimension {0} is outside 1..={max}", max = update::MAX_DIM)]
    DimensionOutOfRange(usize),
    /// No examples to learn from.
    #[error("no examples")]
    NoExamples,
    /// An embedding with a NaN or infinite value.
    #[error("embedding has a non-finite value")]
    NonFinite,
    /// A bounded collection is full.
    #[error("{0} is full")]
    Full(&'static str),
    /// Too few examples for the privacy level: the noise would drown the centroid.
    #[error(
        "{have} examples are too few at this privacy level (the noise would drown the centroid): \
         collect at least {need}, or raise ε"
    )]
    TooFewExamples {
        /// Examples available.
        have: usize,
        /// Examples needed.
        need: usize,
    },
}

/// A domain tag: 1–32 characters of `[a-z0-9-]`. Serialises as its string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DomainTag(String);

impl DomainTag {
    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DomainTag {
    type Err = ExpertsError;

    fn from_str(s: &str) -> Result<Self, ExpertsError> {
        let ok = (1..=MAX_DOMAIN_TAG_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ExpertsError::BadDomainTag(s.chars().take(64).collect()))
        }
    }
}

impl fmt::Display for DomainTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Norms below this are treated as zero (a vector with no direction).
const MIN_NORM: f32 = 1e-6;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn l2_norm(v: &[f32]) -> f32 {
    dot(v, v).sqrt()
}

/// `v / |v|`, or `None` when `v` has no direction.
fn normalized(v: &[f32]) -> Option<Vec<f32>> {
    let n = l2_norm(v);
    (n.is_finite() && n > MIN_NORM).then(|| v.iter().map(|x| x / n).collect())
}

/// Cosine similarity of any two vectors; 0 when either has no direction.
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let n = l2_norm(a) * l2_norm(b);
    if n.is_finite() && n > MIN_NORM * MIN_NORM {
        dot(a, b) / n
    } else {
        0.0
    }
}

/// `a − b`.
fn sub(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// The mean of `vectors` of dimension `dim` (zeros for none).
fn mean<V: AsRef<[f32]>>(vectors: &[V], dim: usize) -> Vec<f32> {
    let mut m = vec![0f32; dim];
    for v in vectors {
        for (a, x) in m.iter_mut().zip(v.as_ref()) {
            *a += x / vectors.len() as f32;
        }
    }
    m
}

/// A reputation in [0, 1] (NaN counts as 0) raised to [`REPUTATION_FLOOR`].
fn weight(reputation: f64) -> f64 {
    if reputation.is_nan() {
        REPUTATION_FLOOR
    } else {
        reputation.clamp(REPUTATION_FLOOR, 1.0)
    }
}

/// Validates an embedding dimension.
fn check_dim(dim: usize) -> Result<(), ExpertsError> {
    if (1..=update::MAX_DIM).contains(&dim) {
        Ok(())
    } else {
        Err(ExpertsError::DimensionOutOfRange(dim))
    }
}

/// Validates an embedding for a table of dimension `dim`.
fn check_embedding(v: &[f32], dim: usize) -> Result<(), ExpertsError> {
    if v.len() != dim {
        return Err(ExpertsError::Dimension {
            expected: dim,
            got: v.len(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(ExpertsError::NonFinite);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_tags_are_short_lowercase_words() {
        for ok in ["cooking", "a", "web-dev", "x86-64", &"a".repeat(32)] {
            assert_eq!(
                ok.parse::<DomainTag>().map(|t| t.to_string()),
                Ok(ok.to_string())
            );
        }
        for bad in [
            "",
            "Cooking",
            "web_dev",
            "café",
            "a b",
            "a/b",
            &"a".repeat(33),
        ] {
            assert!(bad.parse::<DomainTag>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn weights_are_floored_and_capped() {
        assert_eq!(weight(0.0), REPUTATION_FLOOR);
        assert_eq!(weight(f64::NAN), REPUTATION_FLOOR);
        assert_eq!(weight(-3.0), REPUTATION_FLOOR);
        assert_eq!(weight(0.5), 0.5);
        assert_eq!(weight(7.0), 1.0);
    }

    #[test]
    fn cosine_of_directionless_vectors_is_zero() {
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!((cosine(&[2.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(normalized(&[0.0; 3]), None);
    }
}
