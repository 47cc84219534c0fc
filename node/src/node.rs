//! A running node: identity, network handle, model host and the HTTP server, plus request routing
//! (serve locally when the model is loaded here, otherwise find a provider and ask it over libp2p).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mycel_identity::{Did, Keypair};
use mycel_models::{ChatFrontend, ChatModel};
use mycel_rpc_api::{ModelInfo, NodeInfo, PeerInfo};
use tokio::sync::{mpsc, oneshot};

use crate::chat::{ChatEvent, ChatJob, EVENT_CHANNEL_CAPACITY, ModelHost};
use crate::config::Config;
use crate::error::{NodeError, Result};
use crate::infer_stream::Opened;
use crate::ledger::{LedgerHandle, LedgerOptions, LedgerService};
use crate::metrics::{Metrics, Route};
use crate::network::{self, NetworkConfig, NetworkHandle};
use crate::wire::{InferErrorCode, InferResponse, PROVIDER_LOOKUP_TIMEOUT};

/// Suffix of a model name that asks for a sharded pipeline (`smollm2-135m-instruct@sharded`).
pub const SHARDED_SUFFIX: &str = "@sharded";
/// The model name that sends a query to the expert of the nearest domain (or, with an ensemble
/// size, to several experts).
pub const EXPERTS_MODEL: &str = "experts";
/// Most experts one ensemble request asks.
pub const MAX_ENSEMBLE: usize = 8;
/// Model frontends (tokenizer, template) a pipeline client keeps loaded.
const MAX_FRONTENDS: usize = 16;

/// Providers tried, one after another, before a remote request fails.
pub const MAX_REMOTE_ATTEMPTS: usize = 3;
/// Mid-answer provider switches per request before the answer fails.
pub const MAX_FAILOVERS: usize = 2;
/// Stake that makes a provider trusted with private jobs (or [`PRIVATE_MIN_REPUTATION`]).
pub const PRIVATE_MIN_STAKE: mycel_ledger::Credits = mycel_ledger::Credits::whole(100);
/// Reputation value ([`crate::scoring::Reputation::value`]) that makes a provider trusted with
/// private jobs.
pub const PRIVATE_MIN_REPUTATION: f64 = 0.5;
/// How long a shutdown lets running answers finish.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(20);
/// How long start-up waits for the listeners to report their addresses.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// Everything needed to start a node.
#[derive(Debug)]
pub struct StartOptions {
    /// The node key (its DID and PeerId name the node).
    pub key: Keypair,
    /// Configuration (models are taken from `models`, not from `config.models`).
    pub config: Config,
    /// Loaded models to serve, by id.
    pub models: BTreeMap<String, Arc<ChatModel>>,
    /// Where to write `node.json` (none: do not write it).
    pub info_file: Option<PathBuf>,
    /// The ledger to keep (none: this node keeps no ledger and refuses ledger requests).
    pub ledger: Option<LedgerOptions>,
    /// Layer ranges to serve to pipelines: models loaded with a range, by id.
    pub shards: BTreeMap<String, Arc<ChatModel>>,
    /// The models cache, where a pipeline client reads a model's tokenizer and where rebalancing
    /// loads other layer ranges (none: only models loaded here and `tiny` can be used that way).
    pub models_dir: Option<PathBuf>,
}

/// A chat answer in progress and who serves it.
#[derive(Debug)]
pub struct ChatStream {
    /// The job id: the completion id (`chatcmpl-…`) of the answer, for `mycel_jobStatus`.
    pub id: String,
    /// Whether the answer is replayed from the response cache (no model runs for it).
    pub cached: bool,
    /// DID of the serving node.
    pub served_by: Did,
    /// PeerId of the serving node.
    pub served_by_peer: PeerId,
    /// Whether the serving node is another node.
    pub remote: bool,
    /// The model.
    pub model: String,
    /// Deltas, then `Done` or `Failed`.
    pub events: mpsc::Receiver<ChatEvent>,
    /// How an expert or ensemble request was routed (the `mycel.routing` field of answers).
    pub routing: Option<serde_json::Value>,
}

struct Inner {
    did: Did,
    peer_id: PeerId,
    net: NetworkHandle,
    host: Arc<ModelHost>,
    http_url: String,
    infer_timeout: Duration,
    next_id: AtomicU64,
    metrics: Arc<Metrics>,
    ledger: Option<LedgerHandle>,
    rpc_token: Option<String>,
    jobs: Arc<crate::jobs::JobRegistry>,
    cache: Arc<crate::cache::ResponseCache>,
    models_dir: Option<PathBuf>,
    frontends: std::sync::Mutex<BTreeMap<String, Arc<ChatFrontend>>>,
    federation: Option<Arc<crate::federation::Federation>>,
    manifests: Arc<crate::manifest::ManifestBook>,
}

/// Cloneable handle to a running node, used by the HTTP and RPC layers.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("did", &self.inner.did)
            .finish()
    }
}

impl Node {
    /// The node's DID.
    pub fn did(&self) -> &Did {
        &self.inner.did
    }

    /// The node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    /// The network handle.
    pub fn network(&self) -> &NetworkHandle {
        &self.inner.net
    }

    /// Whether `token` is the node's configured RPC bearer token (constant-time comparison).
    pub fn rpc_token_matches(&self, token: &str) -> bool {
        let Some(mine) = &self.inner.rpc_token else {
            return false;
        };
        mine.len() == token.len()
            && mine
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// The ledger, or an error saying this node keeps none.
    pub fn ledger(&self) -> Result<&LedgerHandle> {
        self.inner.ledger.as_ref().ok_or_else(|| {
            NodeError::Ledger("this node keeps no ledger (start it with a genesis file)".into())
        })
    }

    /// A fresh completion id.
    pub fn next_completion_id(&self) -> String {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        format!("chatcmpl-{nanos:x}{n:x}")
    }

    /// The model used when a request names none: the first local one, else the default chat model.
    pub fn default_model(&self) -> String {
        self.inner
            .host
            .model_ids()
            .into_iter()
            .next()
            .unwrap_or_else(|| mycel_models::registry::DEFAULT_CHAT_MODEL.to_string())
    }

    /// Listen addresses with `/p2p/<PeerId>` appended.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner
            .net
            .listen_addrs()
            .into_iter()
            .map(|a| a.with(Protocol::P2p(self.inner.peer_id)))
            .collect()
    }

