//! The chat engine: a loaded model (shared, `Send + Sync`), sessions that own their KV caches,
//! and streaming generation over a bounded channel.

use std::io::{Read, Seek};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::{Device, Tensor};
use tokio::sync::mpsc;

use crate::error::{ModelsError, Result};
use crate::hidden::HiddenStates;
use crate::llama::{
    DEFAULT_MAX_CONTEXT, KvCache, LayerRange, Llama, LlamaConfig, Logits, PREFILL_CHUNK,
    StageInput, StageOutput,
};
use crate::pull::VerifiedModel;
use crate::registry::{Architecture, ChatTemplate, ModelKind};
use crate::sampling::{Sampler, SamplingParams};
use crate::template::{ChatMessage, encode_chat};
use crate::tokenizer::{TextStream, Tokenizer, TokenizerSpec};

/// Suggested capacity of the token channel passed to [`ChatModel::generate`]: enough to
/// decouple the model from a slow consumer for a few hundred milliseconds, small enough that a
/// stalled consumer applies back-pressure instead of buffering a whole answer.
pub const TOKEN_CHANNEL_CAPACITY: usize = 64;

/// Distinguishes model instances so a session cannot be used with another model's weights.
static NEXT_MODEL_TAG: AtomicU64 = AtomicU64::new(1);

/// How a model is loaded.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Layers to load (None: all). A range not starting at 0 takes hidden states; one not
    /// ending at the last layer returns hidden states.
    pub range: Option<(u32, u32)>,
    /// Requantize matmul weights at load (default Q8_0: ~2.5× faster than Q4_1 on CPU).
    pub requantize: Option<GgmlDType>,
    /// Context limit of sessions (clamped to the model's and to [`crate::llama::MAX_CONTEXT`]).
    pub max_context: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            range: None,
            requantize: Some(GgmlDType::Q8_0),
            max_context: DEFAULT_MAX_CONTEXT,
        }
    }
}

/// One streamed token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// 0-based index among the generated tokens.
    pub index: usize,
    /// Token id.
    pub id: u32,
    /// Text completed by this token (may be empty while a UTF-8 sequence is incomplete).
    pub text: String,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced a stop token.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The session's context limit reached.
    ContextFull,
    /// The receiver was dropped.
    Cancelled,
}

/// Summary of a finished generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Generated ids (stop token excluded).
    pub token_ids: Vec<u32>,
    /// Generated text.
    pub text: String,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens served from the session's cache (not recomputed).
    pub cached_prompt_tokens: usize,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// The stop token the sampler drew, when `finish_reason` is `Stop` (a receipt for sampler
    /// replay carries it after `token_ids`, specs/models.md §5).
    pub stop_token: Option<u32>,
}

impl Completion {
    /// What a sampler replay checks ([`ChatModel::verify_replay`]): the generated ids followed by
    /// the stop token drawn, if any.
    pub fn drawn_ids(&self) -> Vec<u32> {
        let mut ids = self.token_ids.clone();
        ids.extend(self.stop_token);
        ids
    }
}

/// A conversation's state: the KV cache and the tokens it holds. Owned by one caller at a time.
#[derive(Debug)]
pub struct Session {
    cache: KvCache,
    tokens: Vec<u32>,
    model_tag: u64,
}

impl Session {
    /// Tokens whose keys and values are cached.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether the session is empty.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Context limit.
    pub fn max_len(&self) -> usize {
        self.cache.max_len()
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.truncate(0);
    }

    /// Keeps only the first `len` positions (e.g. to replay from a common prefix).
    pub fn truncate(&mut self, len: usize) {
        self.cache.truncate(len);
        self.tokens.truncate(len);
    }
}

/// A loaded chat model (or a layer-range shard of one). Immutable and `Send + Sync`: share it
/// in an `Arc` between any number of concurrent sessions.
pub struct ChatModel {
    llama: Llama,
    front: ChatFrontend,
    tag: u64,
}

impl std::fmt::Debug for ChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatModel")
            .field("llama", &self.llama)
            .field("tokenizer", &self.front.tokenizer)
            .finish()
    }
}

/// Everything about a chat model except its weights: tokenizer, chat template, stop tokens and
/// hyper-parameters. Enough to drive a generation whose forward passes run elsewhere (a sharded
/// pipeline's client), and cheap to load (GGUF metadata only).
#[derive(Clone, Debug)]
pub struct ChatFrontend {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    default_system: Option<String>,
    stop_ids: Vec<u32>,
    config: LlamaConfig,
}

