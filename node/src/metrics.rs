//! Prometheus metrics (prometheus-client, OpenMetrics text), served at `GET /metrics` on the HTTP port.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `mycel_peers` | gauge | connected peers |
//! | `mycel_peers_up` | gauge | connected peers whose heartbeats are current |
//! | `mycel_connections` | gauge | established libp2p connections |
//! | `mycel_gossip_messages_total{outcome}` | counter | gossip messages `accepted` or `rejected` |
//! | `mycel_peers_pruned_total` | counter | connections closed to keep the shortlist and random pool of peers |
//! | `mycel_heartbeats_sent_total` / `mycel_heartbeats_received_total` | counter | heartbeats published / accepted |
//! | `mycel_inference_requests_total{route}` | counter | requests asked here (`local`, `remote`) or served for peers (`inbound`) |
//! | `mycel_inference_failures_total` | counter | requests asked here that ended without an answer |
//! | `mycel_inference_latency_seconds` | histogram | time from request to complete answer (asked here) |
//! | `mycel_inference_tokens_total` | counter | completion tokens of answers delivered here |
//! | `mycel_inference_failovers_total` | counter | mid-answer switches to another provider |
//! | `mycel_inference_cache_hits_total` | counter | requests answered from the response cache (no model ran) |
//! | `mycel_pipeline_route_hops` | histogram | shard servers on the route of each pipeline session asked here |
//! | `mycel_pipeline_failovers_total` | counter | pipeline hops replaced after their server failed |
//! | `mycel_pipeline_span_disputes_total` | counter | replayed steps whose output contradicts a failed server's commitment |
//! | `mycel_shard_layer_coverage{model,layer}` | gauge | live shard servers per layer, as this shard server sees them |
//! | `mycel_manifests_received_total{outcome}` | counter | model manifests from gossip or RPC: `new`, `known`, `stale`, `full`, `invalid` |
//! | `mycel_manifest_adoptions_total` | counter | model versions adopted from trusted manifests |
//! | `mycel_manifest_adoption_failures_total` | counter | adoptions that failed (fetch, hash or size mismatch, load); the old version kept serving |
//!
//! libp2p's own swarm and protocol metrics (libp2p-metrics: connections, identify, Kademlia, ping,
//! gossipsub) are in the same registry under the `libp2p_` prefix.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Content type of the `/metrics` response.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Smallest latency bucket (seconds); buckets double from here.
const LATENCY_BUCKET_START: f64 = 0.01;
/// Number of latency buckets (0.01 s … ~82 s).
const LATENCY_BUCKETS: u16 = 14;

/// Label set of a counter family: one `(name, value)` pair.
type Labels = Vec<(&'static str, &'static str)>;

/// Where an inference request ran, as seen by this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Asked here, ran on this node's model.
    Local,
    /// Asked here, ran on a provider.
    Remote,
    /// Asked by a peer, ran here.
    Inbound,
    /// Asked here, ran on a pipeline of shard servers.
    Pipeline,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Local => "local",
            Route::Remote => "remote",
            Route::Inbound => "inbound",
            Route::Pipeline => "pipeline",
        }
    }
}

/// libp2p's event-derived metrics, recorded by the swarm actor.
pub struct Libp2pMetrics(pub libp2p::metrics::Metrics);

impl std::fmt::Debug for Libp2pMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Libp2pMetrics")
    }
}

