//! Chat jobs this node took: a bounded registry by completion id (`chatcmpl-…`), answering
//! `mycel_jobStatus`, and the task that follows a routed job to record how it ends.
//!
//! Every request answered through [`crate::node::Node::chat`] (JSON-RPC and OpenAI routes alike) is
//! a job: it is `running` from the moment the node takes it, then `done` (with its token counts) or
//! `failed` (with the reason, also when the client left before the end). A job forwarded to a paid
//! provider records the escrow that pays for it. The registry keeps the latest [`MAX_JOBS`] jobs
//! and forgets the oldest first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use mycel_identity::Did;
use mycel_rpc_api::{JobPayment, JobState, JobStatus};
use tokio::sync::mpsc;

use crate::cache::{CacheKey, CachedAnswer, ResponseCache};
use crate::chat::{ChatAnswer, ChatEvent, EVENT_CHANNEL_CAPACITY};
use crate::ledger::Payment;
use crate::node::ChatStream;

/// Jobs remembered; the oldest is forgotten when a new one arrives.
pub const MAX_JOBS: usize = 4096;
/// Longest error message kept per job (bytes); a provider's message can be long.
pub const MAX_ERROR_LEN: usize = 1024;
/// The error recorded for a job whose caller went away before the answer was complete.
pub const CANCELLED: &str = "cancelled: the client went away before the answer was complete";

/// One job as the registry holds it.
#[derive(Clone, Debug)]
struct JobRecord {
    model: String,
    state: JobState,
    served_by: Option<Did>,
    remote: bool,
    cached: bool,
    created_ms: u64,
    finished_ms: Option<u64>,
    answer: Option<(u32, u32, &'static str)>,
    error: Option<String>,
    payment: Option<Payment>,
    pipeline: Option<mycel_rpc_api::PipelineStatus>,
}

impl JobRecord {
    fn view(&self, id: &str) -> JobStatus {
        JobStatus {
            id: id.to_string(),
            model: self.model.clone(),
            state: self.state,
            served_by: self.served_by.map(|d| d.to_string()),
            remote: self.remote,
            cached: self.cached,
            created_ms: self.created_ms,
            finished_ms: self.finished_ms,
            prompt_tokens: self.answer.map(|a| a.0),
            completion_tokens: self.answer.map(|a| a.1),
            finish_reason: self.answer.map(|a| a.2.to_string()),
            error: self.error.clone(),
            payment: self.payment.as_ref().map(|p| JobPayment {
                escrow: hex::encode(p.escrow),
                job_id: hex::encode(p.job_id),
            }),
            pipeline: self.pipeline.clone(),
        }
    }
}

#[derive(Default)]
struct Jobs {
    by_id: HashMap<String, JobRecord>,
    /// Ids in the order the jobs arrived, oldest first.
    order: VecDeque<String>,
}

/// The registry of recent jobs (bounded, oldest forgotten first).
pub struct JobRegistry {
    capacity: usize,
    jobs: Mutex<Jobs>,
}

impl std::fmt::Debug for JobRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRegistry")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .finish()
    }
}

impl Default for JobRegistry {
    fn default() -> Self {
        Self::new(MAX_JOBS)
    }
}

