//! `mycel-node bench rpc`: what the node's streaming APIs cost on top of the inference engine.
//!
//! One process holds the model once and a node serving it on loopback (response cache off, so
//! every request runs the model). Latency phase: the same prompt and seed, `--runs` times per path,
//! interleaved — (a) the engine in process ([`ModelHost`], the baseline), (b) JSON-RPC
//! `mycel_subscribeChat` over WebSocket, (c) the OpenAI endpoint with `stream: true` (SSE) — and the
//! medians of time to first token and tokens/s, with (b) and (c) as ratios of (a). Load phase:
//! `--clients` simultaneous streaming clients (alternating WebSocket and SSE) on the same node for
//! `--duration` seconds, each with its own seeds: answers, refusals for load (busy), errors, TTFT
//! percentiles and the process's RSS over time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, header};
use hyper_util::rt::TokioIo;
use jsonrpsee::core::client::Error as RpcError;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use mycel_identity::Keypair;
use mycel_models::ChatMessage;
use mycel_node::chat::{ChatEvent, ChatJob, ModelHost, SamplingRequest};
use mycel_node::config::{self, Config, TINY_MODEL_ID};
use mycel_node::{RunningNode, StartOptions, models};
use mycel_rpc_api::{ChatRequest, MycelApiClient, error_codes};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// The latency phase's question: open-ended, so a real model keeps generating.
const PROMPT: &str =
    "Write a long story about a mycelium network that connects the trees of a forest.";
/// Longest wait for one complete answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);
/// How long in-flight requests may finish after the load phase's end before they are cut.
const DRAIN: Duration = Duration::from_secs(30);
/// Most TTFT samples kept in the load phase (beyond that, later answers are counted, not sampled).
const MAX_SAMPLES: usize = 1_000_000;
/// Largest SSE buffer (bytes) before a stream is called broken.
const MAX_SSE_BUFFER: usize = 1024 * 1024;
/// Largest error body read from a refused HTTP request.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Error messages kept as examples.
const MAX_ERROR_EXAMPLES: usize = 5;
/// Pause before a client refused as busy tries again (plus up to as much jitter).
const BUSY_BACKOFF: Duration = Duration::from_millis(50);
/// Speed ratio the API paths should reach against the in-process engine.
const GOAL_RATIO: f64 = 0.97;

/// Options of `bench rpc`.
#[derive(Args, Debug)]
pub struct RpcArgs {
    /// Model to serve: `tiny` (built in) or a registry id such as `smollm2-135m-instruct` (pulled
    /// into the data dir if missing).
    #[arg(long, value_name = "ID", default_value = TINY_MODEL_ID)]
    model: String,
    /// Tokens generated per request in the latency phase.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    tokens: u32,
    /// Requests per path in the latency phase (medians are reported).
    #[arg(long, value_name = "R", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Seed of the latency phase, the same on every path (so all three generate the same text).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Simultaneous streaming clients in the load phase (0 skips it).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=4096))]
    clients: u32,
    /// Length of the load phase in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    duration: u64,
    /// Tokens per request in the load phase.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    load_tokens: u32,
    /// Generations the node runs at once (default: the config default); more requests queue
    /// briefly, then are refused as busy.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_concurrent: Option<u64>,
    /// Compute threads of the model (default: $RAYON_NUM_THREADS, else all cores). On a small
    /// shared machine one thread gives steadier ratios: the model's fork-join threads then do not
    /// fight the I/O tasks for cores.
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Seconds between RSS samples in the load phase.
    #[arg(long, value_name = "SECS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sample_every: u64,
}

/// Runs `bench rpc` (the model computing on `threads` threads, as set in the environment).
pub fn run(data_dir: &Path, args: &RpcArgs, threads: usize) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(bench(data_dir, args, threads))
}

