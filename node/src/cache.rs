//! The response cache: exact repeats of deterministic chat requests are answered from memory,
//! without running (or paying for) the model again.
//!
//! A job is deterministic when it decodes greedily (temperature 0) or samples with a seed the caller
//! chose ([`ChatJob::is_deterministic`]); a job with a clock seed and temperature above 0 is never
//! looked up nor stored. The key covers everything that decides the answer: the model id, the hash of
//! its weights ([`crate::models::weights_hash`]), the messages, temperature, top-k, top-p, max
//! tokens, stop strings and stop tokens, and the seed unless decoding is greedy. Only complete,
//! successful answers are stored. The cache is a bounded LRU: at most `max_entries` answers and
//! `max_bytes` bytes of answer text; the least recently used answers go first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::PeerId;
use mycel_identity::Did;
use mycel_models::ChatMessage;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::chat::{ChatAnswer, ChatEvent, ChatJob};
use crate::node::ChatStream;

/// Answers kept by default (config `response_cache_entries`; 0 turns the cache off).
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;
/// Most bytes of answer text (plus a fixed overhead per entry) the cache holds.
pub const CACHE_BYTE_BUDGET: usize = 16 * 1024 * 1024;
/// Bytes counted per entry on top of its text: key, bookkeeping and the provider's identity.
const ENTRY_OVERHEAD: usize = 256;
/// Model ids whose weights hash is remembered (computing one parses the model registry).
const MAX_WEIGHT_HASHES: usize = 64;

/// What identifies a deterministic answer: a blake3 hash over every input that decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

/// The inputs hashed into a [`CacheKey`], in a fixed order (JSON of this struct).
#[derive(Serialize)]
struct KeyInputs<'a> {
    /// Bumped whenever the key's meaning changes.
    version: u8,
    model: &'a str,
    weights: [u8; 32],
    messages: &'a [ChatMessage],
    temperature_bits: u32,
    top_k: Option<usize>,
    top_p_bits: Option<u32>,
    /// None for greedy decoding, where the seed does not matter.
    seed: Option<u64>,
    max_tokens: usize,
    stop_tokens: &'a [u32],
    stop: &'a [String],
}

impl CacheKey {
    /// The key of a deterministic job whose model has these weights; None for a job that samples
    /// with a clock seed (its answer is not meant to repeat).
    pub fn of(job: &ChatJob, weights: [u8; 32]) -> Option<Self> {
        if !job.is_deterministic() {
            return None;
        }
        let p = &job.params;
        let greedy = p.temperature == 0.0;
        let inputs = KeyInputs {
            version: 1,
            model: &job.model,
            weights,
            messages: &job.messages,
            temperature_bits: p.temperature.to_bits(),
            top_k: p.top_k,
            top_p_bits: p.top_p.map(f32::to_bits),
            seed: (!greedy).then_some(p.seed),
            max_tokens: p.max_tokens,
            stop_tokens: &p.stop_tokens,
            stop: &job.stop,
        };
        let bytes = serde_json::to_vec(&inputs).ok()?;
        Some(Self(*blake3::hash(&bytes).as_bytes()))
    }
}

/// A complete answer and the node that produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedAnswer {
    /// The answer (without receipt and token ids: a replay is neither paid nor audited).
    pub answer: ChatAnswer,
    /// DID of the node that ran the model.
    pub served_by: Did,
    /// PeerId of that node.
    pub served_by_peer: PeerId,
    /// Whether that node was another node.
    pub remote: bool,
}

impl CachedAnswer {
    /// Bytes this answer counts against the budget.
    fn cost(&self) -> usize {
        self.answer.text.len() + ENTRY_OVERHEAD
    }

    /// The answer as a stream for job `id`: the whole text as one delta, then `Done`.
    pub fn replay(&self, id: String, model: String) -> ChatStream {
        let (tx, events) = mpsc::channel(2);
        if !self.answer.text.is_empty() {
            let _ = tx.try_send(ChatEvent::Delta(self.answer.text.clone()));
        }
        let _ = tx.try_send(ChatEvent::Done(self.answer.clone()));
        ChatStream {
            id,
            routing: None,
            cached: true,
            served_by: self.served_by,
            served_by_peer: self.served_by_peer,
            remote: self.remote,
            model,
            events,
        }
    }
}

struct Slot {
    value: Arc<CachedAnswer>,
    /// Position in the recency order (higher: used more recently).
    tick: u64,
}

#[derive(Default)]
struct Lru {
    slots: HashMap<CacheKey, Slot>,
    /// Recency order: tick → key, oldest first.
    order: BTreeMap<u64, CacheKey>,
    next_tick: u64,
    bytes: usize,
}

