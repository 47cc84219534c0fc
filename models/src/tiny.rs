//! A tiny llama with random weights, built in code, so tests of generation, layer ranges,
//! KV caching, sampling and streaming run in milliseconds and offline.
//!
//! It is written as a real GGUF (in memory) and loaded through the same loader and tokenizer
//! reconstruction as the real model, so those paths are exercised too.

use std::io::Cursor;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::chat::{ChatModel, LoadOptions};
use crate::error::Result;
use crate::registry::ChatTemplate;
use crate::sampling::SplitMix64;
use crate::tokenizer::byte_level_alphabet;

/// Layers of the tiny model.
pub const TINY_LAYERS: u32 = 6;
/// Hidden width (a multiple of the Q8_0 block, 32).
pub const TINY_EMBD: usize = 64;
const TINY_HEADS: usize = 4;
const TINY_KV_HEADS: usize = 2;
const TINY_FFN: usize = 128;
/// Context length of the tiny model.
pub const TINY_CONTEXT: u32 = 512;

/// Special tokens, with the same ids as in SmolLM2.
const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
/// A few merges so BPE has something to merge: (left, right) → left+right.
const MERGES: [(&str, &str); 6] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
];

/// The tiny model's vocabulary: specials, the 256 byte tokens, then merge results.
pub fn tiny_vocab() -> Vec<String> {
    let mut v: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    v.extend(byte_level_alphabet());
    v.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
    v
}

fn random_tensor(rng: &mut SplitMix64, shape: (usize, usize), scale: f32) -> Result<Tensor> {
    let n = shape.0 * shape.1;
    let data: Vec<f32> = (0..n)
        .map(|_| ((rng.next_f64() * 2.0 - 1.0) as f32) * scale)
        .collect();
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// Serializes the tiny model as GGUF bytes; the same seed gives the same bytes.
pub fn tiny_gguf(seed: u64) -> Result<Vec<u8>> {
    let mut rng = SplitMix64::new(seed);
    let vocab = tiny_vocab();
    let n_vocab = vocab.len();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let q8 = |t: &Tensor| QTensor::quantize(t, GgmlDType::Q8_0);
    let ones = |n: usize| -> Result<QTensor> {
        Ok(QTensor::quantize(
            &Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?,
            GgmlDType::F32,
        )?)
    };
    // Embeddings with unit-ish scale; tied output head.
    tensors.push((
        "token_embd.weight".into(),
        q8(&random_tensor(&mut rng, (n_vocab, TINY_EMBD), 1.0)?)?,
    ));
    tensors.push(("output_norm.weight".into(), ones(TINY_EMBD)?));
    let head_dim = TINY_EMBD / TINY_HEADS;
    let kv = TINY_KV_HEADS * head_dim;
    let s_in = 1.7 / (TINY_EMBD as f32).sqrt();
    let s_ffn = 1.7 / (TINY_FFN as f32).sqrt();
    for i in 0..TINY_LAYERS {
        let p = format!("blk.{i}");
        let mut add = |name: &str, shape: (usize, usize), scale: f32| -> Result<()> {
            tensors.push((
                format!("{p}.{name}.weight"),
                q8(&random_tensor(&mut rng, shape, scale)?)?,
            ));
            Ok(())
        };
        add("attn_q", (TINY_EMBD, TINY_EMBD), s_in)?;
        add("attn_k", (kv, TINY_EMBD), s_in)?;
        add("attn_v", (kv, TINY_EMBD), s_in)?;
        add("attn_output", (TINY_EMBD, TINY_EMBD), s_in)?;
        add("ffn_gate", (TINY_FFN, TINY_EMBD), s_in)?;
        add("ffn_up", (TINY_FFN, TINY_EMBD), s_in)?;
        add("ffn_down", (TINY_EMBD, TINY_FFN), s_ffn)?;
        tensors.push((format!("{p}.attn_norm.weight"), ones(TINY_EMBD)?));
        tensors.push((format!("{p}.ffn_norm.weight"), ones(TINY_EMBD)?));
    }
    let mut token_types = vec![Value::I32(3); SPECIALS.len()];
    token_types.extend(std::iter::repeat_n(Value::I32(1), n_vocab - SPECIALS.len()));
    let metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        (
            "general.name",
            Value::String("mycel tiny test model".into()),
        ),
        ("llama.block_count", Value::U32(TINY_LAYERS)),
        ("llama.context_length", Value::U32(TINY_CONTEXT)),
        ("llama.embedding_length", Value::U32(TINY_EMBD as u32)),
        ("llama.feed_forward_length", Value::U32(TINY_FFN as u32)),
        ("llama.attention.head_count", Value::U32(TINY_HEADS as u32)),
        (
            "llama.attention.head_count_kv",
            Value::U32(TINY_KV_HEADS as u32),
        ),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.rope.dimension_count", Value::U32(head_dim as u32)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(vocab.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        ("tokenizer.ggml.token_type", Value::Array(token_types)),
        (
            "tokenizer.ggml.merges",
            Value::Array(
                MERGES
                    .iter()
                    .map(|(a, b)| Value::String(format!("{a} {b}")))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ];
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &md, &ts)?;
    Ok(out.into_inner())
}

/// Loads the tiny model (ChatML template, no default system prompt).
pub fn tiny_model(seed: u64, opts: &LoadOptions) -> Result<ChatModel> {
    let bytes = tiny_gguf(seed)?;
    ChatModel::from_gguf_reader(&mut Cursor::new(bytes), ChatTemplate::ChatMl, None, opts)
}
