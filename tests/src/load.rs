//! Load test: a small net (3 providers, 2 forwarders by default) under hundreds of concurrent
//! streaming clients for a bounded time.
//!
//! Clients stream answers over OpenAI SSE (one keep-alive HTTP connection per client) and over the
//! JSON-RPC `mycel_subscribeChat` WebSocket subscription (one long-lived WebSocket per client), spread
//! over every node, so both local generation and forwarding over libp2p are loaded. A client that
//! is told "busy" (HTTP 503 `busy`, JSON-RPC -32003) backs off and retries: that is backpressure,
//! counted as *shed*, not as an error. Anything else is an error: a broken or malformed stream, an
//! error status, a deadline.
//!
//! Measured: errors, time to first token (TTFT) and total latency percentiles, throughput, and this
//! process's resident memory (`VmRSS`) every second. The process holds the nodes *and* the clients,
//! so the RSS curve covers both; its bookkeeping is constant-size (histograms, counters).
//!
//! Goals: no errors; memory does not keep growing: the peak of the second half stays within
//! `rss_growth_ratio` (plus `rss_slack_mib`) of the first half's peak, and after the load every
//! node still answers.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::client::{self, Api, ChatQuery, HttpClient, Outcome, RpcStreamClient};
use crate::error::{Error, Result};
use crate::memory::rss_kib;
use crate::plot::{Axis, Chart, Series};
use crate::report::{secs, verdict};
use crate::rng::SimRng;
use crate::stats::{BoundedLog, Histogram, Percentiles};
use crate::testnet::{NetOptions, TestNet, Topology};

/// Error messages quoted in the report.
const MAX_QUOTED_ERRORS: usize = 20;
/// Most memory samples kept.
const MAX_RSS_SAMPLES: usize = 100_000;
/// How long the net may take to connect before the load starts.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Parameters of a load run.
#[derive(Clone, Debug, Serialize)]
pub struct LoadConfig {
    /// Nodes in the net.
    pub nodes: usize,
    /// How many of them serve nothing and forward.
    pub forwarders: usize,
    /// Concurrent OpenAI SSE clients.
    pub sse_clients: usize,
    /// Concurrent JSON-RPC WebSocket clients.
    pub ws_clients: usize,
    /// Load time.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Clients start spread over this long.
    #[serde(with = "secs")]
    pub ramp: Duration,
    /// Tokens per answer.
    pub max_tokens: u32,
    /// Shortest pause of a client between an answer and its next request.
    #[serde(with = "secs")]
    pub think_min: Duration,
    /// Longest such pause (uniform in `[think_min, think_max]`).
    #[serde(with = "secs")]
    pub think_max: Duration,
    /// Pause after a first busy refusal before retrying; it doubles with every further refusal in
    /// a row (with jitter), up to `busy_backoff_max`.
    #[serde(with = "secs")]
    pub busy_backoff: Duration,
    /// Longest pause after busy refusals.
    #[serde(with = "secs")]
    pub busy_backoff_max: Duration,
    /// Deadline of one request.
    #[serde(with = "secs")]
    pub request_timeout: Duration,
    /// How often memory is sampled.
    #[serde(with = "secs")]
    pub rss_interval: Duration,
    /// Seed of the clients' choices.
    pub seed: u64,
    /// Goal: the second half's peak RSS is at most this much above the first half's (ratio) …
    pub rss_growth_ratio: f64,
    /// … plus this many MiB.
    pub rss_slack_mib: f64,
}

impl LoadConfig {
    /// The long form: 400 streaming clients for 2 minutes, thinking 0.5–3 s between questions (more
    /// than the net answers on two cores: some are refused as busy and retried).
    pub fn full() -> Self {
        Self {
            nodes: 5,
            forwarders: 2,
            sse_clients: 300,
            ws_clients: 100,
            duration: Duration::from_secs(120),
            ramp: Duration::from_secs(5),
            max_tokens: 32,
            think_min: Duration::from_millis(500),
            think_max: Duration::from_millis(3000),
            busy_backoff: Duration::from_millis(250),
            busy_backoff_max: Duration::from_secs(4),
            request_timeout: Duration::from_secs(60),
            rss_interval: Duration::from_secs(1),
            seed: 0x6c6f_6164,
            rss_growth_ratio: 0.10,
            rss_slack_mib: 16.0,
        }
    }