impl Lru {
    fn touch(&mut self, key: CacheKey) -> Option<Arc<CachedAnswer>> {
        let tick = self.next_tick;
        let slot = self.slots.get_mut(&key)?;
        self.order.remove(&slot.tick);
        slot.tick = tick;
        self.order.insert(tick, key);
        self.next_tick += 1;
        Some(slot.value.clone())
    }

    fn remove(&mut self, key: &CacheKey) {
        if let Some(slot) = self.slots.remove(key) {
            self.order.remove(&slot.tick);
            self.bytes -= slot.value.cost();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_first()
            && let Some(slot) = self.slots.remove(&key)
        {
            self.bytes -= slot.value.cost();
        }
    }
}

/// A bounded LRU of deterministic answers, shared by the node's HTTP routes.
pub struct ResponseCache {
    max_entries: usize,
    max_bytes: usize,
    lru: Mutex<Lru>,
    weights: Mutex<HashMap<String, [u8; 32]>>,
    /// Weights hashes of adopted versions ([`ResponseCache::set_weights`]); never forgotten, at
    /// most [`MAX_WEIGHT_HASHES`] (a node adopts versions only of models it serves).
    adopted: Mutex<HashMap<String, [u8; 32]>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("len", &self.len())
            .finish()
    }
}

impl ResponseCache {
    /// A cache of at most `max_entries` answers and `max_bytes` bytes (0 entries: off).
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        Self {
            max_entries,
            max_bytes,
            lru: Mutex::new(Lru::default()),
            weights: Mutex::new(HashMap::new()),
            adopted: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the cache may hold anything.
    pub fn enabled(&self) -> bool {
        self.max_entries > 0 && self.max_bytes > 0
    }

    /// The key of `job` when the cache is on and the job is deterministic.
    pub fn key(&self, job: &ChatJob) -> Option<CacheKey> {
        if !self.enabled() || !job.is_deterministic() {
            return None;
        }
        CacheKey::of(job, self.weights_hash(&job.model))
    }

    /// The cached answer for `key`, marking it as recently used.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<CachedAnswer>> {
        self.lru
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .touch(*key)
    }

    /// Stores an answer (replacing any under the same key), evicting the least recently used ones
    /// to stay within both bounds. An answer larger than the whole byte budget is not stored.
    pub fn insert(&self, key: CacheKey, value: CachedAnswer) {
        let cost = value.cost();
        if !self.enabled() || cost > self.max_bytes {
            return;
        }
        let mut lru = self.lru.lock().unwrap_or_else(PoisonError::into_inner);
        lru.remove(&key);
        while !lru.slots.is_empty()
            && (lru.slots.len() >= self.max_entries || lru.bytes + cost > self.max_bytes)
        {
            lru.evict_oldest();
        }
        let tick = lru.next_tick;
        lru.next_tick += 1;
        lru.order.insert(tick, key);
        lru.bytes += cost;
        lru.slots.insert(
            key,
            Slot {
                value: Arc::new(value),
                tick,
            },
        );
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.lru
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .len()
    }

    /// Whether no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes counted against the budget.
    pub fn bytes(&self) -> usize {
        self.lru
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    /// `model` now runs on weights with this hash (an adopted version): answers cached for its
    /// previous weights are no longer found (their keys name the old hash) and age out.
    pub fn set_weights(&self, model: &str, hash: [u8; 32]) {
        let mut adopted = self.adopted.lock().unwrap_or_else(PoisonError::into_inner);
        if adopted.len() < MAX_WEIGHT_HASHES || adopted.contains_key(model) {
            adopted.insert(model.to_string(), hash);
        }
    }

    /// The weights hash of `model`, remembered for the few models a node sees.
    fn weights_hash(&self, model: &str) -> [u8; 32] {
        let adopted = self.adopted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = adopted.get(model) {
            return *h;
        }
        drop(adopted);
        let mut known = self.weights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = known.get(model) {
            return *h;
        }
        let h = crate::models::weights_hash(model);
        if known.len() >= MAX_WEIGHT_HASHES {
            known.clear();
        }
        known.insert(model.to_string(), h);
        h
    }
}

#[cfg(test)]
mod tests {
    use mycel_identity::Keypair;

    use super::*;
    use crate::chat::{Finish, SamplingRequest};

    fn job(temperature: f64, seed: Option<u64>, max_tokens: u64) -> ChatJob {
        ChatJob::new(
            "tiny".into(),
            vec![ChatMessage::user("hello")],
            &SamplingRequest {
                temperature: Some(temperature),
                seed,
                max_tokens: Some(max_tokens),
                ..Default::default()
            },
            vec![],
        )
        .expect("valid job")
    }

