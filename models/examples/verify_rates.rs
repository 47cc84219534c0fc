//! Measures the sampler-replay audit rule (`ChatModel::verify_replay`, specs/models.md §5) on
//! the real model: false-reject rate for honest receipts, false-accept rate for forgeries.
//!
//! `cargo run --release -p mycel-models --example verify_rates -- <models dir> [N] [tokens] [offset]`
//!
//! - Prompts: N (default 200) questions from 12 templates × 30 topics, starting at `offset`
//!   (the rule's constants were calibrated on 200..300; the spec's table uses 0..200).
//! - Honest workers: two child processes with `RAYON_NUM_THREADS` 1 and 2, each generating
//!   with the file's Q4_1 weights and with Q8_0 (the default load), greedy and at T 0.7 and
//!   1.0 (top_k 40, top_p 0.95, seed = prompt index), at most `tokens` (default 24) tokens,
//!   through `ChatModel::generate_from_ids`. A receipt is the emitted ids followed by the stop
//!   token drawn, if any, and the sampling params.
//! - Validator: Q8_0 in this process (thread count from `RAYON_NUM_THREADS`).
//! - Forgeries, from each Q4_1 1-thread receipt: the next prompt's receipt (same mode); 5% of
//!   the emitted tokens replaced by random ids (at least one); the emitted tokens cut to half
//!   and a stop claimed; the emitted tokens extended by 4 tokens (each the best non-stop token
//!   of a forger holding the validator's weights) and a stop claimed, under a budget 5 tokens
//!   larger (room for them and the stop) so that the shape check cannot catch it; and, besides
//!   the kinds, the honest output claimed under another seed.
//! - Also, for the first 20 prompts: the Q8_0 1-thread T0.7 receipts checked on the logits of
//!   one batched teacher-forced pass instead of the worker's one-token-at-a-time path (why the
//!   replay follows the worker's path).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::time::Instant;

use mycel_models::sampling::{SplitMix64, replay_tolerance};
use mycel_models::verify::{
    PromptReplay, REPLAY_LOGIT_TOLERANCE, REPLAY_STRAIN_SPACING, REPLAY_STRAIN_TOLERANCE,
    first_replay_rejection,
};
use mycel_models::{
    ChatMessage, ChatModel, LoadOptions, Registry, SamplingParams, registry::DEFAULT_CHAT_MODEL,
    verify_cached,
};

const WORKER_ENV: &str = "MYCEL_VERIFY_RATES_WORKER";
const THREADS: [usize; 2] = [1, 2];
const MODES: [Mode; 3] = [Mode::Greedy, Mode::T07, Mode::T10];
const WEIGHTS: [&str; 2] = ["Q4_1", "Q8_0"];

/// A replay stops once a position needs more than this (forgeries only; reported as "> 4").
const GIVE_UP: f32 = 4.0;

/// Prompts whose Q8_0 receipts are also checked on a batched pass.
const BATCHED_PROMPTS: usize = 20;

fn prompts(n: usize, offset: usize) -> Vec<String> {
    const T: [&str; 12] = [
        "What is {}?",
        "Explain {} to a child.",
        "Give one surprising fact about {}.",
        "Why is {} important?",
        "Write a short poem about {}.",
        "What are the risks of {}?",
        "Summarize the history of {}.",
        "How would you describe {} in one sentence?",
        "List three words related to {}.",
        "Tell a very short story involving {}.",
        "What would a scientist say about {}?",
        "Compare {} with something from everyday life.",
    ];
    const X: [&str; 30] = [
        "photosynthesis",
        "gravity",
        "the moon",
        "Paris",
        "machine learning",
        "volcanoes",
        "prime numbers",
        "coffee",
        "the ocean",
        "democracy",
        "bicycles",
        "music",
        "vaccines",
        "the internet",
        "chess",
        "rain",
        "electricity",
        "bees",
        "the Roman Empire",
        "sleep",
        "mountains",
        "money",
        "friendship",
        "stars",
        "bread",
        "rivers",
        "robots",
        "winter",
        "languages",
        "cats",
    ];
    (offset..offset + n)
        .map(|i| T[(i / X.len()) % T.len()].replace("{}", X[i % X.len()]))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Greedy,
    T07,
    T10,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Greedy => "T0 (greedy)",
            Mode::T07 => "T0.7",
            Mode::T10 => "T1.0",
        }
    }

    fn params(self, seed: u64, tokens: usize) -> SamplingParams {
        let sampled = |temperature| SamplingParams {
            temperature,
            top_k: Some(40),
            top_p: Some(0.95),
            seed,
            max_tokens: tokens,
            stop_tokens: Vec::new(),
        };
        match self {
            Mode::Greedy => SamplingParams::greedy(tokens),
            Mode::T07 => sampled(0.7),
            Mode::T10 => sampled(1.0),
        }
    }
}

