//! Routing a query to the nearest domain centroid.
//!
//! A [`RoutingTable`] holds one mean vector per domain (the aggregate of the federated router, or
//! centroids an operator declares). It ranks domains by cosine in the space centred on the mean of
//! the domains' means: query q scores cos(q − centre, mean_d − centre) for domain d. MiniLM
//! embeddings share a large common direction (any English question resembles any other), which
//! compresses raw cosines; centring removes it. This is an empirical choice: on the labelled set
//! (node/tests/data/domains.json, centroids from the 40 training queries per domain) it lifts
//! accuracy over raw cosine from 95.8% to 97.5%, and by 2–3.5 points when the centroids carry
//! differential-privacy noise. The winner must still be adequate: its raw cosine to the query must
//! reach [`MIN_SIMILARITY`], else no expert fits and the query goes to a general model.

use super::{
    DomainTag, ExpertsError, check_dim, check_embedding, cosine, dot, mean, normalized, sub,
};

/// Least raw cosine between a query and the chosen domain's centroid: about 1/√384, what a
/// random direction scores at one standard deviation, so below it a query bears no measurable
/// relation to the domain. MiniLM cannot do much better: on the labelled set
/// (node/tests/data/domains.json) held-out queries score as low as 0.05 with their own domain
/// while unrelated questions score 0.03–0.26 with the nearest one; this floor refuses 1 of 120
/// held-out and 1 of 24 unrelated queries. Telling "no expert fits" apart needs a general domain
/// whose centroid attracts such queries, not a higher threshold.
pub const MIN_SIMILARITY: f32 = 0.05;

/// Where a query goes.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteChoice {
    /// The nearest domain.
    pub domain: DomainTag,
    /// Raw cosine between the query and that domain's centroid.
    pub similarity: f32,
    /// The next nearest domain, when there is one.
    pub runner_up: Option<DomainTag>,
}

#[derive(Clone, Debug)]
struct Entry {
    domain: DomainTag,
    /// Unit centroid.
    centroid: Vec<f32>,
    /// Unit direction of the mean minus the centre.
    offset: Vec<f32>,
}

/// Domain centroids ready for routing.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    dim: usize,
    centre: Vec<f32>,
    entries: Vec<Entry>,
}

impl RoutingTable {
    /// A table from each domain's mean vector (not necessarily unit). Domains whose mean has no
    /// direction are left out.
    pub fn new(dim: usize, means: Vec<(DomainTag, Vec<f32>)>) -> Result<Self, ExpertsError> {
        check_dim(dim)?;
        for (_, m) in &means {
            check_embedding(m, dim)?;
        }
        Ok(Self::from_checked(dim, means))
    }