    fn answer(text: &str) -> CachedAnswer {
        let key = Keypair::generate();
        CachedAnswer {
            answer: ChatAnswer {
                text: text.into(),
                finish: Finish::Stop,
                prompt_tokens: 3,
                completion_tokens: 2,
                token_ids: Vec::new(),
                stop_token: None,
                receipt: None,
            },
            served_by: Did::from_public_key(key.public()),
            served_by_peer: key.peer_id(),
            remote: false,
        }
    }

    #[test]
    fn only_deterministic_jobs_have_keys_and_every_input_counts() {
        let w = [7; 32];
        let greedy = CacheKey::of(&job(0.0, None, 8), w).expect("greedy is deterministic");
        // Greedy: the (clock) seed does not matter.
        assert_eq!(CacheKey::of(&job(0.0, Some(5), 8), w), Some(greedy));
        assert_eq!(CacheKey::of(&job(0.7, None, 8), w), None, "clock seed");
        let seeded = CacheKey::of(&job(0.7, Some(5), 8), w).expect("explicit seed");
        assert_ne!(seeded, greedy);
        assert_ne!(CacheKey::of(&job(0.7, Some(6), 8), w), Some(seeded));
        assert_ne!(CacheKey::of(&job(0.0, None, 9), w), Some(greedy));
        assert_ne!(CacheKey::of(&job(0.0, None, 8), [8; 32]), Some(greedy));
        let mut other = job(0.0, None, 8);
        other.stop = vec!["x".into()];
        assert_ne!(CacheKey::of(&other, w), Some(greedy));
        other = job(0.0, None, 8);
        other.params.top_p = Some(0.5);
        assert_ne!(CacheKey::of(&other, w), Some(greedy));
        other = job(0.0, None, 8);
        other.model = "other".into();
        assert_ne!(CacheKey::of(&other, w), Some(greedy));
        other = job(0.0, None, 8);
        other.messages = vec![ChatMessage::user("hello!")];
        assert_ne!(CacheKey::of(&other, w), Some(greedy));
    }

    #[test]
    fn a_disabled_cache_has_no_keys_and_stores_nothing() {
        let cache = ResponseCache::new(0, CACHE_BYTE_BUDGET);
        assert_eq!(cache.key(&job(0.0, None, 8)), None);
        let key = CacheKey::of(&job(0.0, None, 8), [0; 32]).expect("key");
        cache.insert(key, answer("hi"));
        assert!(cache.is_empty());
    }

    fn key(n: u64) -> CacheKey {
        CacheKey::of(&job(0.5, Some(n), 8), [0; 32]).expect("key")
    }

    #[test]
    fn evicts_the_least_recently_used_entry_first() {
        let cache = ResponseCache::new(3, CACHE_BYTE_BUDGET);
        for n in 0..3 {
            cache.insert(key(n), answer(&format!("answer {n}")));
        }
        // Using 0 makes 1 the oldest.
        assert_eq!(cache.get(&key(0)).expect("held").answer.text, "answer 0");
        cache.insert(key(3), answer("answer 3"));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key(1)).is_none(), "1 was least recently used");
        for n in [0, 2, 3] {
            assert!(cache.get(&key(n)).is_some(), "{n} kept");
        }
        // Replacing an entry keeps the count and the byte total exact.
        cache.insert(key(3), answer("longer answer 3"));
        assert_eq!(cache.len(), 3);
        assert_eq!(
            cache.bytes(),
            ["answer 0", "answer 2", "longer answer 3"]
                .iter()
                .map(|t| t.len() + ENTRY_OVERHEAD)
                .sum::<usize>()
        );
    }

    #[test]
    fn the_byte_budget_bounds_the_cache() {
        let budget = 4 * (100 + ENTRY_OVERHEAD);
        let cache = ResponseCache::new(1000, budget);
        for n in 0..10 {
            cache.insert(key(n), answer(&"x".repeat(100)));
            assert!(cache.bytes() <= budget);
        }
        assert_eq!(cache.len(), 4);
        assert!(cache.get(&key(9)).is_some() && cache.get(&key(5)).is_none());
        // Larger than the whole budget: not stored, nothing evicted for it.
        cache.insert(key(42), answer(&"y".repeat(budget)));
        assert!(cache.get(&key(42)).is_none());
        assert_eq!(cache.len(), 4);
    }

    #[tokio::test]
    async fn a_replay_is_one_delta_then_done() {
        let hit = answer("cached text");
        let mut stream = hit.replay("chatcmpl-1".into(), "tiny".into());
        assert!(stream.cached);
        assert_eq!(stream.id, "chatcmpl-1");
        assert_eq!(
            stream.events.recv().await,
            Some(ChatEvent::Delta("cached text".into()))
        );
        assert_eq!(
            stream.events.recv().await,
            Some(ChatEvent::Done(hit.answer.clone()))
        );
        assert_eq!(stream.events.recv().await, None);
    }
}