struct Args {
    dir: PathBuf,
    n: usize,
    tokens: usize,
    offset: usize,
}

impl Args {
    fn seed(&self, i: usize) -> u64 {
        (self.offset + i) as u64
    }
}

fn load(dir: &Path, requantize: bool) -> ChatModel {
    let reg = Registry::load_default().unwrap();
    let verified = verify_cached(reg.get(DEFAULT_CHAT_MODEL).unwrap(), dir)
        .unwrap()
        .expect("model not cached: run `cargo run -p mycel-models --example pull` first");
    let mut opts = LoadOptions::default();
    if !requantize {
        opts.requantize = None;
    }
    ChatModel::load(&verified, &opts).unwrap()
}

/// An honest worker's receipt output: the emitted ids, then the stop token drawn, if any.
fn generate(m: &ChatModel, prompt: &[u32], p: &SamplingParams) -> Vec<u32> {
    let (tx, _rx) = tokio::sync::mpsc::channel(p.max_tokens);
    m.generate_from_ids(&mut m.new_session(), prompt, p, &tx)
        .unwrap()
        .drawn_ids()
}

/// Child process: one JSON line per prompt, the outputs for WEIGHTS × MODES in that order.
fn worker(a: &Args) {
    let models = [load(&a.dir, false), load(&a.dir, true)];
    let qs = prompts(a.n, a.offset);
    let mut out = std::io::stdout().lock();
    for (i, q) in qs.iter().enumerate() {
        let prompt = models[0]
            .encode_chat(&[ChatMessage::user(q.clone())])
            .unwrap();
        let outputs: Vec<Vec<u32>> = models
            .iter()
            .flat_map(|m| MODES.map(|mode| generate(m, &prompt, &mode.params(a.seed(i), a.tokens))))
            .collect();
        writeln!(out, "{}", serde_json::to_string(&outputs).unwrap()).unwrap();
        out.flush().unwrap();
    }
}

/// One receipt's outcome under the replay rule.
struct Outcome {
    accepted: bool,
    /// The receipt has a generation's shape (`PromptReplay::first_shape_error`).
    shape_ok: bool,
    /// Largest per-position tolerance needed (above GIVE_UP the replay stopped; infinity for a
    /// wrong shape).
    max_tol: f32,
    /// Per-position tolerances (up to where the replay stopped).
    tols: Vec<f32>,
}

fn check(replay: &mut PromptReplay<'_>, ids: &[u32], p: &SamplingParams) -> Outcome {
    let accepted = replay.verify(ids, p).unwrap().accepted;
    if replay.first_shape_error(ids, p).is_some() {
        return Outcome {
            accepted,
            shape_ok: false,
            max_tol: f32::INFINITY,
            tols: Vec::new(),
        };
    }
    let tols = replay.tolerances(ids, p, GIVE_UP).unwrap().tolerances;
    Outcome {
        accepted,
        shape_ok: true,
        max_tol: tols.iter().copied().fold(0.0, f32::max),
        tols,
    }
}

struct Row {
    label: String,
    honest: bool,
    /// Counted in the pooled rates the goals apply to.
    pooled: bool,
    outcomes: Vec<Outcome>,
}

impl Row {
    fn wrong(&self) -> usize {
        let honest = self.honest;
        self.outcomes
            .iter()
            .filter(|o| o.accepted != honest)
            .count()
    }
}