/// One answer as a client saw it.
#[derive(Clone, Debug)]
pub(super) struct Sample {
    /// Time to the first non-empty text.
    pub(super) ttft: Duration,
    /// Time to the complete answer.
    pub(super) total: Duration,
    /// Completion tokens (from the answer's usage).
    pub(super) tokens: u32,
    /// The answer.
    pub(super) text: String,
}

impl Sample {
    pub(super) fn tok_s(&self) -> f64 {
        f64::from(self.tokens) / self.total.as_secs_f64().max(1e-9)
    }
}

/// How one request ended.
enum Outcome {
    Answered(Sample),
    /// Refused for load (HTTP 503 / JSON-RPC -32003): admission control, not a fault.
    Busy,
    Failed(String),
}

async fn bench(data_dir: &Path, args: &RpcArgs, threads: usize) -> Result<()> {
    let cache = config::models_dir(data_dir);
    let id = args.model.clone();
    let model = tokio::task::spawn_blocking(move || models::load(&id, &cache, |_| {}))
        .await
        .context("model loading task")?
        .with_context(|| format!("loading {}", args.model))?;
    let model = Arc::new(model);
    let mut cfg = Config::loopback(Vec::new());
    // Every request must run the model: no answers from the response cache.
    cfg.response_cache_entries = 0;
    if let Some(n) = args.max_concurrent {
        cfg.max_concurrent_generations = usize::try_from(n).unwrap_or(usize::MAX);
    }
    let slots = cfg.max_concurrent_generations;
    let node = RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: Keypair::generate(),
        config: cfg,
        models: [(args.model.clone(), model.clone())].into(),
        info_file: None,
        ledger: None,
    })
    .await?;
    let addr = node.http_addr;
    // The baseline: the same weights in memory, driven directly.
    let host = ModelHost::new([(args.model.clone(), model)].into(), 1);
    println!(
        "model {} ({threads} compute thread(s)), {} token(s) per request, {} run(s) per path, \
         seed {}, node at {addr} ({slots} generation slot(s), response cache off), build: {}",
        args.model,
        args.tokens,
        args.runs,
        args.seed,
        if cfg!(debug_assertions) {
            "debug (dependencies at opt-level 3)"
        } else {
            "release"
        }
    );
    let result = async {
        latency_phase(&host, &node.node, addr, args).await?;
        if args.clients > 0 {
            load_phase(addr, args).await?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    node.shutdown().await;
    result
}

pub(super) fn job(model: &str, prompt: &str, seed: u64, tokens: u32) -> Result<ChatJob> {
    Ok(ChatJob::new(
        model.to_string(),
        vec![ChatMessage::user(prompt)],
        &SamplingRequest {
            temperature: Some(0.7),
            seed: Some(seed),
            max_tokens: Some(u64::from(tokens)),
            ..Default::default()
        },
        vec![],
    )?)
}

fn rpc_request(model: &str, prompt: &str, seed: u64, tokens: u32) -> ChatRequest {
    ChatRequest {
        model: Some(model.to_string()),
        messages: vec![mycel_rpc_api::ChatMessage {
            role: "user".into(),
            content: prompt.to_string(),
        }],
        temperature: Some(0.7),
        max_tokens: Some(tokens),
        seed: Some(seed),
        ..Default::default()
    }
}

fn openai_body(model: &str, prompt: &str, seed: u64, tokens: u32) -> Value {
    json!({
        "model": model,
        "messages": [{ "role": "user", "content": prompt }],
        "temperature": 0.7,
        "max_tokens": tokens,
        "seed": seed,
        "stream": true,
    })
}

async fn latency_phase(
    host: &ModelHost,
    node: &mycel_node::Node,
    addr: SocketAddr,
    args: &RpcArgs,
) -> Result<()> {
    let ws = WsClientBuilder::default()
        .request_timeout(REQUEST_TIMEOUT)
        .build(format!("ws://{addr}"))
        .await
        .context("connecting the WebSocket client")?;
    let (m, s, n) = (&args.model, args.seed, args.tokens);
    // One unmeasured round to warm caches and allocators on every path.
    let _ = engine(host, job(m, PROMPT, s, n)?).await?;
    let _ = routed(node, job(m, PROMPT, s, n)?).await?;
    let _ = answered(websocket(&ws, rpc_request(m, PROMPT, s, n)).await)?;
    let _ = answered(sse(addr, &openai_body(m, PROMPT, s, n)).await)?;
    let mut paths: [Vec<Sample>; 4] = Default::default();
    // CPU time of the whole process (node, clients, model threads) per request, ms.
    let mut cpu: [Vec<f64>; 4] = Default::default();
    for _ in 0..args.runs {
        let c0 = cpu_ms();
        paths[0].push(engine(host, job(m, PROMPT, s, n)?).await?);
        let c1 = cpu_ms();
        paths[1].push(answered(
            websocket(&ws, rpc_request(m, PROMPT, s, n)).await,
        )?);
        let c2 = cpu_ms();
        paths[2].push(answered(sse(addr, &openai_body(m, PROMPT, s, n)).await)?);
        let c3 = cpu_ms();
        paths[3].push(routed(node, job(m, PROMPT, s, n)?).await?);
        let c4 = cpu_ms();
        for (i, (from, to)) in [(c0, c1), (c1, c2), (c2, c3), (c3, c4)]
            .into_iter()
            .enumerate()
        {
            cpu[i].push(to - from);
        }
    }
    let same = paths
        .iter()
        .flatten()
        .all(|x| x.text == paths[0][0].text && x.tokens == paths[0][0].tokens);
    println!();
    println!(
        "latency (medians of {}; tok/s = completion tokens / time to the complete answer)",
        args.runs
    );
    println!(
        "{:<34} {:>10} {:>10} {:>9} {:>7} {:>8}",
        "path", "TTFT ms", "total ms", "tok/s", "tokens", "CPU ms"
    );
    let labels = [
        "(a) engine in process (ModelHost)",
        "(b) JSON-RPC subscribeChat (WS)",
        "(c) OpenAI stream (SSE)",
        "(d) Node::chat in process",
    ];
    let medians: Vec<(f64, f64, f64)> = paths
        .iter()
        .map(|p| {
            (
                median(p.iter().map(|x| ms(x.ttft))),
                median(p.iter().map(|x| ms(x.total))),
                median(p.iter().map(Sample::tok_s)),
            )
        })
        .collect();
    for (((label, (ttft, total, tok_s)), p), c) in labels.iter().zip(&medians).zip(&paths).zip(&cpu)
    {
        let tokens = p.first().map(|x| x.tokens).unwrap_or(0);
        let c = median(c.iter().copied());
        println!("{label:<34} {ttft:>10.2} {total:>10.1} {tok_s:>9.1} {tokens:>7} {c:>8.0}");
    }
    let (a_ttft, _, a_tok_s) = medians[0];
    for (name, (ttft, _, tok_s)) in [
        ("b/a", medians[1]),
        ("c/a", medians[2]),
        ("d/a", medians[3]),
    ] {
        let speed = tok_s / a_tok_s;
        println!(
            "ratio {name}: tok/s {speed:.3} ({}), TTFT a/{} {:.3} (+{:.2} ms)",
            if speed >= GOAL_RATIO {
                "meets the ≥ 0.97 goal"
            } else {
                "below the 0.97 goal"
            },
            &name[..1],
            a_ttft / ttft.max(1e-9),
            ttft - a_ttft
        );
    }
    println!(
        "same text and token count on every path and run: {}",
        if same { "yes" } else { "NO" }
    );
    if !same {
        bail!("the paths generated different answers for the same seed");
    }
    Ok(())
}

fn answered(o: Outcome) -> Result<Sample> {
    match o {
        Outcome::Answered(s) => Ok(s),
        Outcome::Busy => bail!("the node refused a latency-phase request as busy"),
        Outcome::Failed(e) => Err(anyhow!(e)),
    }
}

/// (a) The engine in process.
async fn engine(host: &ModelHost, job: ChatJob) -> Result<Sample> {
    let t0 = Instant::now();
    let events = host.start(job).await?;
    timed(t0, events).await
}

/// (d) The node's routing in process, without HTTP: what the APIs add on top of it is (b) − (d)
/// and (c) − (d).
pub(super) async fn routed(node: &mycel_node::Node, job: ChatJob) -> Result<Sample> {
    let t0 = Instant::now();
    let stream = node.chat(job).await?;
    timed(t0, stream.events).await
}

/// Reads a job's events to the end, timing the first text and the answer from `t0`.
pub(super) async fn timed(t0: Instant, mut events: mpsc::Receiver<ChatEvent>) -> Result<Sample> {
    let mut ttft = None;
    let mut text = String::new();
    while let Some(ev) = events.recv().await {
        match ev {
            ChatEvent::Delta(t) => {
                if ttft.is_none() && !t.is_empty() {
                    ttft = Some(t0.elapsed());
                }
                text.push_str(&t);
            }
            ChatEvent::Done(a) => {
                let total = t0.elapsed();
                return Ok(Sample {
                    ttft: ttft.unwrap_or(total),
                    total,
                    tokens: a.completion_tokens,
                    text,
                });
            }
            ChatEvent::Failed(e) => bail!("generation failed: {e}"),
        }
    }
    bail!("the answer ended without a final event")
}

/// (b) `mycel_subscribeChat` over a WebSocket connection.
async fn websocket(ws: &WsClient, request: ChatRequest) -> Outcome {
    let t0 = Instant::now();
    let run = async {
        let mut sub = match ws.subscribe_chat(request).await {
            Ok(sub) => sub,
            Err(RpcError::Call(e)) if e.code() == error_codes::BUSY => return Outcome::Busy,
            Err(e) => return Outcome::Failed(format!("subscribe: {e}")),
        };
        let mut ttft = None;
        let mut text = String::new();
        while let Some(chunk) = sub.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Outcome::Failed(format!("stream: {e}")),
            };
            if let Some(e) = chunk.error {
                return Outcome::Failed(format!("generation failed: {e}"));
            }
            if ttft.is_none() && !chunk.delta.is_empty() {
                ttft = Some(t0.elapsed());
            }
            text.push_str(&chunk.delta);
            if chunk.finish_reason.is_some() {
                let total = t0.elapsed();
                return Outcome::Answered(Sample {
                    ttft: ttft.unwrap_or(total),
                    total,
                    tokens: chunk.usage.map(|u| u.completion_tokens).unwrap_or(0),
                    text,
                });
            }
        }
        Outcome::Failed("the subscription ended before the last chunk".into())
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, run).await {
        Ok(o) => o,
        Err(_) => Outcome::Failed("WebSocket answer timed out".into()),
    }
}