    /// Identity and addresses.
    pub fn info(&self) -> NodeInfo {
        NodeInfo {
            did: self.inner.did.to_string(),
            peer_id: self.inner.peer_id.to_base58(),
            listen_addrs: self.listen_addrs().iter().map(|a| a.to_string()).collect(),
            http_url: self.inner.http_url.clone(),
            models: self.inner.host.model_ids(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            shards: shard_infos(&self.inner.host.shard_ads()),
            model_versions: self
                .inner
                .manifests
                .all_adopted()
                .into_iter()
                .map(|m| mycel_rpc_api::ModelVersion {
                    sha256: m.file().sha256.to_hex(),
                    model: m.manifest.model,
                    version: m.manifest.version,
                    publisher: m.manifest.publisher.to_string(),
                })
                .collect(),
        }
    }

    /// The signed model manifests this node holds, and the versions it adopted.
    pub fn manifests(&self) -> &Arc<crate::manifest::ManifestBook> {
        &self.inner.manifests
    }

    /// Whether this node serves `model` whole (the models a manifest can update).
    pub fn serves_whole(&self, model: &str) -> bool {
        self.inner.host.served(model).is_some()
    }

    /// Serves `model`, loaded from `m`'s verified file, in place of the current weights of that
    /// model id: new jobs run on it, running ones finish on the old weights; cached answers of
    /// the old weights are no longer replayed. `false` when this node does not serve the model.
    pub(crate) fn serve_version(
        &self,
        m: &crate::manifest::VerifiedManifest,
        model: Arc<ChatModel>,
    ) -> bool {
        let id = m.model().as_str();
        if self.inner.host.replace_model(id, model).is_none() {
            return false;
        }
        self.inner.cache.set_weights(id, m.file().sha256.0);
        if let Ok(mut f) = self.inner.frontends.lock() {
            f.remove(id);
        }
        self.inner.manifests.set_adopted(m.clone());
        true
    }

    /// Connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        let mut peers: Vec<PeerInfo> = self
            .inner
            .net
            .peers()
            .await?
            .into_iter()
            .map(|p| PeerInfo {
                peer_id: p.peer_id.to_base58(),
                did: Did::from_peer_id(&p.peer_id).ok().map(|d| d.to_string()),
                addrs: p.addrs.iter().map(|a| a.to_string()).collect(),
                models: p.models,
                rtt_ms: p.rtt.map(|d| d.as_millis() as u64),
                agent: p.agent,
                shards: shard_infos(&p.shards),
                tok_s: p.health.0,
                free_mem_mib: p.health.1,
                version: p.health.2,
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        Ok(peers)
    }

    /// Models served here or announced by connected peers' heartbeats.
    pub async fn models(&self) -> Result<Vec<ModelInfo>> {
        let mut map: BTreeMap<String, (bool, BTreeSet<String>)> = BTreeMap::new();
        for id in self.inner.host.model_ids() {
            let e = map.entry(id).or_default();
            e.0 = true;
            e.1.insert(self.inner.did.to_string());
        }
        let peers = self.inner.net.peers().await?;
        for p in &peers {
            let Ok(did) = Did::from_peer_id(&p.peer_id) else {
                continue;
            };
            for m in &p.models {
                map.entry(m.clone()).or_default().1.insert(did.to_string());
            }
        }
        // A sharded model is listed as `<id>@sharded` once the known ranges chain from layer 0 to
        // the model's last layer (as its servers announce it).
        let mut sharded: BTreeMap<&String, u32> = BTreeMap::new();
        for ad in peers.iter().filter(|p| p.up).flat_map(|p| &p.shards) {
            let top = sharded.entry(&ad.model).or_default();
            *top = (*top).max(ad.n_layers).max(ad.to);
        }
        for (model, top) in sharded {
            let offers = crate::pipeline::offers_from(&peers, model);
            if let Some(route) = crate::route::plan(&offers, 0, top, &[]) {
                let e = map.entry(format!("{model}{SHARDED_SUFFIX}")).or_default();
                for hop in route {
                    if let Ok(did) = Did::from_peer_id(&hop.peer) {
                        e.1.insert(did.to_string());
                    }
                }
            }
        }
        Ok(map
            .into_iter()
            .map(|(id, (local, by))| ModelInfo {
                id,
                local,
                served_by: by.into_iter().collect(),
            })
            .collect())
    }

    /// The node's Prometheus metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Loads a model this node uses only to judge audits (a validator that does not serve it).
    pub fn add_audit_model(&self, id: &str, model: Arc<ChatModel>) {
        self.inner.host.add_audit_model(id, model);
    }

    /// Makes this node a cheating worker: it returns forged tokens instead of the model's (audit and
    /// slashing tests and demos only).
    pub fn set_forge_outputs(&self, on: bool) {
        self.inner.host.set_forge_outputs(on);
    }

    /// Slows local generation down: a pause after every emitted delta (tests and failover demos).
    pub fn set_generation_delay(&self, delay: Duration) {
        self.inner.host.set_delta_delay(delay);
    }

    /// Starts answering a job under a fresh job id ([`ChatStream::id`], `mycel_jobStatus`): from the
    /// response cache when it repeats a deterministic job exactly ([`crate::cache`]), else locally
    /// when the model is loaded here, else through a provider.
    ///
    /// Remote answers stream over `/mycel/infer-stream/1.0.0`; a provider without it answers whole
    /// over `/mycel/infer/1.0.0`. Providers are tried in turn until one starts answering. If the
    /// provider dies or stalls mid-answer, the same job (same seed) is replayed on another provider and
    /// the text already delivered is skipped, so the caller still gets one complete answer
    /// (`served_by` names the first provider).
    pub async fn chat(&self, mut job: ChatJob) -> Result<ChatStream> {
        let id = self.next_completion_id();
        // An ensemble's answer depends on which experts are up: never cached.
        let key = match job.ensemble {
            Some(_) => None,
            None => self.inner.cache.key(&job),
        };
        if let Some(hit) = key.and_then(|k| self.inner.cache.get(&k)) {
            self.inner.metrics.cache_hits.inc();
            return Ok(self.inner.jobs.replay(id, job.model, &hit));
        }
        self.inner.jobs.start(&id, &job.model);
        job.request_id = Some(id.clone());
        match self.route(id.clone(), job).await {
            Ok(stream) => {
                let store = key.map(|k| (self.inner.cache.clone(), k));
                Ok(crate::jobs::follow(self.inner.jobs.clone(), stream, store))
            }
            Err(e) => {
                self.inner.jobs.fail(&id, e.to_string());
                Err(e)
            }
        }
    }

    /// The status of a job this node took (None: unknown, or forgotten among older jobs).
    pub fn job_status(&self, id: &str) -> Option<mycel_rpc_api::JobStatus> {
        self.inner.jobs.get(id)
    }

    /// Routes job `id` (see [`Node::chat`]). A model name ending in [`SHARDED_SUFFIX`] goes to a
    /// pipeline of shard servers; a plain one to a local or remote replica, else to a pipeline when
    /// shard servers cover the model.
    async fn route(&self, id: String, job: ChatJob) -> Result<ChatStream> {
        let started = Instant::now();
        if job.model == EXPERTS_MODEL {
            return match job.ensemble {
                Some(k) => self.ensemble_chat(id, job, k).await,
                None => Box::pin(self.expert_chat(id, job)).await,
            };
        }
        if let Some(base) = job.model.strip_suffix(SHARDED_SUFFIX) {
            let base = base.to_string();
            return self.pipeline_chat(id, job, base, started).await;
        }
        if self.inner.host.serves(&job.model) {
            self.inner.metrics.request(Route::Local);
            let model = job.model.clone();
            let events = match self.inner.host.start(job).await {
                Ok(ev) => ev,
                Err(e) => {
                    self.inner.metrics.failures.inc();
                    return Err(e);
                }
            };
            let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
            tokio::spawn(observe(self.clone(), events, tx, started));
            return Ok(ChatStream {
                id,
                routing: None,
                cached: false,
                served_by: self.inner.did,
                served_by_peer: self.inner.peer_id,
                remote: false,
                model,
                events: rx,
            });
        }
        self.inner.metrics.request(Route::Remote);
        let mut tried = Vec::new();
        let (peer, did, events) = match self.open_remote(&job, &mut tried).await {
            Ok(opened) => opened,
            Err(NodeError::ModelNotFound(_))
                if !crate::pipeline::offers(&self.inner.net, &job.model)
                    .await
                    .is_empty() =>
            {
                let base = job.model.clone();
                return self.pipeline_chat(id, job, base, started).await;
            }
            Err(e) => {
                self.inner.metrics.failures.inc();
                return Err(e);
            }
        };
        let model = job.model.clone();
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        tokio::spawn(relay(self.clone(), job, events, tried, tx, started));
        Ok(ChatStream {
            id,
            routing: None,
            cached: false,
            served_by: did,
            served_by_peer: peer,
            remote: true,
            model,
            events: rx,
        })
    }

    /// The expert router, or an error naming the config it needs.
    fn router(&self) -> Result<Arc<crate::federation::Federation>> {
        self.inner.federation.clone().ok_or_else(|| {
            NodeError::ModelNotFound(format!(
                "{EXPERTS_MODEL} (this node runs no expert router: add a [router] section to its \
                 config)"
            ))
        })
    }

    /// The verified DHT record of where the holder of `did` can be reached (`mycel_findPeer`).
    pub async fn find_peer(&self, did: &str) -> Result<Option<mycel_rpc_api::PeerRecordInfo>> {
        let parsed: Did = did
            .parse()
            .map_err(|e| NodeError::InvalidRequest(format!("`{did}` is not a did:key: {e}")))?;
        let record = self.inner.net.find_peer(&parsed.to_string()).await?;
        Ok(record.map(|r| mycel_rpc_api::PeerRecordInfo {
            did: r.did,
            peer_id: r.peer_id,
            addrs: r.addrs,
            issued_ms: r.issued_ms,
        }))
    }

    /// Where the model `experts` would send `query` (`mycel_route`).
    pub async fn route_query(&self, query: String) -> Result<mycel_rpc_api::RouteInfo> {
        if query.is_empty() || query.len() > crate::chat::MAX_PROMPT_BYTES {
            return Err(NodeError::InvalidRequest(format!(
                "a query is 1..={} bytes",
                crate::chat::MAX_PROMPT_BYTES
            )));
        }
        let (choice, expert, served) = self.expert_for(query).await?;
        Ok(mycel_rpc_api::RouteInfo {
            domain: choice.as_ref().map(|c| c.domain.to_string()),
            similarity: choice.as_ref().map(|c| c.similarity),
            runner_up: choice
                .as_ref()
                .and_then(|c| c.runner_up.as_ref().map(|d| d.to_string())),
            expert,
            served,
        })
    }

    /// The expert router's state (`mycel_router`).
    pub async fn router_info(&self) -> Result<mycel_rpc_api::RouterInfo> {
        let router = self.router()?;
        let s = blocking(move || Ok(router.status())).await?;
        Ok(mycel_rpc_api::RouterInfo {
            domains: s
                .domains
                .into_iter()
                .map(|(domain, n)| mycel_rpc_api::RouterDomain {
                    domain,
                    updates: u32::try_from(n).unwrap_or(u32::MAX),
                })
                .collect(),
            rejected: s
                .rejected
                .into_iter()
                .map(|(peer, domain, rule)| mycel_rpc_api::RejectedUpdate { peer, domain, rule })
                .collect(),
            rounds: s.rounds,
            epsilon: s.spent.map(|b| b.0),
            delta: s.spent.map(|b| b.1),
        })
    }

    /// The domain nearest to `query`, its expert's model id, and whether some node serves it.
    async fn expert_for(
        &self,
        query: String,
    ) -> Result<(Option<crate::experts::RouteChoice>, Option<String>, bool)> {
        let router = self.router()?;
        let choice = blocking(move || router.route(&query)).await?;
        let expert = choice
            .as_ref()
            .map(|c| format!("{}{}", crate::chat::EXPERT_PREFIX, c.domain));
        let served = match &expert {
            Some(e) => self.models().await?.iter().any(|m| &m.id == e),
            None => false,
        };
        Ok((choice, expert, served))
    }

    /// Sends job `id` to the expert of the domain nearest to its last user message; when no domain
    /// is similar enough, or no node serves that expert, to the default model.
    async fn expert_chat(&self, id: String, mut job: ChatJob) -> Result<ChatStream> {
        let (choice, expert, served) = self.expert_for(last_user_text(&job)?).await?;
        let routing = serde_json::json!({
            "expert": choice.as_ref().map(|c| serde_json::json!({
                "domain": c.domain.as_str(),
                "similarity": c.similarity,
                "runner_up": c.runner_up.as_ref().map(|d| d.as_str()),
                "served": served,
            })),
        });
        job.model = match expert {
            Some(e) if served => e,
            _ => self.default_model(),
        };
        let mut stream = self.route(id, job).await?;
        stream.routing = Some(routing);
        Ok(stream)
    }

    /// Asks the experts of the `k` nearest domains that some node serves, in parallel, and answers
    /// with the consensus: the answer whose embedding the others agree with most, weighted by their
    /// servers' reputations ([`crate::experts::medoid`]). The routing field lists every expert and
    /// whether it agreed.
    async fn ensemble_chat(&self, id: String, job: ChatJob, k: usize) -> Result<ChatStream> {
        let router = self.router()?;
        let k = k.clamp(1, MAX_ENSEMBLE);
        let query = last_user_text(&job)?;
        let r = router.clone();
        let ranked = blocking(move || r.rank(&query)).await?;
        let served: BTreeSet<String> = self.models().await?.into_iter().map(|m| m.id).collect();
        let picks: Vec<(String, f32)> = ranked
            .into_iter()
            .map(|(d, sim)| (format!("{}{d}", crate::chat::EXPERT_PREFIX), sim))
            .filter(|(e, _)| served.contains(e))
            .take(k)
            .collect();
        if picks.is_empty() {
            return Err(NodeError::ModelNotFound(format!(
                "{EXPERTS_MODEL} (no node serves an expert for a known domain)"
            )));
        }
        let asks = picks.iter().map(|(expert, _)| {
            let mut one = job.clone();
            one.model = expert.clone();
            one.ensemble = None;
            one.request_id = None;
            async move {
                let stream = self.chat(one).await?;
                let (did, peer) = (stream.served_by, stream.served_by_peer);
                let answer = crate::chat::collect(stream.events).await?;
                Ok::<_, NodeError>((did, peer, answer))
            }
        });
        let results = futures::future::join_all(asks).await;
        let mut answers = Vec::new();
        let mut experts = Vec::new();
        for ((expert, sim), r) in picks.iter().zip(results) {
            match r {
                Ok((did, peer, a)) => answers.push((expert.clone(), *sim, did, peer, a)),
                Err(e) => experts.push(serde_json::json!({
                    "expert": expert, "similarity": sim, "error": e.to_string(),
                })),
            }
        }
        if answers.is_empty() {
            return Err(NodeError::UpstreamFailed {
                model: EXPERTS_MODEL.into(),
                reasons: "every expert of the ensemble failed".into(),
            });
        }
        let texts: Vec<String> = answers.iter().map(|a| a.4.text.clone()).collect();
        let embeddings = blocking(move || {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            router.embed(&refs)
        })
        .await?;
        let mut reputations = Vec::with_capacity(answers.len());
        for a in &answers {
            reputations.push(self.reputation(&a.3).await);
        }
        let consensus = crate::experts::medoid(&embeddings, &reputations).ok_or_else(|| {
            NodeError::Inference("the answers' embeddings could not be compared".into())
        })?;
        for (i, (expert, sim, did, _, _)) in answers.iter().enumerate() {
            experts.push(serde_json::json!({
                "expert": expert,
                "similarity": sim,
                "served_by": did.to_string(),
                "reputation": reputations[i],
                "agreed": consensus.agreeing.contains(&i),
                "chosen": i == consensus.chosen,
            }));
        }
        let (expert, _, did, peer, answer) = answers.swap_remove(consensus.chosen);
        let (tx, events) = mpsc::channel(2);
        if !answer.text.is_empty() {
            let _ = tx.try_send(ChatEvent::Delta(answer.text.clone()));
        }
        let _ = tx.try_send(ChatEvent::Done(answer));
        Ok(ChatStream {
            id,
            routing: Some(serde_json::json!({
                "ensemble": {
                    "k": k,
                    "chosen": expert,
                    "agreement": consensus.score,
                    "experts": experts,
                },
            })),
            cached: false,
            served_by: did,
            served_by_peer: peer,
            remote: peer != self.inner.peer_id,
            model: job.model,
            events,
        })
    }

    /// Answers job `id` on a pipeline of shard servers covering `model` (specs/models.md, "Sharded
    /// serving"): this node tokenizes, samples and streams; the layers run along the route.
    async fn pipeline_chat(
        &self,
        id: String,
        job: ChatJob,
        model: String,
        started: Instant,
    ) -> Result<ChatStream> {
        use mycel_models::llama::DEFAULT_MAX_CONTEXT;
        self.inner.metrics.request(Route::Pipeline);
        let fail = |e: NodeError| {
            self.inner.metrics.failures.inc();
            e
        };
        let front = self.frontend(&model).await.map_err(fail)?;
        let cfg = front.config().clone();
        let prompt = front
            .encode_chat(&job.messages)
            .map_err(|e| fail(e.into()))?;
        let limit = DEFAULT_MAX_CONTEXT.min(cfg.context_length.max(1));
        let pipeline = crate::pipeline::Pipeline::open(
            self.inner.net.clone(),
            &model,
            cfg.n_layer,
            cfg.vocab_size,
        )
        .await
        .map_err(fail)?;
        let route = pipeline.route();
        self.inner.metrics.route_hops.observe(route.len() as f64);
        let first = route.first().map_or(self.inner.peer_id, |h| h.peer);
        let (tok_tx, tok_rx) = mpsc::channel(mycel_models::TOKEN_CHANNEL_CAPACITY);
        let rt = tokio::runtime::Handle::current();
        let params = job.params.clone();
        let handle = tokio::task::spawn_blocking(move || {
            let mut pipeline = pipeline;
            let r = front.generate_with(&prompt, 0, limit, &params, &tok_tx, |ids| {
                rt.block_on(pipeline.feed(ids))
                    .map_err(|e| mycel_models::ModelsError::Stage(e.to_string()))
            });
            (pipeline, r)
        });
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let node = self.clone();
        let job_id = id.clone();
        tokio::spawn(async move {
            let generation = async {
                let (pipeline, r) = handle.await.map_err(|e| e.to_string())?;
                node.record_pipeline(&job_id, &pipeline);
                pipeline.close().await;
                r.map_err(|e| e.to_string())
            };
            let no_delay = AtomicU64::new(0);
            let event =
                crate::chat::relay_tokens(tok_rx, generation, job.stop, &ev_tx, &no_delay, None)
                    .await;
            let _ = ev_tx.send(event).await;
        });
        let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        tokio::spawn(observe(self.clone(), ev_rx, tx, started));
        Ok(ChatStream {
            id,
            routing: None,
            cached: false,
            served_by: Did::from_peer_id(&first).unwrap_or(self.inner.did),
            served_by_peer: first,
            remote: true,
            model: job.model,
            events: rx,
        })
    }

    /// Puts a finished pipeline's route and counters into metrics and the job's status.
    fn record_pipeline(&self, id: &str, p: &crate::pipeline::Pipeline) {
        let s = p.stats();
        let m = &self.inner.metrics;
        m.pipeline_failovers.inc_by(u64::from(s.failovers));
        m.span_disputes.inc_by(u64::from(s.disputed));
        let route = p
            .route()
            .iter()
            .map(|h| mycel_rpc_api::PipelineHop {
                did: Did::from_peer_id(&h.peer)
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                from: h.from,
                to: h.to,
            })
            .collect();
        self.inner.jobs.pipeline(
            id,
            mycel_rpc_api::PipelineStatus {
                route,
                failovers: s.failovers,
                disputed: s.disputed,
                spans: s.spans,
            },
        );
    }

    /// Tokenizer, template and hyper-parameters of `model`: from a model or shard loaded here, else
    /// read from its file in the models cache.
    async fn frontend(&self, model: &str) -> Result<Arc<ChatFrontend>> {
        let cached = |f: &std::sync::Mutex<BTreeMap<String, Arc<ChatFrontend>>>| {
            f.lock().ok().and_then(|m| m.get(model).cloned())
        };
        if let Some(f) = cached(&self.inner.frontends) {
            return Ok(f);
        }
        let host = &self.inner.host;
        let front = match host.model(model).or_else(|| host.shard(model)) {
            Some(m) => m.frontend().clone(),
            None => {
                let dir = self.inner.models_dir.clone().unwrap_or_default();
                let id = model.to_string();
                tokio::task::spawn_blocking(move || crate::models::frontend(&id, &dir))
                    .await
                    .map_err(|e| NodeError::Inference(e.to_string()))??
            }
        };
        let front = Arc::new(front);
        if let Ok(mut m) = self.inner.frontends.lock()
            && m.len() < MAX_FRONTENDS
        {
            m.insert(model.to_string(), front.clone());
        }
        Ok(front)
    }

    /// Serves layers of `model` to pipelines from now on (replacing the range held before, whose
    /// DHT announcement is withdrawn).
    pub async fn serve_shard(&self, model: &str, shard: Arc<ChatModel>) -> Result<()> {
        let r = shard.layer_range();
        if let Some(old) = self.inner.host.shard(model) {
            let o = old.layer_range();
            let key = crate::wire::shard_key(model, o.start(), o.end());
            self.inner.net.provide(key, false).await?;
        }
        self.inner.host.set_shard(model, shard);
        let key = crate::wire::shard_key(model, r.start(), r.end());
        self.inner.net.provide(key, true).await
    }

    /// A peer's ledger reputation in [0, 1] (1 for every peer without a ledger to tell).
    pub async fn reputation(&self, peer: &PeerId) -> f64 {
        let Some(ledger) = &self.inner.ledger else {
            return 1.0;
        };
        let Ok(did) = Did::from_peer_id(peer) else {
            return 0.0;
        };
        let account = mycel_ledger::AccountId(*did.public_key().as_bytes());
        match ledger.standing(vec![account]).await {
            Ok(s) => s.first().map_or(0.0, |s| s.reputation.value()),
            Err(_) => 0.0,
        }
    }

    /// The expert router, when the config has a `[router]` section.
    pub fn federation(&self) -> Option<&Arc<crate::federation::Federation>> {
        self.inner.federation.as_ref()
    }

    /// The models cache (empty when the node was started without one).
    pub fn models_dir(&self) -> PathBuf {
        self.inner.models_dir.clone().unwrap_or_default()
    }

    /// Pipeline sessions open on this node's shards.
    pub fn shard_sessions(&self) -> usize {
        self.inner.host.shard_sessions()
    }

    /// The layer range of `model` this node serves to pipelines.
    pub fn shard(&self, model: &str) -> Option<(u32, u32)> {
        self.inner
            .host
            .shard(model)
            .map(|m| (m.layer_range().start(), m.layer_range().end()))
    }

    /// Orders providers by the routing score (specs/scoring.md): repeated randomized picks weighted by
    /// stake, ledger-confirmed reputation, latency and load, with probation for new accounts and one
    /// slot per /24 and per account. Without a ledger the heartbeat order (cheapest first) stays.
    ///
    /// A private job goes only to providers whose account has at least [`PRIVATE_MIN_STAKE`] staked or
    /// a reputation of at least [`PRIVATE_MIN_REPUTATION`]; without a ledger to tell, to none.
    async fn rank(&self, providers: Vec<PeerId>, private: bool) -> Vec<PeerId> {
        use crate::scoring::{Candidate, PickContext, ScoringParams, Subnet, pick};
        let Some(ledger) = &self.inner.ledger else {
            return if private { Vec::new() } else { providers };
        };
        if providers.len() < 2 && !private {
            return providers;
        }
        let peers = self.inner.net.peers().await.unwrap_or_default();
        let accounts: Vec<mycel_ledger::AccountId> = providers
            .iter()
            .filter_map(|p| Did::from_peer_id(p).ok())
            .map(|d| mycel_ledger::AccountId(*d.public_key().as_bytes()))
            .collect();
        if accounts.len() != providers.len() {
            return providers;
        }
        let Ok(standing) = ledger.standing(accounts.clone()).await else {
            return providers;
        };
        let Some(epoch) = standing.first().map(|s| s.epoch) else {
            return providers;
        };
        let min_bond = standing.first().map(|s| s.typical_bond).unwrap_or_default();
        let mut cands: Vec<Candidate> = providers
            .iter()
            .zip(accounts)
            .zip(standing)
            .map(|((peer, account), st)| {
                let snap = peers.iter().find(|s| s.peer_id == *peer);
                let ip = snap
                    .and_then(|s| s.addrs.first())
                    .and_then(|a| {
                        a.iter().find_map(|p| match p {
                            Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
                            Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
                            _ => None,
                        })
                    })
                    .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
                Candidate {
                    peer: *peer,
                    account,
                    subnet: Subnet::of(ip),
                    stake: st.stake,
                    reputation: st.reputation,
                    latency_ewma_ms: snap
                        .and_then(|s| s.rtt_ewma)
                        .map(|d| d.as_secs_f64() * 1000.0),
                    queue_depth: snap.map_or(0, |s| s.load),
                    specialization: 1.0,
                    first_seen_epoch: st.first_seen_epoch,
                }
            })
            .collect();
        if private {
            cands.retain(|c| {
                c.stake >= PRIVATE_MIN_STAKE || c.reputation.value() >= PRIVATE_MIN_REPUTATION
            });
        }
        let params = ScoringParams::default();
        let ctx = PickContext { epoch, min_bond };
        let mut rng = rand::rng();
        let mut order = Vec::with_capacity(cands.len());
        while let Some(i) = pick(&cands, &ctx, &params, &mut rng) {
            order.push(cands.swap_remove(i).peer);
        }
        // Providers the score leaves out (below the bond, one slot per /24 or account) come last:
        // better an unscored answer than none.
        order.extend(cands.into_iter().map(|c| c.peer));
        order
    }

    /// The job as sent to `worker`: with an escrow that pays for it when this node keeps a ledger and
    /// can afford it (else unpaid, which the worker may still serve).
    async fn pay_for(&self, job: &ChatJob, worker: &Did) -> ChatJob {
        let mut paid = job.clone();
        let Some(ledger) = &self.inner.ledger else {
            return paid;
        };
        // An upper bound on the tokens: byte-level BPE spends at least one byte per token, plus the
        // chat template and the answer budget.
        let prompt_bytes: usize = job.messages.iter().map(|m| m.content.len() + 16).sum();
        let tokens = u32::try_from(prompt_bytes)
            .unwrap_or(u32::MAX)
            .saturating_add(64)
            .saturating_add(u32::try_from(job.params.max_tokens).unwrap_or(u32::MAX));
        let account = mycel_ledger::AccountId(*worker.public_key().as_bytes());
        match ledger.escrow(account, tokens, job.private).await {
            Ok(p) => {
                if let Some(id) = &job.request_id {
                    self.inner.jobs.paid(id, &p);
                }
                paid.payment = Some(p);
            }
            Err(e) => tracing::warn!(error = %e, "sending the job unpaid"),
        }
        paid
    }

    /// Finds providers (skipping `tried`) and asks them in turn until one starts answering.
    async fn open_remote(
        &self,
        job: &ChatJob,
        tried: &mut Vec<PeerId>,
    ) -> Result<(PeerId, Did, mpsc::Receiver<ChatEvent>)> {
        let providers = tokio::time::timeout(
            PROVIDER_LOOKUP_TIMEOUT + Duration::from_secs(1),
            self.inner.net.find_providers(&job.model),
        )
        .await
        .unwrap_or(Ok(Vec::new()))?;
        let providers: Vec<PeerId> = providers
            .into_iter()
            .filter(|p| !tried.contains(p))
            .collect();
        if providers.is_empty() {
            return Err(NodeError::ModelNotFound(job.model.clone()));
        }
        let providers = self.rank(providers, job.private).await;
        if providers.is_empty() {
            return Err(NodeError::UpstreamFailed {
                model: job.model.clone(),
                reasons: "no provider is trusted enough for a private job (stake or audited work \
                          below the threshold, or this node keeps no ledger)"
                    .into(),
            });
        }
        let mut reasons = Vec::new();
        // When every provider tried was only busy, the caller may retry: say busy (503), not failed.
        let mut all_busy = true;
        for peer in providers.into_iter().take(MAX_REMOTE_ATTEMPTS) {
            tried.push(peer);
            let Ok(did) = Did::from_peer_id(&peer) else {
                reasons.push(format!("{peer}: not an Ed25519 peer"));
                continue;
            };
            // Consortium mode: no job goes to a peer before it proved its membership.
            if !self.inner.net.wait_admitted(peer).await {
                reasons.push(format!("{peer}: not a member of this consortium"));
                continue;
            }
            let paid = self.pay_for(job, &did).await;
            let job = &paid;
            match crate::infer_stream::open(
                self.inner.net.stream_control(),
                peer,
                job,
                self.inner.infer_timeout,
            )
            .await
            {
                Ok(Opened::Streaming(events)) => return Ok((peer, did, events)),
                Ok(Opened::Refused {
                    code: InferErrorCode::InvalidRequest,
                    message,
                }) => return Err(NodeError::InvalidRequest(message)),
                Ok(Opened::Refused { code, message }) => {
                    all_busy &= code == InferErrorCode::Busy;
                    tracing::warn!(%peer, ?code, %message, "provider refused");
                    reasons.push(format!("{peer}: {code:?}: {message}"));
                    continue;
                }
                Err(reason) => {
                    all_busy = false;
                    tracing::warn!(%peer, %reason, "provider failed");
                    reasons.push(format!("{peer}: {reason}"));
                    continue;
                }
                // An older peer without streaming: ask for the whole answer instead.
                Ok(Opened::Unsupported) => {}
            }
            let sent = tokio::time::timeout(
                self.inner.infer_timeout,
                self.inner.net.infer(peer, job.clone()),
            )
            .await;
            let reason = match sent {
                Ok(Ok(Ok(InferResponse::Answer(answer)))) => {
                    let (tx, events) = mpsc::channel(2);
                    let _ = tx.try_send(ChatEvent::Delta(answer.text.clone()));
                    let _ = tx.try_send(ChatEvent::Done(answer));
                    return Ok((peer, did, events));
                }
                Ok(Ok(Ok(InferResponse::Error {
                    code: InferErrorCode::InvalidRequest,
                    message,
                }))) => return Err(NodeError::InvalidRequest(message)),
                Ok(Ok(Ok(InferResponse::Error { code, message }))) => {
                    all_busy &= code == InferErrorCode::Busy;
                    format!("{code:?}: {message}")
                }
                Ok(Ok(Err(e))) => {
                    all_busy = false;
                    e
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    all_busy = false;
                    "deadline exceeded".to_string()
                }
            };
            tracing::warn!(%peer, %reason, "provider failed");
            reasons.push(format!("{peer}: {reason}"));
        }
        if all_busy && !reasons.is_empty() {
            return Err(NodeError::Busy(format!(
                "every provider of `{}` is busy: {}",
                job.model,
                reasons.join("; ")
            )));
        }
        Err(NodeError::UpstreamFailed {
            model: job.model.clone(),
            reasons: reasons.join("; "),
        })
    }
}

fn shard_infos(ads: &[crate::heartbeat::ShardAd]) -> Vec<mycel_rpc_api::ShardInfo> {
    ads.iter()
        .map(|a| mycel_rpc_api::ShardInfo {
            model: a.model.clone(),
            from: a.from,
            to: a.to,
        })
        .collect()
}

/// Runs blocking work (embedding, model loading) on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NodeError::Inference(format!("blocking task failed: {e}")))?
}

/// The text of the last user message (what expert routing embeds).
fn last_user_text(job: &ChatJob) -> Result<String> {
    job.messages
        .iter()
        .rev()
        .find(|m| m.role == mycel_models::Role::User)
        .map(|m| m.content.clone())
        .ok_or_else(|| {
            NodeError::InvalidRequest("expert routing needs a user message to route on".into())
        })
}

/// Loads the router's embedding model and local examples (blocking work on the blocking pool).
async fn start_federation(
    cfg: crate::config::RouterConfig,
    models_dir: Option<PathBuf>,
) -> Result<crate::federation::Federation> {
    let dir = models_dir.ok_or_else(|| {
        NodeError::Config("the expert router needs a models cache for its embedding model".into())
    })?;
    tokio::task::spawn_blocking(move || {
        let verified = crate::models::pull(&cfg.embedding_model, &dir, None, |_| {})?;
        let embedder = Arc::new(mycel_models::EmbeddingModel::load(&verified)?);
        let examples = match &cfg.examples {
            Some(p) => crate::federation::Federation::read_examples(p)?,
            None => BTreeMap::new(),
        };
        let dp = crate::experts::DpParams::new(cfg.epsilon, cfg.delta)
            .map_err(|e| NodeError::Config(format!("router: {e}")))?;
        crate::federation::Federation::new(embedder, &examples, dp, cfg.noise)
    })
    .await
    .map_err(|e| NodeError::Config(format!("loading the expert router: {e}")))?
}

/// Forwards a local job's events, recording latency, tokens and failures.
async fn observe(
    node: Node,
    mut events: mpsc::Receiver<ChatEvent>,
    out: mpsc::Sender<ChatEvent>,
    started: Instant,
) {
    let m = &node.inner.metrics;
    loop {
        // A caller that left cancels the job at once (dropping `events` stops generation).
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = out.closed() => return,
        };
        let Some(ev) = ev else { return };
        match &ev {
            ChatEvent::Done(a) => {
                m.latency.observe(started.elapsed().as_secs_f64());
                m.tokens.inc_by(u64::from(a.completion_tokens));
            }
            ChatEvent::Failed(_) => {
                m.failures.inc();
            }
            ChatEvent::Delta(_) => {}
        }
        if out.send(ev).await.is_err() {
            return;
        }
    }
}

