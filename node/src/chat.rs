//! Chat jobs and the local inference host.
//!
//! A [`ChatJob`] is a validated chat request: the HTTP API, JSON-RPC and the libp2p inference protocol
//! all build one (the wire form is the same struct, re-validated on arrival). [`ModelHost`] runs jobs
//! on the models this node loaded, under a concurrency limit, and streams [`ChatEvent`]s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use mycel_models::sampling::MAX_NEW_TOKENS;
use mycel_models::template::MAX_MESSAGES;
use mycel_models::{ChatMessage, ChatModel, FinishReason, SamplingParams, TOKEN_CHANNEL_CAPACITY};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::error::{NodeError, Result};

/// Largest total size of all message contents of one request (bytes); the model's context is far
/// smaller, this only stops a peer from making us tokenize megabytes.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Most stop strings per request (OpenAI's limit).
pub const MAX_STOP_STRINGS: usize = 4;
/// Longest stop string, in bytes.
pub const MAX_STOP_LEN: usize = 64;
/// Longest model id (the registry's limit).
pub const MAX_MODEL_ID_LEN: usize = mycel_models::registry::MAX_MODEL_ID_LEN;
/// Highest accepted temperature (OpenAI's range is [0, 2]).
pub const MAX_TEMPERATURE: f32 = 2.0;
/// Largest answer text one job produces (bytes); keeps a response inside the wire limit.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Capacity of the event channel from a running job to its consumer (deltas are small).
pub const EVENT_CHANNEL_CAPACITY: usize = 64;
/// Jobs that may wait for a generation slot; more are refused as busy.
pub const MAX_QUEUED_JOBS: usize = 16;
/// How long a queued job waits for a slot before it is refused as busy.
pub const QUEUE_WAIT: Duration = Duration::from_secs(60);

/// A validated chat request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatJob {
    /// Model id.
    pub model: String,
    /// Conversation, oldest first.
    pub messages: Vec<ChatMessage>,
    /// Sampling parameters (validated).
    pub params: SamplingParams,
    /// Strings that end the answer.
    pub stop: Vec<String>,
    /// Private: served only by trusted peers, never audited, no emission (specs/wire.md, "Private
    /// jobs").
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// The escrow that pays for the job, when the requester pays (specs/wire.md, "Paid jobs").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<crate::ledger::Payment>,
    /// Whether the caller chose the seed (false: it was taken from the clock). Only the node that
    /// built the job knows; it is never sent to peers. Decides, with the temperature, whether the
    /// answer is deterministic and so may be cached.
    #[serde(skip)]
    pub seed_fixed: bool,
    /// The completion id the node that took the request gave it (`mycel_jobStatus`); local
    /// bookkeeping, never sent to peers.
    #[serde(skip)]
    pub request_id: Option<String>,
    /// For the model `experts`: ask this many experts and return the consensus answer (local
    /// option, never sent to peers).
    #[serde(skip)]
    pub ensemble: Option<usize>,
}

/// Caller-facing sampling knobs before defaults are applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SamplingRequest {
    /// Temperature in [0, 2] (default 0.7).
    pub temperature: Option<f64>,
    /// Top-p in (0, 1] (default 0.95).
    pub top_p: Option<f64>,
    /// Max new tokens in 1..=4096 (default 256).
    pub max_tokens: Option<u64>,
    /// Seed (default: derived from the clock).
    pub seed: Option<u64>,
}

impl ChatJob {
    /// Builds and validates a job from caller input; every error is an [`NodeError::InvalidRequest`].
    pub fn new(
        model: String,
        messages: Vec<ChatMessage>,
        sampling: &SamplingRequest,
        stop: Vec<String>,
    ) -> Result<Self> {
        let defaults = SamplingParams::default();
        let temperature = match sampling.temperature {
            None => defaults.temperature,
            Some(t) if t.is_finite() && (0.0..=f64::from(MAX_TEMPERATURE)).contains(&t) => t as f32,
            Some(t) => {
                return Err(invalid(format!(
                    "temperature {t} is not in [0, {MAX_TEMPERATURE}]"
                )));
            }
        };
        let top_p = match sampling.top_p {
            None => defaults.top_p,
            Some(p) if p.is_finite() && p > 0.0 && p <= 1.0 => Some(p as f32),
            Some(p) => return Err(invalid(format!("top_p {p} is not in (0, 1]"))),
        };
        let max_tokens = match sampling.max_tokens {
            None => defaults.max_tokens,
            Some(n) if n >= 1 && n <= MAX_NEW_TOKENS as u64 => n as usize,
            Some(n) => {
                return Err(invalid(format!(
                    "max_tokens {n} is not in 1..={MAX_NEW_TOKENS}"
                )));
            }
        };
        let seed = sampling.seed.unwrap_or_else(clock_seed);
        let job = Self {
            model,
            messages,
            params: SamplingParams {
                temperature,
                top_p,
                seed,
                max_tokens,
                ..defaults
            },
            stop,
            private: false,
            payment: None,
            seed_fixed: sampling.seed.is_some(),
            request_id: None,
            ensemble: None,
        };
        job.validate()?;
        Ok(job)
    }