/// (c) `POST /v1/chat/completions` with `stream: true`, on a fresh HTTP/1.1 connection.
async fn sse(addr: SocketAddr, body: &Value) -> Outcome {
    let t0 = Instant::now();
    match tokio::time::timeout(REQUEST_TIMEOUT, sse_inner(addr, body, t0)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::Failed(format!("SSE: {e:#}")),
        Err(_) => Outcome::Failed("SSE answer timed out".into()),
    }
}

async fn sse_inner(addr: SocketAddr, body: &Value, t0: Instant) -> Result<Outcome> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/chat/completions")
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let mut text = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                text.extend_from_slice(&data);
            }
            if text.len() > MAX_ERROR_BODY {
                break;
            }
        }
        if status.as_u16() == 503 {
            return Ok(Outcome::Busy);
        }
        return Ok(Outcome::Failed(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&text)
        )));
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut ttft = None;
    let mut text = String::new();
    let mut tokens = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        // Events end with a blank line; each holds one `data:` line here.
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let event = String::from_utf8_lossy(&event);
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    let total = t0.elapsed();
                    let Some(tokens) = tokens else {
                        return Ok(Outcome::Failed("[DONE] before the final chunk".into()));
                    };
                    return Ok(Outcome::Answered(Sample {
                        ttft: ttft.unwrap_or(total),
                        total,
                        tokens,
                        text,
                    }));
                }
                // Typed, as a real client decodes it (only the fields it reads).
                let chunk: SseChunk = serde_json::from_str(data)?;
                if let Some(e) = chunk.error {
                    return Ok(Outcome::Failed(format!("stream error: {e}")));
                }
                if let Some(t) = chunk
                    .choices
                    .into_iter()
                    .next()
                    .and_then(|c| c.delta.content)
                    .filter(|t| !t.is_empty())
                {
                    if ttft.is_none() {
                        ttft = Some(t0.elapsed());
                    }
                    text.push_str(&t);
                }
                if let Some(u) = chunk.usage {
                    tokens = Some(u.completion_tokens);
                }
            }
        }
        if buf.len() > MAX_SSE_BUFFER {
            return Ok(Outcome::Failed("an SSE event exceeds 1 MiB".into()));
        }
    }
    Ok(Outcome::Failed("the stream ended before [DONE]".into()))
}

