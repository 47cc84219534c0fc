//! Byte-level BPE tokenizer rebuilt from GGUF metadata.
//!
//! GGUF stores the GPT-2 style vocabulary (`tokenizer.ggml.tokens`, `…merges`, `…token_type`).
//! We rebuild the same pipeline the model was trained with (for SmolLM2, pre-tokenizer
//! `smollm`): special tokens are matched first, then digits are split one by one, then the
//! GPT-2 regex and byte-to-unicode mapping apply, then BPE merges. Decoding maps each token back
//! to its raw bytes, so partial UTF-8 sequences can be streamed correctly.

use std::collections::HashMap;

use candle_core::quantized::gguf_file;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use crate::error::{ModelsError, Result};

/// GGUF token type of a control (special) token.
const TOKEN_TYPE_CONTROL: i32 = 3;
/// GGUF token type of a user-defined added token.
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Longest text accepted by [`Tokenizer::encode`], in bytes (bounds work done for a peer).
pub const MAX_ENCODE_BYTES: usize = 1024 * 1024;

/// The tokenizer-relevant part of a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenizerSpec {
    /// Token strings, in id order (GPT-2 byte-to-unicode alphabet for normal tokens).
    pub tokens: Vec<String>,
    /// GGUF token types, same length as `tokens` (1 normal, 3 control, 4 user-defined, 6 byte).
    pub token_types: Vec<i32>,
    /// Merges as `"left right"` strings, in priority order.
    pub merges: Vec<String>,
    /// End-of-sequence token id.
    pub eos_token_id: u32,
    /// Beginning-of-sequence token id, if any.
    pub bos_token_id: Option<u32>,
    /// Pre-tokenizer name (`tokenizer.ggml.pre`), e.g. `smollm`.
    pub pre: String,
}

impl TokenizerSpec {
    /// Reads the spec from GGUF metadata.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let md = |k: &str| {
            content
                .metadata
                .get(k)
                .ok_or_else(|| ModelsError::BadModel(format!("GGUF metadata lacks {k}")))
        };
        let model = md("tokenizer.ggml.model")?.to_string()?.clone();
        if model != "gpt2" {
            return Err(ModelsError::BadModel(format!(
                "tokenizer model `{model}` is not supported (only byte-level BPE `gpt2`)"
            )));
        }
        let strings = |k: &str| -> Result<Vec<String>> {
            md(k)?
                .to_vec()?
                .iter()
                .map(|v| v.to_string().cloned().map_err(ModelsError::from))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let token_types = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()?
                .iter()
                .map(|t| t.to_i32().map_err(ModelsError::from))
                .collect::<Result<Vec<_>>>()?,
            None => vec![1; tokens.len()],
        };
        let eos_token_id = md("tokenizer.ggml.eos_token_id")?.to_u32()?;
        let bos_token_id = content
            .metadata
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.to_u32().ok());
        let pre = content
            .metadata
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| "default".to_owned());
        Ok(Self {
            tokens,
            token_types,
            merges,
            eos_token_id,
            bos_token_id,
            pre,
        })
    }
}

/// GPT-2's reversible byte → printable-unicode-char mapping.
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        table[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\u{FFFD}');
            n += 1;
            c
        };
    }
    table
}

/// The 256 token strings for single bytes, in byte order (used to build test vocabularies).
pub fn byte_level_alphabet() -> Vec<String> {
    bytes_to_unicode().iter().map(|c| c.to_string()).collect()
}

