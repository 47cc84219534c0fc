//! What the fuzz run watches while it attacks: panics in any thread (a process-wide hook),
//! resident memory over time, and liveness probes — every node answers a real chat over HTTP,
//! its network actor answers its handle, and a ledger node answers `ledger_info`.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mycel_node::network::NetworkHandle;
use serde::Serialize;

use crate::client::{self, Api, Outcome};
use crate::memory::rss_kib;
use crate::testnet::TestNet;

/// Panic messages kept.
const MAX_PANIC_MESSAGES: usize = 10;
/// Attempts of one probe while the node answers busy.
const PROBE_ATTEMPTS: u32 = 3;
/// Pause between two attempts.
const PROBE_RETRY_PAUSE: Duration = Duration::from_millis(500);

static PANICS: AtomicU64 = AtomicU64::new(0);
static PANIC_MESSAGES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static HOOK: std::sync::Once = std::sync::Once::new();

/// Installs (once per process) a panic hook that counts every panic in any thread, node tasks
/// included (tokio catches a task's panic, the hook still sees it), then runs the previous hook.
/// Returns the count so far, the baseline of [`panics_since`].
pub fn count_panics() -> u64 {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut m) = PANIC_MESSAGES.lock()
                && m.len() < MAX_PANIC_MESSAGES
            {
                let thread = std::thread::current().name().unwrap_or("?").to_string();
                m.push(format!("[{thread}] {info}"));
            }
            previous(info);
        }));
    });
    PANICS.load(Ordering::SeqCst)
}

/// Panics since `baseline` and the first messages.
pub fn panics_since(baseline: u64) -> (u64, Vec<String>) {
    let n = PANICS.load(Ordering::SeqCst).saturating_sub(baseline);
    let messages = PANIC_MESSAGES.lock().map(|m| m.clone()).unwrap_or_default();
    (n, messages)
}

/// One memory sample.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RssSample {
    /// Seconds since the attack began.
    pub t_s: f64,
    /// Resident memory of the whole process (nodes, attackers, harness), MiB.
    pub rss_mib: f64,
    /// Fuzz messages sent so far.
    pub sent: u64,
}

/// This process's resident memory in MiB (0 where `/proc` is missing).
pub fn rss_mib() -> f64 {
    rss_kib().map_or(0.0, |k| k as f64 / 1024.0)
}

/// A node the probes ask.
#[derive(Clone, Debug)]
pub struct Probed {
    /// Name in the report.
    pub label: String,
    /// Index in the TestNet (`None`: a side node).
    pub index: Option<usize>,
    /// HTTP API.
    pub http: SocketAddr,
    /// Its network handle (side nodes; TestNet nodes are asked through the TestNet).
    pub net: Option<NetworkHandle>,
    /// Whether it keeps a ledger.
    pub ledger: bool,
}

/// One probe of one node.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeRecord {
    /// Seconds since the attack began.
    pub t_s: f64,
    /// The node.
    pub node: String,
    /// The interface the chat went through.
    pub api: Api,
    /// Whether a complete answer came back.
    pub answered: bool,
    /// Seconds to the answer (or the failure).
    pub latency_s: f64,
    /// Busy refusals before the answer.
    pub busy: u32,
    /// Whether the network actor answered its handle.
    pub network_ok: bool,
    /// Whether `ledger_info` answered (`None`: no ledger).
    pub ledger_ok: Option<bool>,
    /// The ledger's epoch, when it answered.
    #[serde(skip)]
    pub epoch: Option<u64>,
    /// What failed.
    pub error: Option<String>,
}

impl ProbeRecord {
    /// Whether everything asked answered.
    pub fn ok(&self) -> bool {
        self.answered && self.network_ok && self.ledger_ok != Some(false)
    }
}

/// Probes `node`: a chat (retried while busy), its network actor, its ledger.
pub async fn probe(
    net: &tokio::sync::RwLock<TestNet>,
    node: &Probed,
    api: Api,
    timeout: Duration,
    seed: u64,
    t0: Instant,
) -> ProbeRecord {
    let t_s = t0.elapsed().as_secs_f64();
    let started = Instant::now();
    let query = TestNet::tiny_query("Are you still there?", seed);
    let mut busy = 0;
    let (answered, error) = loop {
        match client::ask(api, node.http, &query, timeout).await {
            Outcome::Answered(_) => break (true, None),
            Outcome::Busy(m) if busy + 1 < PROBE_ATTEMPTS => {
                busy += 1;
                let _ = m;
                tokio::time::sleep(PROBE_RETRY_PAUSE).await;
            }
            Outcome::Busy(m) => break (false, Some(format!("busy {PROBE_ATTEMPTS} times: {m}"))),
            Outcome::Failed(m) => break (false, Some(m)),
        }
    };
    let latency_s = started.elapsed().as_secs_f64();
    let network_ok = match (&node.net, node.index) {
        (Some(h), _) => tokio::time::timeout(timeout, h.peers())
            .await
            .is_ok_and(|r| r.is_ok()),
        (None, Some(i)) => {
            let guard = net.read().await;
            tokio::time::timeout(timeout, guard.peers(i))
                .await
                .is_ok_and(|r| r.is_ok())
        }
        (None, None) => true,
    };
    let (ledger_ok, epoch) = if node.ledger {
        match tokio::time::timeout(timeout, crate::ledger::info(node.http)).await {
            Ok(Ok(info)) => (Some(true), Some(info.epoch)),
            _ => (Some(false), None),
        }
    } else {
        (None, None)
    };
    let error = error.or_else(|| (!network_ok).then(|| "network actor did not answer".into()));
    let error = error.or_else(|| (ledger_ok == Some(false)).then(|| "ledger_info failed".into()));
    ProbeRecord {
        t_s,
        node: node.label.clone(),
        api,
        answered,
        latency_s,
        busy,
        network_ok,
        ledger_ok,
        epoch,
        error,
    }
}
