//! Compares our llama forward pass with candle-transformers' stock `quantized_llama` on the same
//! GGUF: agreement of greedy tokens and generation speed (tok/s), for Q8_0-requantized and
//! original weights. Prints ratios against the stock baseline measured in the same run.
//!
//! `cargo run --release -p mycel-models --example bench -- <cache dir> [tokens]`
#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use mycel_models::llama::{StageInput, StageOutput};
use mycel_models::sampling::argmax;
use mycel_models::{
    ChatMessage, ChatModel, LoadOptions, Registry, registry::DEFAULT_CHAT_MODEL, verify_cached,
};

/// Writes a copy of the GGUF with every quantized weight converted to `target` (so the stock
/// model can run the same requantized weights as ours).
fn requantized_gguf(bytes: &[u8], target: GgmlDType) -> Vec<u8> {
    let mut r = Cursor::new(bytes);
    let ct = gguf_file::Content::read(&mut r).unwrap();
    let mut tensors = Vec::new();
    for name in ct.tensor_infos.keys() {
        let q = ct.tensor(&mut r, name, &Device::Cpu).unwrap();
        let keep = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::Q8_0);
        let q = if keep {
            q
        } else {
            QTensor::quantize(&q.dequantize(&Device::Cpu).unwrap(), target).unwrap()
        };
        tensors.push((name.clone(), q));
    }
    let md: Vec<(&str, &gguf_file::Value)> =
        ct.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts).unwrap();
    out.into_inner()
}

/// Stock candle model stepping one greedy token at a time.
struct Stock {
    m: ModelWeights,
    pos: usize,
}

impl Stock {
    fn new(bytes: &[u8]) -> Self {
        let mut r = Cursor::new(bytes);
        let ct = gguf_file::Content::read(&mut r).unwrap();
        Self {
            m: ModelWeights::from_gguf(ct, &mut r, &Device::Cpu).unwrap(),
            pos: 0,
        }
    }
    fn step(&mut self, ids: &[u32]) -> u32 {
        let input = Tensor::new(ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = self
            .m
            .forward(&input, self.pos)
            .unwrap()
            .squeeze(0)
            .unwrap();
        self.pos += ids.len();
        argmax(&logits.to_vec1::<f32>().unwrap())
    }
}

/// Our model stepping one greedy token at a time.
struct Ours {
    m: ChatModel,
    s: mycel_models::Session,
}

impl Ours {
    fn new(bytes: &[u8], requantize: Option<GgmlDType>) -> Self {
        let opts = LoadOptions {
            requantize,
            ..LoadOptions::default()
        };
        let m = ChatModel::from_gguf_reader(
            &mut Cursor::new(bytes),
            mycel_models::ChatTemplate::ChatMl,
            None,
            &opts,
        )
        .unwrap();
        let s = m.new_session();
        Self { m, s }
    }
    fn step(&mut self, ids: &[u32]) -> u32 {
        match self
            .m
            .forward_stage(&mut self.s, StageInput::Tokens(ids))
            .unwrap()
        {
            StageOutput::Logits(l) => argmax(&l.to_vec1::<f32>().unwrap()),
            StageOutput::Hidden(_) => unreachable!(),
        }
    }
}

/// Greedy decoding with both models, interleaved token by token so that load from other
/// processes hits both equally. Returns (stock ids, ours ids, stock tok/s, ours tok/s, prefill s each).
fn race(
    stock: &mut Stock,
    ours: &mut Ours,
    prompt: &[u32],
    n: usize,
) -> (Vec<u32>, Vec<u32>, f64, f64, f64, f64) {
    let t = Instant::now();
    let mut a = stock.step(prompt);
    let pa = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut b = ours.step(prompt);
    let pb = t.elapsed().as_secs_f64();
    let (mut ta, mut tb) = (0.0, 0.0);
    let (mut va, mut vb) = (vec![a], vec![b]);
    for _ in 1..n {
        let t = Instant::now();
        a = stock.step(&[a]);
        ta += t.elapsed().as_secs_f64();
        let t = Instant::now();
        b = ours.step(&[b]);
        tb += t.elapsed().as_secs_f64();
        va.push(a);
        vb.push(b);
    }
    ((va), (vb), (n - 1) as f64 / ta, (n - 1) as f64 / tb, pa, pb)
}

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
    let prompt = model.encode_chat(&[ChatMessage::user("What is the capital of France?")])?;
    drop(model);
    let q8 = requantized_gguf(&bytes, GgmlDType::Q8_0);
    println!(
        "threads: {}, prompt {} tokens, {n} generated",
        candle_core::utils::get_num_threads(),
        prompt.len()
    );
    let (s8, o8, rs8, ro8, ps8, po8) = race(
        &mut Stock::new(&q8),
        &mut Ours::new(&bytes, Some(GgmlDType::Q8_0)),
        &prompt,
        n,
    );
    println!(
        "Q8_0: stock {rs8:6.1} tok/s, ours {ro8:6.1} tok/s, ratio {:.2}; prefill stock {:.0} tok/s, ours {:.0} tok/s; same tokens: {}",
        ro8 / rs8,
        prompt.len() as f64 / ps8,
        prompt.len() as f64 / po8,
        s8 == o8
    );
    let (s4, o4, rs4, ro4, _, _) = race(
        &mut Stock::new(&bytes),
        &mut Ours::new(&bytes, None),
        &prompt,
        n,
    );
    println!(
        "Q4_1: stock {rs4:6.1} tok/s, ours {ro4:6.1} tok/s, ratio {:.2}; same tokens: {}",
        ro4 / rs4,
        s4 == o4
    );
    Ok(())
}