    /// Checks every bound; used on jobs built locally and on jobs that arrived from a peer.
    pub fn validate(&self) -> Result<()> {
        if self.model.is_empty() || self.model.len() > MAX_MODEL_ID_LEN {
            return Err(invalid(format!(
                "model id must be 1..={MAX_MODEL_ID_LEN} bytes"
            )));
        }
        if self.messages.is_empty() {
            return Err(invalid("messages must not be empty".into()));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(invalid(format!(
                "{} messages exceed the limit of {MAX_MESSAGES}",
                self.messages.len()
            )));
        }
        let bytes: usize = self.messages.iter().map(|m| m.content.len()).sum();
        if bytes > MAX_PROMPT_BYTES {
            return Err(invalid(format!(
                "messages hold {bytes} bytes, more than the {MAX_PROMPT_BYTES} allowed"
            )));
        }
        if self.stop.len() > MAX_STOP_STRINGS {
            return Err(invalid(format!("at most {MAX_STOP_STRINGS} stop strings")));
        }
        if self
            .stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_LEN)
        {
            return Err(invalid(format!(
                "stop strings must be 1..={MAX_STOP_LEN} bytes"
            )));
        }
        if self.params.temperature > MAX_TEMPERATURE {
            return Err(invalid(format!("temperature above {MAX_TEMPERATURE}")));
        }
        self.params.validate().map_err(|e| invalid(e.to_string()))
    }
}

/// The ensemble size a request asks for: `mode` `single` (or none) asks one expert, `ensemble`
/// asks `k` (default 3, at most [`crate::node::MAX_ENSEMBLE`]) and needs the model `experts`.
pub fn ensemble_size(model: &str, mode: Option<&str>, k: Option<u64>) -> Result<Option<usize>> {
    match mode {
        None | Some("single") => Ok(None),
        Some("ensemble") => {
            if model != crate::node::EXPERTS_MODEL {
                return Err(invalid(format!(
                    "mode `ensemble` needs the model `{}`",
                    crate::node::EXPERTS_MODEL
                )));
            }
            let max = crate::node::MAX_ENSEMBLE as u64;
            match k.unwrap_or(3) {
                k @ 1.. if k <= max => Ok(Some(k as usize)),
                k => Err(invalid(format!("k = {k} is not in 1..={max}"))),
            }
        }
        Some(other) => Err(invalid(format!(
            "unknown mode `{other}` (use single or ensemble)"
        ))),
    }
}

impl ChatJob {
    /// Whether the same job always gets the same answer from the same weights: greedy decoding, or
    /// sampling with a seed the caller chose.
    pub fn is_deterministic(&self) -> bool {
        self.params.temperature == 0.0 || self.seed_fixed
    }
}

fn invalid(msg: String) -> NodeError {
    NodeError::InvalidRequest(msg)
}

/// A seed for requests that did not give one.
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Why an answer ended, in OpenAI's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// End of turn or a stop string.
    Stop,
    /// Token, context or answer-size limit.
    Length,
}

impl Finish {
    /// OpenAI's `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// A finished answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatAnswer {
    /// The answer text (stop string excluded).
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
    /// Tokens in the templated prompt.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// The generated token ids (an audit scores exactly these; their text starts with `text`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_ids: Vec<u32>,
    /// The stop token the sampler drew when it ended the answer itself (None when a stop string,
    /// `max_tokens` or a limit cut it). An audit replays the sampler up to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_token: Option<u32>,
    /// For a paid job: the worker's signed receipt (hex of receipt ‖ signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<String>,
}

