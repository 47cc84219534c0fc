//! Route planning for sharded pipelines: servers covering layers 0..L at the lowest expected latency.
//!
//! A shard server runs exactly its announced layer range `[from, to)`, never a sub-range, so a route
//! is a chain of [`ShardOffer`]s whose ranges meet end to start and cover the requested interval
//! exactly (specs/models.md, "Route planning"). Each hop costs, per generated token,
//! [`expected_cost_ms`]: its round trip plus its layers' compute time, the compute slowed by the
//! generations already queued there. [`plan`] returns the cheapest chain, fewer hops on equal cost,
//! then the smaller peer id, so the same offers always give the same route whatever their order.
//! Failover plans a sub-interval: the range of the failed hop, with the failed peer excluded.
//!
//! Pure: the caller builds the offers from heartbeats (ranges, compute time, load) and ping EWMAs.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use libp2p::PeerId;

/// Most offers [`plan`] considers; later ones are ignored. The caller builds the list from
/// heartbeats, one or a few ranges per live peer; the cap bounds the work whatever they claim.
pub const MAX_OFFERS: usize = 1024;

/// Round trip assumed for a server that has not answered a ping yet, in ms: the provider
/// ranking's [`crate::peers::UNKNOWN_RTT`], pessimistic so that measured nearby servers win.
pub const UNKNOWN_RTT_MS: f64 = crate::peers::UNKNOWN_RTT.as_secs_f64() * 1000.0;

/// Compute time per layer and token assumed for a server that does not report it, in ms. About four
/// times the measured CPU cost of the 30-layer registry model (~25 tok/s on one thread,
/// specs/models.md §7), so servers that report their speed are preferred.
pub const UNKNOWN_LAYER_MS: f64 = 5.0;

/// Slow-down of a server's compute per generation already queued or running there: the server
/// shares its cores among them, so with `load` others a step takes `1 + load` times as long.
pub const LOAD_PENALTY: f64 = 1.0;

/// A server's announcement that it runs layers `[from, to)`, with what the caller knows of it.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardOffer {
    /// The server.
    pub peer: PeerId,
    /// First layer it runs.
    pub from: u32,
    /// Layer after the last one it runs.
    pub to: u32,
    /// Round-trip EWMA in ms; `None` before the first ping answer.
    pub rtt_ms: Option<f64>,
    /// Compute time per layer per token in ms, from its heartbeat; `None` when not reported.
    pub layer_ms: Option<f64>,
    /// Generations running or queued there, from its heartbeat.
    pub load: u32,
}

/// One step of a route: send the hidden states of layer `from` to `peer`, get those of layer `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The server.
    pub peer: PeerId,
    /// First layer it runs.
    pub from: u32,
    /// Layer after the last one it runs.
    pub to: u32,
}

/// Expected time one token step spends at `offer`, in ms: `rtt + (to − from) · layer_ms ·
/// (1 + load · LOAD_PENALTY)`, with [`UNKNOWN_RTT_MS`] and [`UNKNOWN_LAYER_MS`] for values that are
/// missing, negative or not finite.
pub fn expected_cost_ms(offer: &ShardOffer) -> f64 {
    let rtt = known(offer.rtt_ms).unwrap_or(UNKNOWN_RTT_MS);
    let layer = known(offer.layer_ms).unwrap_or(UNKNOWN_LAYER_MS);
    let layers = f64::from(offer.to.saturating_sub(offer.from));
    rtt + layers * layer * (1.0 + f64::from(offer.load) * LOAD_PENALTY)
}

/// The cheapest chain of offers covering exactly `[from, to)`, in layer order, never using a peer in
/// `exclude`; `None` when no chain exists or the interval is empty.
///
/// Offers with `from >= to` are ignored, as are offers beyond the first [`MAX_OFFERS`]. A peer may
/// appear with several ranges, even several times in one route (each hop is its own round trip).
/// On equal cost the route with fewer hops wins, then the one whose last hop has the smaller peer id.
pub fn plan(offers: &[ShardOffer], from: u32, to: u32, exclude: &[PeerId]) -> Option<Vec<Hop>> {
    if from >= to {
        return None;
    }
    let mut usable: Vec<(&ShardOffer, u64)> = offers
        .iter()
        .take(MAX_OFFERS)
        .filter(|o| from <= o.from && o.from < o.to && o.to <= to && !exclude.contains(&o.peer))
        .map(|o| (o, cost_us(o)))
        .collect();
    // Ranges only go forward: once the offers starting below a boundary are relaxed, the best way
    // to reach that boundary is final (a shortest path in a DAG).
    usable.sort_unstable_by_key(|(o, _)| o.from);

    let mut best = BTreeMap::from([(from, Label::START)]);
    for (i, (offer, cost)) in usable.iter().enumerate() {
        let Some(at) = best.get(&offer.from) else {
            continue;
        };
        let label = Label {
            cost_us: at.cost_us.saturating_add(*cost),
            hops: at.hops + 1,
            via: Some(i),
        };
        match best.entry(offer.to) {
            Entry::Vacant(e) => {
                e.insert(label);
            }
            Entry::Occupied(mut e) => {
                if label.key(&usable) < e.get().key(&usable) {
                    e.insert(label);
                }
            }
        }
    }

    let mut route = Vec::new();
    let mut at = to;
    while let Some(i) = best.get(&at)?.via {
        let (offer, _) = usable[i];
        route.push(Hop {
            peer: offer.peer,
            from: offer.from,
            to: offer.to,
        });
        at = offer.from;
    }
    route.reverse();
    Some(route)
}

