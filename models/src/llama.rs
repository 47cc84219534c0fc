//! Our llama forward pass (modelled on candle-transformers' `quantized_llama`), with layer
//! ranges, a preallocated per-session KV cache, and grouped-query attention without copying
//! the cache per head.
//!
//! A model instance holds the weights of one layer range `[start, end)`: token embeddings
//! only when `start == 0`, final norm and LM head only when `end == L`. Weights are immutable
//! and shared (`Send + Sync`); all mutable state lives in [`KvCache`], one per session.

use std::io::{Read, Seek};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};

use crate::error::{ModelsError, Result};
use crate::q8::Q8Matrix;

/// Hard upper bound on a session's context, whatever the model claims (bounds KV memory).
pub const MAX_CONTEXT: usize = 8192;

/// Default context of a session (KV memory for SmolLM2-135M: 30 layers × 2 × 3 heads × 64 ×
/// 4 bytes ≈ 46 KiB per token, so ≈ 94 MiB at 2048 tokens, allocated as it fills).
pub const DEFAULT_MAX_CONTEXT: usize = 2048;

/// First KV allocation, in tokens; capacity doubles as the session grows.
const KV_INITIAL_CAPACITY: usize = 256;

/// Most tokens processed in one forward call during prefill (bounds attention scratch memory).
pub const PREFILL_CHUNK: usize = 256;

/// A half-open range of transformer layers `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayerRange {
    start: u32,
    end: u32,
}

impl LayerRange {
    /// Validates `start < end <= n_layers`.
    pub fn new(start: u32, end: u32, n_layers: u32) -> Result<Self> {
        if start >= end || end > n_layers {
            return Err(ModelsError::LayerRange(format!(
                "[{start}, {end}) is not a non-empty range within 0..{n_layers}"
            )));
        }
        Ok(Self { start, end })
    }

    /// The whole model.
    pub fn full(n_layers: u32) -> Self {
        Self {
            start: 0,
            end: n_layers,
        }
    }

    /// First layer (inclusive).
    pub fn start(&self) -> u32 {
        self.start
    }

    /// Last layer (exclusive).
    pub fn end(&self) -> u32 {
        self.end
    }

    /// Number of layers.
    pub fn len(&self) -> u32 {
        self.end - self.start
    }

    /// Never true for a validated range (kept for API symmetry with `len`).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

impl std::fmt::Display for LayerRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// Hyper-parameters read from GGUF metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Transformer layers.
    pub n_layer: u32,
    /// Hidden width.
    pub n_embd: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_head: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Trained context length.
    pub context_length: usize,
}

impl LlamaConfig {
    /// Reads the `llama.*` keys.
    pub fn from_gguf(ct: &gguf_file::Content) -> Result<Self> {
        let md = |k: &str| {
            ct.metadata
                .get(k)
                .ok_or_else(|| ModelsError::BadModel(format!("GGUF metadata lacks {k}")))
        };
        let arch = md("general.architecture")?.to_string()?.clone();
        if arch != "llama" {
            return Err(ModelsError::BadModel(format!(
                "architecture `{arch}` is not supported (only llama)"
            )));
        }
        let n_head = md("llama.attention.head_count")?.to_u32()? as usize;
        let n_kv_head = md("llama.attention.head_count_kv")?.to_u32()? as usize;
        let n_embd = md("llama.embedding_length")?.to_u32()? as usize;
        let n_layer = md("llama.block_count")?.to_u32()?;
        if n_head == 0
            || n_kv_head == 0
            || !n_head.is_multiple_of(n_kv_head)
            || !n_embd.is_multiple_of(n_head)
        {
            return Err(ModelsError::BadModel("inconsistent head counts".into()));
        }
        let head_dim = n_embd / n_head;
        if let Ok(v) = md("llama.rope.dimension_count")
            && v.to_u32()? as usize != head_dim
        {
            return Err(ModelsError::BadModel(
                "partial RoPE is not supported".into(),
            ));
        }
        let vocab_size = ct
            .metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(|v| v.len())
            .ok_or_else(|| ModelsError::BadModel("GGUF metadata lacks the vocabulary".into()))?;
        Ok(Self {
            n_layer,
            n_embd,
            n_head,
            n_kv_head,
            head_dim,
            vocab_size,
            rope_theta: ct
                .metadata
                .get("llama.rope.freq_base")
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(10_000.0),
            rms_eps: md("llama.attention.layer_norm_rms_epsilon")?.to_f32()?,
            context_length: md("llama.context_length")?.to_u32()? as usize,
        })
    }
}