/// A byte-level BPE tokenizer with special-token handling and byte-exact decoding.
#[derive(Clone)]
pub struct Tokenizer {
    /// Splits special tokens out of the text before BPE.
    with_special: tokenizers::Tokenizer,
    /// BPE only: special-token text in user content stays literal text.
    plain: tokenizers::Tokenizer,
    /// Raw bytes of every token.
    token_bytes: Vec<Vec<u8>>,
    special: HashMap<String, u32>,
    is_special: Vec<bool>,
    eos_token_id: u32,
    bos_token_id: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.token_bytes.len())
            .field("special_tokens", &self.special.len())
            .field("eos_token_id", &self.eos_token_id)
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from a GGUF tokenizer spec.
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Self> {
        let n = spec.tokens.len();
        if spec.token_types.len() != n {
            return Err(ModelsError::Tokenizer(format!(
                "{} token types for {n} tokens",
                spec.token_types.len()
            )));
        }
        if spec.eos_token_id as usize >= n {
            return Err(ModelsError::Tokenizer("eos token id out of range".into()));
        }
        let mut vocab = Vocab::default();
        for (i, t) in spec.tokens.iter().enumerate() {
            if vocab.insert(t.clone(), i as u32).is_some() {
                return Err(ModelsError::Tokenizer(format!("duplicate token `{t}`")));
            }
        }
        let merges = spec
            .merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .ok_or_else(|| ModelsError::Tokenizer(format!("malformed merge `{m}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| ModelsError::Tokenizer(e.to_string()))?;
        // SmolLM2 (`smollm`), StarCoder-style: every digit is its own pre-token.
        let split_digits = matches!(spec.pre.as_str(), "smollm" | "starcoder" | "refact");
        let byte_level = ByteLevel::new(false, true, true);
        let pre: PreTokenizerWrapper = if split_digits {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        } else {
            byte_level.into()
        };
        let mut plain = tokenizers::Tokenizer::new(bpe);
        plain.with_pre_tokenizer(Some(pre));
        let mut with_special = plain.clone();

        let decode = bytes_to_unicode();
        let mut byte_of: HashMap<char, u8> = HashMap::with_capacity(256);
        for (b, c) in decode.iter().enumerate() {
            byte_of.insert(*c, b as u8);
        }
        let mut special = HashMap::new();
        let mut is_special = vec![false; n];
        let mut added = Vec::new();
        let mut token_bytes = Vec::with_capacity(n);
        for (i, (t, ty)) in spec.tokens.iter().zip(&spec.token_types).enumerate() {
            let is_sp = *ty == TOKEN_TYPE_CONTROL || *ty == TOKEN_TYPE_USER_DEFINED;
            if is_sp {
                special.insert(t.clone(), i as u32);
                is_special[i] = true;
                added.push(AddedToken::from(t.clone(), true));
                token_bytes.push(t.as_bytes().to_vec());
            } else {
                // Chars outside the byte alphabet cannot occur in a byte-level vocab; keep their
                // UTF-8 so decoding stays total.
                let mut bytes = Vec::with_capacity(t.len());
                for c in t.chars() {
                    match byte_of.get(&c) {
                        Some(b) => bytes.push(*b),
                        None => {
                            let mut tmp = [0u8; 4];
                            bytes.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                        }
                    }
                }
                token_bytes.push(bytes);
            }
        }
        with_special
            .add_special_tokens(added)
            .map_err(|e| ModelsError::Tokenizer(e.to_string()))?;
        Ok(Self {
            with_special,
            plain,
            token_bytes,
            special,
            is_special,
            eos_token_id: spec.eos_token_id,
            bos_token_id: spec.bos_token_id,
        })
    }

    /// Encodes text. With `allow_special`, special-token strings (`<|im_start|>` …) in the
    /// text become their ids; without, they are tokenized as literal text (use this for
    /// untrusted content so it cannot forge conversation structure).
    pub fn encode(&self, text: &str, allow_special: bool) -> Result<Vec<u32>> {
        if text.len() > MAX_ENCODE_BYTES {
            return Err(ModelsError::Tokenizer(format!(
                "text of {} bytes exceeds the {MAX_ENCODE_BYTES}-byte limit",
                text.len()
            )));
        }
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let tk = if allow_special {
            &self.with_special
        } else {
            &self.plain
        };
        let enc = tk
            .encode_fast(text, false)
            .map_err(|e| ModelsError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The raw bytes a token stands for (special tokens: their text).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Decodes ids to text (invalid UTF-8 becomes U+FFFD). Special tokens are kept unless
    /// `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if skip_special && self.is_special(id) {
                continue;
            }
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Id of a special token by its text.
    pub fn special_token(&self, text: &str) -> Option<u32> {
        self.special.get(text).copied()
    }

    /// Whether an id is a special (control) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.is_special.get(id as usize).copied().unwrap_or(false)
    }

    /// End-of-sequence id.
    pub fn eos_token_id(&self) -> u32 {
        self.eos_token_id
    }

    /// Beginning-of-sequence id, if the vocabulary has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }
}

/// Turns a stream of token bytes into valid UTF-8 text pieces, holding back an incomplete
/// multi-byte sequence until its remaining bytes arrive.
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    pending: Vec<u8>,
}

/// A UTF-8 sequence is at most 4 bytes; more pending bytes than that cannot become valid.
const MAX_PENDING_UTF8: usize = 4;

impl TextStream {
    /// Appends bytes and returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: the prefix is valid by construction.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            self.pending.drain(..valid);
                            if self.pending.len() >= MAX_PENDING_UTF8 {
                                out.push('\u{FFFD}');
                                self.pending.clear();
                            }
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Flushes whatever is left (an incomplete sequence becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection() {
        let t = bytes_to_unicode();
        let set: std::collections::HashSet<char> = t.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'A' as usize], 'A');
    }

    #[test]
    fn text_stream_holds_partial_utf8() {
        let mut s = TextStream::default();
        let euro = "€".as_bytes(); // 3 bytes
        assert_eq!(s.push(&euro[..1]), "");
        assert_eq!(s.push(&euro[1..2]), "");
        assert_eq!(s.push(&euro[2..]), "€");
        assert_eq!(s.push(b"ab\xff"), "ab\u{FFFD}");
        assert_eq!(s.push(&euro[..2]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