/// What a running job reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatEvent {
    /// More answer text.
    Delta(String),
    /// The answer is complete (its text repeats all deltas).
    Done(ChatAnswer),
    /// The job failed after it started.
    Failed(String),
}

/// Splits generated text at the first stop string, holding back a tail that could still start one.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    hold: usize,
}

impl StopMatcher {
    /// A matcher for these stop strings.
    pub fn new(stops: Vec<String>) -> Self {
        let hold = stops
            .iter()
            .map(|s| s.len().saturating_sub(1))
            .max()
            .unwrap_or(0);
        Self {
            stops,
            pending: String::new(),
            hold,
        }
    }

    /// Adds generated text; returns the text safe to emit and whether a stop string was hit.
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.pending.push_str(piece);
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        let mut split = self.pending.len().saturating_sub(self.hold);
        while !self.pending.is_char_boundary(split) {
            split -= 1;
        }
        let rest = self.pending.split_off(split);
        (std::mem::replace(&mut self.pending, rest), false)
    }

    /// The held-back tail once generation ended without a stop string.
    pub fn finish(self) -> String {
        self.pending
    }
}

/// Keeps a pipeline session counted ([`ModelHost::shard_session`]).
#[derive(Debug)]
pub struct SessionGuard(Arc<AtomicUsize>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The models this node serves, with a limit on concurrent generations.
#[derive(Debug)]
pub struct ModelHost {
    /// Served models; an adopted version replaces its model here ([`ModelHost::replace_model`]).
    models: std::sync::RwLock<BTreeMap<String, Arc<ChatModel>>>,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    queued: Arc<AtomicUsize>,
    /// Artificial pause after each emitted delta, in microseconds (0: none).
    delta_delay_us: Arc<AtomicU64>,
    /// Test knob: emit forged tokens instead of the model's (a cheating worker, for audit tests).
    forge: Arc<std::sync::atomic::AtomicBool>,
    /// Set at shutdown: new jobs are refused while running ones finish.
    draining: std::sync::atomic::AtomicBool,
    /// Models loaded only to judge audits (not served, not announced).
    audit_only: std::sync::RwLock<BTreeMap<String, Arc<ChatModel>>>,
    /// Layer ranges served to pipelines ([`crate::shard`]), by model id, with the measured
    /// compute per layer per token in microseconds.
    shards: std::sync::RwLock<BTreeMap<String, (Arc<ChatModel>, u32)>>,
    /// Pipeline sessions open on this node's shards.
    shard_sessions: Arc<AtomicUsize>,
    /// Experts served, by model id (`expert:<domain>`): a served model and a system prompt.
    experts: std::sync::RwLock<BTreeMap<String, Expert>>,
    /// Tokens generated here since start (for the heartbeat's recent tok/s).
    generated: Arc<AtomicU64>,
}

/// Prefix of the model id under which a node serves a domain expert: `expert:<domain>`.
pub const EXPERT_PREFIX: &str = "expert:";

/// A domain expert: a served model answering under a system prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expert {
    /// The served model it runs on.
    pub base: String,
    /// Put before the conversation (merged into the caller's own system message, if any).
    pub system_prompt: String,
}

