//! Measures the audit rules on the real model: false-reject rate for honest receipts and
//! false-accept rate for forgeries, for the node's current rank/margin rule (`ChatModel::verify`,
//! `VerifyPolicy::default()`) and the sampler-replay rule (`ChatModel::verify_replay`,
//! `REPLAY_LOGIT_TOLERANCE`), plus the logit drift behind the replay tolerance.
//!
//! `cargo run --release -p mycel-models --example verify_rates -- <models dir> [N] [tokens] [offset]`
//!
//! Prompts: N questions from 12 templates × 30 topics (360 distinct), starting at `offset`
//! (calibrate on one range, measure on another). Validator: Q8_0-requantized weights (the
//! default load) in this process, replaying each receipt along the worker's numeric path.
//! Honest workers: the file's Q4_1 weights in this process (greedy; T 0.7 and T 1.0 with
//! top_k 40, top_p 0.95, seed = prompt index), and Q8_0 in a child process with another thread
//! count (T 0.7), all through `ChatModel::generate_from_ids`. A receipt is the output ids,
//! followed by the stop token when the worker claims it stopped, and the sampling params; both
//! rules first check its shape (a stop claim ends with the first stop token and has at most
//! `max_tokens` tokens before it; otherwise exactly `max_tokens` tokens and no stop token).
//! Forgeries, built from each Q4_1 receipt: another prompt's output, 5% random substitutions
//! (at least one), truncated to half and claimed stopped, extended by 4 random tokens and
//! claimed stopped, and (sampled params) the honest output claimed under another seed.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use mycel_models::llama::{PREFILL_CHUNK, StageInput, StageOutput};
use mycel_models::sampling::{MAX_NEW_TOKENS, ReplayPosition, Sampler, SplitMix64};
use mycel_models::verify::{PromptReplay, REPLAY_LOGIT_TOLERANCE};
use mycel_models::{
    ChatMessage, ChatModel, LoadOptions, Session, Registry, SamplingParams, VerifyPolicy,
    registry::DEFAULT_CHAT_MODEL, verify_cached,
};

const CHILD_ENV: &str = "MYCEL_VERIFY_RATES_CHILD";

/// Logit tolerances tabulated besides the spec constant.
const SWEEP: [f32; 6] = [0.0, 0.1, 0.25, 0.5, 1.0, 2.0];

/// Prompts whose logit drift is measured in detail.
const DRIFT_PROMPTS: usize = 20;

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

fn params(mode: Mode, seed: u64, tokens: usize) -> SamplingParams {
    let sampled = |temperature| SamplingParams {
        temperature,
        top_k: Some(40),
        top_p: Some(0.95),
        seed,
        max_tokens: tokens,
        stop_tokens: Vec::new(),
    };
    match mode {
        Mode::Greedy => SamplingParams::greedy(tokens),
        Mode::T07 => sampled(0.7),
        Mode::T10 => sampled(1.0),
    }
}

#[derive(Clone, Debug)]
struct Receipt {
    ids: Vec<u32>,
    stopped: bool,
    params: SamplingParams,
}

/// An honest worker: the steps of `ChatFrontend::generate_with` (prompt in chunks of
/// `PREFILL_CHUNK`, then one token at a time, `Sampler::sample` on each position's logits),
/// keeping the stop token the sampler drew (a `Completion` leaves it out).
fn generate(m: &ChatModel, prompt: &[u32], p: &SamplingParams) -> Receipt {
    let mut s = m.new_session();
    let mut sampler = Sampler::new(p);
    let feed = |s: &mut Session, ids: &[u32]| -> Vec<f32> {
        let mut last = None;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            let StageOutput::Logits(l) = m.forward_stage(s, StageInput::Tokens(chunk)).unwrap()
            else {
                panic!("not a whole model")
            };
            last = Some(l.to_vec1::<f32>().unwrap());
        }
        last.unwrap()
    };
    let mut logits = feed(&mut s, prompt);
    let mut ids = Vec::new();
    loop {
        let id = sampler.sample(&logits);
        ids.push(id);
        let stopped = m.stop_token_ids().contains(&id) || p.stop_tokens.contains(&id);
        if stopped || ids.len() >= p.max_tokens {
            return Receipt {
                ids,
                stopped,
                params: p.clone(),
            };
        }
        logits = feed(&mut s, &[id]);
    }
}

