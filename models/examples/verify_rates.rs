//! Measures the audit rules on the real model: false-reject rate for honest outputs and
//! false-accept rate for forgeries, for the current rank/margin rule (`ChatModel::verify`,
//! `VerifyPolicy::default()`) and the sampler-replay rule (`ChatModel::verify_replay`).
//!
//! `RAYON_NUM_THREADS=1 cargo run --release -p mycel-models --example verify_rates -- <models dir> [N] [tokens]`
//!
//! Validator: Q8_0-requantized weights (the default load) in this process. Honest workers: the
//! file's Q4_1 weights in this process, and Q8_0 in a child process with another thread count;
//! each greedy and with temperature 0.7 (top_k 40, top_p 0.95, seed = prompt index). A receipt
//! is (output ids, followed by the stop token when the worker claims it stopped; the sampling
//! params). Both rules also require a receipt that does not claim a stop to have exactly
//! `max_tokens` tokens. Forgeries, built from the Q4_1 receipts: another prompt's output, 5%
//! random substitutions (at least one), truncated to half and claimed stopped, extended with
//! 4 random tokens and claimed stopped. Prints the table every 10 prompts.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use mycel_models::llama::{StageInput, StageOutput};
use mycel_models::sampling::{Sampler, SplitMix64};
use mycel_models::verify::{REPLAY_DRAW_BAND, REPLAY_GREEDY_MARGIN};
use mycel_models::{
    ChatMessage, ChatModel, LoadOptions, Registry, SamplingParams, VerifyPolicy,
    registry::DEFAULT_CHAT_MODEL, verify_cached,
};

const CHILD_ENV: &str = "MYCEL_VERIFY_RATES_CHILD";