/// Unix time in milliseconds.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl JobRegistry {
    /// A registry remembering at most `capacity` jobs (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            jobs: Mutex::new(Jobs::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, id: &str, record: JobRecord) {
        let mut jobs = self.lock();
        if jobs.by_id.insert(id.to_string(), record).is_some() {
            return;
        }
        jobs.order.push_back(id.to_string());
        while jobs.order.len() > self.capacity {
            if let Some(old) = jobs.order.pop_front() {
                jobs.by_id.remove(&old);
            }
        }
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut JobRecord)) {
        // A job evicted while running is simply no longer tracked.
        if let Some(record) = self.lock().by_id.get_mut(id) {
            f(record);
        }
    }

    /// Records a job the node just took.
    pub fn start(&self, id: &str, model: &str) {
        self.insert(
            id,
            JobRecord {
                model: model.to_string(),
                state: JobState::Running,
                served_by: None,
                remote: false,
                cached: false,
                created_ms: now_ms(),
                finished_ms: None,
                answer: None,
                error: None,
                payment: None,
                pipeline: None,
            },
        );
    }

    /// Records who started answering the job.
    pub fn routed(&self, id: &str, served_by: Did, remote: bool) {
        self.update(id, |r| {
            r.served_by = Some(served_by);
            r.remote = remote;
        });
    }

    /// Records a pipeline job's route and counters.
    pub fn pipeline(&self, id: &str, status: mycel_rpc_api::PipelineStatus) {
        self.update(id, |r| r.pipeline = Some(status));
    }

    /// Records the escrow paying for the job (a failover to another provider pays anew).
    pub fn paid(&self, id: &str, payment: &Payment) {
        self.update(id, |r| r.payment = Some(*payment));
    }

    /// Records a complete answer.
    pub fn done(&self, id: &str, answer: &ChatAnswer) {
        self.update(id, |r| {
            r.state = JobState::Done;
            r.finished_ms = Some(now_ms());
            r.answer = Some((
                answer.prompt_tokens,
                answer.completion_tokens,
                answer.finish.as_str(),
            ));
        });
    }

    /// Records a job that ended without a complete answer (the message cut to [`MAX_ERROR_LEN`]).
    pub fn fail(&self, id: &str, mut error: String) {
        if error.len() > MAX_ERROR_LEN {
            let mut end = MAX_ERROR_LEN;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
            error.push('…');
        }
        self.update(id, |r| {
            if r.state == JobState::Running {
                r.state = JobState::Failed;
                r.finished_ms = Some(now_ms());
                r.error = Some(error);
            }
        });
    }

    /// Records a job answered from the response cache and returns its stream.
    pub fn replay(&self, id: String, model: String, hit: &CachedAnswer) -> ChatStream {
        let now = now_ms();
        let a = &hit.answer;
        self.insert(
            &id,
            JobRecord {
                model: model.clone(),
                state: JobState::Done,
                served_by: Some(hit.served_by),
                remote: hit.remote,
                cached: true,
                created_ms: now,
                finished_ms: Some(now),
                answer: Some((a.prompt_tokens, a.completion_tokens, a.finish.as_str())),
                error: None,
                payment: None,
                pipeline: None,
            },
        );
        hit.replay(id, model)
    }

    /// The job's status, if it is still remembered.
    pub fn get(&self, id: &str) -> Option<JobStatus> {
        self.lock().by_id.get(id).map(|r| r.view(id))
    }

    /// Jobs remembered.
    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Whether no job is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Follows a routed job: forwards its events to the returned stream and records in `jobs` who
/// serves it and how it ends; a complete answer is stored in `cache` under `key` when given (a
/// deterministic job). Both are recorded before the caller sees the final event, so a status query
/// or a repeat right after the answer finds them. A caller that drops the stream cancels the job.
pub fn follow(
    jobs: Arc<JobRegistry>,
    mut stream: ChatStream,
    store: Option<(Arc<ResponseCache>, CacheKey)>,
) -> ChatStream {
    jobs.routed(&stream.id, stream.served_by, stream.remote);
    let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let mut events = std::mem::replace(&mut stream.events, rx);
    let id = stream.id.clone();
    let (served_by, served_by_peer, remote) =
        (stream.served_by, stream.served_by_peer, stream.remote);
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                ev = events.recv() => ev,
                // Dropping `events` on return cancels generation.
                _ = tx.closed() => break jobs.fail(&id, CANCELLED.into()),
            };
            let Some(ev) = ev else {
                break jobs.fail(&id, "the answer ended without a final event".into());
            };
            let last = match &ev {
                ChatEvent::Delta(_) => false,
                ChatEvent::Done(answer) => {
                    jobs.done(&id, answer);
                    if let Some((cache, key)) = &store {
                        cache.insert(
                            *key,
                            CachedAnswer {
                                // Receipts and token ids serve payment and audit of
                                // the original job only.
                                answer: ChatAnswer {
                                    receipt: None,
                                    token_ids: Vec::new(),
                                    ..answer.clone()
                                },
                                served_by,
                                served_by_peer,
                                remote,
                            },
                        );
                    }
                    true
                }
                ChatEvent::Failed(e) => {
                    jobs.fail(&id, e.clone());
                    true
                }
            };
            if tx.send(ev).await.is_err() {
                break jobs.fail(&id, CANCELLED.into());
            }
            if last {
                break;
            }
        }
    });
    stream
}

#[cfg(test)]
mod tests {
    use mycel_identity::Keypair;

    use super::*;
    use crate::cache::CACHE_BYTE_BUDGET;
    use crate::chat::{ChatJob, Finish, SamplingRequest};

    fn answer(text: &str) -> ChatAnswer {
        ChatAnswer {
            text: text.into(),
            finish: Finish::Length,
            prompt_tokens: 5,
            completion_tokens: 3,
            token_ids: vec![1, 2, 3],
            stop_token: None,
            receipt: Some("receipt".into()),
        }
    }

    fn stream(id: &str) -> (mpsc::Sender<ChatEvent>, ChatStream, Did) {
        let key = Keypair::generate();
        let did = Did::from_public_key(key.public());
        let (tx, events) = mpsc::channel(8);
        let s = ChatStream {
            id: id.into(),
            routing: None,
            cached: false,
            served_by: did,
            served_by_peer: key.peer_id(),
            remote: true,
            model: "tiny".into(),
            events,
        };
        (tx, s, did)
    }

