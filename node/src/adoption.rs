//! Adopting new model versions from signed manifests (specs/models.md, "Model manifests and
//! updates"), and re-publishing the manifests a node holds.
//!
//! The swarm actor checks manifests and keeps them in the node's [`ManifestBook`]; this service
//! wakes when a new one was kept (and every `republish` period) and, for each model the node serves
//! whole, takes the highest version above the one it serves among the manifests of *trusted*
//! publishers. It fetches that file with the registry's pull machinery (sha256 and size verified
//! before the file gets its name; nothing unverified is loaded), loads it, swaps it into the model
//! host (new jobs run on it, running ones finish on the old weights), and records the adopted
//! manifest in `<models>/.adopted/adopted.json`, so a restart serves that version again
//! ([`restore`]). A failed adoption (a source down, a hash or size mismatch, a file that does not
//! load) leaves the old version serving and is retried no sooner than [`RETRY_AFTER`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mycel_models::registry::ModelEntry;
use mycel_models::{ChatModel, LoadOptions, PullOptions};
use serde::{Deserialize, Serialize};

use crate::chat::ModelHost;
use crate::error::{NodeError, Result};
use crate::manifest::{MANIFEST_TOPIC, ManifestBook, SignedManifest, VerifiedManifest};

/// Folder of the models cache holding adopted versions: `<models>/.adopted/<sha256>/<model>/<file>`
/// (model ids never start with `.`, so it cannot clash with a registry model's folder).
pub const ADOPTED_DIR: &str = ".adopted";
/// The adopted manifests, inside [`ADOPTED_DIR`].
pub const ADOPTED_FILE: &str = "adopted.json";
/// How long a failed adoption of one manifest is not tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);
/// Failed adoptions remembered (for [`RETRY_AFTER`]); the oldest are forgotten first.
const MAX_FAILURES: usize = crate::manifest::MAX_STORED_MANIFESTS;
/// Largest adopted-manifests file read at start.
const MAX_ADOPTED_FILE_BYTES: u64 =
    (crate::manifest::MAX_STORED_MANIFESTS * crate::manifest::MAX_MANIFEST_BYTES) as u64;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct AdoptionOptions {
    /// The models cache (none: nothing can be fetched, so nothing is adopted; manifests are still
    /// relayed and re-published).
    pub models_dir: Option<PathBuf>,
    /// Adopt newer trusted versions (false: only log that one is available).
    pub auto_adopt: bool,
    /// Period of re-publication of the manifests held.
    pub republish: Duration,
}

/// The file of adopted manifests.
#[derive(Default, Serialize, Deserialize)]
struct AdoptedFile {
    adopted: Vec<SignedManifest>,
}

/// Where the file of a version with this sha256 (hex) is cached: the cache directory handed to
/// the pull, which puts the file in `<this>/<model>/<file>`.
pub fn version_dir(models_dir: &Path, sha256_hex: &str) -> PathBuf {
    models_dir.join(ADOPTED_DIR).join(sha256_hex)
}

fn adopted_path(models_dir: &Path) -> PathBuf {
    models_dir.join(ADOPTED_DIR).join(ADOPTED_FILE)
}