/// `Some` for a usable measurement.
fn known(value: Option<f64>) -> Option<f64> {
    value.filter(|v| v.is_finite() && *v >= 0.0)
}

/// [`expected_cost_ms`] in whole µs: integer sums make equal-cost routes tie exactly, whatever the
/// order of additions (`as` saturates, so absurd claims cost `u64::MAX`).
fn cost_us(offer: &ShardOffer) -> u64 {
    (expected_cost_ms(offer) * 1000.0).round() as u64
}

/// The best way found to reach a layer boundary.
#[derive(Clone, Copy)]
struct Label {
    cost_us: u64,
    hops: u32,
    /// Index of the last offer taken (in the sorted usable list); `None` at the start.
    via: Option<usize>,
}

impl Label {
    const START: Self = Self {
        cost_us: 0,
        hops: 0,
        via: None,
    };

    /// Order of preference: cheaper, then fewer hops, then the last hop's peer id and first layer.
    /// Two labels of one boundary with equal keys come from the same (peer, range) at equal cost.
    fn key(&self, usable: &[(&ShardOffer, u64)]) -> (u64, u32, Option<(PeerId, u32)>) {
        let last = self.via.map(|i| (usable[i].0.peer, usable[i].0.from));
        (self.cost_us, self.hops, last)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn peer(i: u8) -> PeerId {
        match libp2p::identity::Keypair::ed25519_from_bytes([i; 32]) {
            Ok(k) => k.public().to_peer_id(),
            Err(e) => panic!("test key: {e}"),
        }
    }

    fn offer(p: u8, from: u32, to: u32, rtt_ms: f64) -> ShardOffer {
        ShardOffer {
            peer: peer(p),
            from,
            to,
            rtt_ms: Some(rtt_ms),
            layer_ms: Some(1.0),
            load: 0,
        }
    }

    fn ranges(route: &[Hop]) -> Vec<(u8, u32, u32)> {
        let ids: Vec<PeerId> = (0..16).map(peer).collect();
        route
            .iter()
            .map(|h| {
                let i = ids.iter().position(|p| *p == h.peer).unwrap_or(usize::MAX);
                (u8::try_from(i).unwrap_or(u8::MAX), h.from, h.to)
            })
            .collect()
    }

    #[test]
    fn cost_adds_rtt_and_loaded_compute_with_pessimistic_defaults() {
        let mut o = offer(1, 0, 10, 20.0);
        o.layer_ms = Some(2.0);
        assert_eq!(expected_cost_ms(&o), 20.0 + 10.0 * 2.0);
        o.load = 3;
        assert_eq!(expected_cost_ms(&o), 20.0 + 10.0 * 2.0 * 4.0);
        o.load = 0;
        o.rtt_ms = None;
        o.layer_ms = Some(f64::NAN);
        assert_eq!(
            expected_cost_ms(&o),
            UNKNOWN_RTT_MS + 10.0 * UNKNOWN_LAYER_MS
        );
        o.rtt_ms = Some(-5.0);
        o.layer_ms = Some(f64::INFINITY);
        assert_eq!(
            expected_cost_ms(&o),
            UNKNOWN_RTT_MS + 10.0 * UNKNOWN_LAYER_MS
        );
        assert_eq!(UNKNOWN_RTT_MS, 250.0);
    }

    #[test]
    fn exact_chain_in_layer_order() {
        let offers = [
            offer(3, 20, 30, 10.0),
            offer(1, 0, 10, 10.0),
            offer(2, 10, 20, 10.0),
        ];
        let route = plan(&offers, 0, 30, &[]);
        assert_eq!(
            ranges(&route.unwrap_or_default()),
            [(1, 0, 10), (2, 10, 20), (3, 20, 30)]
        );
    }

    #[test]
    fn gaps_and_empty_intervals_have_no_route() {
        let offers = [offer(1, 0, 10, 10.0), offer(2, 15, 30, 10.0)];
        assert_eq!(plan(&offers, 0, 30, &[]), None);
        let short = [offer(1, 0, 10, 10.0), offer(2, 10, 20, 10.0)];
        assert_eq!(plan(&short, 0, 30, &[]), None);
        assert_eq!(plan(&short, 10, 10, &[]), None);
        assert_eq!(plan(&short, 20, 10, &[]), None);
        assert_eq!(plan(&[], 0, 30, &[]), None);
    }

    #[test]
    fn invalid_offers_are_ignored() {
        let offers = [
            offer(1, 10, 10, 0.0),
            offer(2, 20, 10, 0.0),
            offer(3, 0, 30, 10.0),
        ];
        let route = plan(&offers, 0, 30, &[]).unwrap_or_default();
        assert_eq!(ranges(&route), [(3, 0, 30)]);
    }

    #[test]
    fn offers_beyond_the_cap_are_ignored() {
        let mut offers = vec![offer(1, 0, 5, 10.0); MAX_OFFERS];
        offers.push(offer(2, 0, 30, 10.0));
        assert_eq!(plan(&offers, 0, 30, &[]), None);
        offers[0] = offer(2, 0, 30, 10.0);
        assert!(plan(&offers, 0, 30, &[]).is_some());
    }

    #[test]
    fn excluded_peers_are_never_used() {
        let offers = [offer(1, 0, 30, 5.0), offer(2, 0, 30, 50.0)];
        let route = plan(&offers, 0, 30, &[peer(1)]).unwrap_or_default();
        assert_eq!(ranges(&route), [(2, 0, 30)]);
        assert_eq!(plan(&offers, 0, 30, &[peer(2), peer(1)]), None);
    }

    #[test]
    fn prefers_low_latency_and_measured_peers() {
        let offers = [offer(1, 0, 30, 100.0), offer(2, 0, 30, 10.0)];
        let route = plan(&offers, 0, 30, &[]).unwrap_or_default();
        assert_eq!(ranges(&route), [(2, 0, 30)]);

        let mut unmeasured = offer(3, 0, 30, 0.0);
        unmeasured.rtt_ms = None;
        let offers = [unmeasured, offer(1, 0, 30, 100.0)];
        let route = plan(&offers, 0, 30, &[]).unwrap_or_default();
        assert_eq!(ranges(&route), [(1, 0, 30)]);
    }

    #[test]
    fn prefers_a_lightly_loaded_chain() {
        let mut busy = offer(1, 0, 30, 10.0);
        busy.load = 4;
        let offers = [busy, offer(2, 0, 15, 10.0), offer(3, 15, 30, 10.0)];
        let route = plan(&offers, 0, 30, &[]).unwrap_or_default();
        assert_eq!(ranges(&route), [(2, 0, 15), (3, 15, 30)]);
    }

    #[test]
    fn prefers_fewer_hops_on_equal_cost() {
        // 20 + 30·1 = 50 in one hop; (10 + 15) + (10 + 15) = 50 in two.
        let offers = [
            offer(2, 0, 15, 10.0),
            offer(3, 15, 30, 10.0),
            offer(1, 0, 30, 20.0),
        ];
        let route = plan(&offers, 0, 30, &[]).unwrap_or_default();
        assert_eq!(ranges(&route), [(1, 0, 30)]);
    }

    #[test]
    fn equal_routes_tie_break_on_peer_id_whatever_the_order() {
        let (a, b) = (offer(1, 0, 30, 10.0), offer(2, 0, 30, 10.0));
        let smaller = if a.peer < b.peer { a.peer } else { b.peer };
        for offers in [[a.clone(), b.clone()], [b.clone(), a.clone()]] {
            let route = plan(&offers, 0, 30, &[]).unwrap_or_default();
            assert_eq!(route.iter().map(|h| h.peer).collect::<Vec<_>>(), [smaller]);
        }
    }

    #[test]
    fn overlapping_ranges_chain_only_where_they_meet() {
        let offers = [
            offer(1, 0, 10, 10.0),
            offer(2, 5, 20, 1.0),
            offer(3, 10, 30, 10.0),
        ];
        let route = plan(&offers, 0, 30, &[]).unwrap_or_default();
        assert_eq!(ranges(&route), [(1, 0, 10), (3, 10, 30)]);

        let offers = [
            offer(1, 0, 10, 10.0),
            offer(2, 5, 20, 1.0),
            offer(3, 20, 30, 10.0),
        ];
        assert_eq!(plan(&offers, 0, 30, &[]), None);
    }

    #[test]
    fn one_peer_may_serve_several_ranges() {
        let offers = [
            offer(1, 0, 10, 5.0),
            offer(1, 10, 30, 5.0),
            offer(2, 0, 30, 200.0),
        ];
        let route = plan(&offers, 0, 30, &[]).unwrap_or_default();
        assert_eq!(ranges(&route), [(1, 0, 10), (1, 10, 30)]);
        // The same range announced twice: the cheaper announcement counts.
        let offers = [
            offer(1, 0, 30, 300.0),
            offer(1, 0, 30, 5.0),
            offer(2, 0, 30, 100.0),
        ];
        let route = plan(&offers, 0, 30, &[]).unwrap_or_default();
        assert_eq!(ranges(&route), [(1, 0, 30)]);
    }

    #[test]
    fn failover_replaces_one_range_by_a_chain_covering_exactly_it() {
        let offers = [
            offer(1, 0, 10, 10.0),
            offer(2, 10, 20, 10.0),
            offer(3, 20, 30, 10.0),
            offer(4, 5, 20, 1.0),
            offer(5, 10, 25, 1.0),
            offer(6, 10, 15, 10.0),
            offer(7, 15, 20, 10.0),
        ];
        let route = plan(&offers, 10, 20, &[peer(2)]).unwrap_or_default();
        assert_eq!(ranges(&route), [(6, 10, 15), (7, 15, 20)]);
        assert_eq!(plan(&offers, 10, 20, &[peer(2), peer(7)]), None);
    }

    /// Every chain covering `[from, to)` without excluded peers, as offer indices (small inputs).
    fn all_chains(
        offers: &[ShardOffer],
        from: u32,
        to: u32,
        exclude: &[PeerId],
    ) -> Vec<Vec<usize>> {
        if from == to {
            return vec![Vec::new()];
        }
        let mut out = Vec::new();
        for (i, o) in offers.iter().enumerate() {
            if o.from == from && o.from < o.to && o.to <= to && !exclude.contains(&o.peer) {
                for mut rest in all_chains(offers, o.to, to, exclude) {
                    rest.insert(0, i);
                    out.push(rest);
                }
            }
        }
        out
    }

    /// Cost of a route: each hop priced at the cheapest offer of its peer and range.
    fn route_cost(offers: &[ShardOffer], route: &[Hop]) -> Option<u64> {
        route.iter().try_fold(0u64, |sum, h| {
            let cheapest = offers
                .iter()
                .filter(|o| o.peer == h.peer && o.from == h.from && o.to == h.to)
                .map(cost_us)
                .min()?;
            Some(sum + cheapest)
        })
    }

    fn arb_offer(n_layers: u32) -> impl Strategy<Value = ShardOffer> {
        (
            0u8..5,
            0..n_layers,
            1..=n_layers,
            prop::option::of(prop::sample::select(vec![1.0, 5.0, 10.0, 30.0])),
            prop::option::of(prop::sample::select(vec![0.5, 1.0, 2.0])),
            0u32..3,
        )
            .prop_map(|(p, from, to, rtt_ms, layer_ms, load)| ShardOffer {
                peer: peer(p),
                from,
                to,
                rtt_ms,
                layer_ms,
                load,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn plan_is_a_cheapest_exact_chain(
            offers in prop::collection::vec(arb_offer(8), 0..10),
            bounds in (0u32..8, 1u32..=8),
            excluded in prop::collection::vec(0u8..5, 0..2),
        ) {
            let (from, to) = bounds;
            let exclude: Vec<PeerId> = excluded.into_iter().map(peer).collect();
            let chains = all_chains(&offers, from, to, &exclude);
            let Some(route) = plan(&offers, from, to, &exclude) else {
                prop_assert!(from >= to || chains.is_empty());
                return Ok(());
            };
            prop_assert!(!route.is_empty());
            prop_assert_eq!(route[0].from, from);
            prop_assert_eq!(route[route.len() - 1].to, to);
            for pair in route.windows(2) {
                prop_assert_eq!(pair[0].to, pair[1].from);
            }
            prop_assert!(route.iter().all(|h| h.from < h.to && !exclude.contains(&h.peer)));
            let cost = route_cost(&offers, &route);
            prop_assert!(cost.is_some(), "a hop matches no offer");
            let cost = cost.unwrap_or(u64::MAX);
            for chain in &chains {
                let other: u64 = chain.iter().map(|&i| cost_us(&offers[i])).sum();
                prop_assert!(cost <= other, "route {cost} µs, chain {chain:?} {other} µs");
                if cost == other {
                    prop_assert!(route.len() <= chain.len());
                }
            }
        }
    }
}