impl ModelHost {
    /// A host for loaded models.
    pub fn new(models: BTreeMap<String, Arc<ChatModel>>, max_concurrent: usize) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Self {
            models: std::sync::RwLock::new(models),
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            queued: Arc::new(AtomicUsize::new(0)),
            delta_delay_us: Arc::new(AtomicU64::new(0)),
            forge: Arc::default(),
            audit_only: Default::default(),
            draining: Default::default(),
            shards: Default::default(),
            shard_sessions: Arc::default(),
            experts: Default::default(),
            generated: Arc::default(),
        }
    }

    /// Tokens generated on this node since it started.
    pub fn generated_tokens(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }

    /// Serves `expert:<domain>`: `base` (a model served here) under `system_prompt`.
    pub fn add_expert(&self, domain: &str, expert: Expert) -> Result<()> {
        if self.served(&expert.base).is_none() {
            return Err(NodeError::Config(format!(
                "expert `{domain}` runs on `{}`, which this node does not serve",
                expert.base
            )));
        }
        if let Ok(mut m) = self.experts.write() {
            m.insert(format!("{EXPERT_PREFIX}{domain}"), expert);
        }
        Ok(())
    }

    /// The model and conversation a job runs with: an expert id resolves to its base model, with the
    /// expert's system prompt first.
    fn resolve(&self, mut job: ChatJob) -> Result<(Arc<ChatModel>, ChatJob)> {
        if let Some(m) = self.served(&job.model) {
            return Ok((m, job));
        }
        let expert = self
            .experts
            .read()
            .ok()
            .and_then(|e| e.get(&job.model).cloned())
            .ok_or_else(|| NodeError::ModelNotFound(job.model.clone()))?;
        let model = self
            .served(&expert.base)
            .ok_or_else(|| NodeError::ModelNotFound(expert.base.clone()))?;
        match job.messages.first_mut() {
            Some(first) if first.role == mycel_models::Role::System => {
                first.content = format!("{}\n\n{}", expert.system_prompt, first.content);
            }
            _ => job
                .messages
                .insert(0, ChatMessage::system(expert.system_prompt.clone())),
        }
        Ok((model, job))
    }

    /// Counts an open pipeline session until the returned guard is dropped.
    pub fn shard_session(&self) -> SessionGuard {
        self.shard_sessions.fetch_add(1, Ordering::AcqRel);
        SessionGuard(self.shard_sessions.clone())
    }

    /// Pipeline sessions open on this node's shards.
    pub fn shard_sessions(&self) -> usize {
        self.shard_sessions.load(Ordering::Acquire)
    }

    /// The pause [`ModelHost::set_delta_delay`] asks for (also applied after each shard step).
    pub fn step_delay(&self) -> Duration {
        Duration::from_micros(self.delta_delay_us.load(Ordering::Relaxed))
    }

    /// Serves `model` (loaded with a layer range) to pipelines, replacing the range held before;
    /// sessions on the old range finish on it.
    pub fn set_shard(&self, id: &str, model: Arc<ChatModel>) {
        if let Ok(mut m) = self.shards.write() {
            m.insert(id.to_string(), (model, 0));
        }
    }

    /// The layer range of `model` this node serves to pipelines.
    pub fn shard(&self, id: &str) -> Option<Arc<ChatModel>> {
        self.shards
            .read()
            .ok()
            .and_then(|m| m.get(id).map(|(s, _)| s.clone()))
    }

    /// Folds one step's compute time into the per-layer figure heartbeats advertise (EWMA).
    pub fn record_shard_time(&self, id: &str, layers: u32, tokens: usize, took: Duration) {
        let per = took.as_micros() / u128::from(layers.max(1)) / tokens.max(1) as u128;
        let per = u32::try_from(per).unwrap_or(u32::MAX).max(1);
        if let Ok(mut m) = self.shards.write()
            && let Some((_, us)) = m.get_mut(id)
        {
            *us = if *us == 0 {
                per
            } else {
                u32::try_from((u64::from(*us) * 7 + u64::from(per)) / 8).unwrap_or(u32::MAX)
            };
        }
    }

    /// The layer ranges served, as heartbeats advertise them.
    pub fn shard_ads(&self) -> Vec<crate::heartbeat::ShardAd> {
        let Ok(m) = self.shards.read() else {
            return Vec::new();
        };
        m.iter()
            .map(|(id, (model, us))| crate::heartbeat::ShardAd {
                model: id.clone(),
                from: model.layer_range().start(),
                to: model.layer_range().end(),
                layer_us: *us,
                n_layers: model.config().n_layer,
            })
            .collect()
    }

    /// Stops taking new jobs (they get `busy`); running and queued ones go on.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// A model this node can run: a served one, or one loaded only for audits.
    pub fn model(&self, id: &str) -> Option<Arc<ChatModel>> {
        self.served(id)
            .or_else(|| self.audit_only.read().ok().and_then(|m| m.get(id).cloned()))
    }

    /// A model this node serves whole (not an expert, not a shard).
    pub fn served(&self, id: &str) -> Option<Arc<ChatModel>> {
        self.models.read().ok().and_then(|m| m.get(id).cloned())
    }

    /// Serves `model` as `id` from now on, in place of the model served so far under that id
    /// (returned); new jobs run on it, jobs already running finish on the old one. `None` (and
    /// nothing changes) when this node does not serve `id`.
    pub fn replace_model(&self, id: &str, model: Arc<ChatModel>) -> Option<Arc<ChatModel>> {
        let mut m = self.models.write().ok()?;
        let slot = m.get_mut(id)?;
        Some(std::mem::replace(slot, model))
    }

    /// Loads a model for judging audits only: the node neither serves nor announces it.
    pub fn add_audit_model(&self, id: &str, model: Arc<ChatModel>) {
        if let Ok(mut m) = self.audit_only.write() {
            m.insert(id.to_string(), model);
        }
    }

    /// Makes this host cheat: every generated token is replaced by another one (audit tests and
    /// demos of slashing; never set in production).
    pub fn set_forge_outputs(&self, on: bool) {
        self.forge.store(on, Ordering::Relaxed);
    }

    /// Whether the forging test knob is on ([`ModelHost::set_forge_outputs`]).
    pub fn forging(&self) -> bool {
        self.forge.load(Ordering::Relaxed)
    }

    /// Whether this node serves `model` (a model or an `expert:<domain>`).
    pub fn serves(&self, model: &str) -> bool {
        self.served(model).is_some() || self.experts.read().is_ok_and(|e| e.contains_key(model))
    }

    /// Ids of the served models, then of the served experts.
    pub fn model_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .models
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if let Ok(e) = self.experts.read() {
            ids.extend(e.keys().cloned());
        }
        ids
    }

    /// Generations running or waiting.
    pub fn load(&self) -> usize {
        self.max_concurrent - self.permits.available_permits() + self.queued.load(Ordering::Relaxed)
    }

    /// Slows generation down: pause this long after each emitted delta (tests, demos of failover).
    pub fn set_delta_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delta_delay_us.store(us, Ordering::Relaxed);
    }

    /// Starts a job; events arrive on the returned channel. Dropping it cancels generation.
    pub async fn start(&self, job: ChatJob) -> Result<mpsc::Receiver<ChatEvent>> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(NodeError::Busy("the node is shutting down".into()));
        }
        let (model, job) = self.resolve(job)?;
        // A prompt that does not fit is the caller's error, found before a slot is taken (inside
        // the generation it would only surface as a failed job).
        let prompt = model.encode_chat(&job.messages)?;
        let prompt_tokens = prompt.len();
        if prompt_tokens >= model.max_context() {
            return Err(NodeError::InvalidRequest(
                mycel_models::ModelsError::ContextOverflow {
                    prompt_tokens,
                    limit: model.max_context(),
                }
                .to_string(),
            ));
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.queued.fetch_add(1, Ordering::AcqRel) >= MAX_QUEUED_JOBS {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    return Err(NodeError::Busy(format!(
                        "{} generations running and {MAX_QUEUED_JOBS} queued",
                        self.max_concurrent
                    )));
                }
                let waited =
                    tokio::time::timeout(QUEUE_WAIT, self.permits.clone().acquire_owned()).await;
                self.queued.fetch_sub(1, Ordering::AcqRel);
                match waited {
                    Ok(Ok(p)) => p,
                    _ => {
                        return Err(NodeError::Busy(format!(
                            "no generation slot within {}s",
                            QUEUE_WAIT.as_secs()
                        )));
                    }
                }
            }
        };
        let (out_tx, out_rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
        let delay = self.delta_delay_us.clone();
        let forge = self.forge.load(Ordering::Relaxed);
        let generated = self.generated.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let event = run_job(model, job, prompt, &out_tx, &delay, forge).await;
            if let ChatEvent::Done(a) = &event {
                generated.fetch_add(u64::from(a.completion_tokens), Ordering::Relaxed);
            }
            let _ = out_tx.send(event).await;
        });
        Ok(out_rx)
    }
}