/// Writes the adopted manifests (temp file, then rename).
fn persist(models_dir: &Path, adopted: &[VerifiedManifest]) -> Result<()> {
    let path = adopted_path(models_dir);
    let dir = models_dir.join(ADOPTED_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| NodeError::io(&dir, e))?;
    let file = AdoptedFile {
        adopted: adopted.iter().map(|m| m.signed.clone()).collect(),
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| NodeError::Config(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(|e| NodeError::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| NodeError::io(&path, e))
}

/// Fetches `m`'s file into the cache (verified against its sha256 and size), and loads it as a
/// chat model. Blocking.
pub fn fetch_and_load(m: &VerifiedManifest, models_dir: &Path) -> Result<ChatModel> {
    let (entry, dir) = version_entry(m, models_dir)?;
    let verified =
        mycel_models::pull_with_options(&entry, &dir, &PullOptions::default(), &mut |_| {})?;
    Ok(ChatModel::load(&verified, &LoadOptions::default())?)
}

/// The registry entry `m` describes (its model's entry with the manifest's file and sources) and
/// the cache directory of that version.
fn version_entry(m: &VerifiedManifest, models_dir: &Path) -> Result<(ModelEntry, PathBuf)> {
    let base = crate::models::base_entry(m.model().as_str())?;
    Ok((
        m.entry(&base),
        version_dir(models_dir, &m.file().sha256.to_hex()),
    ))
}

/// At start, before the node serves anything: every adopted manifest of a trusted publisher for
/// a model `host` serves whole, whose file is in the cache and verifies, replaces that model's
/// weights (no download: a missing or corrupt file leaves the registry's version serving until
/// the manifest arrives again). Returns the versions now served. Blocking.
pub fn restore(models_dir: &Path, book: &ManifestBook, host: &ModelHost) -> Vec<VerifiedManifest> {
    let path = adopted_path(models_dir);
    let Ok(meta) = std::fs::metadata(&path) else {
        return Vec::new();
    };
    let parsed = if meta.len() > MAX_ADOPTED_FILE_BYTES {
        Err(format!("larger than {MAX_ADOPTED_FILE_BYTES} bytes"))
    } else {
        std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<AdoptedFile>(&b).map_err(|e| e.to_string()))
    };
    let file = match parsed {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "adopted model versions not read; serving the registry's");
            return Vec::new();
        }
    };
    let mut restored = Vec::new();
    for signed in file.adopted {
        let m = match signed.verify() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "an adopted manifest no longer verifies; ignored");
                continue;
            }
        };
        let (id, version) = (m.manifest.model.clone(), m.manifest.version);
        if !book.is_trusted(&m.manifest.publisher) {
            tracing::warn!(model = %id, version, publisher = %m.manifest.publisher, "the publisher of an adopted version is no longer trusted; serving the registry's version");
            continue;
        }
        if host.served(&id).is_none() {
            continue;
        }
        let loaded =
            version_entry(&m, models_dir).and_then(
                |(entry, dir)| match mycel_models::verify_cached(&entry, &dir)? {
                    Some(v) => Ok(ChatModel::load(&v, &LoadOptions::default())?),
                    None => Err(NodeError::Config("its file is not in the cache".into())),
                },
            );
        match loaded {
            Ok(model) => {
                host.replace_model(&id, Arc::new(model));
                book.set_adopted(m.clone());
                tracing::info!(model = %id, version, sha256 = %m.file().sha256, "serving the adopted version");
                restored.push(m);
            }
            Err(e) => {
                tracing::warn!(model = %id, version, error = %e, "adopted version not restored; serving the registry's until its manifest arrives again");
            }
        }
    }
    restored
}

/// Runs until the node stops: adopts newer trusted versions as manifests arrive, and re-publishes
/// the manifests held every `opts.republish`.
pub async fn run(node: crate::Node, book: Arc<ManifestBook>, opts: AdoptionOptions) {
    let mut tick = tokio::time::interval(opts.republish);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = Pending::default();
    loop {
        tokio::select! {
            () = node.network().stopped() => return,
            _ = tick.tick() => {
                for bytes in book.held_bytes() {
                    if node.network().publish(MANIFEST_TOPIC, bytes).await.is_err() {
                        return;
                    }
                }
            }
            () = book.changed() => {}
        }
        adopt_pending(&node, &book, &opts, &mut state).await;
    }
}

/// What the service remembers between rounds.
#[derive(Default)]
struct Pending {
    /// Failed adoptions by (publisher, model, version), with when they failed.
    failures: BTreeMap<(String, String, u64), Instant>,
    /// Newer versions already reported while `auto_adopt` is off (bounded like `failures`).
    noticed: BTreeSet<(String, String, u64)>,
    warned_no_cache: bool,
}