/// A weight matrix applied to the last dimension: our Q8_0 kernel ([`Q8Matrix`]) when the
/// weights are Q8_0, candle's `QMatMul` otherwise.
///
/// Rows whose width is a multiple of 256 stay with candle: on CPUs with VNNI it repacks those
/// into tiles and quantizes activations to Q8_K instead, a different rounding, and greedy
/// outputs must not change (our kernel is bit-identical to candle's other Q8_0 path).
enum Linear {
    Q8(Q8Matrix),
    Candle(QMatMul),
}

impl Linear {
    fn new(qt: QTensor) -> Result<Self> {
        let cols = qt.shape().dims().last().copied().unwrap_or(0);
        if cols.is_multiple_of(256) {
            return Ok(Linear::Candle(QMatMul::from_qtensor(qt)?));
        }
        match Q8Matrix::from_qtensor(&qt)? {
            Some(m) => Ok(Linear::Q8(m)),
            None => Ok(Linear::Candle(QMatMul::from_qtensor(qt)?)),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Q8(m) => {
                let mut dims = x.dims().to_vec();
                if dims.last() != Some(&m.cols()) {
                    return Err(ModelsError::BadModel(format!(
                        "input {dims:?} does not fit a matrix of width {}",
                        m.cols()
                    )));
                }
                let y = m.forward(&x.flatten_all()?.to_vec1::<f32>()?);
                if let Some(last) = dims.last_mut() {
                    *last = m.rows();
                }
                Ok(Tensor::from_vec(y, dims, &Device::Cpu)?)
            }
            Linear::Candle(w) => Ok(w.forward(x)?),
        }
    }
}

/// Projections that read the same input, either fused into one matmul (rows stacked, one
/// activation quantization and one dispatch instead of several) or kept apart.
enum Proj {
    Fused { w: Linear, widths: Vec<usize> },
    Split(Vec<Linear>),
}

impl Proj {
    /// Builds from weights sharing their input width; fuses when requantizing (the f32 copy
    /// is made anyway, and requantizing to the target type loses nothing more).
    fn new(parts: Vec<QTensor>, requant: Option<GgmlDType>) -> Result<Self> {
        match requant {
            Some(target) if requantizable(&parts[0], target) => {
                let widths = parts
                    .iter()
                    .map(|p| p.shape().dims()[0])
                    .collect::<Vec<_>>();
                let f = parts
                    .iter()
                    .map(|p| p.dequantize(&Device::Cpu))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let cat = Tensor::cat(&f, 0)?;
                let w = Linear::new(QTensor::quantize(&cat, target)?)?;
                Ok(Proj::Fused { w, widths })
            }
            _ => Ok(Proj::Split(
                parts
                    .into_iter()
                    .map(|p| Linear::new(requantize(p, requant)?))
                    .collect::<Result<Vec<_>>>()?,
            )),
        }
    }

    /// Outputs, one per part, each `(1, seq, width)` (possibly strided views).
    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Proj::Fused { w, widths } => {
                let y = w.forward(x)?;
                let mut out = Vec::with_capacity(widths.len());
                let mut off = 0;
                for &n in widths {
                    out.push(y.narrow(2, off, n)?);
                    off += n;
                }
                Ok(out)
            }
            Proj::Split(ws) => ws.iter().map(|w| w.forward(x)).collect(),
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    /// q, k, v.
    qkv: Proj,
    wo: Linear,
    ffn_norm: Tensor,
    /// gate, up.
    gate_up: Proj,
    w_down: Linear,
}

struct Head {
    norm: Tensor,
    output: Linear,
}

/// Input of a layer-range stage.
#[derive(Debug)]
pub enum StageInput<'a> {
    /// Token ids (only for a stage starting at layer 0).
    Tokens(&'a [u32]),
    /// Hidden states `(1, seq, n_embd)` f32 from the previous stage.
    Hidden(Tensor),
}

/// What the last position's logits are computed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation).
    Last,
    /// Every position (teacher-forced scoring).
    All,
}