    /// `--quick`: 200 streaming clients for 40 s.
    pub fn quick() -> Self {
        Self {
            sse_clients: 150,
            ws_clients: 50,
            duration: Duration::from_secs(40),
            ..Self::full()
        }
    }

    /// The test-suite form: 200 streaming clients for 24 s, thinking 2–6 s between questions, which
    /// offers about two thirds of what the net answers on two cores (the long forms offer more than
    /// it can answer, so busy refusals and backoff are exercised too).
    pub fn short() -> Self {
        Self {
            duration: Duration::from_secs(24),
            ramp: Duration::from_secs(3),
            think_min: Duration::from_secs(2),
            think_max: Duration::from_secs(6),
            ..Self::quick()
        }
    }

    fn check(&self) -> Result<()> {
        if self.nodes == 0 || self.forwarders >= self.nodes {
            return Err(Error::Invalid(
                "the load net needs at least one provider".into(),
            ));
        }
        if self.sse_clients + self.ws_clients == 0 || self.duration.is_zero() {
            return Err(Error::Invalid(
                "no clients or no time: nothing to load".into(),
            ));
        }
        if self.rss_interval.is_zero() {
            return Err(Error::Invalid("rss_interval must not be zero".into()));
        }
        Ok(())
    }
}

/// Counts and latencies of one interface.
#[derive(Clone, Debug, Default)]
struct ApiStats {
    answered: u64,
    shed: u64,
    errors: u64,
    ttft: Histogram,
    total: Histogram,
}

/// What every client adds to; one short lock per request.
#[derive(Debug, Default)]
struct Shared {
    sse: ApiStats,
    ws: ApiStats,
    error_messages: Vec<String>,
    in_flight: u64,
}

impl Shared {
    fn stats(&mut self, api: Api) -> &mut ApiStats {
        if api == Api::RpcStream {
            &mut self.ws
        } else {
            &mut self.sse
        }
    }
}

/// Figures of one interface.
#[derive(Clone, Debug, Serialize)]
pub struct ApiFigures {
    /// Interface.
    pub api: Api,
    /// Complete answers.
    pub answered: u64,
    /// Refused as busy (retried).
    pub shed: u64,
    /// Errors.
    pub errors: u64,
    /// Time to first token of answers with text.
    pub ttft: Percentiles,
    /// Time to the complete answer.
    pub total: Percentiles,
}

/// One memory sample.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RssSample {
    /// Seconds since the load began.
    pub t_s: f64,
    /// Resident memory, MiB.
    pub rss_mib: f64,
    /// Answers completed so far.
    pub answered: u64,
    /// Requests in flight.
    pub in_flight: u64,
}

/// The outcome of a load run.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    /// The parameters.
    pub config: LoadConfig,
    /// Time to start and connect the net, seconds.
    pub setup_s: f64,
    /// Load time, seconds.
    pub duration_s: f64,
    /// Answers per second over the load time.
    pub throughput_per_s: f64,
    /// All answers.
    pub answered: u64,
    /// All busy refusals (retried).
    pub shed: u64,
    /// All errors.
    pub errors: u64,
    /// TTFT over both interfaces.
    pub ttft: Percentiles,
    /// Total latency over both interfaces.
    pub total: Percentiles,
    /// Per interface.
    pub by_api: Vec<ApiFigures>,
    /// RSS before the nodes started, MiB.
    pub rss_before_start_mib: f64,
    /// Peak RSS of the first half of the load, MiB.
    pub rss_first_half_peak_mib: f64,
    /// Peak RSS of the second half, MiB.
    pub rss_second_half_peak_mib: f64,
    /// RSS after the load, with the nodes still up, MiB.
    pub rss_after_mib: f64,
    /// Nodes that failed to answer one question after the load.
    pub unhealthy_after: Vec<String>,
    /// Goal: no errors.
    pub errors_goal_met: bool,
    /// Goal: memory bounded and nodes healthy after the load.
    pub memory_goal_met: bool,
    /// Some error messages (at most 20).
    pub error_messages: Vec<String>,
    /// Memory and progress over time.
    pub rss: Vec<RssSample>,
}

impl crate::report::Report for LoadReport {
    /// Whether every goal was met.
    fn goals_met(&self) -> bool {
        self.errors_goal_met && self.memory_goal_met
    }