/// Where a provider's answer stands against the text already delivered to the caller.
enum Replay {
    /// Still inside the delivered prefix (nothing new yet).
    Behind,
    /// Past it: this text is new.
    New(String),
    /// The provider's text does not extend what was delivered (nondeterministic provider).
    Diverged,
}

/// Compares `received` (all text of the current provider) with `delivered` (all text sent on).
fn replay_step(delivered: &str, received: &str) -> Replay {
    if received.len() <= delivered.len() {
        if delivered.starts_with(received) {
            Replay::Behind
        } else {
            Replay::Diverged
        }
    } else if let Some(rest) = received.strip_prefix(delivered) {
        Replay::New(rest.to_string())
    } else {
        Replay::Diverged
    }
}

/// Forwards a remote answer to the caller; when the provider fails mid-answer, replays the job on
/// another provider and skips the text already delivered (jobs carry their seed, so a provider with
/// the same weights regenerates the same text).
async fn relay(
    node: Node,
    job: ChatJob,
    mut events: mpsc::Receiver<ChatEvent>,
    mut tried: Vec<PeerId>,
    out: mpsc::Sender<ChatEvent>,
    started: Instant,
) {
    let m = &node.inner.metrics;
    let mut delivered = String::new();
    let mut failovers = 0;
    loop {
        let mut received = String::new();
        let reason = loop {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                // The caller left: dropping `events` closes the provider's stream and cancels it.
                _ = out.closed() => return,
            };
            match ev {
                Some(ChatEvent::Delta(t)) => {
                    received.push_str(&t);
                    match replay_step(&delivered, &received) {
                        Replay::Behind => {}
                        Replay::New(text) => {
                            delivered.push_str(&text);
                            if out.send(ChatEvent::Delta(text)).await.is_err() {
                                return;
                            }
                        }
                        Replay::Diverged => break None,
                    }
                }
                Some(ChatEvent::Done(answer)) => {
                    if !answer.text.starts_with(&delivered) {
                        break None;
                    }
                    if let Some(rest) = answer.text.get(delivered.len()..)
                        && !rest.is_empty()
                    {
                        let _ = out.send(ChatEvent::Delta(rest.to_string())).await;
                    }
                    m.latency.observe(started.elapsed().as_secs_f64());
                    m.tokens.inc_by(u64::from(answer.completion_tokens));
                    if let (Some(receipt), Some(ledger)) =
                        (answer.receipt.clone(), node.inner.ledger.clone())
                    {
                        let facts = job.facts(&answer);
                        let (net, job, answer) =
                            (node.inner.net.clone(), job.clone(), answer.clone());
                        tokio::spawn(async move {
                            match ledger.countersign(receipt, facts).await {
                                // Drawn for audit: the requester asks the validators.
                                Ok(c) => crate::audit::drive(net, ledger, job, answer, c).await,
                                Err(e) => tracing::warn!(error = %e, "receipt not countersigned"),
                            }
                        });
                    }
                    let _ = out.send(ChatEvent::Done(answer)).await;
                    return;
                }
                Some(ChatEvent::Failed(e)) => break Some(e),
                None => break Some("provider stream ended without an answer".into()),
            }
        };
        let Some(reason) = reason else {
            m.failures.inc();
            let _ = out
                .send(ChatEvent::Failed(
                    "failover replay diverged from the text already sent".into(),
                ))
                .await;
            return;
        };
        if failovers >= MAX_FAILOVERS || out.is_closed() {
            m.failures.inc();
            let _ = out.send(ChatEvent::Failed(reason)).await;
            return;
        }
        failovers += 1;
        m.failovers.inc();
        tracing::warn!(%reason, delivered = delivered.len(), "provider failed mid-answer; failing over");
        match node.open_remote(&job, &mut tried).await {
            Ok((peer, _, next)) => {
                tracing::info!(%peer, "replaying the job on another provider");
                events = next;
            }
            Err(e) => {
                m.failures.inc();
                let _ = out
                    .send(ChatEvent::Failed(format!("{reason}; failover: {e}")))
                    .await;
                return;
            }
        }
    }
}