/// Output of a layer-range stage.
#[derive(Debug)]
pub enum StageOutput {
    /// Hidden states `(1, seq, n_embd)` for the next stage.
    Hidden(Tensor),
    /// Logits: `(vocab)` for [`Logits::Last`], `(seq, vocab)` for [`Logits::All`].
    Logits(Tensor),
}

/// Per-session attention cache for the layers of one range, preallocated and grown by doubling
/// (written in place with `slice_set`, never concatenated).
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: usize,
    cap: usize,
    max: usize,
    n_kv_head: usize,
    head_dim: usize,
    layers: usize,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("layers", &self.k.len())
            .field("len", &self.len)
            .field("capacity", &self.cap)
            .field("max", &self.max)
            .finish()
    }
}

impl KvCache {
    /// Tokens currently cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Context limit of this cache.
    pub fn max_len(&self) -> usize {
        self.max
    }

    /// Forgets everything from position `len` on (keeps the allocation).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn ensure_capacity(&mut self, needed: usize) -> Result<()> {
        if needed > self.max {
            return Err(ModelsError::ContextOverflow {
                prompt_tokens: needed,
                limit: self.max,
            });
        }
        if needed <= self.cap {
            return Ok(());
        }
        let mut new_cap = self.cap.max(KV_INITIAL_CAPACITY.min(self.max));
        while new_cap < needed {
            new_cap = (new_cap * 2).min(self.max);
        }
        let shape = (1, self.n_kv_head, new_cap, self.head_dim);
        let grow = |old: Option<&Tensor>| -> Result<Tensor> {
            let fresh = Tensor::zeros(shape, DType::F32, &Device::Cpu)?;
            if let Some(old) = old
                && self.len > 0
            {
                fresh.slice_set(&old.narrow(2, 0, self.len)?.contiguous()?, 2, 0)?;
            }
            Ok(fresh)
        };
        let k = (0..self.layers)
            .map(|i| grow(self.k.get(i)))
            .collect::<Result<Vec<_>>>()?;
        let v = (0..self.layers)
            .map(|i| grow(self.v.get(i)))
            .collect::<Result<Vec<_>>>()?;
        self.k = k;
        self.v = v;
        self.cap = new_cap;
        Ok(())
    }
}

/// Llama weights for one layer range.
pub struct Llama {
    cfg: LlamaConfig,
    range: LayerRange,
    embed: Option<Tensor>,
    layers: Vec<Layer>,
    head: Option<Head>,
    cos: Tensor,
    sin: Tensor,
    max_context: usize,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("config", &self.cfg)
            .field("range", &self.range)
            .field("max_context", &self.max_context)
            .finish()
    }
}

/// Converts a weight to `target` (e.g. Q4_1 → Q8_0: dequantize, then quantize), leaving
/// float weights and rows that do not fit the target's block size untouched.
fn requantize(qt: QTensor, target: Option<GgmlDType>) -> Result<QTensor> {
    let Some(target) = target else {
        return Ok(qt);
    };
    if !requantizable(&qt, target) || qt.dtype() == target {
        return Ok(qt);
    }
    let f = qt.dequantize(&Device::Cpu)?;
    Ok(QTensor::quantize(&f, target)?)
}

/// Whether a weight is a quantized matrix whose rows fit `target`'s block size.
fn requantizable(qt: &QTensor, target: GgmlDType) -> bool {
    !matches!(
        qt.dtype(),
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16
    ) && qt.shape().dims().len() == 2
        && qt
            .shape()
            .dims()
            .last()
            .is_some_and(|d| d % target.block_size() == 0)
}

fn rope_tables(cfg: &LlamaConfig, max_context: usize) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / cfg.rope_theta.powf((2 * i) as f32 / cfg.head_dim as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, half), &Device::Cpu)?;
    let pos = Tensor::arange(0u32, max_context as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((max_context, 1))?;
    let angles = pos.matmul(&inv)?;
    Ok((angles.cos()?, angles.sin()?))
}

