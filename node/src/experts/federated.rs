//! The federated router: robust aggregation of the peers' centroid updates.
//!
//! [`FederatedRouter`] keeps the latest accepted update per (peer, domain), with the sender's
//! reputation at the time, plus the node's own centroids. Both tables are bounded
//! ([`MAX_DOMAINS`], [`MAX_PEERS_PER_DOMAIN`]); when one is full the lightest entry (lowest
//! reputation, then oldest round; for domains the lowest total reputation) makes room for a heavier
//! newcomer, and a newcomer no heavier than it is refused.
//!
//! [`FederatedRouter::aggregate`] computes, for every domain:
//!
//! 1. the weighted coordinate-wise median of the domain's updates (weights: reputation in [0, 1],
//!    floored at [`super::REPUTATION_FLOOR`]; the node's own centroid weighs [`OWN_WEIGHT`]);
//! 2. the rejection of every peer update that disagrees with it, by the first rule that applies
//!    ([`RejectRule`]):
//!    - *direction*: cosine to the median below [`MIN_COSINE_TO_MEDIAN`];
//!    - *distance*: L2 distance to the median above the weighted median distance plus
//!      [`DISTANCE_MADS`] robust deviations (1.4826 · MAD, at least [`MIN_DISTANCE_SPREAD`]);
//!    - *other domain*: closer to another domain's median than to its own, by cosine around the
//!      centre of the medians (as [`RoutingTable`] ranks) — the signature of an update crafted to
//!      pull this domain's traffic towards another;
//! 3. the weighted mean of the survivors, each first scaled down to at most the weighted median norm
//!    (so no survivor outweighs the others by length); the median itself if none survived.
//!
//! The node's own centroid is never rejected. The means form a [`RoutingTable`]; the rejections are
//! reported for metrics and logs. Cost: O(domains · dim · n log n) for n updates per domain, so the
//! node aggregates once per round, not per update.

use std::collections::{BTreeMap, BTreeSet};

use mycel_identity::PeerId;

use super::router::RoutingTable;
use super::update::{CentroidUpdate, UpdateRejected};
use super::{
    DomainTag, ExpertsError, check_dim, check_embedding, cosine, l2_norm, mean, normalized, sub,
    weight,
};

/// Most domains held from peers (and, separately, of the node's own).
pub const MAX_DOMAINS: usize = 64;

/// Most peers' updates held per domain.
pub const MAX_PEERS_PER_DOMAIN: usize = 64;

/// Weight of the node's own centroid: its own data is fully trusted.
pub const OWN_WEIGHT: f64 = 1.0;

/// Least cosine between an update and its domain's median. Random directions score |cos| ≤ 0.15
/// in 384 dimensions (0.05 typically), opposite ones below 0; honest updates of the labelled set
/// with the largest noise a node may add ([`super::privacy::MAX_NOISE_NORM`]) score 0.2 and more,
/// though they average only 4 examples.
pub const MIN_COSINE_TO_MEDIAN: f32 = 0.15;

/// Robust deviations beyond the median distance at which an update is too far: 3 keeps about 99%
/// of a normal population.
pub const DISTANCE_MADS: f32 = 3.0;

/// Least robust deviation of the distances, so that nearly identical updates do not make every
/// small difference an outlier.
pub const MIN_DISTANCE_SPREAD: f32 = 0.05;

/// Scale from the median absolute deviation to the standard deviation of a normal population.
const MAD_TO_SD: f32 = 1.4826;

/// Why a peer's update was left out of its domain's aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectRule {
    /// Cosine to the median below [`MIN_COSINE_TO_MEDIAN`].
    Direction,
    /// Too far from the median ([`DISTANCE_MADS`]).
    Distance,
    /// Closer to another domain's median than to its own.
    OtherDomain,
}

/// A peer update left out of an aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The sender.
    pub peer: PeerId,
    /// The update's domain.
    pub domain: DomainTag,
    /// The rule that rejected it.
    pub rule: RejectRule,
}

/// The result of [`FederatedRouter::aggregate`].
#[derive(Clone, Debug)]
pub struct Aggregate {
    /// The aggregated centroids.
    pub table: RoutingTable,
    /// Updates left out, by domain then peer.
    pub rejected: Vec<Rejection>,
}

