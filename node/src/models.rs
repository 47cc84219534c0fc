//! Pulling and loading the models a node serves.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mycel_models::{ChatFrontend, ChatModel, LoadOptions, Progress, Registry, VerifiedModel, tiny};

use crate::config::TINY_MODEL_ID;
use crate::error::{NodeError, Result};

/// Seed of the built-in `tiny` model, so every node's `tiny` has the same weights.
pub const TINY_SEED: u64 = 0x006d_7963_656c;

/// What a work receipt names as the weights of `id`: the sha256 of the registry's primary file
/// (for the built-in `tiny`, blake3 of its seed, since its weights are built from it).
pub fn weights_hash(id: &str) -> [u8; 32] {
    if id == TINY_MODEL_ID {
        return *blake3::hash(&TINY_SEED.to_le_bytes()).as_bytes();
    }
    Registry::load_default()
        .ok()
        .and_then(|r| r.get(id).ok().map(|e| e.primary_file().sha256.0))
        .unwrap_or([0; 32])
}

/// The registry entry of a chat model, which an adopted manifest's file replaces the pin of
/// ([`crate::manifest::VerifiedManifest::entry`]); for the built-in `tiny`, an entry describing it
/// (ChatML, no system prompt), so a published GGUF can replace it too (tests and demos).
pub fn base_entry(id: &str) -> Result<mycel_models::ModelEntry> {
    use mycel_models::{Architecture, ChatTemplate, ModelEntry, ModelId, ModelKind};
    if id == TINY_MODEL_ID {
        return Ok(ModelEntry {
            id: ModelId::new(TINY_MODEL_ID)?,
            kind: ModelKind::Chat,
            architecture: Architecture::Llama,
            license: "Apache-2.0".into(),
            description: "mycel tiny test model".into(),
            chat_template: Some(ChatTemplate::ChatMl),
            default_system_prompt: None,
            layers: tiny::TINY_LAYERS,
            context_length: tiny::TINY_CONTEXT,
            files: Vec::new(),
            sources: Vec::new(),
        });
    }
    let entry = Registry::load_default()?.get(id)?.clone();
    if entry.kind != mycel_models::ModelKind::Chat {
        return Err(NodeError::Config(format!("`{id}` is not a chat model")));
    }
    Ok(entry)
}

/// Makes a registry model present and verified in `cache_dir`, reporting progress. Blocking.
pub fn pull(
    id: &str,
    cache_dir: &Path,
    from: Option<&Path>,
    progress: impl FnMut(Progress),
) -> Result<VerifiedModel> {
    let registry = Registry::load_default()?;
    let entry = registry.get(id)?;
    Ok(mycel_models::pull(entry, cache_dir, from, progress)?)
}

/// Loads one model: `tiny` is built in code; any other id is pulled (if missing) and verified first.
/// Blocking.
pub fn load(id: &str, cache_dir: &Path, progress: impl FnMut(Progress)) -> Result<ChatModel> {
    if id == TINY_MODEL_ID {
        return Ok(tiny::tiny_model(TINY_SEED, &LoadOptions::default())?);
    }
    let verified = pull(id, cache_dir, None, progress)?;
    Ok(ChatModel::load(&verified, &LoadOptions::default())?)
}

/// Loads layers `[from, to)` of a model (for serving a shard); `tiny` is built in code. Blocking.
pub fn load_range(id: &str, from: u32, to: u32, cache_dir: &Path) -> Result<ChatModel> {
    let opts = LoadOptions {
        range: Some((from, to)),
        ..LoadOptions::default()
    };
    if id == TINY_MODEL_ID {
        return Ok(tiny::tiny_model(TINY_SEED, &opts)?);
    }
    let verified = pull(id, cache_dir, None, |_| {})?;
    Ok(ChatModel::load(&verified, &opts)?)
}

/// The tokenizer, template and hyper-parameters of a model whose file is in the cache (read from
/// its metadata; the weights are not loaded). Never downloads. Blocking.
pub fn frontend(id: &str, cache_dir: &Path) -> Result<ChatFrontend> {
    if id == TINY_MODEL_ID {
        return Ok(tiny::tiny_model(TINY_SEED, &LoadOptions::default())?
            .frontend()
            .clone());
    }
    let registry = Registry::load_default()?;
    let entry = registry.get(id)?;
    let verified = mycel_models::verify_cached(entry, cache_dir)?.ok_or_else(|| {
        NodeError::Config(format!(
            "a pipeline client needs the tokenizer in `{id}`'s file, which is not in the cache \
             here: run `mycel-node model pull {id}`"
        ))
    })?;
    Ok(ChatFrontend::load(&verified)?)
}

/// Loads every model in `ids` (duplicates ignored). Blocking.
pub fn load_all(
    ids: &[String],
    cache_dir: &Path,
    mut progress: impl FnMut(Progress),
) -> Result<BTreeMap<String, Arc<ChatModel>>> {
    let mut out = BTreeMap::new();
    for id in ids {
        if out.contains_key(id) {
            continue;
        }
        let m = load(id, cache_dir, &mut progress)
            .map_err(|e| NodeError::Config(format!("cannot serve `{id}`: {e}")))?;
        out.insert(id.clone(), Arc::new(m));
    }
    Ok(out)
}

/// Whether every file of a registry model is present in the cache with the right size (no hashing).
pub fn is_cached(id: &str, cache_dir: &Path) -> bool {
    let Ok(registry) = Registry::load_default() else {
        return false;
    };
    let Ok(entry) = registry.get(id) else {
        return false;
    };
    entry.files.iter().all(|f| {
        std::fs::metadata(cache_dir.join(entry.id.as_str()).join(&f.name))
            .is_ok_and(|m| m.len() == f.size)
    })
}