    /// [`Self::new`] for a valid dimension and finite means of that dimension.
    pub(super) fn from_checked(dim: usize, means: Vec<(DomainTag, Vec<f32>)>) -> Self {
        let means: Vec<_> = means
            .into_iter()
            .filter_map(|(d, m)| normalized(&m).map(|c| (d, m, c)))
            .collect();
        // With a single domain there is no common component to remove.
        let centre = if means.len() >= 2 {
            mean(&means.iter().map(|(_, m, _)| m).collect::<Vec<_>>(), dim)
        } else {
            vec![0.0; dim]
        };
        let entries = means
            .into_iter()
            .map(|(domain, m, centroid)| Entry {
                domain,
                // Only a mean equal to the centre has no offset; its centroid stands in.
                offset: normalized(&sub(&m, &centre)).unwrap_or_else(|| centroid.clone()),
                centroid,
            })
            .collect();
        Self {
            dim,
            centre,
            entries,
        }
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Domains in the table.
    pub fn domains(&self) -> impl Iterator<Item = &DomainTag> {
        self.entries.iter().map(|e| &e.domain)
    }

    /// The unit centroid of `domain`.
    pub fn centroid(&self, domain: &DomainTag) -> Option<&[f32]> {
        self.entries
            .iter()
            .find(|e| &e.domain == domain)
            .map(|e| e.centroid.as_slice())
    }

    /// The nearest adequate domain for a query embedding; `None` when the table is empty, the
    /// query is not a valid embedding of this dimension, or the nearest domain is not adequate.
    pub fn route(&self, query: &[f32]) -> Option<RouteChoice> {
        check_embedding(query, self.dim).ok()?;
        let query = normalized(query)?;
        let centred = sub(&query, &self.centre);
        let mut ranked: Vec<(f32, &Entry)> = self
            .entries
            .iter()
            .map(|e| (cosine(&centred, &e.offset), e))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let best = ranked.first()?.1;
        let similarity = dot(&query, &best.centroid);
        (similarity >= MIN_SIMILARITY).then(|| RouteChoice {
            domain: best.domain.clone(),
            similarity,
            runner_up: ranked.get(1).map(|(_, e)| e.domain.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> DomainTag {
        s.parse().expect("tag")
    }

    #[test]
    fn queries_go_to_the_nearest_centroid() {
        let table = RoutingTable::new(
            3,
            vec![
                (tag("a"), vec![0.6, 0.0, 0.3]),
                (tag("b"), vec![0.0, 0.6, 0.3]),
            ],
        )
        .expect("table");
        let choice = table.route(&[0.9, 0.1, 0.4]).expect("routed");
        assert_eq!(choice.domain, tag("a"));
        assert_eq!(choice.runner_up, Some(tag("b")));
        assert!(choice.similarity > 0.8);
        assert_eq!(
            table.route(&[0.1, 0.9, 0.4]).map(|c| c.domain),
            Some(tag("b"))
        );
    }

    #[test]
    fn ranking_is_by_cosine_around_the_centre_of_the_means() {
        // Raw cosine prefers the short mean "x"; around the centre (0.4, 0.25, 0) the query falls
        // on the side of "y".
        let x = vec![0.3, 0.0, 0.0];
        let y = vec![0.5, 0.5, 0.0];
        let query = [1.0, 0.3, 0.0];
        assert!(cosine(&query, &x) > cosine(&query, &y));
        let table = RoutingTable::new(3, vec![(tag("x"), x), (tag("y"), y)]).expect("table");
        let choice = table.route(&query).expect("routed");
        assert_eq!(
            (choice.domain, choice.runner_up),
            (tag("y"), Some(tag("x")))
        );
        // The reported similarity is the raw cosine to the unit centroid.
        assert!((choice.similarity - cosine(&query, &[0.5, 0.5, 0.0])).abs() < 1e-6);
    }

    #[test]
    fn inadequate_or_invalid_queries_are_not_routed() {
        let table = RoutingTable::new(
            3,
            vec![
                (tag("a"), vec![1.0, 0.0, 0.0]),
                (tag("b"), vec![0.0, 1.0, 0.0]),
            ],
        )
        .expect("table");
        // Orthogonal to every centroid.
        assert_eq!(table.route(&[0.0, 0.0, 1.0]), None);
        assert_eq!(table.route(&[1.0, 0.0]), None);
        assert_eq!(table.route(&[f32::NAN, 0.0, 0.0]), None);
        assert_eq!(table.route(&[0.0, 0.0, 0.0]), None);
        let empty = RoutingTable::new(3, Vec::new()).expect("table");
        assert_eq!(empty.route(&[1.0, 0.0, 0.0]), None);
        // A single domain routes by its raw centroid.
        let single = RoutingTable::new(3, vec![(tag("a"), vec![0.5, 0.0, 0.0])]).expect("table");
        assert_eq!(
            single.route(&[1.0, 0.2, 0.0]).map(|c| c.domain),
            Some(tag("a"))
        );
        assert!(RoutingTable::new(3, vec![(tag("a"), vec![1.0, 0.0])]).is_err());
        assert!(RoutingTable::new(0, Vec::new()).is_err());
    }
}