/// Runs one generation of the already tokenized `prompt`, forwarding deltas; returns the final
/// event.
async fn run_job(
    model: Arc<ChatModel>,
    job: ChatJob,
    prompt: Vec<u32>,
    out: &mpsc::Sender<ChatEvent>,
    delay_us: &AtomicU64,
    forge: bool,
) -> ChatEvent {
    let (tok_tx, tok_rx) = mpsc::channel(TOKEN_CHANNEL_CAPACITY);
    let handle = {
        let (model, params) = (model.clone(), job.params);
        tokio::task::spawn_blocking(move || {
            model.generate_from_ids(&mut model.new_session(), &prompt, &params, &tok_tx)
        })
    };
    let generation = async {
        match handle.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("generation task failed: {e}")),
        }
    };
    let vocab = u32::try_from(model.config().vocab_size)
        .unwrap_or(u32::MAX)
        .max(2);
    let forged = |tok: &mycel_models::Token| {
        let id = (tok.id.wrapping_mul(7).wrapping_add(13)) % vocab;
        (id, model.tokenizer().decode(&[id], true))
    };
    let forge: Option<&Forge<'_>> = if forge { Some(&forged) } else { None };
    relay_tokens(tok_rx, generation, job.stop, out, delay_us, forge).await
}

/// Replaces a generated token by a forged one (id and text).
pub(crate) type Forge<'a> = dyn Fn(&mycel_models::Token) -> (u32, String) + Sync + 'a;