fn questions(n: usize) -> Vec<String> {
    const T: [&str; 8] = [
        "What is {}?",
        "Explain {} to a child.",
        "Give one fact about {}.",
        "Why is {} important?",
        "Write a short poem about {}.",
        "What are the risks of {}?",
        "Summarize the history of {}.",
        "How would you describe {} in one sentence?",
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
    (0..n)
        .map(|i| T[(i / X.len()) % T.len()].replace("{}", X[i % X.len()]))
        .collect()
}

#[derive(Clone, Debug)]
struct Receipt {
    ids: Vec<u32>,
    stopped: bool,
    params: SamplingParams,
}

fn params(i: usize, sampled: bool, n: usize) -> SamplingParams {
    if sampled {
        SamplingParams {
            temperature: 0.7,
            top_k: Some(40),
            top_p: Some(0.95),
            seed: i as u64,
            max_tokens: n,
            stop_tokens: Vec::new(),
        }
    } else {
        SamplingParams::greedy(n)
    }
}

fn generate(m: &ChatModel, prompt: &[u32], p: &SamplingParams) -> Receipt {
    let mut s = m.new_session();
    let mut sampler = Sampler::new(p);
    let mut ids = Vec::new();
    let mut input = prompt.to_vec();
    loop {
        let StageOutput::Logits(l) = m.forward_stage(&mut s, StageInput::Tokens(&input)).unwrap()
        else {
            panic!("not a whole model")
        };
        let id = sampler.sample(&l.to_vec1::<f32>().unwrap());
        ids.push(id);
        if m.stop_token_ids().contains(&id) {
            return Receipt {
                ids,
                stopped: true,
                params: p.clone(),
            };
        }
        if ids.len() >= p.max_tokens {
            return Receipt {
                ids,
                stopped: false,
                params: p.clone(),
            };
        }
        input = vec![id];
    }
}

/// Replay bands (sampled) and margins (greedy) tabulated besides the spec constants.
const BANDS: [f64; 4] = [0.0, 0.01, 0.05, 0.1];
const MARGINS: [f64; 4] = [0.0, 0.25, 1.0, 2.0];

/// (current rule accepts, replay rule accepts, replay acceptance at BANDS / MARGINS)
fn check(v: &ChatModel, prompt: &[u32], r: &Receipt) -> (bool, bool, [bool; 4]) {
    let shape_ok = if r.stopped {
        r.ids.last().is_some_and(|t| v.stop_token_ids().contains(t))
    } else {
        r.ids.len() == r.params.max_tokens
    };
    if !shape_ok || r.ids.is_empty() {
        return (false, false, [false; 4]);
    }
    let greedy = r.params.temperature == 0.0;
    let (dist, scores) = v.replay_distances(prompt, &r.ids, &r.params).unwrap();
    let worst = dist.iter().copied().fold(0.0, f64::max);
    let pol = VerifyPolicy::default();
    let current = scores
        .iter()
        .all(|s| s.rank < pol.top_k || s.margin <= pol.logit_margin);
    let limit = if greedy {
        f64::from(REPLAY_GREEDY_MARGIN)
    } else {
        REPLAY_DRAW_BAND
    };
    let alt = if greedy { MARGINS } else { BANDS };
    (current, worst <= limit, alt.map(|b| worst <= b))
}

fn content(r: &Receipt) -> Vec<u32> {
    let mut c = r.ids.clone();
    if r.stopped {
        c.pop();
    }
    c
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir: PathBuf = args
        .next()
        .expect("usage: verify_rates <models dir> [N] [tokens]")
        .into();
    let n: usize = args.next().map_or(200, |s| s.parse().unwrap());
    let tokens: usize = args.next().map_or(32, |s| s.parse().unwrap());
    let reg = Registry::load_default().unwrap();
    let entry = reg.get(DEFAULT_CHAT_MODEL).unwrap();
    let verified = verify_cached(entry, &dir)
        .unwrap()
        .expect("model not cached");
    let q8 = ChatModel::load(&verified, &LoadOptions::default()).unwrap();
    let qs = questions(n);
    let prompt = |i: usize| q8.encode_chat(&[ChatMessage::user(qs[i].clone())]).unwrap();

    if std::env::var(CHILD_ENV).is_ok() {
        // Child: Q8_0 worker with another thread count; one JSON line per prompt.
        let mut out = std::io::stdout().lock();
        for i in 0..n {
            let p = prompt(i);
            let g = generate(&q8, &p, &params(i, false, tokens));
            let s = generate(&q8, &p, &params(i, true, tokens));
            let line = serde_json::json!([g.ids, g.stopped, s.ids, s.stopped]);
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
    let honest_labels = [
        "honest greedy Q4_1".to_string(),
        "honest T0.7 Q4_1".to_string(),
        format!("honest greedy Q8_0 {child_threads}thr"),
        format!("honest T0.7 Q8_0 {child_threads}thr"),
    ];
    let forge_labels = [
        "forged other prompt",
        "forged 5% substitutions",
        "forged truncated",
        "forged extended +4",
    ];
    // [row][rule] accepted counts; rows: 4 honest, then 4 forgeries × {greedy, sampled}.
    let rows = 4 + 8;
    let mut acc = vec![[0usize; 6]; rows];
    let mut total = vec![0usize; rows];
    let mut rng = SplitMix64::new(0xF0F0);
    let q4_receipts = |i: usize| {
        let p = prompt(i);
        [
            generate(&q4, &p, &params(i, false, tokens)),
            generate(&q4, &p, &params(i, true, tokens)),
        ]
    };
    let mut next = q4_receipts(0);
    let start = std::time::Instant::now();
    for i in 0..n {
        let p = prompt(i);
        let cur = next;
        next = q4_receipts((i + 1) % n);
        let line = child_lines.next().expect("child ended").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let ids = |k: usize| serde_json::from_value::<Vec<u32>>(v[k].clone()).unwrap();
        let child = [
            Receipt {
                ids: ids(0),
                stopped: v[1].as_bool().unwrap(),
                params: params(i, false, tokens),
            },
            Receipt {
                ids: ids(2),
                stopped: v[3].as_bool().unwrap(),
                params: params(i, true, tokens),
            },
        ];
        let mut record = |row: usize, r: &Receipt| {
            let (a, b, alt) = check(&q8, &p, r);
            acc[row][0] += usize::from(a);
            acc[row][1] += usize::from(b);
            for (k, x) in alt.iter().enumerate() {
                acc[row][2 + k] += usize::from(*x);
            }
            total[row] += 1;
        };
        record(0, &cur[0]);
        record(1, &cur[1]);
        record(2, &child[0]);
        record(3, &child[1]);
        for (k, h) in cur.iter().enumerate() {
            // Another prompt's honest output, claimed for this prompt.
            let other = Receipt {
                params: h.params.clone(),
                ..next[k].clone()
            };
            record(4 + k, &other);
            // 5% substitutions (at least one) in the content.
            let mut c = content(h);
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
            let mut ids = c;
            if h.stopped {
                ids.push(stop);
            }
            record(6 + k, &Receipt { ids, ..h.clone() });
            // Truncated to half, claimed stopped.
            let c = content(h);
            let mut ids = c[..c.len() / 2].to_vec();
            ids.push(stop);
            record(
                8 + k,
                &Receipt {
                    ids,
                    stopped: true,
                    params: h.params.clone(),
                },
            );
            // Extended with 4 random tokens, claimed stopped.
            let mut ids = content(h);
            ids.extend((0..4).map(|_| (rng.next_u64() % vocab) as u32));
            ids.push(stop);
            record(
                10 + k,
                &Receipt {
                    ids,
                    stopped: true,
                    params: h.params.clone(),
                },
            );
        }
        if (i + 1) % 10 == 0 || i + 1 == n {
            println!(
                "\n== {} prompts, {tokens} tokens, validator Q8_0 {my_threads} thread(s), {:.0} s ==",
                i + 1,
                start.elapsed().as_secs_f64()
            );
            println!(
                "{:<34} {:>18} {:>18}   replay at band {BANDS:?} (T0.7) / margin {MARGINS:?} (greedy)",
                "receipts (accepted/total)", "current rule", "replay rule"
            );
            for row in 0..rows {
                let label = if row < 4 {
                    honest_labels[row].clone()
                } else {
                    let k = (row - 4) % 2;
                    format!(
                        "{} ({})",
                        forge_labels[(row - 4) / 2],
                        if k == 0 { "greedy" } else { "T0.7" }
                    )
                };
                let pct = |a: usize| 100.0 * a as f64 / total[row].max(1) as f64;
                let alt: Vec<String> = (2..6)
                    .map(|k| format!("{:5.1}%", pct(acc[row][k])))
                    .collect();
                println!(
                    "{label:<34} {:>4}/{:<4} {:6.1}% {:>4}/{:<4} {:6.1}%   {}",
                    acc[row][0],
                    total[row],
                    pct(acc[row][0]),
                    acc[row][1],
                    total[row],
                    pct(acc[row][1]),
                    alt.join(" ")
                );
            }
            std::io::stdout().flush().unwrap();
        }
    }
    let _ = child.wait();
}
