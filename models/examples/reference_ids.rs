//! Greedy token ids for a list of chat prompts, for comparison with an independent implementation
//! (`scripts/reference_compare.py` runs this and llama.cpp on the same prompts).
//!
//! `cargo run -p mycel-models --example reference_ids -- <cache dir> <q4_1|q8_0|f32> <max tokens>`
//! reads one user message per stdin line and prints one JSON line per message:
//! `{"prompt": [ids of the ChatML prompt], "greedy": [generated ids, stop token excluded],
//! "margins": [best − second-best logit at each generated position]}` (a small margin is a near-tie
//! that any other implementation may break the other way).
//! `q4_1` keeps the file's weights (the same weights llama.cpp runs); `q8_0` requantizes them as
//! the node does; `f32` dequantizes them (exactly) and runs float matmuls, like llama.cpp on the
//! file written by the `dequantize_gguf` example.
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::BufRead;
use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use mycel_models::sampling::argmax;
use mycel_models::{
    ChatMessage, ChatModel, LoadOptions, Registry, registry::DEFAULT_CHAT_MODEL, verify_cached,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let usage = "usage: reference_ids <cache dir> <q4_1|q8_0|f32> <max tokens> < prompts";
    let mut args = std::env::args().skip(1);
    let cache: PathBuf = args.next().ok_or(usage)?.into();
    let requantize = match args.next().as_deref() {
        Some("q4_1") => None,
        Some("q8_0") => LoadOptions::default().requantize,
        Some("f32") => Some(GgmlDType::F32),
        _ => return Err(usage.into()),
    };
    let max: usize = args.next().ok_or(usage)?.parse()?;
    let entry = Registry::load_default()?.get(DEFAULT_CHAT_MODEL)?.clone();
    let verified = verify_cached(&entry, &cache)?.ok_or("model not cached: pull it first")?;
    let model = ChatModel::load(
        &verified,
        &LoadOptions {
            requantize,
            ..LoadOptions::default()
        },
    )?;
    let stops = model.stop_token_ids().to_vec();
    for line in std::io::stdin().lock().lines() {
        let msgs = [ChatMessage::user(line?)];
        let prompt = model.encode_chat(&msgs)?;
        // Greedy along the generator's path (prompt prefill, then a token at a time), keeping
        // each position's logits.
        let mut replay = model.replay_prompt(&prompt)?;
        let (mut greedy, mut margins) = (Vec::new(), Vec::new());
        while greedy.len() < max {
            let mut fed = greedy.clone();
            fed.push(0);
            let logits = replay.logits(&fed, greedy.len())?;
            let best = argmax(logits);
            let second = (0..logits.len())
                .filter(|&i| i != best as usize)
                .map(|i| logits[i])
                .fold(f32::NEG_INFINITY, f32::max);
            margins.push(logits[best as usize] - second);
            if stops.contains(&best) {
                break;
            }
            greedy.push(best);
        }
        println!(
            "{}",
            serde_json::json!({ "prompt": prompt, "greedy": greedy, "margins": margins })
        );
    }
    Ok(())
}