/// Checks once that [`generate`] is the engine's generation.
fn assert_matches_engine(m: &ChatModel, prompt: &[u32], r: &Receipt) {
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_NEW_TOKENS);
    let c = m
        .generate_from_ids(&mut m.new_session(), prompt, &r.params, &tx)
        .unwrap();
    drop(rx);
    let mut ids = r.ids.clone();
    if r.stopped {
        ids.pop();
    }
    assert_eq!(c.token_ids, ids, "the worker loop drifted from generate_from_ids");
}

fn shape_ok(v: &ChatModel, r: &Receipt) -> bool {
    let is_stop = |t: &u32| v.stop_token_ids().contains(t) || r.params.stop_tokens.contains(t);
    let Some((last, body)) = r.ids.split_last() else {
        return false;
    };
    if body.iter().any(is_stop) {
        return false;
    }
    if r.stopped {
        is_stop(last) && body.len() <= r.params.max_tokens
    } else {
        !is_stop(last) && r.ids.len() == r.params.max_tokens
    }
}

/// One receipt's outcome under both rules.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    shape_ok: bool,
    /// The node's rank/margin rule accepts.
    current: bool,
    /// Replay: the largest per-position tolerance needed (infinity when the shape is wrong or
    /// the replay gave up above the sweep).
    max_tol: f32,
}

impl Outcome {
    fn replay_accepts(&self, delta: f32) -> bool {
        self.shape_ok && self.max_tol <= delta
    }
}

fn check(v: &ChatModel, replay: &mut PromptReplay<'_>, prompt: &[u32], r: &Receipt) -> Outcome {
    if !shape_ok(v, r) {
        return Outcome {
            shape_ok: false,
            current: false,
            max_tol: f32::INFINITY,
        };
    }
    let current = v
        .verify(prompt, &r.ids, &VerifyPolicy::default())
        .unwrap()
        .accepted;
    let give_up = SWEEP[SWEEP.len() - 1].max(REPLAY_LOGIT_TOLERANCE);
    let rep = replay.tolerances(&r.ids, &r.params, give_up).unwrap();
    let max_tol = rep.tolerances.iter().copied().fold(0.0, f32::max);
    Outcome {
        shape_ok: true,
        current,
        max_tol,
    }
}

struct Row {
    label: String,
    honest: bool,
    outcomes: Vec<Outcome>,
}

fn pct(a: usize, n: usize) -> f64 {
    100.0 * a as f64 / n.max(1) as f64
}

fn quantiles(xs: &mut [f32]) -> String {
    if xs.is_empty() {
        return "-".into();
    }
    xs.sort_by(f32::total_cmp);
    let q = |p: f64| xs[((xs.len() - 1) as f64 * p).round() as usize];
    format!(
        "p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (n = {})",
        q(0.5),
        q(0.9),
        q(0.99),
        xs[xs.len() - 1],
        xs.len()
    )
}