/// Turns a generation's tokens into chat events: applies stop strings and the answer-size limit,
/// paces deltas (`delay_us`), and returns the final event once `generation` (which produced the
/// tokens) has ended. `forge` replaces each token (the cheating-worker test knob).
pub(crate) async fn relay_tokens(
    mut tok_rx: mpsc::Receiver<mycel_models::Token>,
    generation: impl std::future::Future<Output = std::result::Result<mycel_models::Completion, String>>,
    stop: Vec<String>,
    out: &mpsc::Sender<ChatEvent>,
    delay_us: &AtomicU64,
    forge: Option<&Forge<'_>>,
) -> ChatEvent {
    let mut matcher = StopMatcher::new(stop);
    let mut text = String::new();
    let mut tokens = 0u32;
    let mut ids = Vec::new();
    let mut cut: Option<Finish> = None;
    while let Some(tok) = tok_rx.recv().await {
        tokens += 1;
        let (id, piece) = match forge {
            Some(f) => f(&tok),
            None => (tok.id, tok.text),
        };
        ids.push(id);
        let (emit, stopped) = matcher.push(&piece);
        if !emit.is_empty() {
            text.push_str(&emit);
            if out.send(ChatEvent::Delta(emit)).await.is_err() {
                // The consumer left: dropping the token receiver below cancels generation.
                break;
            }
            let delay = delay_us.load(Ordering::Relaxed);
            if delay > 0 {
                tokio::time::sleep(Duration::from_micros(delay)).await;
            }
        }
        if stopped {
            cut = Some(Finish::Stop);
            break;
        }
        if text.len() >= MAX_ANSWER_BYTES {
            cut = Some(Finish::Length);
            break;
        }
    }
    drop(tok_rx);
    let completion = match generation.await {
        Ok(c) => c,
        Err(e) => return ChatEvent::Failed(e),
    };
    let stop_token = if cut.is_none() {
        completion.stop_token
    } else {
        None
    };
    let finish = match cut {
        Some(f) => f,
        None => {
            let tail = matcher.finish();
            if !tail.is_empty() {
                text.push_str(&tail);
                let _ = out.send(ChatEvent::Delta(tail)).await;
            }
            match completion.finish_reason {
                FinishReason::Stop | FinishReason::Cancelled => Finish::Stop,
                FinishReason::Length | FinishReason::ContextFull => Finish::Length,
            }
        }
    };
    ChatEvent::Done(ChatAnswer {
        text,
        finish,
        prompt_tokens: u32::try_from(completion.prompt_tokens).unwrap_or(u32::MAX),
        completion_tokens: tokens,
        token_ids: ids,
        stop_token,
        receipt: None,
    })
}

impl ChatJob {
    /// What a receipt says about this job and its answer.
    pub fn facts(&self, answer: &ChatAnswer) -> crate::ledger::JobFacts {
        job_facts(
            &self.model,
            &self.messages,
            &Drawn {
                params: &self.params,
                stop: &self.stop,
                stop_token: answer.stop_token,
            },
            &answer.text,
            answer.prompt_tokens,
            answer.completion_tokens,
        )
    }
}

/// How an answer was drawn, as its receipt commits to it (`WorkReceipt::sampling`).
#[derive(Debug, Serialize)]
pub struct Drawn<'a> {
    /// The job's sampling parameters, seed included.
    pub params: &'a SamplingParams,
    /// The job's stop strings.
    pub stop: &'a [String],
    /// The stop token the sampler drew ([`ChatAnswer::stop_token`]).
    pub stop_token: Option<u32>,
}

impl Drawn<'_> {
    /// blake3 of this as JSON (fields in declaration order).
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&serde_json::to_vec(self).unwrap_or_default()).as_bytes()
    }
}