/// Why [`FederatedRouter::insert`] did not keep an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The update fails [`CentroidUpdate::check`].
    #[error("invalid update: {0}")]
    Invalid(UpdateRejected),
    /// Not newer than the update already held from the peer for the domain.
    #[error("not newer than the update held")]
    Stale,
    /// The table is full of entries at least as heavy.
    #[error("table full")]
    Full,
}

#[derive(Clone, Debug)]
struct Stored {
    round: u64,
    vector: Vec<f32>,
    weight: f64,
}

/// One domain's updates as the aggregation sees them; `peer` is `None` for the node's own.
struct Participant<'a> {
    peer: Option<PeerId>,
    vector: &'a [f32],
    weight: f64,
}

/// The domains' medians around their centre, for the other-domain rule.
struct Layout {
    centre: Vec<f32>,
    /// Unit direction of each median from the centre; none for a single domain or a median at the
    /// centre.
    directions: Vec<Option<Vec<f32>>>,
}

impl Layout {
    fn new(medians: &[Vec<f32>], dim: usize) -> Self {
        let centre = mean(medians, dim);
        let directions = medians
            .iter()
            .map(|m| {
                (medians.len() >= 2)
                    .then(|| normalized(&sub(m, &centre)))
                    .flatten()
            })
            .collect();
        Self { centre, directions }
    }

    /// Whether `v`, an update of domain `i`, points from the centre more towards another domain's
    /// median than towards its own.
    fn closer_to_another(&self, v: &[f32], i: usize) -> bool {
        let Some(own) = &self.directions[i] else {
            return false;
        };
        let centred = sub(v, &self.centre);
        let own_cos = cosine(&centred, own);
        self.directions
            .iter()
            .enumerate()
            .any(|(j, d)| j != i && d.as_ref().is_some_and(|d| cosine(&centred, d) > own_cos))
    }
}

/// A node's federated-router state.
#[derive(Clone, Debug)]
pub struct FederatedRouter {
    dim: usize,
    own: BTreeMap<DomainTag, Vec<f32>>,
    peers: BTreeMap<DomainTag, BTreeMap<PeerId, Stored>>,
}