/// The fields of an OpenAI `chat.completion.chunk` (or error event) the SSE client reads.
#[derive(serde::Deserialize)]
struct SseChunk {
    #[serde(default)]
    choices: Vec<SseChoice>,
    #[serde(default)]
    usage: Option<mycel_rpc_api::Usage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(serde::Deserialize)]
struct SseChoice {
    #[serde(default)]
    delta: SseDelta,
}

#[derive(Default, serde::Deserialize)]
struct SseDelta {
    #[serde(default)]
    content: Option<String>,
}

/// What the load phase's clients have seen so far.
#[derive(Default)]
struct Tally {
    answered: u64,
    busy: u64,
    errors: u64,
    tokens: u64,
    ttft_ms: Vec<f64>,
    examples: Vec<String>,
}

impl Tally {
    fn record(&mut self, o: Outcome) {
        match o {
            Outcome::Answered(s) => {
                self.answered += 1;
                self.tokens += u64::from(s.tokens);
                if self.ttft_ms.len() < MAX_SAMPLES {
                    self.ttft_ms.push(ms(s.ttft));
                }
            }
            Outcome::Busy => self.busy += 1,
            Outcome::Failed(e) => {
                self.errors += 1;
                if self.examples.len() < MAX_ERROR_EXAMPLES {
                    self.examples.push(e);
                }
            }
        }
    }
}

