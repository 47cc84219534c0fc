//! Greedy (or seeded) chat with a cached model, streaming to stdout, reporting speed.
//!
//! `cargo run --release -p mycel-models --example chat -- <cache dir> "<prompt>" [max tokens]`
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use mycel_models::{
    ChatMessage, ChatModel, LoadOptions, Registry, SamplingParams, registry::DEFAULT_CHAT_MODEL,
    verify_cached,
};
use tokio::sync::mpsc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let cache: PathBuf = args
        .next()
        .ok_or("usage: chat <cache dir> <prompt> [max tokens]")?
        .into();
    let prompt = args
        .next()
        .unwrap_or_else(|| "What is the capital of France?".into());
    let max: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let reg = Registry::load_default()?;
    let entry = reg.get(DEFAULT_CHAT_MODEL)?;
    let t = Instant::now();
    let verified =
        verify_cached(entry, &cache)?.ok_or("model not cached: run the pull example first")?;
    let verify_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    // MYCEL_NO_REQUANT=1: keep the file's Q4_1 weights (to compare with llama.cpp on the same weights).
    let opts = LoadOptions {
        requantize: if std::env::var_os("MYCEL_NO_REQUANT").is_some() {
            None
        } else {
            LoadOptions::default().requantize
        },
        ..LoadOptions::default()
    };
    let model = ChatModel::load(&verified, &opts)?;
    let load_s = t.elapsed().as_secs_f64();
    let msgs = [ChatMessage::user(prompt)];
    // MYCEL_RAW_PROMPT=1: the prompt is raw text (special tokens allowed), no chat template.
    let raw = std::env::var_os("MYCEL_RAW_PROMPT").is_some();
    let prompt_ids = if raw {
        model.tokenizer().encode(&msgs[0].content, true)?
    } else {
        model.encode_chat(&msgs)?
    };
    if std::env::var_os("MYCEL_DEBUG_PROMPT").is_some() {
        let t = model.tokenizer();
        let pieces: Vec<String> = prompt_ids
            .iter()
            .map(|&i| format!("{i}:{:?}", t.decode(&[i], false)))
            .collect();
        eprintln!("prompt: {}", pieces.join(" "));
    }
    let (tx, mut rx) = mpsc::channel::<mycel_models::Token>(mycel_models::sampling::MAX_NEW_TOKENS);
    let mut session = model.new_session();
    let params = SamplingParams {
        stop_tokens: vec![],
        ..SamplingParams::greedy(max)
    };
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout();
        let mut first = None;
        while let Some(tok) = rx.blocking_recv() {
            first.get_or_insert_with(Instant::now);
            print!("{}", tok.text);
            out.flush().ok();
        }
        first
    });
    let t = Instant::now();
    let c = model.generate_from_ids(&mut session, &prompt_ids, &params, &tx)?;
    let total = t.elapsed().as_secs_f64();
    drop(tx);
    let first = printer.join().unwrap();
    let ttft = first.map(|f| (f - t).as_secs_f64()).unwrap_or(total);
    let gen_tokens = c.token_ids.len().saturating_sub(1).max(1);
    println!();
    eprintln!(
        "verify {verify_s:.2}s, load {load_s:.2}s, prompt {} tokens in {ttft:.3}s ({:.0} tok/s), generated {} tokens, {:.1} tok/s after the first, finish {:?}",
        prompt_ids.len(),
        prompt_ids.len() as f64 / ttft,
        c.token_ids.len(),
        gen_tokens as f64 / (total - ttft).max(1e-9),
        c.finish_reason
    );
    eprintln!("ids: {:?}", c.token_ids);
    Ok(())
}