impl ChatFrontend {
    /// Reads the frontend of a verified chat model (metadata only, no tensor data).
    pub fn load(model: &VerifiedModel) -> Result<Self> {
        let (template, default_system) = chat_entry(model)?;
        let path = model.primary_path();
        let mut f = std::fs::File::open(&path).map_err(|e| ModelsError::io(&path, e))?;
        let ct = read_gguf(&mut f)?;
        let front = Self::from_gguf(&ct, template, default_system)?;
        check_layers(model, front.config.n_layer)?;
        Ok(front)
    }

    fn from_gguf(
        ct: &gguf_file::Content,
        template: ChatTemplate,
        default_system: Option<String>,
    ) -> Result<Self> {
        let config = LlamaConfig::from_gguf(ct)?;
        let tokenizer = Tokenizer::from_spec(&TokenizerSpec::from_gguf(ct)?)?;
        let mut stop_ids = vec![tokenizer.eos_token_id()];
        for s in ["<|im_end|>", "<|endoftext|>"] {
            if let Some(id) = tokenizer.special_token(s)
                && !stop_ids.contains(&id)
            {
                stop_ids.push(id);
            }
        }
        Ok(Self {
            tokenizer,
            template,
            default_system,
            stop_ids,
            config,
        })
    }

    /// Model hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids that end generation by default.
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.stop_ids
    }

    /// Prompt ids for a conversation (template + tokenizer), ending with the assistant header.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        encode_chat(
            self.template,
            &self.tokenizer,
            messages,
            self.default_system.as_deref(),
        )
    }

    /// Samples and streams tokens from the logits `feed` returns: `feed(ids)` appends `ids` to the
    /// generation's state (wherever the layers run) and returns the last position's logits.
    /// `prompt[..cached]` is already in that state; `limit` is its context length. Stops like
    /// [`ChatModel::generate`]; blocking.
    pub fn generate_with(
        &self,
        prompt: &[u32],
        cached: usize,
        limit: usize,
        params: &SamplingParams,
        tx: &mpsc::Sender<Token>,
        mut feed: impl FnMut(&[u32]) -> Result<Vec<f32>>,
    ) -> Result<Completion> {
        check_prompt(prompt, params, limit)?;
        let mut context = cached;
        let mut logits = feed(&prompt[cached..])?;
        context += prompt.len() - cached;
        let mut sampler = Sampler::new(params);
        let mut stream = TextStream::default();
        let mut out_ids = Vec::new();
        let mut text = String::new();
        let mut stop_token = None;
        let finish = loop {
            if tx.is_closed() {
                break FinishReason::Cancelled;
            }
            let id = sampler.sample(&logits);
            if self.stop_ids.contains(&id) || params.stop_tokens.contains(&id) {
                stop_token = Some(id);
                break FinishReason::Stop;
            }
            let piece = stream.push(self.tokenizer.token_bytes(id));
            text.push_str(&piece);
            let token = Token {
                index: out_ids.len(),
                id,
                text: piece,
            };
            out_ids.push(id);
            if tx.blocking_send(token).is_err() {
                break FinishReason::Cancelled;
            }
            if out_ids.len() >= params.max_tokens {
                break FinishReason::Length;
            }
            if context + 1 >= limit {
                break FinishReason::ContextFull;
            }
            logits = feed(&[id])?;
            context += 1;
        };
        let tail = stream.finish();
        text.push_str(&tail);
        Ok(Completion {
            token_ids: out_ids,
            text,
            prompt_tokens: prompt.len(),
            cached_prompt_tokens: cached,
            finish_reason: finish,
            stop_token,
        })
    }
}

/// Rejects invalid sampling parameters, an empty prompt and one that leaves no room to answer.
fn check_prompt(prompt: &[u32], params: &SamplingParams, limit: usize) -> Result<()> {
    params.validate()?;
    if prompt.is_empty() {
        return Err(ModelsError::Tokenizer("empty prompt".into()));
    }
    if prompt.len() >= limit {
        return Err(ModelsError::ContextOverflow {
            prompt_tokens: prompt.len(),
            limit,
        });
    }
    Ok(())
}

/// The chat template and default system prompt of a registry chat model.
fn chat_entry(model: &VerifiedModel) -> Result<(ChatTemplate, Option<String>)> {
    let entry = model.entry();
    if entry.kind != ModelKind::Chat || entry.architecture != Architecture::Llama {
        return Err(ModelsError::BadModel(format!(
            "`{}` is not a llama chat model",
            entry.id
        )));
    }
    let template = entry
        .chat_template
        .ok_or_else(|| ModelsError::BadModel("no chat template".into()))?;
    Ok((template, entry.default_system_prompt.clone()))
}