fn print_table(rows: &[Row], tokens: usize, n: usize, secs: f64, threads: (usize, usize)) {
    println!(
        "\n## {n} prompts, ≤ {tokens} tokens, validator Q8_0 ({} thread(s)), {secs:.0} s\n",
        threads.0
    );
    println!(
        "Replay rule: REPLAY_LOGIT_TOLERANCE = {REPLAY_LOGIT_TOLERANCE}. Honest rows count \
         rejections (false reject), forged rows count acceptances (false accept); goal < 0.5%.\n"
    );
    let sweep: Vec<String> = SWEEP.iter().map(|d| format!("δ={d}")).collect();
    println!(
        "| receipts | n | current rule: wrong | replay: wrong | rate | goal | shape rejects | replay wrong at {} |",
        sweep.join(" / ")
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        let n = r.outcomes.len();
        let wrong = |acc: &dyn Fn(&Outcome) -> bool| {
            r.outcomes
                .iter()
                .filter(|o| acc(o) != r.honest)
                .count()
        };
        let cur = wrong(&|o| o.current);
        let rep = wrong(&|o| o.replay_accepts(REPLAY_LOGIT_TOLERANCE));
        let shape = r.outcomes.iter().filter(|o| !o.shape_ok).count();
        let sw: Vec<String> = SWEEP
            .iter()
            .map(|&d| wrong(&|o| o.replay_accepts(d)).to_string())
            .collect();
        println!(
            "| {} | {n} | {cur} ({:.1}%) | {rep} | {:.2}% | {} | {shape} | {} |",
            r.label,
            pct(cur, n),
            pct(rep, n),
            if pct(rep, n) < 0.5 { "met" } else { "NOT met" },
            sw.join(" / ")
        );
    }
    println!("\nHonest receipts: largest per-position tolerance needed, per receipt:\n");
    for r in rows.iter().filter(|r| r.honest) {
        let mut xs: Vec<f32> = r
            .outcomes
            .iter()
            .filter(|o| o.shape_ok)
            .map(|o| o.max_tol)
            .collect();
        println!("- {}: {}", r.label, quantiles(&mut xs));
    }
    println!("\nForged receipts: smallest tolerance at which they would pass:\n");
    for r in rows.iter().filter(|r| !r.honest) {
        let mut xs: Vec<f32> = r
            .outcomes
            .iter()
            .filter(|o| o.shape_ok)
            .map(|o| o.max_tol)
            .collect();
        println!("- {}: {}", r.label, quantiles(&mut xs));
    }
    std::io::stdout().flush().unwrap();
}

