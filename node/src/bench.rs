//! `mycel-node bench inference`: prompt and generation throughput of our engine against
//! candle's stock `quantized_llama` on the same cached model file (and llama.cpp when
//! `llama-cpp-python` is installed), plus peak RSS. The measuring code is
//! [`mycel_models::bench`].
//!
//! `mycel-node bench rpc` ([`rpc`]): time to first token and tokens/s through the node's JSON-RPC
//! WebSocket and OpenAI SSE streams against the engine in process, and a load phase of many
//! simultaneous streaming clients.

mod p2p;
mod pipeline;
mod rpc;

use std::path::Path;
use std::process::Command as Process;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use mycel_models::bench::{
    GgmlDType, OurLlama, Speed, StockLlama, bench_prompts, peak_rss_kib, race, requantized_gguf,
};
use mycel_models::{ChatModel, LoadOptions, registry::DEFAULT_CHAT_MODEL};
use mycel_node::{config, models};

/// The llama.cpp side of the comparison, run with `python3 -c`.
const LLAMA_CPP_SCRIPT: &str = include_str!("../../scripts/bench_llama_cpp.py");

/// Environment variable candle (and rayon) read for their thread count.
const THREADS_ENV: &str = "RAYON_NUM_THREADS";

/// What to benchmark.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Prompt and generation tok/s: ours vs candle's stock llama (vs llama.cpp when available).
    Inference(InferenceArgs),
    /// Streaming APIs vs the engine in process: TTFT and tok/s through JSON-RPC (WebSocket) and
    /// OpenAI (SSE) as ratios of in-process inference, then N simultaneous streaming clients.
    #[command(
        after_help = "Examples:\n  mycel-node bench rpc\n  mycel-node bench rpc --clients 16 --duration 20\n  mycel-node --data-dir <dir> bench rpc --model smollm2-135m-instruct --tokens 32 --runs 3"
    )]
    Rpc(rpc::RpcArgs),
    /// Serving over libp2p vs locally, on loopback: request-response round trip p50/p99, and time to
    /// first token and tokens/s of a chat answered by the node itself vs by a peer.
    #[command(
        after_help = "Examples:\n  mycel-node bench p2p\n  mycel-node --data-dir <dir> bench p2p --model smollm2-135m-instruct --tokens 32 --runs 5"
    )]
    P2p(p2p::P2pArgs),
    /// Sharded pipelines on loopback: tokens/s and time to first token of the whole model on one
    /// node vs a 3-hop pipeline of shard servers, and what a failover adds when the middle server
    /// dies mid-answer or right before a request.
    #[command(
        after_help = "Examples:\n  mycel-node bench pipeline\n  mycel-node --data-dir <dir> bench pipeline --model smollm2-135m-instruct --tokens 64 --runs 5"
    )]
    Pipeline(pipeline::PipelineArgs),
}

/// Options of `bench inference`.
#[derive(Args, Debug)]
pub struct InferenceArgs {
    /// Registry id of the chat model (pulled into the data dir if missing).
    #[arg(long, value_name = "ID", default_value = DEFAULT_CHAT_MODEL)]
    model: String,
    /// Tokens generated per prompt.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    tokens: u32,
    /// Number of prompts (deterministic questions).
    #[arg(long, value_name = "K", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    prompts: u32,
    /// Compute threads (default: $RAYON_NUM_THREADS, else all cores).
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Internal: only load the model as a node does and answer the prompts, then print this
    /// process's peak RSS (the parent runs it to measure the engine alone).
    #[arg(long, hide = true)]
    engine_only: bool,
}

/// Runs a bench subcommand.
pub fn run(data_dir: &Path, cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Inference(args) => inference(data_dir, &args),
        BenchCommand::Rpc(args) => {
            if rerun_with_threads(args.threads)? {
                return Ok(());
            }
            rpc::run(data_dir, &args, candle_core_threads())
        }
        BenchCommand::P2p(args) => {
            if rerun_with_threads(args.threads)? {
                return Ok(());
            }
            p2p::run(data_dir, &args, candle_core_threads())
        }
        BenchCommand::Pipeline(args) => {
            if rerun_with_threads(args.threads)? {
                return Ok(());
            }
            pipeline::run(data_dir, &args, candle_core_threads())
        }
    }
}

/// candle reads its thread count from the environment at start: when `threads` asks for another
/// count than the environment holds, runs this same command again with it set and returns true (the
/// caller is then done).
fn rerun_with_threads(threads: Option<u32>) -> Result<bool> {
    let Some(t) = threads else {
        return Ok(false);
    };
    if std::env::var(THREADS_ENV).ok() == Some(t.to_string()) {
        return Ok(false);
    }
    let exe = std::env::current_exe().context("locating mycel-node")?;
    let status = Process::new(exe)
        .args(std::env::args_os().skip(1))
        .env(THREADS_ENV, t.to_string())
        .status()
        .context("re-running with the thread count set")?;
    if !status.success() {
        bail!("benchmark failed ({status})");
    }
    Ok(true)
}