impl Llama {
    /// Loads the layers of `range` (default: all) from a GGUF, requantizing matmul weights to
    /// `requant` (e.g. `Some(Q8_0)`).
    pub fn load<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        range: Option<LayerRange>,
        requant: Option<GgmlDType>,
        max_context: usize,
    ) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(ct)?;
        let range = range.unwrap_or(LayerRange::full(cfg.n_layer));
        if range.end > cfg.n_layer {
            return Err(ModelsError::LayerRange(format!(
                "{range} exceeds the model's {} layers",
                cfg.n_layer
            )));
        }
        let max_context = max_context.min(cfg.context_length).clamp(1, MAX_CONTEXT);
        let dev = Device::Cpu;
        let mut tensor = |name: &str| -> Result<QTensor> {
            ct.tensor(reader, name, &dev)
                .map_err(|e| ModelsError::BadModel(format!("tensor {name}: {e}")))
        };
        let qmm = |qt: QTensor| -> Result<Linear> { Linear::new(requantize(qt, requant)?) };
        let is_last = range.end == cfg.n_layer;
        let mut embed_q = None;
        if range.start == 0 || is_last {
            embed_q = Some(tensor("token_embd.weight")?);
        }
        let embed = match (&embed_q, range.start == 0) {
            (Some(q), true) => Some(q.dequantize(&dev)?),
            _ => None,
        };
        let head = if is_last {
            let norm = tensor("output_norm.weight")?.dequantize(&dev)?;
            let output = match ct.tensor_infos.contains_key("output.weight") {
                true => tensor("output.weight")?,
                // Tied embeddings.
                false => embed_q
                    .take()
                    .ok_or_else(|| ModelsError::BadModel("no output weights".into()))?,
            };
            Some(Head {
                norm,
                output: qmm(output)?,
            })
        } else {
            None
        };
        let mut layers = Vec::with_capacity(range.len() as usize);
        for i in range.start..range.end {
            let p = format!("blk.{i}");
            layers.push(Layer {
                attn_norm: tensor(&format!("{p}.attn_norm.weight"))?.dequantize(&dev)?,
                qkv: Proj::new(
                    vec![
                        tensor(&format!("{p}.attn_q.weight"))?,
                        tensor(&format!("{p}.attn_k.weight"))?,
                        tensor(&format!("{p}.attn_v.weight"))?,
                    ],
                    requant,
                )?,
                wo: qmm(tensor(&format!("{p}.attn_output.weight"))?)?,
                ffn_norm: tensor(&format!("{p}.ffn_norm.weight"))?.dequantize(&dev)?,
                gate_up: Proj::new(
                    vec![
                        tensor(&format!("{p}.ffn_gate.weight"))?,
                        tensor(&format!("{p}.ffn_up.weight"))?,
                    ],
                    requant,
                )?,
                w_down: qmm(tensor(&format!("{p}.ffn_down.weight"))?)?,
            });
        }
        let (cos, sin) = rope_tables(&cfg, max_context)?;
        Ok(Self {
            cfg,
            range,
            embed,
            layers,
            head,
            cos,
            sin,
            max_context,
        })
    }

    /// Hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Layers held by this instance.
    pub fn range(&self) -> LayerRange {
        self.range
    }

    /// Context limit for sessions.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// An empty cache for this range.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            k: Vec::with_capacity(self.layers.len()),
            v: Vec::with_capacity(self.layers.len()),
            len: 0,
            cap: 0,
            max: self.max_context,
            n_kv_head: self.cfg.n_kv_head,
            head_dim: self.cfg.head_dim,
            layers: self.layers.len(),
        }
    }

    /// Runs this range on a chunk of tokens or hidden states at the cache's current position,
    /// appending to the cache. Returns hidden states, or logits when the range ends the model.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        input: StageInput<'_>,
        logits: Logits,
    ) -> Result<StageOutput> {
        let pos = cache.len;
        let mut x = match input {
            StageInput::Tokens(ids) => {
                let embed = self.embed.as_ref().ok_or_else(|| {
                    ModelsError::LayerRange(format!(
                        "stage {} does not start at layer 0: it takes hidden states, not tokens",
                        self.range
                    ))
                })?;
                if ids.is_empty() {
                    return Err(ModelsError::LayerRange("empty token chunk".into()));
                }
                if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.cfg.vocab_size) {
                    return Err(ModelsError::Tokenizer(format!(
                        "token id {bad} out of range"
                    )));
                }
                let ids = Tensor::new(ids, &Device::Cpu)?;
                embed.index_select(&ids, 0)?.unsqueeze(0)?
            }
            StageInput::Hidden(h) => {
                if self.embed.is_some() {
                    return Err(ModelsError::LayerRange(format!(
                        "stage {} starts at layer 0: it takes tokens",
                        self.range
                    )));
                }
                let (b, seq, d) = h.dims3()?;
                if b != 1 || seq == 0 || d != self.cfg.n_embd || h.dtype() != DType::F32 {
                    return Err(ModelsError::LayerRange(format!(
                        "hidden states of shape {:?} do not fit width {}",
                        h.dims(),
                        self.cfg.n_embd
                    )));
                }
                h
            }
        };
        let seq = x.dim(1)?;
        cache.ensure_capacity(pos + seq)?;
        let mask = if seq > 1 {
            Some(causal_mask(seq, pos)?)
        } else {
            None
        };
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = self.layer_forward(layer, &x, cache, i, pos, &cos, &sin, mask.as_ref())?;
        }
        cache.len = pos + seq;
        match &self.head {
            None => Ok(StageOutput::Hidden(x)),
            Some(head) => {
                let x = match logits {
                    Logits::Last => x.narrow(1, seq - 1, 1)?,
                    Logits::All => x,
                };
                let x = candle_nn::ops::rms_norm(&x, &head.norm, self.cfg.rms_eps)?;
                let out = head.output.forward(&x)?.squeeze(0)?;
                let out = match logits {
                    Logits::Last => out.squeeze(0)?,
                    Logits::All => out,
                };
                Ok(StageOutput::Logits(out))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        l: &Layer,
        x: &Tensor,
        cache: &mut KvCache,
        idx: usize,
        pos: usize,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        let seq = x.dim(1)?;
        let h = candle_nn::ops::rms_norm(x, &l.attn_norm, c.rms_eps)?;
        let mut qkv = l.qkv.forward(&h)?.into_iter();
        let (Some(q), Some(k), Some(v)) = (qkv.next(), qkv.next(), qkv.next()) else {
            return Err(ModelsError::BadModel("q/k/v projection".into()));
        };
        let q = q
            .reshape((1, seq, c.n_head, c.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = k
            .reshape((1, seq, c.n_kv_head, c.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = v
            .reshape((1, seq, c.n_kv_head, c.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        // GGUF llama weights have q/k permuted for the interleaved ("NORM") RoPE convention.
        let q = candle_nn::rotary_emb::rope_i(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k, cos, sin)?;
        cache.k[idx].slice_set(&k, 2, pos)?;
        cache.v[idx].slice_set(&v, 2, pos)?;
        let kv_len = pos + seq;
        let k_all = cache.k[idx].narrow(2, 0, kv_len)?;
        let v_all = cache.v[idx].narrow(2, 0, kv_len)?;
        // Grouped-query attention: heads g*rep..(g+1)*rep share kv head g, so fold them into
        // the row dimension instead of repeating the cache.
        let rep = c.n_head / c.n_kv_head;
        let q = (q * (1.0 / (c.head_dim as f64).sqrt()))?.reshape((
            1,
            c.n_kv_head,
            rep * seq,
            c.head_dim,
        ))?;
        let att = q.matmul(&k_all.t()?)?;
        let att = match mask {
            None => att,
            Some(m) => att
                .reshape((1, c.n_kv_head, rep, seq, kv_len))?
                .broadcast_add(m)?
                .reshape((1, c.n_kv_head, rep * seq, kv_len))?,
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v_all)?; // (1, n_kv, rep*seq, hd)
        let y = y
            .reshape((1, c.n_head, seq, c.head_dim))?
            .transpose(1, 2)?
            .reshape((1, seq, c.n_embd))?;
        let x = (l.wo.forward(&y)? + x)?;
        let h = candle_nn::ops::rms_norm(&x, &l.ffn_norm, c.rms_eps)?;
        let mut gu = l.gate_up.forward(&h)?.into_iter();
        let (Some(gate), Some(up)) = (gu.next(), gu.next()) else {
            return Err(ModelsError::BadModel("gate/up projection".into()));
        };
        let gate = candle_nn::ops::silu(&gate)?;
        let y = l.w_down.forward(&(gate * up)?)?;
        Ok((y + x)?)
    }
}

/// Additive mask `(seq, pos + seq)`: 0 where query `pos + i` may attend key `j`, -inf after it.
fn causal_mask(seq: usize, pos: usize) -> Result<Tensor> {
    let kv = pos + seq;
    let data: Vec<f32> = (0..seq)
        .flat_map(|i| (0..kv).map(move |j| if j > pos + i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Ok(Tensor::from_vec(data, (seq, kv), &Device::Cpu)?)
}