/// One-sided 95% upper confidence bound of a rate with `k` events in `n` trials
/// (Clopper–Pearson).
fn upper95(k: usize, n: usize) -> f64 {
    if n == 0 {
        return 1.0;
    }
    // P(X ≤ k) for X ~ Binomial(n, p), summed in log space.
    let cdf = |p: f64| -> f64 {
        let (lp, lq) = (p.ln(), (1.0 - p).ln());
        let mut log_c = 0.0f64;
        let mut sum = 0.0;
        for i in 0..=k.min(n) {
            if i > 0 {
                log_c += ((n - i + 1) as f64).ln() - (i as f64).ln();
            }
            sum += (log_c + i as f64 * lp + (n - i) as f64 * lq).exp();
        }
        sum
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if cdf(mid) > 0.05 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

fn pct(a: usize, n: usize) -> f64 {
    100.0 * a as f64 / n.max(1) as f64
}

/// p50 / p99 / max of the largest tolerance per well-shaped receipt, and the count of the
/// others.
fn quantiles(row: &Row) -> String {
    let mut xs: Vec<f32> = row
        .outcomes
        .iter()
        .filter(|o| o.shape_ok)
        .map(|o| o.max_tol)
        .collect();
    let shape = row.outcomes.len() - xs.len();
    let shape = if shape > 0 {
        format!(" ({shape} wrong shape)")
    } else {
        String::new()
    };
    if xs.is_empty() {
        return format!("-{shape}");
    }
    xs.sort_by(f32::total_cmp);
    let show = |x: f32| {
        if x > GIVE_UP {
            format!("> {GIVE_UP}")
        } else {
            format!("{x:.3}")
        }
    };
    let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
    format!(
        "{} / {} / {}{shape}",
        show(q(0.5)),
        show(q(0.99)),
        show(xs[xs.len() - 1])
    )
}

fn print_table(rows: &[Row], a: &Args, done: usize, secs: f64) {
    let threads = candle_core::utils::get_num_threads();
    println!(
        "\n## {done} prompts (offset {}), ≤ {} tokens, validator Q8_0 with {threads} thread(s), {secs:.0} s\n",
        a.offset, a.tokens
    );
    println!(
        "Rule: every position ≤ {REPLAY_LOGIT_TOLERANCE}, at most one position per \
         {REPLAY_STRAIN_SPACING} above {REPLAY_STRAIN_TOLERANCE}. Honest rows count rejections \
         (false reject), forged rows acceptances (false accept).\n"
    );
    println!(
        "| receipts | n | wrong | rate | largest tolerance per receipt p50 / p99 / max | positions > {REPLAY_STRAIN_TOLERANCE} / > {REPLAY_LOGIT_TOLERANCE} |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let n = r.outcomes.len();
        let w = r.wrong();
        let positions = if r.honest {
            let all = r.outcomes.iter().flat_map(|o| &o.tols);
            let above = |b: f32| all.clone().filter(|&&t| t > b).count();
            format!(
                "{} / {} of {}",
                above(REPLAY_STRAIN_TOLERANCE),
                above(REPLAY_LOGIT_TOLERANCE),
                all.clone().count()
            )
        } else {
            String::new()
        };
        println!(
            "| {} | {n} | {w} | {:.2}% | {} | {positions} |",
            r.label,
            pct(w, n),
            quantiles(r)
        );
    }
    for (label, honest) in [
        ("honest receipts falsely rejected", true),
        (
            "forgeries falsely accepted (other prompt, substitutions, truncated, extended)",
            false,
        ),
    ] {
        let pooled = rows.iter().filter(|r| r.pooled && r.honest == honest);
        let w: usize = pooled.clone().map(Row::wrong).sum();
        let n: usize = pooled.map(|r| r.outcomes.len()).sum();
        println!(
            "\n{label}: {w}/{n} = {:.2}% (95% upper bound {:.2}%); goal < 0.5% {}",
            pct(w, n),
            100.0 * upper95(w, n),
            if pct(w, n) < 0.5 { "met" } else { "NOT met" }
        );
    }
    std::io::stdout().flush().unwrap();
}

/// Reads one prompt's outputs from a worker: `[weights][mode]`.
fn read_outputs(lines: &mut Lines<BufReader<ChildStdout>>) -> Vec<Vec<Vec<u32>>> {
    let line = lines.next().expect("worker ended early").unwrap();
    let flat: Vec<Vec<u32>> = serde_json::from_str(&line).unwrap();
    flat.chunks(MODES.len()).map(<[_]>::to_vec).collect()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let a = Args {
        dir: args
            .next()
            .expect("usage: verify_rates <models dir> [N] [tokens] [offset]")
            .into(),
        n: args.next().map_or(200, |s| s.parse().unwrap()),
        tokens: args.next().map_or(24, |s| s.parse().unwrap()),
        offset: args.next().map_or(0, |s| s.parse().unwrap()),
    };
    if std::env::var(WORKER_ENV).is_ok() {
        worker(&a);
        return;
    }
    let start = Instant::now();
    let mut children = Vec::new();
    let mut workers: Vec<_> = THREADS
        .iter()
        .map(|t| {
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(std::env::args_os().skip(1))
                .env(WORKER_ENV, "1")
                .env("RAYON_NUM_THREADS", t.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let lines = BufReader::new(child.stdout.take().unwrap()).lines();
            children.push(child);
            lines
        })
        .collect();

    let v = load(&a.dir, true);
    let vocab = v.config().vocab_size as u64;
    let stop = v.tokenizer().special_token("<|im_end|>").unwrap();
    let is_stop = |t: &u32| v.stop_token_ids().contains(t);
    let qs = prompts(a.n, a.offset);

    let mut rows: Vec<Row> = Vec::new();
    let mut add_row = |label: String, honest: bool, pooled: bool| {
        rows.push(Row {
            label,
            honest,
            pooled,
            outcomes: Vec::new(),
        });
        rows.len() - 1
    };
    // honest[weights][threads][mode]
    let honest: Vec<Vec<Vec<usize>>> = WEIGHTS
        .iter()
        .map(|w| {
            THREADS
                .iter()
                .map(|t| {
                    MODES
                        .iter()
                        .map(|m| {
                            add_row(
                                format!("honest {w}, {t} thread(s), {}", m.label()),
                                true,
                                true,
                            )
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let kinds = [
        "other prompt",
        "5% substitutions",
        "truncated",
        "extended +4",
    ];
    // forged[mode][kind], then the other-seed rows of the sampled modes.
    let forged: Vec<Vec<usize>> = MODES
        .iter()
        .map(|m| {
            kinds
                .iter()
                .map(|k| add_row(format!("forged: {k}, {}", m.label()), false, true))
                .collect()
        })
        .collect();
    let other_seed: Vec<Option<usize>> = MODES
        .iter()
        .map(|&m| {
            (m != Mode::Greedy)
                .then(|| add_row(format!("forged: other seed, {}", m.label()), false, false))
        })
        .collect();
    let batched = add_row(
        format!(
            "honest Q8_0, 1 thread, T0.7, batched-pass validator (first {BATCHED_PROMPTS} prompts)"
        ),
        true,
        false,
    );

    let mut rng = SplitMix64::new(0xF0F0 + a.offset as u64);
    // outputs[prompt][threads][weights][mode]
    let mut outputs: Vec<Vec<Vec<Vec<Vec<u32>>>>> = Vec::new();
    let mut same_across_threads = 0;
    for i in 0..a.n {
        while outputs.len() < (i + 2).min(a.n) {
            outputs.push(workers.iter_mut().map(read_outputs).collect());
        }
        let p = v.encode_chat(&[ChatMessage::user(qs[i].clone())]).unwrap();
        let mut replay = v.replay_prompt(&p).unwrap();
        let here = &outputs[i];
        same_across_threads += usize::from(here[0] == here[1]);
        for (w, _) in WEIGHTS.iter().enumerate() {
            for (t, _) in THREADS.iter().enumerate() {
                for (k, m) in MODES.iter().enumerate() {
                    let o = check(&mut replay, &here[t][w][k], &m.params(a.seed(i), a.tokens));
                    rows[honest[w][t][k]].outcomes.push(o);
                }
            }
        }
        // Forgeries of the Q4_1 1-thread receipts.
        let next = &outputs[(i + 1) % a.n][0][0];
        for (k, m) in MODES.iter().enumerate() {
            let params = m.params(a.seed(i), a.tokens);
            let ids = &here[0][0][k];
            let emitted: Vec<u32> = ids.iter().copied().filter(|t| !is_stop(t)).collect();
            let mut cases: Vec<(Vec<u32>, SamplingParams)> = Vec::new();
            cases.push((next[k].clone(), params.clone()));
            let mut sub = emitted.clone();
            let mut changed = false;
            for t in sub.iter_mut() {
                if rng.next_f64() < 0.05 {
                    *t = (rng.next_u64() % vocab) as u32;
                    changed = true;
                }
            }
            if !changed && !sub.is_empty() {
                let j = (rng.next_u64() % sub.len() as u64) as usize;
                sub[j] = (rng.next_u64() % vocab) as u32;
            }
            sub.extend(ids.last().filter(|t| is_stop(t)));
            cases.push((sub, params.clone()));
            let mut cut = emitted[..emitted.len() / 2].to_vec();
            cut.push(stop);
            cases.push((cut, params.clone()));
            let mut ext = emitted.clone();
            for _ in 0..4 {
                ext.push(stop);
                let j = ext.len() - 1;
                let l = replay.logits(&ext, j).unwrap();
                ext[j] = (0..l.len() as u32)
                    .filter(|t| !is_stop(t))
                    .max_by(|&x, &y| l[x as usize].total_cmp(&l[y as usize]).then(y.cmp(&x)))
                    .unwrap();
            }
            ext.push(stop);
            let budget = SamplingParams {
                max_tokens: params.max_tokens + 5,
                ..params.clone()
            };
            cases.push((ext, budget));
            for ((f, fp), &r) in cases.iter().zip(&forged[k]) {
                let o = check(&mut replay, f, fp);
                rows[r].outcomes.push(o);
            }
            if let Some(r) = other_seed[k] {
                let fp = SamplingParams {
                    seed: params.seed ^ 0x5EED,
                    ..params.clone()
                };
                let o = check(&mut replay, ids, &fp);
                rows[r].outcomes.push(o);
            }
        }
        if i < BATCHED_PROMPTS {
            let params = Mode::T07.params(a.seed(i), a.tokens);
            let ids = &here[0][1][1];
            let all: Vec<u32> = p.iter().chain(ids).copied().collect();
            let logits = v
                .forward_all_logits(&mut v.new_session(), &all[..all.len() - 1])
                .unwrap();
            let mut draws = SplitMix64::new(params.seed);
            let tols: Vec<f32> = ids
                .iter()
                .enumerate()
                .map(|(j, &t)| {
                    let l = logits
                        .get(p.len() - 1 + j)
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    replay_tolerance(&l, &params, t, draws.next_f64()).unwrap()
                })
                .collect();
            let shape_ok = replay.first_shape_error(ids, &params).is_none();
            rows[batched].outcomes.push(Outcome {
                accepted: shape_ok && first_replay_rejection(&tols, ids.len()).is_none(),
                shape_ok,
                max_tol: tols.iter().copied().fold(0.0, f32::max),
                tols,
            });
        }
        if (i + 1) % 10 == 0 {
            eprintln!("{} prompts, {:.0} s", i + 1, start.elapsed().as_secs_f64());
        }
        if (i + 1) % 50 == 0 || i + 1 == a.n {
            print_table(&rows, &a, i + 1, start.elapsed().as_secs_f64());
        }
    }
    println!(
        "\nOutputs identical with 1 and 2 worker threads (all weights and modes): {same_across_threads}/{} prompts",
        a.n
    );
    println!("total {:.0} s", start.elapsed().as_secs_f64());
    for mut c in children {
        let _ = c.wait();
    }
}