fn inference(data_dir: &Path, args: &InferenceArgs) -> Result<()> {
    if rerun_with_threads(args.threads)? {
        return Ok(());
    }
    let n = args.tokens as usize;
    let k = args.prompts as usize;
    let cache = config::models_dir(data_dir);
    let verified = models::pull(&args.model, &cache, None, |_| {})?;
    if args.engine_only {
        return engine_alone(&verified, k, n);
    }
    let path = verified.primary_path();
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let prompts = {
        let m = ChatModel::load(&verified, &LoadOptions::default())?;
        bench_prompts(&m, k)?
    };
    let prompt_tokens: usize = prompts.iter().map(Vec::len).sum();
    let threads = candle_core_threads();
    println!(
        "model {} ({}), {k} prompt(s), {prompt_tokens} prompt tokens, {n} generated each, {threads} thread(s)",
        args.model,
        path.display()
    );
    println!(
        "{:<26} {:>16} {:>16}  same tokens as ours",
        "engine", "prompt", "gen"
    );
    let q8 = requantized_gguf(&bytes, GgmlDType::Q8_0)?;
    let (stock8, ours8) = race(
        &mut StockLlama::new(&q8)?,
        &mut OurLlama::new(&bytes, Some(GgmlDType::Q8_0))?,
        &prompts,
        n,
    )?;
    drop(q8);
    let (stock4, ours4) = race(
        &mut StockLlama::new(&bytes)?,
        &mut OurLlama::new(&bytes, None)?,
        &prompts,
        n,
    )?;
    line("ours Q8_0 (requantized)", &ours8, None);
    line("stock Q8_0 (requantized)", &stock8, Some(&ours8));
    line("ours Q4_1 (file)", &ours4, None);
    line("stock Q4_1 (file)", &stock4, Some(&ours4));
    ratio("ours/stock Q8_0", &ours8, &stock8);
    ratio("ours/stock Q4_1", &ours4, &stock4);
    ratio("ours Q8_0/Q4_1", &ours8, &ours4);
    match llama_cpp(&path, n, threads, &prompts) {
        Ok(Some(cpp)) => {
            line("llama.cpp (file, f32 KV)", &cpp, Some(&ours4));
            ratio("ours Q8_0/llama.cpp", &ours8, &cpp);
        }
        Ok(None) => println!("llama.cpp: skipped (python3 cannot import llama_cpp)"),
        Err(e) => println!("llama.cpp: failed: {e:#}"),
    }
    match peak_rss_kib() {
        Some(kib) => println!(
            "peak RSS of this bench process (4 engines, 2 copies of the file): {:.1} MiB",
            kib as f64 / 1024.0
        ),
        None => println!("peak RSS: unknown (no /proc/self/status)"),
    }
    // The engine alone, as a node loads it, in a process of its own.
    let exe = std::env::current_exe().context("locating mycel-node")?;
    let out = Process::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--engine-only")
        .output()
        .context("running the engine-only probe")?;
    if !out.status.success() {
        bail!(
            "engine-only probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}

/// Loads the model as a node does (Q8_0), answers the prompts, prints the peak RSS.
fn engine_alone(verified: &mycel_models::VerifiedModel, k: usize, n: usize) -> Result<()> {
    let model = ChatModel::load(verified, &LoadOptions::default())?;
    let prompts = bench_prompts(&model, k)?;
    let (tx, _rx) = tokio::sync::mpsc::channel(mycel_models::sampling::MAX_NEW_TOKENS);
    let params = mycel_models::SamplingParams {
        stop_tokens: Vec::new(),
        ..mycel_models::SamplingParams::greedy(n)
    };
    for p in &prompts {
        model.generate_from_ids(&mut model.new_session(), p, &params, &tx)?;
    }
    match peak_rss_kib() {
        Some(kib) => println!(
            "peak RSS of our engine alone (Q8_0, {} answers): {:.1} MiB",
            prompts.len(),
            kib as f64 / 1024.0
        ),
        None => println!("peak RSS: unknown (no /proc/self/status)"),
    }
    Ok(())
}

fn candle_core_threads() -> usize {
    std::env::var(THREADS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&t| t > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
}

fn line(label: &str, s: &Speed, reference: Option<&Speed>) {
    let same = match reference {
        Some(r) => {
            let equal = s
                .outputs
                .iter()
                .zip(&r.outputs)
                .filter(|(a, b)| a == b)
                .count();
            format!("{equal}/{}", s.outputs.len())
        }
        None => "-".into(),
    };
    println!(
        "{label:<26} prompt {:>7.1} tok/s  gen {:>7.1} tok/s  {same}",
        s.prompt_tok_s(),
        s.gen_tok_s()
    );
}

fn ratio(label: &str, a: &Speed, b: &Speed) {
    println!(
        "ratio {label:<20} prompt {:.2}×  gen {:.2}×",
        a.prompt_tok_s() / b.prompt_tok_s(),
        a.gen_tok_s() / b.gen_tok_s()
    );
}

/// Runs the llama.cpp script on the same prompt ids; None when `llama_cpp` is not importable.
fn llama_cpp(path: &Path, n: usize, threads: usize, prompts: &[Vec<u32>]) -> Result<Option<Speed>> {
    let probe = Process::new("python3")
        .args(["-c", "import llama_cpp"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Ok(None);
    }
    let out = Process::new("python3")
        .arg("-c")
        .arg(LLAMA_CPP_SCRIPT)
        .arg(path)
        .arg(n.to_string())
        .arg(threads.to_string())
        .arg(serde_json::to_string(prompts)?)
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!(
            "python3 exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("llama.cpp output")?;
    let num = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(Some(Speed {
        prompt_tokens: num("prompt_tokens") as usize,
        prompt_secs: num("prompt_secs"),
        gen_tokens: num("gen_tokens") as usize,
        gen_secs: num("gen_secs"),
        outputs: serde_json::from_value(v["outputs"].clone()).unwrap_or_default(),
    }))
}