    /// The figures in a few lines (for the terminal).
    fn summary(&self) -> String {
        format!(
            "load: {} nodes ({} forwarders), {} SSE + {} WebSocket clients for {:.0} s\n\
             answers: {} ({:.0}/s), shed (busy, retried): {}, errors: {} (goal 0: {})\n\
             TTFT: p50 {:.1} ms, p99 {:.1} ms; total: p50 {:.1} ms, p99 {:.1} ms\n\
             RSS: {:.0} MiB before start, first-half peak {:.0} MiB, second-half peak {:.0} MiB \
             (limit {:.0}), after {:.0} MiB; unhealthy after load: {} (memory goal: {})",
            self.config.nodes,
            self.config.forwarders,
            self.config.sse_clients,
            self.config.ws_clients,
            self.duration_s,
            self.answered,
            self.throughput_per_s,
            self.shed,
            self.errors,
            verdict(self.errors_goal_met),
            self.ttft.p50_ms,
            self.ttft.p99_ms,
            self.total.p50_ms,
            self.total.p99_ms,
            self.rss_before_start_mib,
            self.rss_first_half_peak_mib,
            self.rss_second_half_peak_mib,
            self.rss_limit_mib(),
            self.rss_after_mib,
            self.unhealthy_after.len(),
            verdict(self.memory_goal_met),
        )
    }

    /// The report as Markdown.
    fn to_markdown(&self) -> String {
        let c = &self.config;
        let mut s = String::from("# Load test\n\n");
        s.push_str(&format!(
            "{} nodes on loopback in one process ({} serve `tiny`, {} forward), {} OpenAI SSE \
             clients and {} JSON-RPC WebSocket clients streaming {}-token answers for {:.0} s, \
             spread over every node; a busy refusal is retried after {:.0} ms, doubling per \
             refusal in a row up to {:.0} s. RSS is this process's (nodes and clients \
             together).\n\n",
            c.nodes,
            c.nodes - c.forwarders,
            c.forwarders,
            c.sse_clients,
            c.ws_clients,
            c.max_tokens,
            c.duration.as_secs_f64(),
            c.busy_backoff.as_secs_f64() * 1e3,
            c.busy_backoff_max.as_secs_f64()
        ));
        s.push_str("| figure | value | goal |\n|---|---|---|\n");
        s.push_str(&format!(
            "| errors | {} | 0: {} |\n",
            self.errors,
            verdict(self.errors_goal_met)
        ));
        s.push_str(&format!(
            "| answers | {} ({:.0}/s); {} busy refusals retried | |\n",
            self.answered, self.throughput_per_s, self.shed
        ));
        s.push_str(&format!(
            "| TTFT | p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms | |\n",
            self.ttft.p50_ms, self.ttft.p90_ms, self.ttft.p99_ms, self.ttft.max_ms
        ));
        s.push_str(&format!(
            "| total latency | p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms | |\n",
            self.total.p50_ms, self.total.p90_ms, self.total.p99_ms, self.total.max_ms
        ));
        s.push_str(&format!(
            "| RSS | {:.0} MiB before start; peak {:.0} MiB (1st half) → {:.0} MiB (2nd half); \
             {:.0} MiB after | 2nd ≤ {:.0} MiB and every node answers after: {} |\n\n",
            self.rss_before_start_mib,
            self.rss_first_half_peak_mib,
            self.rss_second_half_peak_mib,
            self.rss_after_mib,
            self.rss_limit_mib(),
            verdict(self.memory_goal_met)
        ));
        s.push_str(
            "| interface | answered | shed | errors | TTFT p50 / p99 (ms) | total p50 / p99 (ms) |\n\
             |---|---|---|---|---|---|\n",
        );
        for a in &self.by_api {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.1} / {:.1} | {:.1} / {:.1} |\n",
                a.api.name(),
                a.answered,
                a.shed,
                a.errors,
                a.ttft.p50_ms,
                a.ttft.p99_ms,
                a.total.p50_ms,
                a.total.p99_ms
            ));
        }
        if !self.unhealthy_after.is_empty() || !self.error_messages.is_empty() {
            s.push_str("\nProblems:\n\n");
            for e in self.unhealthy_after.iter().chain(&self.error_messages) {
                s.push_str(&format!("- `{}`\n", e.replace('`', "'")));
            }
        }
        s.push_str("\nPlot: `load.svg` (RSS and answers per second over time).\n");
        s
    }

    /// RSS and answer rate over time.
    fn to_svg(&self) -> String {
        let peak = self.rss.iter().map(|r| r.rss_mib).fold(0.0, f64::max);
        let rate: Vec<(f64, f64)> = self
            .rss
            .windows(2)
            .filter(|w| w[1].t_s > w[0].t_s)
            .map(|w| {
                (
                    w[1].t_s,
                    (w[1].answered - w[0].answered) as f64 / (w[1].t_s - w[0].t_s),
                )
            })
            .collect();
        let max_rate = rate.iter().map(|r| r.1).fold(1.0, f64::max);
        Chart {
            title: format!(
                "Load: {} streaming clients on {} nodes",
                self.config.sse_clients + self.config.ws_clients,
                self.config.nodes
            ),
            x_label: "time (s)".into(),
            y_label: "RSS (MiB)".into(),
            y2_label: "answers/s, in flight".into(),
            x_max: self.duration_s,
            y_max: (peak * 1.2).max(self.rss_limit_mib() * 1.05),
            y2_max: max_rate.max(
                self.rss
                    .iter()
                    .map(|r| r.in_flight as f64)
                    .fold(1.0, f64::max),
            ) * 1.1,
            series: vec![
                Series {
                    name: "RSS".into(),
                    color: "#d95f02".into(),
                    dashed: false,
                    axis: Axis::Left,
                    points: self.rss.iter().map(|r| (r.t_s, r.rss_mib)).collect(),
                },
                Series {
                    name: "RSS limit".into(),
                    color: "#d95f02".into(),
                    dashed: true,
                    axis: Axis::Left,
                    points: vec![
                        (self.duration_s / 2.0, self.rss_limit_mib()),
                        (self.duration_s, self.rss_limit_mib()),
                    ],
                },
                Series {
                    name: "answers/s".into(),
                    color: "#1b9e77".into(),
                    dashed: false,
                    axis: Axis::Right,
                    points: rate,
                },
                Series {
                    name: "requests in flight".into(),
                    color: "#7570b3".into(),
                    dashed: false,
                    axis: Axis::Right,
                    points: self
                        .rss
                        .iter()
                        .map(|r| (r.t_s, r.in_flight as f64))
                        .collect(),
                },
            ],
            markers: vec![(self.duration_s / 2.0, "second half".into())],
            spans: Vec::new(),
            span_label: String::new(),
        }
        .to_svg()
    }
}

