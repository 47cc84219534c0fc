//! Sentence embeddings (all-MiniLM-L6-v2 via candle-transformers' BERT): mean pooling over the
//! attention mask, then L2 normalisation, as sentence-transformers does.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};

use crate::error::{ModelsError, Result};
use crate::pull::VerifiedModel;
use crate::registry::{Architecture, ModelKind};

/// Longest input in tokens (BERT's position table); longer texts are truncated.
pub const MAX_EMBED_TOKENS: usize = 512;

/// Most texts embedded in one call.
pub const MAX_EMBED_BATCH: usize = 64;

/// A loaded embedding model. Immutable, `Send + Sync`.
pub struct EmbeddingModel {
    bert: BertModel,
    tokenizer: tokenizers::Tokenizer,
    dim: usize,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("dim", &self.dim)
            .finish()
    }
}

impl EmbeddingModel {
    /// Loads a verified BERT embedding model (`model.safetensors`, `config.json`, `tokenizer.json`).
    pub fn load(model: &VerifiedModel) -> Result<Self> {
        let e = model.entry();
        if e.kind != ModelKind::Embedding || e.architecture != Architecture::Bert {
            return Err(ModelsError::BadModel(format!(
                "`{}` is not a BERT embedding model",
                e.id
            )));
        }
        let read = |name: &str| {
            let p = model.file_path(name);
            std::fs::read(&p).map_err(|err| ModelsError::io(p, err))
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|err| ModelsError::BadModel(format!("config.json: {err}")))?;
        let dim = config.hidden_size;
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|err| ModelsError::Tokenizer(err.to_string()))?;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_EMBED_TOKENS,
                ..Default::default()
            }))
            .map_err(|err| ModelsError::Tokenizer(err.to_string()))?;
        tokenizer.with_padding(Some(tokenizers::PaddingParams::default()));
        let vb = VarBuilder::from_buffered_safetensors(
            read("model.safetensors")?,
            DType::F32,
            &Device::Cpu,
        )?;
        let bert = BertModel::load(vb, &config)?;
        Ok(Self {
            bert,
            tokenizer,
            dim,
        })
    }

    /// Output dimension (384 for MiniLM-L6).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds texts: one L2-normalised vector per text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        if texts.len() > MAX_EMBED_BATCH {
            return Err(ModelsError::Tokenizer(format!(
                "{} texts exceed the batch limit of {MAX_EMBED_BATCH}",
                texts.len()
            )));
        }
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelsError::Tokenizer(e.to_string()))?;
        let n = enc.len();
        let len = enc.first().map(|e| e.get_ids().len()).unwrap_or(0);
        let ids: Vec<u32> = enc.iter().flat_map(|e| e.get_ids().to_vec()).collect();
        let mask: Vec<u32> = enc
            .iter()
            .flat_map(|e| e.get_attention_mask().to_vec())
            .collect();
        let dev = Device::Cpu;
        let ids = Tensor::from_vec(ids, (n, len), &dev)?;
        let mask = Tensor::from_vec(mask, (n, len), &dev)?;
        let types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &types, Some(&mask))?; // (n, len, dim)
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

/// Cosine similarity of two L2-normalised vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