    #[test]
    fn the_registry_forgets_the_oldest_jobs_first() {
        let jobs = JobRegistry::new(3);
        for n in 0..5 {
            jobs.start(&format!("job-{n}"), "tiny");
        }
        assert_eq!(jobs.len(), 3);
        assert!(jobs.get("job-0").is_none() && jobs.get("job-1").is_none());
        let s = jobs.get("job-4").expect("newest kept");
        assert_eq!(s.state, JobState::Running);
        assert_eq!(s.served_by, None);
        assert!(s.created_ms > 0 && s.finished_ms.is_none());
        // Updates of forgotten jobs are ignored, not re-inserted.
        jobs.done("job-0", &answer("x"));
        assert!(jobs.get("job-0").is_none());
        assert_eq!(jobs.len(), 3);
    }

    #[test]
    fn payments_and_failures_are_recorded_once() {
        let jobs = JobRegistry::default();
        jobs.start("j", "tiny");
        jobs.paid(
            "j",
            &Payment {
                escrow: [0xab; 32],
                job_id: [0xcd; 32],
            },
        );
        jobs.fail("j", "provider died".into());
        jobs.fail("j", "second reason".into());
        jobs.start("long", "tiny");
        jobs.fail("long", "é".repeat(MAX_ERROR_LEN));
        let kept = jobs.get("long").and_then(|s| s.error).expect("error kept");
        assert!(kept.len() <= MAX_ERROR_LEN + '…'.len_utf8() && kept.ends_with('…'));
        let s = jobs.get("j").expect("held");
        assert_eq!(s.state, JobState::Failed);
        assert_eq!(s.error.as_deref(), Some("provider died"));
        let p = s.payment.expect("paid");
        assert_eq!(p.escrow, "ab".repeat(32));
        assert_eq!(p.job_id, "cd".repeat(32));
    }

    #[tokio::test]
    async fn following_a_job_records_its_end_and_caches_a_deterministic_answer() {
        let jobs = Arc::new(JobRegistry::default());
        let cache = Arc::new(ResponseCache::new(8, CACHE_BYTE_BUDGET));
        let job = ChatJob::new(
            "tiny".into(),
            vec![mycel_models::ChatMessage::user("hi")],
            &SamplingRequest {
                temperature: Some(0.0),
                ..Default::default()
            },
            vec![],
        )
        .expect("job");
        let key = cache.key(&job).expect("greedy job has a key");
        jobs.start("j1", "tiny");
        let (tx, s, did) = stream("j1");
        let mut out = follow(jobs.clone(), s, Some((cache.clone(), key)));
        assert_eq!(
            jobs.get("j1").expect("held").served_by,
            Some(did.to_string())
        );
        tx.send(ChatEvent::Delta("abc".into())).await.expect("open");
        tx.send(ChatEvent::Done(answer("abc"))).await.expect("open");
        assert_eq!(
            out.events.recv().await,
            Some(ChatEvent::Delta("abc".into()))
        );
        assert!(matches!(out.events.recv().await, Some(ChatEvent::Done(_))));
        let s = jobs.get("j1").expect("held");
        assert_eq!(s.state, JobState::Done);
        assert_eq!(
            (
                s.prompt_tokens,
                s.completion_tokens,
                s.finish_reason.as_deref()
            ),
            (Some(5), Some(3), Some("length"))
        );
        assert!(s.remote && !s.cached);
        let hit = cache.get(&key).expect("stored");
        assert_eq!(hit.answer.text, "abc");
        assert_eq!(hit.answer.receipt, None, "receipts are never replayed");
        assert!(hit.answer.token_ids.is_empty());

        // A failed job is recorded and not cached.
        jobs.start("j2", "tiny");
        let (tx, s, _) = stream("j2");
        let mut out = follow(jobs.clone(), s, None);
        tx.send(ChatEvent::Failed("boom".into()))
            .await
            .expect("open");
        assert!(matches!(
            out.events.recv().await,
            Some(ChatEvent::Failed(_))
        ));
        assert_eq!(jobs.get("j2").expect("held").error.as_deref(), Some("boom"));

        // A caller that leaves cancels the job, which is recorded as failed.
        jobs.start("j3", "tiny");
        let (tx, s, _) = stream("j3");
        drop(follow(jobs.clone(), s, None));
        tokio::time::timeout(std::time::Duration::from_secs(5), tx.closed())
            .await
            .expect("the provider side is closed when the caller leaves");
        let s = jobs.get("j3").expect("held");
        assert_eq!(s.state, JobState::Failed);
        assert_eq!(s.error.as_deref(), Some(CANCELLED));

        // A cache hit is a done job of its own.
        let replayed = jobs.replay("j4".into(), "tiny".into(), &hit);
        assert!(replayed.cached);
        let s = jobs.get("j4").expect("held");
        assert!(s.cached && s.state == JobState::Done);
        assert_eq!(s.served_by, Some(did.to_string()));
    }
}