impl LoadReport {
    fn rss_limit_mib(&self) -> f64 {
        self.rss_first_half_peak_mib * (1.0 + self.config.rss_growth_ratio)
            + self.config.rss_slack_mib
    }
}

fn mib(kib: Option<u64>) -> f64 {
    kib.map_or(0.0, |k| k as f64 / 1024.0)
}

/// Runs a load test; `progress` receives one line per step.
pub async fn run(cfg: &LoadConfig, progress: &(dyn Fn(&str) + Sync)) -> Result<LoadReport> {
    cfg.check()?;
    let rss_before_start_mib = mib(rss_kib());
    let setup_started = Instant::now();
    let net = TestNet::start(
        cfg.nodes,
        NetOptions {
            forwarders: cfg.forwarders,
            topology: Topology::Full,
            seed: cfg.seed,
            ..NetOptions::default()
        },
    )
    .await?;
    net.wait_connected(SETUP_TIMEOUT).await?;
    net.wait_covered(cfg.nodes - cfg.forwarders, SETUP_TIMEOUT)
        .await?;
    let setup = setup_started.elapsed();
    let addrs: Vec<SocketAddr> = net
        .live()
        .into_iter()
        .map(|i| net.http_addr(i))
        .collect::<Result<_>>()?;
    progress(&format!(
        "{} nodes up and connected in {:.1}s; starting {} clients",
        addrs.len(),
        setup.as_secs_f64(),
        cfg.sse_clients + cfg.ws_clients
    ));

    let shared = Arc::new(Mutex::new(Shared::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let t0 = Instant::now();
    let mut rng = SimRng::new(cfg.seed);
    let clients = cfg.sse_clients + cfg.ws_clients;
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let api = if c < cfg.sse_clients {
            Api::OpenAiStream
        } else {
            Api::RpcStream
        };
        tasks.push(tokio::spawn(client_loop(
            api,
            addrs[c % addrs.len()],
            cfg.clone(),
            rng.next_u64(),
            cfg.ramp.mul_f64(c as f64 / clients as f64),
            shared.clone(),
            stop_rx.clone(),
        )));
    }
    let sampler = tokio::spawn(sample_rss(
        shared.clone(),
        cfg.rss_interval,
        t0,
        stop_rx.clone(),
    ));
    let half = t0 + cfg.duration / 2;
    tokio::time::sleep_until(half.into()).await;
    progress("half-time");
    tokio::time::sleep_until((t0 + cfg.duration).into()).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        t.await
            .map_err(|e| Error::Invalid(format!("a client panicked: {e}")))?;
    }
    let duration = t0.elapsed();
    let rss = sampler
        .await
        .map_err(|e| Error::Invalid(format!("the sampler panicked: {e}")))?;

    // Every node must still answer once the load is gone.
    let mut unhealthy_after = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let q = TestNet::tiny_query("Are you still there?", 7);
        match client::ask(Api::OpenAi, *addr, &q, cfg.request_timeout).await {
            Outcome::Answered(_) => {}
            other => unhealthy_after.push(format!("node {i} after the load: {other:?}")),
        }
    }
    let rss_after_mib = mib(rss_kib());
    net.shutdown().await;

    let shared = shared
        .lock()
        .map_err(|_| Error::Invalid("a client panicked holding the stats".into()))?;
    Ok(build_report(
        cfg,
        setup,
        duration,
        &shared,
        rss.items().to_vec(),
        rss_before_start_mib,
        rss_after_mib,
        unhealthy_after,
    ))
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    cfg: &LoadConfig,
    setup: Duration,
    duration: Duration,
    shared: &Shared,
    rss: Vec<RssSample>,
    rss_before_start_mib: f64,
    rss_after_mib: f64,
    unhealthy_after: Vec<String>,
) -> LoadReport {
    let figures = |api: Api, s: &ApiStats| ApiFigures {
        api,
        answered: s.answered,
        shed: s.shed,
        errors: s.errors,
        ttft: s.ttft.percentiles(),
        total: s.total.percentiles(),
    };
    let mut ttft = shared.sse.ttft.clone();
    ttft.merge(&shared.ws.ttft);
    let mut total = shared.sse.total.clone();
    total.merge(&shared.ws.total);
    let answered = shared.sse.answered + shared.ws.answered;
    let errors = shared.sse.errors + shared.ws.errors;
    let half = duration.as_secs_f64() / 2.0;
    let peak = |f: &dyn Fn(f64) -> bool| {
        rss.iter()
            .filter(|r| f(r.t_s))
            .map(|r| r.rss_mib)
            .fold(0.0, f64::max)
    };
    let first = peak(&|t| t < half);
    let second = peak(&|t| t >= half);
    let mut report = LoadReport {
        config: cfg.clone(),
        setup_s: setup.as_secs_f64(),
        duration_s: duration.as_secs_f64(),
        throughput_per_s: answered as f64 / duration.as_secs_f64().max(1e-9),
        answered,
        shed: shared.sse.shed + shared.ws.shed,
        errors,
        ttft: ttft.percentiles(),
        total: total.percentiles(),
        by_api: vec![
            figures(Api::OpenAiStream, &shared.sse),
            figures(Api::RpcStream, &shared.ws),
        ],
        rss_before_start_mib,
        rss_first_half_peak_mib: first,
        rss_second_half_peak_mib: second,
        rss_after_mib,
        unhealthy_after,
        errors_goal_met: false,
        memory_goal_met: false,
        error_messages: shared.error_messages.clone(),
        rss,
    };
    report.errors_goal_met = errors == 0 && answered > 0;
    report.memory_goal_met =
        first > 0.0 && second <= report.rss_limit_mib() && report.unhealthy_after.is_empty();
    report
}

