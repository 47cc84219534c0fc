//! Inference benchmarking helpers shared by `mycel-node bench inference` and the `bench`
//! example: our llama forward pass against candle-transformers' stock `quantized_llama` on the
//! same GGUF bytes, greedy, with prompt (prefill) and generation throughput measured separately.
//!
//! Both engines are stepped token by token and interleaved, so load from other processes on a
//! shared host hits both equally; the ratio ours/stock is therefore more stable than either
//! absolute figure.

use std::io::Cursor;
use std::time::Instant;

use candle_core::quantized::{QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;

use crate::chat::{ChatModel, LoadOptions, Session};
use crate::error::{ModelsError, Result};
use crate::llama::{StageInput, StageOutput};
use crate::registry::ChatTemplate;
use crate::sampling::argmax;
use crate::template::ChatMessage;

/// Weight types (re-exported so callers need no direct candle dependency).
pub use candle_core::quantized::GgmlDType;

/// Returns a copy of a GGUF with every quantized weight other than Q8_0 converted to `target`
/// (F32/F16 tensors are kept), so that the stock model runs the same requantized weights as ours.
pub fn requantized_gguf(bytes: &[u8], target: GgmlDType) -> Result<Vec<u8>> {
    let mut r = Cursor::new(bytes);
    let ct = gguf_file::Content::read(&mut r)?;
    let mut tensors = Vec::new();
    for name in ct.tensor_infos.keys() {
        let q = ct.tensor(&mut r, name, &Device::Cpu)?;
        let keep = matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16) || q.dtype() == target;
        let q = if keep {
            q
        } else {
            QTensor::quantize(&q.dequantize(&Device::Cpu)?, target)?
        };
        tensors.push((name.clone(), q));
    }
    let md: Vec<(&str, &gguf_file::Value)> =
        ct.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts)?;
    Ok(out.into_inner())
}

/// An engine that can be stepped greedily one chunk at a time.
pub trait Engine {
    /// Forgets the sequence (empties the KV cache).
    fn reset(&mut self);
    /// Feeds `ids` after the current sequence and returns the greedy next token.
    fn step(&mut self, ids: &[u32]) -> Result<u32>;
}

/// candle-transformers' stock `quantized_llama`, loaded as-is from GGUF bytes.
pub struct StockLlama {
    m: ModelWeights,
    pos: usize,
}

impl StockLlama {
    /// Loads the stock model from GGUF bytes.
    pub fn new(bytes: &[u8]) -> Result<Self> {
        let mut r = Cursor::new(bytes);
        let ct = gguf_file::Content::read(&mut r)?;
        Ok(Self {
            m: ModelWeights::from_gguf(ct, &mut r, &Device::Cpu)?,
            pos: 0,
        })
    }
}

impl Engine for StockLlama {
    fn reset(&mut self) {
        // The stock model restarts its caches when fed at position 0.
        self.pos = 0;
    }

    fn step(&mut self, ids: &[u32]) -> Result<u32> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = self.m.forward(&input, self.pos)?.squeeze(0)?;
        self.pos += ids.len();
        Ok(argmax(&logits.to_vec1::<f32>()?))
    }
}

/// Our engine ([`ChatModel`]) with one session.
pub struct OurLlama {
    m: ChatModel,
    s: Session,
}

impl OurLlama {
    /// Loads our model from GGUF bytes, requantizing matmul weights to `requantize` (None: keep
    /// the file's types).
    pub fn new(bytes: &[u8], requantize: Option<GgmlDType>) -> Result<Self> {
        let opts = LoadOptions {
            requantize,
            ..LoadOptions::default()
        };
        let m = ChatModel::from_gguf_reader(
            &mut Cursor::new(bytes),
            ChatTemplate::ChatMl,
            None,
            &opts,
        )?;
        let s = m.new_session();
        Ok(Self { m, s })
    }
}

impl Engine for OurLlama {
    fn reset(&mut self) {
        self.s.reset();
    }

    fn step(&mut self, ids: &[u32]) -> Result<u32> {
        match self.m.forward_stage(&mut self.s, StageInput::Tokens(ids))? {
            StageOutput::Logits(l) => Ok(argmax(&l.to_vec1::<f32>()?)),
            StageOutput::Hidden(_) => Err(ModelsError::LayerRange(
                "benchmark needs a whole model".into(),
            )),
        }
    }
}