async fn load_phase(addr: SocketAddr, args: &RpcArgs) -> Result<()> {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let duration = Duration::from_secs(args.duration);
    let t0 = Instant::now();
    let deadline = t0 + duration;
    println!();
    println!(
        "load: {} simultaneous streaming clients (even: WebSocket, odd: SSE), {} token(s) each, \
         {} s, a new seed per request",
        args.clients, args.load_tokens, args.duration
    );
    println!(
        "{:>6} {:>9} {:>9} {:>7} {:>7} {:>12} {:>12}",
        "t s", "RSS MiB", "answered", "busy", "errors", "TTFT p50 ms", "TTFT p99 ms"
    );
    sample_row(0.0, &tally);
    let mut clients = Vec::new();
    for c in 0..args.clients {
        let tally = tally.clone();
        let model = args.model.clone();
        let tokens = args.load_tokens;
        clients.push(tokio::spawn(async move {
            let ws = if c % 2 == 0 {
                match WsClientBuilder::default()
                    .request_timeout(REQUEST_TIMEOUT)
                    .build(format!("ws://{addr}"))
                    .await
                {
                    Ok(ws) => Some(ws),
                    Err(e) => {
                        lock(&tally).record(Outcome::Failed(format!("WebSocket connect: {e}")));
                        return;
                    }
                }
            } else {
                None
            };
            let mut n = 0u64;
            while Instant::now() < deadline {
                // Distinct seeds: no two requests are the same job.
                let seed = (u64::from(c) << 32) | n;
                n += 1;
                let outcome = match &ws {
                    Some(ws) => websocket(ws, rpc_request(&model, PROMPT, seed, tokens)).await,
                    None => sse(addr, &openai_body(&model, PROMPT, seed, tokens)).await,
                };
                let busy = matches!(outcome, Outcome::Busy);
                lock(&tally).record(outcome);
                if busy {
                    let jitter = BUSY_BACKOFF.mul_f64(f64::from(c % 16) / 16.0);
                    tokio::time::sleep(BUSY_BACKOFF + jitter).await;
                }
            }
        }));
    }
    let every = Duration::from_secs(args.sample_every);
    let mut next = t0 + every;
    while next <= deadline {
        tokio::time::sleep_until(next.into()).await;
        sample_row(t0.elapsed().as_secs_f64(), &tally);
        next += every;
    }
    tokio::time::sleep_until(deadline.into()).await;
    let drain_until = tokio::time::Instant::now() + DRAIN;
    let mut cut = 0;
    for handle in clients {
        match tokio::time::timeout_at(drain_until, handle).await {
            Ok(_) => {}
            Err(_) => cut += 1,
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    sample_row(elapsed, &tally);
    let t = lock(&tally);
    let mut ttft = t.ttft_ms.clone();
    ttft.sort_by(f64::total_cmp);
    println!(
        "load result: {} answered ({:.1}/s, {:.1} tok/s), {} refused as busy, {} error(s), \
         TTFT p50 {:.1} ms p99 {:.1} ms, {cut} client(s) still streaming after the {} s drain",
        t.answered,
        t.answered as f64 / elapsed,
        t.tokens as f64 / elapsed,
        t.busy,
        t.errors,
        percentile(&ttft, 0.50),
        percentile(&ttft, 0.99),
        DRAIN.as_secs(),
    );
    for e in &t.examples {
        println!("  error: {e}");
    }
    match mycel_models::bench::peak_rss_kib() {
        Some(kib) => println!("peak RSS (VmHWM): {:.1} MiB", kib as f64 / 1024.0),
        None => println!("peak RSS: unknown (no /proc/self/status)"),
    }
    Ok(())
}

fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

fn sample_row(at: f64, tally: &Mutex<Tally>) {
    let rss = rss_kib()
        .map(|k| format!("{:.1}", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into());
    let t = lock(tally);
    let mut ttft = t.ttft_ms.clone();
    ttft.sort_by(f64::total_cmp);
    println!(
        "{at:>6.0} {rss:>9} {:>9} {:>7} {:>7} {:>12.1} {:>12.1}",
        t.answered,
        t.busy,
        t.errors,
        percentile(&ttft, 0.50),
        percentile(&ttft, 0.99)
    );
}

/// Resident memory of this process now (VmRSS), KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU time (user + system) this process has used, ms (10 ms resolution; 0 without /proc).
fn cpu_ms() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3; utime and stime are
    // fields 14 and 15, in clock ticks of 1/100 s (USER_HZ).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) * 10.0
}

pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median of a non-empty sample (0 when empty).
pub(super) fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

/// Nearest-rank percentile of sorted values (0 when empty).
pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
    }

    #[test]
    fn rss_and_cpu_time_are_readable_on_linux() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(rss_kib().is_some_and(|k| k > 0));
            let start = cpu_ms();
            let mut x = 0u64;
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_millis(60) {
                x = x.wrapping_add(std::hint::black_box(1));
            }
            assert!(
                x > 0 && cpu_ms() > start,
                "60 ms of spinning shows as CPU time"
            );
        }
    }
}