/// The hashes and counts a work receipt commits to (specs/wire.md, "Paid jobs"): blake3 of the model
/// id, the weights hash, blake3 of the messages' JSON, blake3 of the answer text, how it was drawn,
/// token counts.
pub fn job_facts(
    model: &str,
    messages: &[ChatMessage],
    drawn: &Drawn<'_>,
    text: &str,
    prompt_tokens: u32,
    output_tokens: u32,
) -> crate::ledger::JobFacts {
    let prompt = serde_json::to_vec(messages).unwrap_or_default();
    crate::ledger::JobFacts {
        model: *blake3::hash(model.as_bytes()).as_bytes(),
        weights: crate::models::weights_hash(model),
        prompt_hash: *blake3::hash(&prompt).as_bytes(),
        output_hash: *blake3::hash(text.as_bytes()).as_bytes(),
        sampling: drawn.hash(),
        prompt_tokens,
        output_tokens,
    }
}

/// Collects a job's events into the final answer.
pub async fn collect(mut rx: mpsc::Receiver<ChatEvent>) -> Result<ChatAnswer> {
    while let Some(ev) = rx.recv().await {
        match ev {
            ChatEvent::Delta(_) => {}
            ChatEvent::Done(a) => return Ok(a),
            ChatEvent::Failed(e) => return Err(NodeError::Inference(e)),
        }
    }
    Err(NodeError::Inference(
        "generation ended without an answer".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_models::{LoadOptions, tiny};

    fn user(text: &str) -> Vec<ChatMessage> {
        vec![ChatMessage::user(text)]
    }

    #[test]
    fn stop_matcher_cuts_across_pieces_and_holds_back_prefixes() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("hello E"), ("hello".to_string(), false));
        assert_eq!(m.push("N"), (" ".to_string(), false));
        assert_eq!(m.push("D more"), (String::new(), true));
        let mut m = StopMatcher::new(vec!["xyz".into()]);
        let (a, s) = m.push("abc");
        assert!(!s);
        assert_eq!(format!("{a}{}", m.finish()), "abc");
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("é"), ("é".to_string(), false));
    }

    #[test]
    fn job_validation_rejects_out_of_range_values() {
        let ok = |s: SamplingRequest| ChatJob::new("tiny".into(), user("hi"), &s, vec![]);
        assert!(ok(SamplingRequest::default()).is_ok());
        for bad in [
            SamplingRequest {
                temperature: Some(2.5),
                ..Default::default()
            },
            SamplingRequest {
                temperature: Some(-0.1),
                ..Default::default()
            },
            SamplingRequest {
                top_p: Some(0.0),
                ..Default::default()
            },
            SamplingRequest {
                max_tokens: Some(0),
                ..Default::default()
            },
            SamplingRequest {
                max_tokens: Some(1 << 40),
                ..Default::default()
            },
        ] {
            assert!(matches!(ok(bad), Err(NodeError::InvalidRequest(_))));
        }
        let empty = ChatJob::new("tiny".into(), vec![], &SamplingRequest::default(), vec![]);
        assert!(matches!(empty, Err(NodeError::InvalidRequest(_))));
        let stops = ChatJob::new(
            "tiny".into(),
            user("hi"),
            &SamplingRequest::default(),
            vec![String::new()],
        );
        assert!(matches!(stops, Err(NodeError::InvalidRequest(_))));
    }

    #[tokio::test]
    async fn tiny_model_answers_and_respects_max_tokens() {
        let model = tiny::tiny_model(7, &LoadOptions::default()).expect("tiny model");
        let host = ModelHost::new(BTreeMap::from([("tiny".to_string(), Arc::new(model))]), 1);
        let job = ChatJob::new(
            "tiny".into(),
            user("hello"),
            &SamplingRequest {
                max_tokens: Some(8),
                seed: Some(1),
                ..Default::default()
            },
            vec![],
        )
        .expect("valid job");
        let rx = host.start(job).await.expect("started");
        let answer = collect(rx).await.expect("answer");
        assert!(answer.completion_tokens <= 8);
        assert!(answer.prompt_tokens > 0);
        if answer.finish == Finish::Length {
            assert_eq!(answer.completion_tokens, 8);
        }
        let missing = ChatJob::new(
            "other".into(),
            user("x"),
            &SamplingRequest::default(),
            vec![],
        )
        .expect("valid job");
        assert!(matches!(
            host.start(missing).await,
            Err(NodeError::ModelNotFound(_))
        ));
    }
}
