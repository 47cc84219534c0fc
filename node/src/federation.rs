//! The node's expert router (specs/models.md, "Experts and the federated router"): the embedding
//! model, the node's local labelled examples, and the [`FederatedRouter`] fed by peers' signed
//! centroid updates from gossip.
//!
//! Every `update_interval` the node releases one differentially private update per local domain on
//! [`CENTROID_TOPIC`] (its raw examples never leave it) and counts the round in its privacy
//! accountant. Updates from peers arrive through the swarm actor, already verified
//! ([`CentroidUpdate::verify`]), and are weighted by the sender's ledger reputation (1 without a
//! ledger). A query is routed by embedding it and asking the aggregated [`RoutingTable`], which is
//! recomputed only when an update arrived since the last query.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libp2p::PeerId;
use mycel_identity::Keypair;
use mycel_models::EmbeddingModel;
use tokio::sync::mpsc;

use crate::error::{NodeError, Result};
use crate::experts::{
    Budget, CENTROID_TOPIC, CentroidUpdate, DomainTag, DpParams, FederatedRouter, LocalData,
    PrivacyAccountant, Rejection, RouteChoice, RoutingTable, clipped_mean, local_update,
};

/// Verified updates waiting for the router; more are dropped (they come again next round).
pub const INBOX_CAPACITY: usize = 256;
/// Most local examples read from the examples file.
pub const MAX_EXAMPLES: usize = 10_000;
/// Largest examples file.
const MAX_EXAMPLES_BYTES: u64 = 16 * 1024 * 1024;

/// A peer's verified update, as the swarm actor hands it over.
pub type Inbound = (PeerId, CentroidUpdate);

struct State {
    router: FederatedRouter,
    /// The aggregate, rebuilt lazily after a change.
    table: Option<(RoutingTable, Vec<Rejection>)>,
    accountant: PrivacyAccountant,
    round: u64,
}

/// The expert router of one node.
pub struct Federation {
    embedder: Arc<EmbeddingModel>,
    local: LocalData,
    dp: DpParams,
    /// Whether updates carry the noise of `dp` (false: plain clipped means, not private).
    noise: bool,
    state: Mutex<State>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("domains", &self.local.domains().count())
            .finish()
    }
}

/// What `mycel_router` reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RouterStatus {
    /// Domains the aggregate routes to, with the peer updates held for each.
    pub domains: Vec<(String, usize)>,
    /// Peer updates the robust aggregation left out: `(peer, domain, rule)`.
    pub rejected: Vec<(String, String, String)>,
    /// Update rounds this node released.
    pub rounds: u64,
    /// Privacy budget those rounds spent, (ε, δ); none when updates are not noised.
    pub spent: Option<(f64, f64)>,
}