async fn sample_rss(
    shared: Arc<Mutex<Shared>>,
    every: Duration,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> BoundedLog<RssSample> {
    let mut log = BoundedLog::new(MAX_RSS_SAMPLES);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return log,
        }
        let (answered, in_flight) = shared
            .lock()
            .map(|s| (s.sse.answered + s.ws.answered, s.in_flight))
            .unwrap_or_default();
        log.push(RssSample {
            t_s: t0.elapsed().as_secs_f64(),
            rss_mib: mib(rss_kib()),
            answered,
            in_flight,
        });
    }
}

async fn client_loop(
    api: Api,
    addr: SocketAddr,
    cfg: LoadConfig,
    seed: u64,
    start_after: Duration,
    shared: Arc<Mutex<Shared>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = SimRng::new(seed);
    let mut ws: Option<RpcStreamClient> = None;
    let mut http = HttpClient::new(addr);
    let mut refusals: u32 = 0;
    let stopped = |s: &watch::Receiver<bool>| *s.borrow();
    tokio::select! {
        _ = tokio::time::sleep(start_after) => {}
        _ = stop.changed() => return,
    }
    while !stopped(&stop) {
        let query = ChatQuery {
            max_tokens: cfg.max_tokens,
            ..TestNet::tiny_query("Write about load and patience.", rng.next_u64())
        };
        if let Ok(mut s) = shared.lock() {
            s.in_flight += 1;
        }
        let outcome = if api == Api::RpcStream {
            if !ws.as_ref().is_some_and(RpcStreamClient::is_connected) {
                ws = RpcStreamClient::connect(addr, cfg.request_timeout)
                    .await
                    .ok();
            }
            match &ws {
                Some(c) => c.chat_stream(&query, cfg.request_timeout).await,
                None => Outcome::Failed(format!("ws://{addr}: cannot connect")),
            }
        } else {
            http.ask(api, &query, cfg.request_timeout).await
        };
        let pause = match &outcome {
            Outcome::Busy(_) => {
                let backoff = cfg
                    .busy_backoff
                    .saturating_mul(1 << refusals.min(16))
                    .min(cfg.busy_backoff_max);
                refusals += 1;
                backoff.mul_f64(0.5 + rng.unit())
            }
            _ => {
                refusals = 0;
                cfg.think_min
                    + cfg
                        .think_max
                        .saturating_sub(cfg.think_min)
                        .mul_f64(rng.unit())
            }
        };
        if let Ok(mut s) = shared.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
            let st = s.stats(api);
            match outcome {
                Outcome::Answered(a) => {
                    st.answered += 1;
                    if let Some(t) = a.ttft {
                        st.ttft.record(t);
                    }
                    st.total.record(a.total);
                }
                Outcome::Busy(_) => st.shed += 1,
                Outcome::Failed(e) => {
                    st.errors += 1;
                    if s.error_messages.len() < MAX_QUOTED_ERRORS {
                        s.error_messages.push(format!("{}: {e}", api.name()));
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;

    fn sample(t_s: f64, rss_mib: f64) -> RssSample {
        RssSample {
            t_s,
            rss_mib,
            answered: (t_s * 10.0) as u64,
            in_flight: 3,
        }
    }

    #[test]
    fn memory_goal_compares_the_two_halves_and_errors_fail() {
        let cfg = LoadConfig::short();
        let mut shared = Shared::default();
        shared.sse.answered = 10;
        shared.sse.ttft.record(Duration::from_millis(5));
        shared.sse.total.record(Duration::from_millis(50));
        let flat = vec![sample(1.0, 100.0), sample(4.0, 120.0), sample(9.0, 125.0)];
        let r = build_report(
            &cfg,
            Duration::ZERO,
            Duration::from_secs(10),
            &shared,
            flat,
            50.0,
            120.0,
            vec![],
        );
        assert_eq!(r.rss_first_half_peak_mib, 120.0);
        assert_eq!(r.rss_second_half_peak_mib, 125.0);
        assert!(r.memory_goal_met && r.errors_goal_met && r.goals_met());
        let growing = vec![sample(1.0, 100.0), sample(4.0, 120.0), sample(9.0, 300.0)];
        shared.ws.errors = 1;
        let r = build_report(
            &cfg,
            Duration::ZERO,
            Duration::from_secs(10),
            &shared,
            growing,
            50.0,
            300.0,
            vec![],
        );
        assert!(!r.memory_goal_met, "{}", r.summary());
        assert!(!r.errors_goal_met);
        assert!(r.to_markdown().contains("MISSED"));
        assert_eq!(r.to_svg().matches("<polyline").count(), 4);
    }
}