fn check_layers(model: &VerifiedModel, n_layer: u32) -> Result<()> {
    let expected = model.entry().layers;
    if n_layer != expected {
        return Err(ModelsError::BadModel(format!(
            "registry says {expected} layers, the file has {n_layer}"
        )));
    }
    Ok(())
}

/// The hyper-parameters in a GGUF file's metadata (layers, widths, context), without loading
/// any weights: for tools that describe a file, such as `mycel-node model publish`. Fails for
/// anything but a readable llama GGUF.
pub fn gguf_config(path: &Path) -> Result<LlamaConfig> {
    let mut f = std::fs::File::open(path).map_err(|e| ModelsError::io(path, e))?;
    LlamaConfig::from_gguf(&read_gguf(&mut f)?)
}

fn read_gguf<R: Read + Seek>(reader: &mut R) -> Result<gguf_file::Content> {
    gguf_file::Content::read(reader)
        .map_err(|e| ModelsError::BadModel(format!("not a readable GGUF: {e}")))
}

impl ChatModel {
    /// Loads a verified chat model from the cache.
    pub fn load(model: &VerifiedModel, opts: &LoadOptions) -> Result<Self> {
        let (template, default_system) = chat_entry(model)?;
        let m = Self::load_gguf_file(&model.primary_path(), template, default_system, opts)?;
        check_layers(model, m.llama.config().n_layer)?;
        Ok(m)
    }

    /// Loads a GGUF file that was not obtained through [`crate::pull`]. For tools, benchmarks
    /// and tests only: the node must load through [`ChatModel::load`].
    pub fn load_gguf_file(
        path: &Path,
        template: ChatTemplate,
        default_system: Option<String>,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let mut f = std::fs::File::open(path).map_err(|e| ModelsError::io(path, e))?;
        Self::from_gguf_reader(&mut f, template, default_system, opts)
    }