impl Federation {
    /// A router over `embedder` with local `examples` (domain → texts), embedded now; updates are
    /// noised for `dp` when `noise`. Blocking.
    pub fn new(
        embedder: Arc<EmbeddingModel>,
        examples: &BTreeMap<String, Vec<String>>,
        dp: DpParams,
        noise: bool,
    ) -> Result<Self> {
        let cfg = |e: crate::experts::ExpertsError| NodeError::Config(format!("router: {e}"));
        let dim = embedder.dim();
        let mut local = LocalData::new(dim).map_err(cfg)?;
        let mut router = FederatedRouter::new(dim).map_err(cfg)?;
        for (domain, texts) in examples {
            let tag: DomainTag = domain.parse().map_err(cfg)?;
            for chunk in texts.chunks(mycel_models::embed::MAX_EMBED_BATCH) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                for e in embedder.embed(&refs)? {
                    local.add(&tag, e).map_err(cfg)?;
                }
            }
            let own = clipped_mean(local.examples(&tag), dp.clip_norm()).map_err(cfg)?;
            router.set_local(tag, own).map_err(cfg)?;
        }
        Ok(Self {
            embedder,
            local,
            dp,
            noise,
            state: Mutex::new(State {
                router,
                table: None,
                accountant: PrivacyAccountant::new(dp),
                round: 0,
            }),
        })
    }

    /// Reads a local examples file: JSON `{"<domain>": ["text", …], …}` (≤ [`MAX_EXAMPLES`]).
    pub fn read_examples(path: &Path) -> Result<BTreeMap<String, Vec<String>>> {
        let len = std::fs::metadata(path)
            .map_err(|e| NodeError::io(path, e))?
            .len();
        if len > MAX_EXAMPLES_BYTES {
            return Err(NodeError::Config(format!(
                "{} is larger than {MAX_EXAMPLES_BYTES} bytes",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| NodeError::io(path, e))?;
        let map: BTreeMap<String, Vec<String>> = serde_json::from_str(&text).map_err(|e| {
            NodeError::Config(format!(
                "{}: expected {{\"<domain>\": [\"text\", …]}}: {e}",
                path.display()
            ))
        })?;
        if map.values().map(Vec::len).sum::<usize>() > MAX_EXAMPLES {
            return Err(NodeError::Config(format!(
                "{} holds more than {MAX_EXAMPLES} examples",
                path.display()
            )));
        }
        Ok(map)
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.embedder.dim()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Embeds texts (blocking).
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(self.embedder.embed(texts)?)
    }

    /// The domain nearest to `query`, or none when no domain is similar enough. Blocking.
    pub fn route(&self, query: &str) -> Result<Option<RouteChoice>> {
        let q = self
            .embed(&[query])?
            .pop()
            .ok_or_else(|| NodeError::Inference("the embedding model returned nothing".into()))?;
        Ok(self.table().route(&q))
    }

    /// Domains ordered by similarity to `query`, nearest first, with their cosine. Blocking.
    pub fn rank(&self, query: &str) -> Result<Vec<(DomainTag, f32)>> {
        let q = self
            .embed(&[query])?
            .pop()
            .ok_or_else(|| NodeError::Inference("the embedding model returned nothing".into()))?;
        let table = self.table();
        let mut ranked: Vec<(DomainTag, f32)> = table
            .domains()
            .filter_map(|d| {
                let c = table.centroid(d)?;
                Some((d.clone(), mycel_models::embed::cosine(&q, c)))
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(ranked)
    }

    fn table(&self) -> RoutingTable {
        let mut s = self.lock();
        if let Some((t, _)) = &s.table {
            return t.clone();
        }
        let agg = s.router.aggregate();
        for r in &agg.rejected {
            tracing::info!(peer = %r.peer, domain = %r.domain, rule = ?r.rule, "centroid update left out of the aggregate");
        }
        s.table = Some((agg.table.clone(), agg.rejected));
        agg.table
    }

    /// Takes a verified update from `peer` with the sender's `reputation` in [0, 1].
    pub fn receive(&self, peer: PeerId, update: CentroidUpdate, reputation: f64) {
        let mut s = self.lock();
        match s.router.insert(peer, update, reputation) {
            Ok(()) => s.table = None,
            Err(e) => tracing::debug!(%peer, error = %e, "centroid update not kept"),
        }
    }

    /// This round's updates, one per local domain with enough examples; counts the round.
    pub fn release(&self) -> Vec<CentroidUpdate> {
        let mut rng = rand::rng();
        let mut s = self.lock();
        s.round += 1;
        let round = s.round;
        let updates: Vec<CentroidUpdate> = self
            .local
            .domains()
            .filter_map(|d| {
                let examples = self.local.examples(d);
                let update = if self.noise {
                    local_update(d, round, examples, &self.dp, &mut rng)
                } else {
                    clipped_mean(examples, self.dp.clip_norm()).map(|vector| CentroidUpdate {
                        domain: d.clone(),
                        round,
                        vector,
                        examples: coarse_count(examples.len()),
                    })
                };
                update
                    .map_err(|e| tracing::warn!(domain = %d, error = %e, "no centroid update"))
                    .ok()
            })
            .collect();
        if !updates.is_empty() && self.noise {
            s.accountant.record_round();
        }
        updates
    }

    /// Counters for `mycel_router`.
    pub fn status(&self) -> RouterStatus {
        self.table();
        let s = self.lock();
        let Budget { epsilon, delta, .. } = s.accountant.spent();
        let (domains, rejected) = match &s.table {
            Some((t, rej)) => (
                t.domains()
                    .map(|d| (d.to_string(), s.router.updates(d)))
                    .collect(),
                rej.iter()
                    .map(|r| {
                        (
                            r.peer.to_base58(),
                            r.domain.to_string(),
                            format!("{:?}", r.rule).to_lowercase(),
                        )
                    })
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        RouterStatus {
            domains,
            rejected,
            rounds: s.round,
            spent: self.noise.then_some((epsilon, delta)),
        }
    }
}

/// `n` rounded down to a power of two: example counts are published only coarsely.
fn coarse_count(n: usize) -> u32 {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    if n == 0 { 0 } else { 1 << n.ilog2() }
}

/// Runs the router's duties until the network stops: releases updates every `every`, and feeds
/// peers' updates from `inbox` in, weighted by `reputation`.
pub async fn run(
    federation: Arc<Federation>,
    node: crate::Node,
    key: Keypair,
    mut inbox: mpsc::Receiver<Inbound>,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let f = federation.clone();
                let Ok(updates) = tokio::task::spawn_blocking(move || f.release()).await else {
                    return;
                };
                for u in updates {
                    if node.network().publish(CENTROID_TOPIC, u.sign(&key)).await.is_err() {
                        return;
                    }
                }
            }
            msg = inbox.recv() => {
                let Some((peer, update)) = msg else { return };
                let reputation = node.reputation(&peer).await;
                federation.receive(peer, update, reputation);
            }
        }
    }
}