/// Throughput of one engine over a set of prompts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Speed {
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Seconds spent in prefill.
    pub prompt_secs: f64,
    /// Tokens generated after the first (each a one-token step).
    pub gen_tokens: usize,
    /// Seconds spent in those steps.
    pub gen_secs: f64,
    /// Greedy tokens, per prompt.
    pub outputs: Vec<Vec<u32>>,
}

impl Speed {
    /// Prefill throughput, tokens per second.
    pub fn prompt_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prompt_secs.max(1e-9)
    }

    /// Generation throughput, tokens per second.
    pub fn gen_tok_s(&self) -> f64 {
        self.gen_tokens as f64 / self.gen_secs.max(1e-9)
    }
}

/// Runs greedy decoding of `n` tokens (n ≥ 1) for every prompt with both engines, interleaved
/// step by step, and returns their speeds.
pub fn race(
    a: &mut dyn Engine,
    b: &mut dyn Engine,
    prompts: &[Vec<u32>],
    n: usize,
) -> Result<(Speed, Speed)> {
    let (mut sa, mut sb) = (Speed::default(), Speed::default());
    for prompt in prompts {
        a.reset();
        b.reset();
        let mut ta = timed(&mut sa.prompt_secs, || a.step(prompt))?;
        let mut tb = timed(&mut sb.prompt_secs, || b.step(prompt))?;
        sa.prompt_tokens += prompt.len();
        sb.prompt_tokens += prompt.len();
        let (mut va, mut vb) = (vec![ta], vec![tb]);
        for _ in 1..n {
            ta = timed(&mut sa.gen_secs, || a.step(&[ta]))?;
            tb = timed(&mut sb.gen_secs, || b.step(&[tb]))?;
            va.push(ta);
            vb.push(tb);
        }
        sa.gen_tokens += n.saturating_sub(1);
        sb.gen_tokens += n.saturating_sub(1);
        sa.outputs.push(va);
        sb.outputs.push(vb);
    }
    Ok((sa, sb))
}

fn timed<T>(acc: &mut f64, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    *acc += t.elapsed().as_secs_f64();
    r
}

/// `k` deterministic benchmark questions (templates × topics).
pub fn bench_questions(k: usize) -> Vec<String> {
    const TEMPLATES: [&str; 4] = [
        "What is {}?",
        "Explain {} in two sentences.",
        "Give me three facts about {}.",
        "Why does {} matter?",
    ];
    const TOPICS: [&str; 10] = [
        "photosynthesis",
        "the capital of France",
        "gravity",
        "the Roman Empire",
        "machine learning",
        "the water cycle",
        "prime numbers",
        "volcanoes",
        "the internet",
        "coffee",
    ];
    (0..k)
        .map(|i| {
            TEMPLATES[(i / TOPICS.len()) % TEMPLATES.len()].replace("{}", TOPICS[i % TOPICS.len()])
        })
        .collect()
}

/// ChatML prompt ids of [`bench_questions`] (`model` supplies the tokenizer and default
/// system prompt).
pub fn bench_prompts(model: &ChatModel, k: usize) -> Result<Vec<Vec<u32>>> {
    bench_questions(k)
        .iter()
        .map(|q| model.encode_chat(&[ChatMessage::user(q.clone())]))
        .collect()
}

/// Peak resident set size of this process in KiB (`VmHWM` of `/proc/self/status`; None where
/// that file does not exist).
pub fn peak_rss_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_deterministic_and_distinct() {
        let q = bench_questions(40);
        assert_eq!(q, bench_questions(40));
        let set: std::collections::BTreeSet<_> = q.iter().collect();
        assert_eq!(set.len(), 40);
    }

    #[test]
    fn race_of_identical_engines_agrees() {
        let bytes = crate::tiny::tiny_gguf(7).unwrap();
        let mut a = OurLlama::new(&bytes, None).unwrap();
        let mut b = OurLlama::new(&bytes, None).unwrap();
        let prompts = vec![vec![1, 2, 3], vec![4, 5]];
        let (sa, sb) = race(&mut a, &mut b, &prompts, 5).unwrap();
        assert_eq!(sa.outputs, sb.outputs);
        assert_eq!(sa.prompt_tokens, 5);
        assert_eq!(sa.gen_tokens, 8);
        assert!(sa.gen_tok_s() > 0.0 && sa.prompt_tok_s() > 0.0);
    }

    #[test]
    fn peak_rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_kib().is_some_and(|k| k > 0));
        }
    }
}