/// A started node: its handle, HTTP address and the tasks to stop.
pub struct RunningNode {
    /// Handle to the node.
    pub node: Node,
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    http_stop: Option<oneshot::Sender<()>>,
    http_task: tokio::task::JoinHandle<()>,
    net_task: tokio::task::JoinHandle<()>,
    ledger: Option<LedgerService>,
}

impl std::fmt::Debug for RunningNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningNode")
            .field("node", &self.node)
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

impl RunningNode {
    /// Stops taking new jobs (they get `busy`), withdraws the DHT provider records, and waits until
    /// the running answers are done or `deadline` passed.
    pub async fn drain(&self, deadline: Duration) {
        let host = &self.node.inner.host;
        host.drain();
        let _ = self.node.inner.net.withdraw_records().await;
        let until = Instant::now() + deadline;
        while host.load() > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts the network actor and the HTTP server.
    pub async fn start(opts: StartOptions) -> Result<Self> {
        let cfg = &opts.config;
        cfg.validate()?;
        let did = Did::from_public_key(opts.key.public());
        let peer_id = opts.key.peer_id();
        let host = Arc::new(ModelHost::new(opts.models, cfg.max_concurrent_generations));
        for (id, shard) in opts.shards {
            host.set_shard(&id, shard);
        }
        for e in &cfg.serve.experts {
            host.add_expert(
                &e.domain,
                crate::chat::Expert {
                    base: e.model.clone(),
                    system_prompt: e.system_prompt.clone(),
                },
            )?;
        }
        let federation = match &cfg.router {
            Some(r) => Some(Arc::new(
                start_federation(r.clone(), opts.models_dir.clone()).await?,
            )),
            None => None,
        };
        let (centroid_tx, centroid_rx) = mpsc::channel(crate::federation::INBOX_CAPACITY);
        let manifests = Arc::new(crate::manifest::ManifestBook::new(
            cfg.manifests.trusted()?,
            crate::manifest::MAX_STORED_MANIFESTS,
        ));
        // A version adopted before the restart is served from the first request on.
        let restored = match opts.models_dir.clone() {
            Some(dir) => {
                let (book, h) = (manifests.clone(), host.clone());
                tokio::task::spawn_blocking(move || crate::adoption::restore(&dir, &book, &h))
                    .await
                    .map_err(|e| NodeError::Config(format!("restoring adopted models: {e}")))?
            }
            None => Vec::new(),
        };
        let listen = cfg.listen_addrs()?;
        let infer_timeout = Duration::from_secs(cfg.infer_timeout_secs);
        let metrics = Arc::new(Metrics::new());
        let (ledger_tx, ledger_rx) = mpsc::channel(crate::ledger::INBOX_CAPACITY);
        let ledger_slot = crate::infer_stream::LedgerSlot::default();
        let (audit_tx, audit_rx) = mpsc::channel(crate::audit::AUDIT_QUEUE);
        let judges = opts.ledger.is_some();
        // Consortium mode: refuse to start without a usable own credential (and pnet key, if set).
        let consortium = match &cfg.consortium {
            Some(c) => Some(Arc::new(crate::membership::Consortium::load(
                c,
                &opts.key,
                time::OffsetDateTime::now_utc(),
            )?)),
            None => None,
        };
        let (net, net_task) = network::start(
            &opts.key,
            NetworkConfig {
                listen: listen.clone(),
                bootstrap: cfg.bootstrap_addrs()?,
                mdns: cfg.mdns,
                heartbeat_interval: Duration::from_secs(cfg.heartbeat_interval_secs),
                infer_timeout,
                metrics: metrics.clone(),
                ledger: opts.ledger.is_some().then_some(ledger_tx),
                ledger_handle: ledger_slot.clone(),
                audit: judges.then_some(audit_tx),
                consortium,
                relay_server: cfg.relay_server,
                keep_peers: (cfg.shortlist_peers, cfg.random_peers),
                centroids: federation.as_ref().map(|f| (f.dim(), centroid_tx.clone())),
                manifests: manifests.clone(),
            },
            host.clone(),
        )?;
        net.wait_listening(listen.len(), LISTEN_WAIT).await;
        let ledger = match opts.ledger {
            Some(options) => {
                match LedgerService::start(options, opts.key.clone(), net.clone(), ledger_rx) {
                    Ok(service) => Some(service),
                    Err(e) => {
                        net.shutdown().await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        if let Some(l) = &ledger {
            let _ = ledger_slot.set(l.handle.clone());
            if judges {
                tokio::spawn(crate::audit::serve(
                    audit_rx,
                    host.clone(),
                    l.handle.clone(),
                    net.clone(),
                ));
            }
        }

        let listener = tokio::net::TcpListener::bind(cfg.http)
            .await
            .map_err(|e| NodeError::Network(format!("cannot bind HTTP on {}: {e}", cfg.http)))?;
        let http_addr = listener
            .local_addr()
            .map_err(|e| NodeError::Network(format!("HTTP listener: {e}")))?;
        let node = Node {
            inner: Arc::new(Inner {
                did,
                peer_id,
                net,
                host,
                http_url: format!("http://{http_addr}"),
                infer_timeout,
                next_id: AtomicU64::new(0),
                metrics,
                ledger: ledger.as_ref().map(|l| l.handle.clone()),
                rpc_token: cfg
                    .rpc_token
                    .as_ref()
                    .map(|t| t.0.clone())
                    .filter(|t| !t.is_empty()),
                jobs: Arc::new(crate::jobs::JobRegistry::new(crate::jobs::MAX_JOBS)),
                cache: Arc::new(crate::cache::ResponseCache::new(
                    cfg.response_cache_entries,
                    crate::cache::CACHE_BYTE_BUDGET,
                )),
                models_dir: opts.models_dir.clone(),
                frontends: Default::default(),
                federation: federation.clone(),
                manifests: manifests.clone(),
            }),
        };
        for m in &restored {
            node.inner
                .cache
                .set_weights(m.model().as_str(), m.file().sha256.0);
        }
        tokio::spawn(crate::adoption::run(
            node.clone(),
            manifests,
            crate::adoption::AdoptionOptions {
                models_dir: opts.models_dir,
                auto_adopt: cfg.manifests.auto_adopt,
                republish: Duration::from_secs(cfg.manifests.republish_interval_secs),
            },
        ));
        drop(centroid_tx);
        if let (Some(f), Some(r)) = (federation, &cfg.router) {
            tokio::spawn(crate::federation::run(
                f,
                node.clone(),
                opts.key.clone(),
                centroid_rx,
                Duration::from_secs(r.update_interval_secs),
            ));
        }
        for spec in cfg.serve.specs()? {
            let Some(shard) = node.inner.host.shard(&spec.model) else {
                continue;
            };
            if spec.range.is_none() {
                let n_layers = shard.config().n_layer;
                let params = crate::rebalance::RebalanceParams::new(
                    n_layers,
                    cfg.serve.span,
                    cfg.serve.replication,
                )?;
                tokio::spawn(crate::shard::rebalance(
                    node.clone(),
                    spec.model,
                    n_layers,
                    params,
                    Duration::from_secs(cfg.heartbeat_interval_secs),
                ));
            }
        }
        let (http_stop, stop_rx) = oneshot::channel();
        let app = crate::http::router(node.clone())?;
        let http_task = tokio::spawn(crate::http::serve(listener, app, stop_rx));
        if let Some(path) = &opts.info_file {
            let json = serde_json::to_vec_pretty(&node.info())
                .map_err(|e| NodeError::Config(e.to_string()))?;
            // Write then rename, so a script polling for the file never reads half of it.
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, json).map_err(|e| NodeError::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| NodeError::io(path, e))?;
        }
        Ok(Self {
            node,
            http_addr,
            http_stop: Some(http_stop),
            http_task,
            net_task,
            ledger,
        })
    }

    /// Drains, then stops the HTTP server, the ledger and the network actor, and waits for them.
    pub async fn shutdown(self) {
        self.drain(DRAIN_DEADLINE).await;
        self.stop().await;
    }

    /// Stops at once, without draining: running answers are cut off (what a crash looks like to
    /// peers, minus the unflushed state — the ledger still closes cleanly).
    pub async fn stop(mut self) {
        if let Some(stop) = self.http_stop.take() {
            let _ = stop.send(());
        }
        // In-flight streams may hold the server open; do not wait for them forever.
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.http_task).await;
        self.http_task.abort();
        if let Some(ledger) = self.ledger.take() {
            ledger.shutdown().await;
        }
        self.node.inner.net.shutdown().await;
        let _ = (&mut self.net_task).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_skips_the_delivered_prefix_and_detects_divergence() {
        assert!(matches!(replay_step("hello wor", "hel"), Replay::Behind));
        assert!(matches!(
            replay_step("hello wor", "hello wor"),
            Replay::Behind
        ));
        assert!(matches!(replay_step("hello wor", "hello world"), Replay::New(t) if t == "ld"));
        assert!(matches!(replay_step("", "é"), Replay::New(t) if t == "é"));
        assert!(matches!(replay_step("hello", "help"), Replay::Diverged));
        assert!(matches!(
            replay_step("hello", "jello world"),
            Replay::Diverged
        ));
    }
}