impl FederatedRouter {
    /// An empty router for embeddings of dimension `dim` (1 to [`super::update::MAX_DIM`]).
    pub fn new(dim: usize) -> Result<Self, ExpertsError> {
        check_dim(dim)?;
        Ok(Self {
            dim,
            own: BTreeMap::new(),
            peers: BTreeMap::new(),
        })
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Peer updates held for `domain`.
    pub fn updates(&self, domain: &DomainTag) -> usize {
        self.peers.get(domain).map_or(0, BTreeMap::len)
    }

    /// Sets the node's own centroid of `domain` (e.g. [`super::clipped_mean`] of its examples;
    /// it stays on the node, so it needs no noise).
    pub fn set_local(&mut self, domain: DomainTag, centroid: Vec<f32>) -> Result<(), ExpertsError> {
        check_embedding(&centroid, self.dim)?;
        if !self.own.contains_key(&domain) && self.own.len() >= MAX_DOMAINS {
            return Err(ExpertsError::Full("own centroid table"));
        }
        self.own.insert(domain, centroid);
        Ok(())
    }

    /// Keeps `update` from `peer`, whose reputation is `reputation` (in [0, 1]), replacing the
    /// peer's older update of the same domain.
    pub fn insert(
        &mut self,
        peer: PeerId,
        update: CentroidUpdate,
        reputation: f64,
    ) -> Result<(), Refusal> {
        update.check(self.dim).map_err(Refusal::Invalid)?;
        let new = Stored {
            round: update.round,
            vector: update.vector,
            weight: weight(reputation),
        };
        if !self.peers.contains_key(&update.domain) && self.peers.len() >= MAX_DOMAINS {
            let lightest = self
                .peers
                .iter()
                .map(|(d, table)| (d, table.values().map(|s| s.weight).sum::<f64>()))
                .min_by(|a, b| a.1.total_cmp(&b.1));
            match lightest {
                Some((d, total)) if total < new.weight => {
                    let d = d.clone();
                    self.peers.remove(&d);
                }
                _ => return Err(Refusal::Full),
            }
        }
        let table = self.peers.entry(update.domain).or_default();
        match table.get(&peer) {
            Some(old) if old.round >= new.round => return Err(Refusal::Stale),
            None if table.len() >= MAX_PEERS_PER_DOMAIN => {
                let lighter = |a: &Stored, b: &Stored| {
                    a.weight.total_cmp(&b.weight).then(a.round.cmp(&b.round))
                };
                let lightest = table.iter().min_by(|a, b| lighter(a.1, b.1));
                match lightest {
                    Some((p, s)) if lighter(s, &new).is_lt() => {
                        let p = *p;
                        table.remove(&p);
                    }
                    _ => return Err(Refusal::Full),
                }
            }
            _ => {}
        }
        table.insert(peer, new);
        Ok(())
    }

    /// The aggregated centroids and the updates rejected on the way (see the module docs).
    pub fn aggregate(&self) -> Aggregate {
        let domains: BTreeSet<&DomainTag> = self.own.keys().chain(self.peers.keys()).collect();
        let groups: Vec<(&DomainTag, Vec<Participant<'_>>)> = domains
            .into_iter()
            .map(|d| (d, self.participants(d)))
            .collect();
        let medians: Vec<Vec<f32>> = groups
            .iter()
            .map(|(_, g)| coordinate_median(g, self.dim))
            .collect();
        let layout = Layout::new(&medians, self.dim);
        let mut rejected = Vec::new();
        let mut means = Vec::with_capacity(groups.len());
        for (i, (domain, group)) in groups.iter().enumerate() {
            let median = &medians[i];
            let distances: Vec<f32> = group.iter().map(|p| distance(p.vector, median)).collect();
            let limit = distance_limit(&distances, group);
            let mut survivors = Vec::with_capacity(group.len());
            for (p, &dist) in group.iter().zip(&distances) {
                // The node's own centroid is never rejected.
                let Some(peer) = p.peer else {
                    survivors.push(p);
                    continue;
                };
                let rule = if cosine(p.vector, median) < MIN_COSINE_TO_MEDIAN {
                    Some(RejectRule::Direction)
                } else if dist > limit {
                    Some(RejectRule::Distance)
                } else if layout.closer_to_another(p.vector, i) {
                    Some(RejectRule::OtherDomain)
                } else {
                    None
                };
                match rule {
                    Some(rule) => rejected.push(Rejection {
                        peer,
                        domain: (*domain).clone(),
                        rule,
                    }),
                    None => survivors.push(p),
                }
            }
            let aggregate = if survivors.is_empty() {
                median.clone()
            } else {
                let norms = group.iter().map(|p| (l2_norm(p.vector), p.weight));
                clipped_weighted_mean(&survivors, weighted_median(norms.collect()), self.dim)
            };
            means.push(((*domain).clone(), aggregate));
        }
        Aggregate {
            table: RoutingTable::from_checked(self.dim, means),
            rejected,
        }
    }

    fn participants(&self, domain: &DomainTag) -> Vec<Participant<'_>> {
        let own = self.own.get(domain).map(|v| Participant {
            peer: None,
            vector: v,
            weight: OWN_WEIGHT,
        });
        let peers = self.peers.get(domain).into_iter().flatten();
        own.into_iter()
            .chain(peers.map(|(peer, s)| Participant {
                peer: Some(*peer),
                vector: &s.vector,
                weight: s.weight,
            }))
            .collect()
    }
}

/// The weighted median of `(value, weight)` pairs: the midpoint of the lower and upper weighted
/// medians, so equal weights give the ordinary median. 0 for no values.
fn weighted_median(mut values: Vec<(f32, f64)>) -> f32 {
    /// The first value at which the running weight reaches `half`.
    fn reaching<'a>(values: impl Iterator<Item = &'a (f32, f64)>, half: f64) -> f32 {
        let mut acc = 0.0;
        for &(v, w) in values {
            acc += w;
            if acc >= half {
                return v;
            }
        }
        0.0
    }
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let half = values.iter().map(|v| v.1).sum::<f64>() / 2.0;
    (reaching(values.iter(), half) + reaching(values.iter().rev(), half)) / 2.0
}