/// Half the range of (worker − validator) over the validator's 40 best ids: the logit
/// tolerance those candidates needed (a common shift of all logits changes nothing).
fn top40_drift(worker: &[f32], validator: &[f32]) -> f32 {
    let mut idx: Vec<usize> = (0..validator.len()).collect();
    idx.select_nth_unstable_by(39, |&a, &b| validator[b].total_cmp(&validator[a]));
    let d: Vec<f32> = idx[..40].iter().map(|&i| worker[i] - validator[i]).collect();
    let hi = d.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lo = d.iter().copied().fold(f32::INFINITY, f32::min);
    (hi - lo) / 2.0
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir: PathBuf = args
        .next()
        .expect("usage: verify_rates <models dir> [N] [tokens] [offset]")
        .into();
    let n: usize = args.next().map_or(200, |s| s.parse().unwrap());
    let tokens: usize = args.next().map_or(32, |s| s.parse().unwrap());
    let offset: usize = args.next().map_or(0, |s| s.parse().unwrap());
    let reg = Registry::load_default().unwrap();
    let entry = reg.get(DEFAULT_CHAT_MODEL).unwrap();
    let verified = verify_cached(entry, &dir)
        .unwrap()
        .expect("model not cached");
    let q8 = ChatModel::load(&verified, &LoadOptions::default()).unwrap();
    let qs = prompts(n, offset);
    let prompt = |i: usize| q8.encode_chat(&[ChatMessage::user(qs[i].clone())]).unwrap();
    let seed = |i: usize| (offset + i) as u64;

    if std::env::var(CHILD_ENV).is_ok() {
        // Child: Q8_0 worker with another thread count; one JSON line per prompt.
        let mut out = std::io::stdout().lock();
        for i in 0..n {
            let p = prompt(i);
            let r = generate(&q8, &p, &params(Mode::T07, seed(i), tokens));
            let line = serde_json::json!([r.ids, r.stopped]);
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
        return;
    }
    let my_threads = candle_core::utils::get_num_threads();
    let child_threads = if my_threads == 1 { 2 } else { 1 };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, "1")
        .env("RAYON_NUM_THREADS", child_threads.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child_lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let q4 = ChatModel::load(
        &verified,
        &LoadOptions {
            requantize: None,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let vocab = q8.config().vocab_size as u64;
    let stop = q8
        .tokenizer()
        .special_token("<|im_end|>")
        .unwrap_or(q8.stop_token_ids()[0]);
    let modes = [Mode::Greedy, Mode::T07, Mode::T10];
    let mode_label = |m: Mode| match m {
        Mode::Greedy => "greedy",
        Mode::T07 => "T0.7",
        Mode::T10 => "T1.0",
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut row = |label: String, honest: bool| {
        rows.push(Row {
            label,
            honest,
            outcomes: Vec::new(),
        });
        rows.len() - 1
    };
    let honest_rows: Vec<usize> = modes
        .iter()
        .map(|&m| row(format!("honest Q4_1 {}", mode_label(m)), true))
        .collect();
    let child_row = row(
        format!("honest Q8_0 {child_threads} thread(s) T0.7"),
        true,
    );
    let kinds = [
        "other prompt",
        "5% substitutions",
        "truncated",
        "extended +4",
        "other seed",
    ];
    let forged_rows: Vec<Vec<usize>> = modes
        .iter()
        .map(|&m| {
            kinds
                .iter()
                .filter(|k| m != Mode::Greedy || **k != "other seed")
                .map(|k| row(format!("forged {k} ({})", mode_label(m)), false))
                .collect()
        })
        .collect();
    let same_batched_row = row(
        format!("honest Q8_0 T0.7, batched validator (first {DRIFT_PROMPTS} prompts)"),
        true,
    );

    let mut drift_q4_q8 = (Vec::new(), Vec::new());
    let mut drift_batched = (Vec::new(), Vec::new());
    let mut drift_q4_batched = (Vec::new(), Vec::new());
    let mut rng = SplitMix64::new(0xF0F0 + offset as u64);
    let q4_receipts = |i: usize| -> Vec<Receipt> {
        let p = prompt(i);
        modes
            .iter()
            .map(|&m| generate(&q4, &p, &params(m, seed(i), tokens)))
            .collect()
    };
    let mut next = q4_receipts(0);
    for r in &next {
        assert_matches_engine(&q4, &prompt(0), r);
    }
    let start = Instant::now();
    for i in 0..n {
        let p = prompt(i);
        let cur = next;
        next = q4_receipts((i + 1) % n);
        let line = child_lines.next().expect("child ended").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let child_receipt = Receipt {
            ids: serde_json::from_value(v[0].clone()).unwrap(),
            stopped: v[1].as_bool().unwrap(),
            params: params(Mode::T07, seed(i), tokens),
        };
        let mut replay = q8.replay_prompt(&p).unwrap();
        let o = check(&q8, &mut replay, &p, &child_receipt);
        rows[child_row].outcomes.push(o);
        for (k, h) in cur.iter().enumerate() {
            let o = check(&q8, &mut replay, &p, h);
            rows[honest_rows[k]].outcomes.push(o);
            let content = || {
                let mut c = h.ids.clone();
                if h.stopped {
                    c.pop();
                }
                c
            };
            let mut forged = Vec::new();
            // Another prompt's honest output, claimed for this prompt.
            forged.push(Receipt {
                params: h.params.clone(),
                ..next[k].clone()
            });
            // 5% substitutions (at least one) in the content.
            let mut c = content();
            let mut changed = false;
            for t in c.iter_mut() {
                if rng.next_f64() < 0.05 {
                    *t = (rng.next_u64() % vocab) as u32;
                    changed = true;
                }
            }
            if !changed && !c.is_empty() {
                let j = (rng.next_u64() % c.len() as u64) as usize;
                c[j] = (rng.next_u64() % vocab) as u32;
            }
            if h.stopped {
                c.push(h.ids[h.ids.len() - 1]);
            }
            forged.push(Receipt {
                ids: c,
                ..h.clone()
            });
            // Truncated to half, claimed stopped.
            let c = content();
            let mut ids = c[..c.len() / 2].to_vec();
            ids.push(stop);
            forged.push(Receipt {
                ids,
                stopped: true,
                params: h.params.clone(),
            });
            // Extended by 4 random tokens, claimed stopped.
            let mut ids = content();
            ids.extend((0..4).map(|_| (rng.next_u64() % vocab) as u32));
            ids.push(stop);
            forged.push(Receipt {
                ids,
                stopped: true,
                params: h.params.clone(),
            });
            // The honest output claimed under another seed.
            if modes[k] != Mode::Greedy {
                forged.push(Receipt {
                    params: SamplingParams {
                        seed: h.params.seed ^ 0x5EED,
                        ..h.params.clone()
                    },
                    ..h.clone()
                });
            }
            for (f, &r) in forged.iter().zip(&forged_rows[k]) {
                let o = check(&q8, &mut replay, &p, f);
                rows[r].outcomes.push(o);
            }
        }
        if i < DRIFT_PROMPTS {
            // Logit drift along the Q4_1 T0.7 receipt: the worker's own logits (Q4_1 replay,
            // bit-identical to its generation), the validator's (Q8_0, same path) and the
            // validator's single batched pass.
            let h = &cur[1];
            let mut worker = q4.replay_prompt(&p).unwrap();
            let all: Vec<u32> = p.iter().chain(&h.ids).copied().collect();
            let mut s = q8.new_session();
            let batched = q8
                .forward_all_logits(&mut s, &all[..all.len() - 1])
                .unwrap();
            let mut s4 = q4.new_session();
            let batched4 = q4
                .forward_all_logits(&mut s4, &all[..all.len() - 1])
                .unwrap();
            for j in 0..h.ids.len() {
                let w = worker.logits(&h.ids, j).unwrap().to_vec();
                let val = replay.logits(&h.ids, j).unwrap().to_vec();
                let b = batched
                    .get(p.len() - 1 + j)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let b4 = batched4
                    .get(p.len() - 1 + j)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                drift_q4_q8.0.push(max_abs(&w, &val));
                drift_q4_q8.1.push(top40_drift(&w, &val));
                drift_batched.0.push(max_abs(&b, &val));
                drift_batched.1.push(top40_drift(&b, &val));
                drift_q4_batched.0.push(max_abs(&b4, &w));
                drift_q4_batched.1.push(top40_drift(&b4, &w));
            }
            // The same-weights receipt (child, Q8_0) scored on the batched logits.
            let c = &child_receipt;
            if shape_ok(&q8, c) {
                let all: Vec<u32> = p.iter().chain(&c.ids).copied().collect();
                let mut s = q8.new_session();
                let batched = q8
                    .forward_all_logits(&mut s, &all[..all.len() - 1])
                    .unwrap();
                let mut rng = SplitMix64::new(c.params.seed);
                let mut worst = 0.0f32;
                for (j, &t) in c.ids.iter().enumerate() {
                    let u = rng.next_f64();
                    let l = batched
                        .get(p.len() - 1 + j)
                        .unwrap()
                        .to_vec1::<f32>()
                        .unwrap();
                    let pos = ReplayPosition::new(&l, &c.params, t).unwrap();
                    worst = worst.max(pos.tolerance(u));
                }
                rows[same_batched_row].outcomes.push(Outcome {
                    shape_ok: true,
                    current: true,
                    max_tol: worst,
                });
            }
        }
        if (i + 1) % 20 == 0 || i + 1 == n {
            print_table(
                &rows,
                tokens,
                i + 1,
                start.elapsed().as_secs_f64(),
                (my_threads, child_threads),
            );
        }
    }
    println!("\nLogit drift per output position (Q4_1 T0.7 receipts of the first {DRIFT_PROMPTS} prompts):\n");
    for (label, d) in [
        (
            "Q4_1 worker vs Q8_0 validator, both one token at a time",
            &mut drift_q4_q8,
        ),
        (
            "Q8_0 batched pass vs Q8_0 one token at a time (same weights)",
            &mut drift_batched,
        ),
        (
            "Q4_1 batched pass vs Q4_1 one token at a time (same weights)",
            &mut drift_q4_batched,
        ),
    ] {
        println!("- {label}:");
        println!("  - max |Δ| over the vocabulary: {}", quantiles(&mut d.0));
        println!(
            "  - half-range of Δ over the validator's top 40: {}",
            quantiles(&mut d.1)
        );
    }
    println!("\ntotal {:.0} s", start.elapsed().as_secs_f64());
    let _ = child.wait();
}