    /// Loads from any GGUF reader (used by the tiny test model).
    pub fn from_gguf_reader<R: Read + Seek>(
        reader: &mut R,
        template: ChatTemplate,
        default_system: Option<String>,
        opts: &LoadOptions,
    ) -> Result<Self> {
        let ct = read_gguf(reader)?;
        let front = ChatFrontend::from_gguf(&ct, template, default_system)?;
        let range = opts
            .range
            .map(|(a, b)| LayerRange::new(a, b, front.config.n_layer))
            .transpose()?;
        let llama = Llama::load(&ct, reader, range, opts.requantize, opts.max_context)?;
        Ok(Self {
            llama,
            front,
            tag: NEXT_MODEL_TAG.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Model hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        self.llama.config()
    }

    /// Layers this instance holds.
    pub fn layer_range(&self) -> LayerRange {
        self.llama.range()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.front.tokenizer
    }

    /// Token ids that end generation by default.
    pub fn stop_token_ids(&self) -> &[u32] {
        &self.front.stop_ids
    }

    /// Tokenizer, template and hyper-parameters (what a pipeline client needs).
    pub fn frontend(&self) -> &ChatFrontend {
        &self.front
    }

    /// Context limit of new sessions.
    pub fn max_context(&self) -> usize {
        self.llama.max_context()
    }

    /// A fresh session with its own (lazily allocated) KV cache.
    pub fn new_session(&self) -> Session {
        Session {
            cache: self.llama.new_cache(),
            tokens: Vec::new(),
            model_tag: self.tag,
        }
    }

    /// Prompt ids for a conversation (template + tokenizer), ending with the assistant header.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.front.encode_chat(messages)
    }

    fn check_session(&self, session: &Session) -> Result<()> {
        if session.model_tag != self.tag {
            return Err(ModelsError::LayerRange(
                "session was created by another model instance".into(),
            ));
        }
        Ok(())
    }

    /// Runs this instance's layer range on the next chunk of a session (for sharded pipelines).
    ///
    /// The first stage takes token ids, later stages take the previous stage's hidden states;
    /// the last stage returns logits of the last position, the others hidden states to forward
    /// (see [`HiddenStates`] for the wire form). The chunk is appended to the session's cache.
    pub fn forward_stage(
        &self,
        session: &mut Session,
        input: StageInput<'_>,
    ) -> Result<StageOutput> {
        self.check_session(session)?;
        let tokens: Vec<u32> = match &input {
            StageInput::Tokens(ids) => ids.to_vec(),
            StageInput::Hidden(_) => Vec::new(),
        };
        let before = session.cache.len();
        let out = self.llama.forward(&mut session.cache, input, Logits::Last);
        if out.is_err() {
            session.truncate(before);
        } else {
            session.tokens.extend(tokens);
        }
        out
    }

    /// Feeds tokens and returns logits of every position, shape `(n, vocab)`
    /// (teacher forcing, used for verification scoring).
    pub fn forward_all_logits(&self, session: &mut Session, ids: &[u32]) -> Result<Tensor> {
        self.check_session(session)?;
        let out = self
            .llama
            .forward(&mut session.cache, StageInput::Tokens(ids), Logits::All)?;
        session.tokens.extend_from_slice(ids);
        match out {
            StageOutput::Logits(l) => Ok(l),
            StageOutput::Hidden(_) => Err(ModelsError::LayerRange(
                "this instance does not end at the last layer".into(),
            )),
        }
    }

    /// Feeds `ids` after the session's cached tokens and returns the last position's logits.
    fn feed(&self, session: &mut Session, ids: &[u32]) -> Result<Vec<f32>> {
        let mut last = None;
        for chunk in ids.chunks(PREFILL_CHUNK) {
            let before = session.cache.len();
            match self
                .llama
                .forward(&mut session.cache, StageInput::Tokens(chunk), Logits::Last)
            {
                Ok(StageOutput::Logits(l)) => last = Some(l),
                Ok(StageOutput::Hidden(_)) => {
                    session.truncate(before);
                    return Err(ModelsError::LayerRange(format!(
                        "instance holds layers {} only: use forward_stage",
                        self.llama.range()
                    )));
                }
                Err(e) => {
                    session.truncate(before);
                    return Err(e);
                }
            }
            session.tokens.extend_from_slice(chunk);
        }
        let last = last.ok_or_else(|| ModelsError::Tokenizer("empty prompt".into()))?;
        Ok(last.to_vec1::<f32>()?)
    }

    /// Generates a reply to a conversation, streaming each token into `tx`.
    ///
    /// Blocking (runs the model on this thread): call it from `spawn_blocking` or a plain
    /// thread, or use [`spawn_generate`]. Reuses the session's cache for the longest common
    /// prefix of its tokens and the new prompt, so a multi-turn session only computes the new
    /// turn. Stops at a stop token, `max_tokens`, the context limit, or when the receiver is
    /// dropped ([`FinishReason::Cancelled`]).
    ///
    /// # Panics
    ///
    /// When called on an async task (tokio's `blocking_send` refuses to block a runtime
    /// thread); use [`spawn_generate`] there.
    pub fn generate(
        &self,
        session: &mut Session,
        messages: &[ChatMessage],
        params: &SamplingParams,
        tx: &mpsc::Sender<Token>,
    ) -> Result<Completion> {
        let prompt = self.encode_chat(messages)?;
        self.generate_from_ids(session, &prompt, params, tx)
    }

    /// Like [`ChatModel::generate`] for an already tokenized prompt.
    pub fn generate_from_ids(
        &self,
        session: &mut Session,
        prompt: &[u32],
        params: &SamplingParams,
        tx: &mpsc::Sender<Token>,
    ) -> Result<Completion> {
        self.check_session(session)?;
        let limit = session.max_len();
        check_prompt(prompt, params, limit)?;
        // Longest common prefix with what the cache holds; always recompute at least one token
        // to get fresh logits.
        let common = session
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        session.truncate(common);
        self.front
            .generate_with(prompt, common, limit, params, tx, |ids| {
                self.feed(session, ids)
            })
    }
}

/// Runs [`ChatModel::generate`] on tokio's blocking pool; the session is handed back with the
/// result so the caller can keep the conversation going.
pub fn spawn_generate(
    model: Arc<ChatModel>,
    mut session: Session,
    messages: Vec<ChatMessage>,
    params: SamplingParams,
    tx: mpsc::Sender<Token>,
) -> tokio::task::JoinHandle<(Session, Result<Completion>)> {
    tokio::task::spawn_blocking(move || {
        let r = model.generate(&mut session, &messages, &params, &tx);
        (session, r)
    })
}

/// Converts stage output hidden states to their wire form.
pub fn hidden_to_wire(hidden: &Tensor, position: usize) -> Result<HiddenStates> {
    let (_, seq, dim) = hidden.dims3()?;
    let data = hidden.flatten_all()?.to_vec1::<f32>()?;
    Ok(HiddenStates {
        position: u32::try_from(position)
            .map_err(|_| ModelsError::HiddenStates("position too large".into()))?,
        seq_len: seq as u32,
        hidden_dim: dim as u32,
        data,
    })
}

impl HiddenStates {
    /// The states as a `(1, seq, dim)` tensor for [`StageInput::Hidden`].
    pub fn to_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.data,
            (1, self.seq_len as usize, self.hidden_dim as usize),
            &Device::Cpu,
        )?)
    }
}
