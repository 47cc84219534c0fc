//! Compares our llama forward pass with candle-transformers' stock `quantized_llama` on the same
//! GGUF: agreement of greedy tokens and speed (tok/s), for Q8_0-requantized and original
//! weights. Prints ratios against the stock baseline measured in the same run. The logic lives
//! in [`mycel_models::bench`]; `mycel-node bench inference` is the fuller front end.
//!
//! `cargo run --release -p mycel-models --example bench -- <cache dir> [tokens]`
#![allow(missing_docs)]

use std::path::PathBuf;

use candle_core::quantized::GgmlDType;
use mycel_models::bench::{OurLlama, StockLlama, bench_prompts, race, requantized_gguf};
use mycel_models::{ChatModel, LoadOptions, Registry, registry::DEFAULT_CHAT_MODEL, verify_cached};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let cache: PathBuf = args
        .next()
        .ok_or("usage: bench <cache dir> [tokens]")?
        .into();
    let n: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(64);
    let reg = Registry::load_default()?;
    let entry = reg.get(DEFAULT_CHAT_MODEL)?;
    let verified = verify_cached(entry, &cache)?.ok_or("model not cached")?;
    let bytes = std::fs::read(verified.primary_path())?;
    let model = ChatModel::load(&verified, &LoadOptions::default())?;
    let prompts = bench_prompts(&model, 1)?;
    drop(model);
    let q8 = requantized_gguf(&bytes, GgmlDType::Q8_0)?;
    println!(
        "threads: {}, prompt {} tokens, {n} generated",
        candle_core::utils::get_num_threads(),
        prompts[0].len()
    );
    for (label, stock_bytes, ours_q) in
        [("Q8_0", &q8, Some(GgmlDType::Q8_0)), ("Q4_1", &bytes, None)]
    {
        let (s, o) = race(
            &mut StockLlama::new(stock_bytes)?,
            &mut OurLlama::new(&bytes, ours_q)?,
            &prompts,
            n,
        )?;
        println!(
            "{label}: stock {:6.1} tok/s, ours {:6.1} tok/s, ratio {:.2}; prefill stock {:.0} tok/s, ours {:.0} tok/s; same tokens: {}",
            s.gen_tok_s(),
            o.gen_tok_s(),
            o.gen_tok_s() / s.gen_tok_s(),
            s.prompt_tok_s(),
            o.prompt_tok_s(),
            s.outputs == o.outputs
        );
    }
    Ok(())
}