fn coordinate_median(group: &[Participant<'_>], dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|j| weighted_median(group.iter().map(|p| (p.vector[j], p.weight)).collect()))
        .collect()
}

/// Distances above this are outliers (see [`DISTANCE_MADS`]).
fn distance_limit(distances: &[f32], group: &[Participant<'_>]) -> f32 {
    let weighted = |f: &dyn Fn(f32) -> f32| {
        weighted_median(
            distances
                .iter()
                .zip(group)
                .map(|(&d, p)| (f(d), p.weight))
                .collect(),
        )
    };
    let median = weighted(&|d| d);
    let mad = weighted(&|d| (d - median).abs());
    median + DISTANCE_MADS * (MAD_TO_SD * mad).max(MIN_DISTANCE_SPREAD)
}

fn clipped_weighted_mean(survivors: &[&Participant<'_>], cap: f32, dim: usize) -> Vec<f32> {
    let mut sum = vec![0f64; dim];
    let mut total = 0f64;
    for p in survivors {
        let norm = l2_norm(p.vector);
        let scale = if norm > cap { cap / norm } else { 1.0 };
        for (s, &x) in sum.iter_mut().zip(p.vector) {
            *s += p.weight * f64::from(x * scale);
        }
        total += p.weight;
    }
    sum.into_iter().map(|s| (s / total) as f32).collect()
}

fn distance(a: &[f32], b: &[f32]) -> f32 {
    l2_norm(&sub(a, b))
}

#[cfg(test)]
mod tests {
    use mycel_identity::Keypair;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    use super::super::privacy::add_gaussian_noise;
    use super::*;

    const DIM: usize = 32;

    fn tag(s: &str) -> DomainTag {
        s.parse().expect("tag")
    }

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| Keypair::generate().peer_id()).collect()
    }

    /// Three domains sharing a common direction (axis 0), each with its own axis (1, 2, 3).
    fn domain_mean(axis: usize) -> Vec<f32> {
        let mut m = vec![0.0; DIM];
        m[0] = 0.5;
        m[axis] = 0.45;
        m
    }

    fn update(domain: &str, round: u64, vector: Vec<f32>) -> CentroidUpdate {
        CentroidUpdate {
            domain: tag(domain),
            round,
            vector,
            examples: 256,
        }
    }

    fn noisy(mean: &[f32], sigma: f64, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
        let mut v = mean.to_vec();
        add_gaussian_noise(&mut v, sigma, rng);
        v
    }

    /// Ten honest peers per domain "a", "b", "c" at reputation 0.8, with noise `sigma`.
    fn honest_router(sigma: f64, rng: &mut Xoshiro256PlusPlus) -> (FederatedRouter, Vec<PeerId>) {
        let mut router = FederatedRouter::new(DIM).expect("dim");
        let ids = peers(10);
        for (domain, axis) in [("a", 1), ("b", 2), ("c", 3)] {
            for &p in &ids {
                let u = update(domain, 1, noisy(&domain_mean(axis), sigma, rng));
                assert_eq!(router.insert(p, u, 0.8), Ok(()));
            }
        }
        (router, ids)
    }

    #[test]
    fn weighted_median_interpolates_and_follows_weights() {
        assert_eq!(
            weighted_median(vec![(3.0, 1.0), (1.0, 1.0), (2.0, 1.0)]),
            2.0
        );
        assert_eq!(weighted_median(vec![(4.0, 1.0), (1.0, 1.0)]), 2.5);
        assert_eq!(
            weighted_median(vec![(1.0, 0.1), (5.0, 1.0), (9.0, 0.1)]),
            5.0
        );
        assert_eq!(
            weighted_median(vec![(1.0, 3.0), (5.0, 1.0), (9.0, 1.0)]),
            1.0
        );
        assert_eq!(weighted_median(Vec::new()), 0.0);
    }

    #[test]
    fn twenty_percent_colluding_poison_is_rejected_and_barely_moves_the_aggregate() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let (mut router, ids) = honest_router(0.05, &mut rng);
        let honest = router.aggregate();
        assert_eq!(honest.rejected, Vec::new());
        // Two of the ten peers (20%) replace their "a" update by "b"'s centroid, at full reputation.
        for &p in &ids[..2] {
            let u = update("a", 2, domain_mean(2));
            assert_eq!(router.insert(p, u, 0.8), Ok(()));
        }
        let poisoned = router.aggregate();
        let mut caught: Vec<PeerId> = poisoned.rejected.iter().map(|r| r.peer).collect();
        caught.sort();
        let mut poisoners = ids[..2].to_vec();
        poisoners.sort();
        assert_eq!(caught, poisoners);
        assert!(poisoned.rejected.iter().all(|r| r.domain == tag("a")));
        let a = tag("a");
        let moved = cosine(
            honest.table.centroid(&a).expect("a"),
            poisoned.table.centroid(&a).expect("a"),
        );
        assert!(moved > 0.995, "cosine to the clean aggregate {moved}");
        // A plain mean would have been dragged a long way towards "b".
        let mut plain = vec![0.0; DIM];
        for (i, p) in ids.iter().enumerate() {
            let v = if i < 2 {
                domain_mean(2)
            } else {
                let stored = &router.peers[&a][p];
                stored.vector.clone()
            };
            for (s, x) in plain.iter_mut().zip(v) {
                *s += x / ids.len() as f32;
            }
        }
        let plain_moved = cosine(honest.table.centroid(&a).expect("a"), &plain);
        assert!(
            1.0 - plain_moved > 4.0 * (1.0 - moved),
            "plain {plain_moved} robust {moved}"
        );
        // Queries of "a" still go to "a".
        let query = domain_mean(1);
        assert_eq!(poisoned.table.route(&query).map(|c| c.domain), Some(a));
    }

    #[test]
    fn each_rule_catches_its_case() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let (mut router, _) = honest_router(0.05, &mut rng);
        let a = domain_mean(1);
        let b = domain_mean(2);
        let opposite: Vec<f32> = a.iter().map(|x| -x).collect();
        let long: Vec<f32> = a.iter().map(|x| x * 3.0).collect();
        // Just past the midpoint between "a" and "b": near enough, but on "b"'s side.
        let hijack: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + 0.55 * (y - x)).collect();
        let cases = [
            (opposite, RejectRule::Direction),
            (long, RejectRule::Distance),
            (hijack, RejectRule::OtherDomain),
        ];
        let attackers = peers(cases.len());
        for ((vector, _), &p) in cases.iter().zip(&attackers) {
            assert_eq!(
                router.insert(p, update("a", 1, vector.clone()), 0.8),
                Ok(())
            );
        }
        let rejected = router.aggregate().rejected;
        assert_eq!(rejected.len(), cases.len(), "{rejected:?}");
        for ((_, rule), p) in cases.iter().zip(&attackers) {
            assert!(
                rejected.contains(&Rejection {
                    peer: *p,
                    domain: tag("a"),
                    rule: *rule,
                }),
                "{rule:?} missing from {rejected:?}"
            );
        }
    }

    #[test]
    fn the_median_follows_reputation() {
        let x = domain_mean(1);
        let y = domain_mean(2);
        let ids = peers(7);
        let build = |trusted: f64, newcomers: f64| {
            let mut router = FederatedRouter::new(DIM).expect("dim");
            for (i, &p) in ids.iter().enumerate() {
                let (v, rep) = if i < 3 {
                    (&x, trusted)
                } else {
                    (&y, newcomers)
                };
                assert_eq!(router.insert(p, update("a", 1, v.clone()), rep), Ok(()));
            }
            router.aggregate().table
        };
        let a = tag("a");
        // Three trusted peers outweigh four newcomers at the floor...
        let centroid = build(1.0, 0.0).centroid(&a).map(<[f32]>::to_vec);
        assert!(cosine(&centroid.expect("a"), &x) > 0.99);
        // ...but not four peers of equal standing.
        let centroid = build(0.5, 0.5).centroid(&a).map(<[f32]>::to_vec);
        assert!(cosine(&centroid.expect("a"), &y) > 0.99);
    }

    #[test]
    fn the_own_centroid_counts_and_is_never_rejected() {
        let mut router = FederatedRouter::new(DIM).expect("dim");
        let x = domain_mean(1);
        let mut y = domain_mean(2);
        y[0] = 0.0;
        router.set_local(tag("a"), x.clone()).expect("own");
        for p in peers(5) {
            assert_eq!(router.insert(p, update("a", 1, y.clone()), 1.0), Ok(()));
        }
        let agg = router.aggregate();
        assert_eq!(agg.rejected, Vec::new());
        let centroid = agg.table.centroid(&tag("a")).expect("a");
        // One part own, clipped to the median norm 0.45, and five parts peers: 0.45·x̂ + 2.25·ŷ,
        // whose cosine to x is 0.45 / √(0.45² + 2.25²) = 0.196.
        assert!((cosine(centroid, &x) - 0.196).abs() < 0.005);
        // A domain only the node itself knows.
        router.set_local(tag("solo"), x).expect("own");
        assert!(router.aggregate().table.centroid(&tag("solo")).is_some());
        assert!(router.set_local(tag("bad"), vec![1.0]).is_err());
    }

    #[test]
    fn inserts_are_validated_replayed_updates_ignored() {
        let mut router = FederatedRouter::new(DIM).expect("dim");
        let p = peers(1)[0];
        assert_eq!(
            router.insert(p, update("a", 1, vec![0.1; 3]), 0.5),
            Err(Refusal::Invalid(UpdateRejected::BadDimension {
                expected: DIM,
                got: 3
            }))
        );
        assert_eq!(
            router.insert(p, update("a", 5, domain_mean(1)), 0.5),
            Ok(())
        );
        assert_eq!(
            router.insert(p, update("a", 5, domain_mean(2)), 0.5),
            Err(Refusal::Stale)
        );
        assert_eq!(
            router.insert(p, update("a", 4, domain_mean(2)), 0.5),
            Err(Refusal::Stale)
        );
        assert_eq!(
            router.insert(p, update("a", 6, domain_mean(2)), 0.5),
            Ok(())
        );
        assert_eq!(router.updates(&tag("a")), 1);
        let centroid = router
            .aggregate()
            .table
            .centroid(&tag("a"))
            .map(<[f32]>::to_vec);
        assert!(cosine(&centroid.expect("a"), &domain_mean(2)) > 0.999);
    }

    #[test]
    fn tables_are_bounded_and_evict_the_lightest() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut router = FederatedRouter::new(DIM).expect("dim");
        let ids = peers(MAX_PEERS_PER_DOMAIN + 1);
        let light = ids[0];
        for (i, &p) in ids[..MAX_PEERS_PER_DOMAIN].iter().enumerate() {
            let rep = if i == 0 { 0.3 } else { 0.5 };
            let u = update("a", 1, noisy(&domain_mean(1), 0.01, &mut rng));
            assert_eq!(router.insert(p, u, rep), Ok(()));
        }
        let newcomer = ids[MAX_PEERS_PER_DOMAIN];
        let u = update("a", 1, domain_mean(1));
        assert_eq!(router.insert(newcomer, u.clone(), 0.2), Err(Refusal::Full));
        assert_eq!(router.insert(newcomer, u.clone(), 0.9), Ok(()));
        assert_eq!(router.updates(&tag("a")), MAX_PEERS_PER_DOMAIN);
        // The light peer was evicted: it is now a newcomer, too light to return.
        assert_eq!(router.insert(light, u.clone(), 0.3), Err(Refusal::Full));
        assert_eq!(router.insert(ids[1], u, 0.5), Err(Refusal::Stale));

        let mut router = FederatedRouter::new(DIM).expect("dim");
        let p = peers(1)[0];
        for i in 0..MAX_DOMAINS {
            let u = update(&format!("d{i}"), 1, noisy(&domain_mean(1), 0.1, &mut rng));
            assert_eq!(router.insert(p, u, 0.5), Ok(()));
        }
        let u = update("late", 1, domain_mean(1));
        assert_eq!(router.insert(p, u.clone(), 0.5), Err(Refusal::Full));
        assert_eq!(router.insert(p, u, 0.9), Ok(()));
        let table = router.aggregate().table;
        assert_eq!(table.domains().count(), MAX_DOMAINS);
        assert!(table.centroid(&tag("late")).is_some());
    }
}