fn key(m: &VerifiedManifest) -> (String, String, u64) {
    (
        m.manifest.publisher.to_string(),
        m.manifest.model.clone(),
        m.manifest.version,
    )
}

/// Adopts, for each model served whole, the highest trusted version above the one served.
async fn adopt_pending(
    node: &crate::Node,
    book: &ManifestBook,
    opts: &AdoptionOptions,
    state: &mut Pending,
) {
    let now = Instant::now();
    state
        .failures
        .retain(|_, at| now.duration_since(*at) < RETRY_AFTER);
    let mut best: BTreeMap<String, VerifiedManifest> = BTreeMap::new();
    for m in book.trusted_manifests() {
        let id = &m.manifest.model;
        if !node.serves_whole(id) {
            tracing::debug!(model = %id, "a trusted manifest for a model this node does not serve");
            continue;
        }
        let current = book.adopted(id).map_or(0, |a| a.manifest.version);
        if m.manifest.version <= current || state.failures.contains_key(&key(&m)) {
            continue;
        }
        if best
            .get(id)
            .is_none_or(|b| b.manifest.version < m.manifest.version)
        {
            best.insert(id.clone(), m);
        }
    }
    for (id, m) in best {
        let (version, publisher) = (m.manifest.version, m.manifest.publisher.to_string());
        if !opts.auto_adopt {
            if state.noticed.len() >= MAX_FAILURES {
                state.noticed.clear();
            }
            if state.noticed.insert(key(&m)) {
                tracing::info!(model = %id, version, %publisher, "a newer version is available (auto_adopt is off)");
            }
            continue;
        }
        let Some(dir) = opts.models_dir.clone() else {
            if !state.warned_no_cache {
                state.warned_no_cache = true;
                tracing::warn!(model = %id, version, "a trusted newer version cannot be adopted: this node has no models cache");
            }
            continue;
        };
        tracing::info!(model = %id, version, %publisher, sha256 = %m.file().sha256, "adopting a new model version");
        let started = Instant::now();
        let job = {
            let (m, dir) = (m.clone(), dir.clone());
            tokio::task::spawn_blocking(move || fetch_and_load(&m, &dir))
        };
        let loaded = match job.await {
            Ok(r) => r,
            Err(e) => Err(NodeError::Inference(format!("adoption task failed: {e}"))),
        };
        let sha = m.file().sha256.to_hex();
        match loaded {
            Ok(model) => {
                let previous = book.adopted(&id);
                // Recorded before it is served, so a version anyone saw served survives a restart.
                let mut record: Vec<VerifiedManifest> = book
                    .all_adopted()
                    .into_iter()
                    .filter(|a| a.manifest.model != id)
                    .collect();
                record.push(m.clone());
                if let Err(e) = persist(&dir, &record) {
                    tracing::error!(error = %e, "adopted version not recorded: a restart serves the previous one");
                }
                if !node.serve_version(&m, Arc::new(model)) {
                    continue;
                }
                if let Some(p) = previous
                    && p.file().sha256 != m.file().sha256
                {
                    let _ = std::fs::remove_dir_all(version_dir(&dir, &p.file().sha256.to_hex()));
                }
                tracing::info!(model = %id, version, %publisher, took = ?started.elapsed(), "adopted a new model version: new requests run on it");
                node.metrics().manifest_adoptions.inc();
            }
            Err(e) => {
                tracing::error!(model = %id, version, %publisher, error = %e, "model version not adopted; the current version keeps serving");
                if book
                    .adopted(&id)
                    .is_none_or(|a| a.file().sha256 != m.file().sha256)
                {
                    let _ = std::fs::remove_dir_all(version_dir(&dir, &sha));
                }
                if state.failures.len() >= MAX_FAILURES
                    && let Some(oldest) = state
                        .failures
                        .iter()
                        .min_by_key(|(_, at)| **at)
                        .map(|(k, _)| k.clone())
                {
                    state.failures.remove(&oldest);
                }
                state.failures.insert(key(&m), Instant::now());
                node.metrics().manifest_adoption_failures.inc();
            }
        }
    }
}