/// The node's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// libp2p swarm and protocol metrics (same registry).
    pub libp2p: Libp2pMetrics,
    /// Connected peers.
    pub peers: Gauge,
    /// Connected peers with current heartbeats.
    pub peers_up: Gauge,
    /// Established connections.
    pub connections: Gauge,
    gossip: Family<Labels, Counter>,
    /// Peers disconnected to keep the shortlist and random pool.
    pub peers_pruned: Counter,
    /// Heartbeats published.
    pub heartbeats_sent: Counter,
    /// Heartbeats accepted from peers.
    pub heartbeats_received: Counter,
    requests: Family<Labels, Counter>,
    /// Requests asked here that ended without an answer.
    pub failures: Counter,
    /// Request-to-answer latency of requests asked here.
    pub latency: Histogram,
    /// Completion tokens of answers delivered here.
    pub tokens: Counter,
    /// Mid-answer provider switches.
    pub failovers: Counter,
    /// Requests answered from the response cache.
    pub cache_hits: Counter,
    /// Shard servers per pipeline route.
    pub route_hops: Histogram,
    /// Pipeline hops replaced after a failure.
    pub pipeline_failovers: Counter,
    /// Replayed steps contradicting a failed server's commitment.
    pub span_disputes: Counter,
    coverage: Family<Vec<(String, String)>, Gauge>,
    manifests_received: Family<Labels, Counter>,
    /// Model versions adopted from trusted manifests.
    pub manifest_adoptions: Counter,
    /// Adoptions that failed (the old version kept serving).
    pub manifest_adoption_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh metrics, all registered under the `mycel` prefix.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let libp2p = Libp2pMetrics(libp2p::metrics::Metrics::new(&mut root));
        let reg = root.sub_registry_with_prefix("mycel");
        let peers = Gauge::default();
        let peers_up = Gauge::default();
        let connections = Gauge::default();
        let gossip = Family::<Labels, Counter>::default();
        let heartbeats_sent = Counter::default();
        let peers_pruned = Counter::default();
        let heartbeats_received = Counter::default();
        let requests = Family::<Labels, Counter>::default();
        let failures = Counter::default();
        let latency = Histogram::new(exponential_buckets(
            LATENCY_BUCKET_START,
            2.0,
            LATENCY_BUCKETS,
        ));
        let tokens = Counter::default();
        let failovers = Counter::default();
        let cache_hits = Counter::default();
        let route_hops = Histogram::new(prometheus_client::metrics::histogram::linear_buckets(
            1.0, 1.0, 8,
        ));
        let pipeline_failovers = Counter::default();
        let span_disputes = Counter::default();
        let coverage = Family::<Vec<(String, String)>, Gauge>::default();
        let manifests_received = Family::<Labels, Counter>::default();
        let manifest_adoptions = Counter::default();
        let manifest_adoption_failures = Counter::default();
        reg.register(
            "manifests_received",
            "Model manifests received, by outcome (new, known, stale, full, invalid)",
            manifests_received.clone(),
        );
        reg.register(
            "manifest_adoptions",
            "Model versions adopted from trusted manifests",
            manifest_adoptions.clone(),
        );
        reg.register(
            "manifest_adoption_failures",
            "Adoptions of trusted manifests that failed; the old version kept serving",
            manifest_adoption_failures.clone(),
        );
        reg.register(
            "pipeline_route_hops",
            "Shard servers on the route of each pipeline session asked here",
            route_hops.clone(),
        );
        reg.register(
            "pipeline_failovers",
            "Pipeline hops replaced after their server failed",
            pipeline_failovers.clone(),
        );
        reg.register(
            "pipeline_span_disputes",
            "Replayed steps whose output contradicts a failed server's commitment",
            span_disputes.clone(),
        );
        reg.register(
            "shard_layer_coverage",
            "Live shard servers per layer, as seen here",
            coverage.clone(),
        );
        reg.register("peers", "Connected peers", peers.clone());
        reg.register(
            "peers_up",
            "Connected peers whose heartbeats are current",
            peers_up.clone(),
        );
        reg.register(
            "connections",
            "Established libp2p connections",
            connections.clone(),
        );
        reg.register(
            "gossip_messages",
            "Gossip messages by validation outcome",
            gossip.clone(),
        );
        reg.register(
            "peers_pruned",
            "Peers disconnected to keep the shortlist and random pool",
            peers_pruned.clone(),
        );
        reg.register(
            "heartbeats_sent",
            "Heartbeats published",
            heartbeats_sent.clone(),
        );
        reg.register(
            "heartbeats_received",
            "Heartbeats accepted from peers",
            heartbeats_received.clone(),
        );
        reg.register(
            "inference_requests",
            "Inference requests by route",
            requests.clone(),
        );
        reg.register(
            "inference_failures",
            "Inference requests asked here that ended without an answer",
            failures.clone(),
        );
        reg.register(
            "inference_latency_seconds",
            "Time from request to complete answer, for requests asked here",
            latency.clone(),
        );
        reg.register(
            "inference_tokens",
            "Completion tokens of answers delivered here",
            tokens.clone(),
        );
        reg.register(
            "inference_failovers",
            "Mid-answer switches to another provider",
            failovers.clone(),
        );
        reg.register(
            "inference_cache_hits",
            "Requests answered from the response cache without running a model",
            cache_hits.clone(),
        );
        Self {
            registry: root,
            libp2p,
            peers,
            peers_up,
            connections,
            gossip,
            peers_pruned,
            heartbeats_sent,
            heartbeats_received,
            requests,
            failures,
            latency,
            tokens,
            failovers,
            cache_hits,
            route_hops,
            pipeline_failovers,
            span_disputes,
            coverage,
            manifests_received,
            manifest_adoptions,
            manifest_adoption_failures,
        }
    }

    /// Counts a model manifest by what became of it.
    pub fn manifest(&self, received: &crate::manifest::Received) {
        use crate::manifest::{Offer, Received};
        let outcome = match received {
            Received::Invalid(_) => "invalid",
            Received::Valid(Offer::New) => "new",
            Received::Valid(Offer::Known) => "known",
            Received::Valid(Offer::Stale) => "stale",
            Received::Valid(Offer::Full) => "full",
        };
        self.manifests_received
            .get_or_create(&vec![("outcome", outcome)])
            .inc();
    }

    /// Sets the live servers per layer of `model`.
    pub fn set_coverage(&self, model: &str, per_layer: &[u32]) {
        for (layer, n) in per_layer.iter().enumerate() {
            self.coverage
                .get_or_create(&vec![
                    ("model".to_string(), model.to_string()),
                    ("layer".to_string(), layer.to_string()),
                ])
                .set(i64::from(*n));
        }
    }

    /// Counts a gossip message as accepted or rejected.
    pub fn gossip(&self, accepted: bool) {
        let outcome = if accepted { "accepted" } else { "rejected" };
        self.gossip.get_or_create(&vec![("outcome", outcome)]).inc();
    }

    /// Counts an inference request.
    pub fn request(&self, route: Route) {
        self.requests
            .get_or_create(&vec![("route", route.label())])
            .inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_with_labels() {
        let m = Metrics::new();
        m.request(Route::Remote);
        m.gossip(false);
        m.latency.observe(0.5);
        let text = m.encode();
        assert!(text.contains("mycel_inference_requests_total{route=\"remote\"} 1"));
        assert!(text.contains("mycel_gossip_messages_total{outcome=\"rejected\"} 1"));
        assert!(text.contains("mycel_inference_latency_seconds_count 1"));
        assert!(text.ends_with("# EOF\n"));
    }
}
