//! Signed model manifests, gossiped on [`MANIFEST_TOPIC`] (specs/wire.md, "Model manifests";
//! adoption rules in specs/models.md, "Model manifests and updates").
//!
//! A publisher announces "version N of model M is the file with this sha256 and size, with these
//! layers, fetchable from these sources", signed by its DID key in the `mycel/v1/manifest` domain.
//! Every node checks a manifest before gossipsub forwards it (an invalid one costs the sender
//! score), relays valid ones from anyone, and keeps the latest per (publisher, model) in a bounded
//! [`ManifestBook`] that it re-publishes periodically for nodes that joined later. Only manifests
//! of publishers the node's config trusts are ever adopted ([`crate::adoption`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use mycel_identity::{Did, Keypair, Signature, domains};
use mycel_models::{
    Architecture, ModelEntry, ModelFile, ModelId, Sha256Digest, Source, SourceSpec,
};
use serde::{Deserialize, Serialize};

/// Gossipsub topic of signed model manifests.
pub const MANIFEST_TOPIC: &str = "mycel/manifests/1";
/// Largest manifest message (envelope and all); larger ones are refused before parsing.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024;
/// Most sources one manifest lists.
pub const MAX_MANIFEST_SOURCES: usize = 8;
/// Longest URL, path or PyPI field of a source, in bytes.
pub const MAX_SOURCE_FIELD_LEN: usize = 1024;
/// Most layers a manifest may name (as for shard advertisements).
pub const MAX_MANIFEST_LAYERS: u32 = crate::heartbeat::MAX_SHARD_LAYER;
/// Manifests a node keeps (the latest per publisher and model); see [`ManifestStore::offer`].
pub const MAX_STORED_MANIFESTS: usize = 256;
/// Most publishers a config may trust.
pub const MAX_TRUSTED_PUBLISHERS: usize = 64;

/// What a publisher says about one version of a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelManifest {
    /// Model id (registry rules: 1..=64 of `a-z 0-9 - _ .`).
    pub model: String,
    /// Version, ≥ 1; a node adopts only versions above the one it serves (0 = the registry's).
    pub version: u64,
    /// The weights file's name in the cache (a plain file name).
    pub file: String,
    /// sha256 of the file, 64 lowercase or uppercase hex digits.
    pub sha256: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Transformer layers of the model (checked against the file when it is loaded).
    pub layers: u32,
    /// The loader the file needs.
    pub architecture: Architecture,
    /// Where to fetch the file, tried in order (the registry's source forms).
    pub sources: Vec<SourceSpec>,
    /// Who signs this manifest.
    pub publisher: Did,
    /// When it was signed, Unix seconds (informative; versions order manifests).
    pub issued_at: u64,
}

/// A manifest as gossiped: its JSON text and the publisher's signature over exactly those bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The JSON text of a [`ModelManifest`].
    pub body: String,
    /// Hex Ed25519 signature over `body` in the `mycel/v1/manifest` domain by `publisher`.
    pub signature: String,
}

/// A manifest whose signature and fields were checked, with its parsed pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    /// The manifest.
    pub manifest: ModelManifest,
    /// The signed form, re-published as is.
    pub signed: SignedManifest,
    model: ModelId,
    file: ModelFile,
    sources: Vec<Source>,
}

impl ModelManifest {
    /// Checks every field; returns the parsed model id, file pin and sources.
    fn check(&self) -> Result<(ModelId, ModelFile, Vec<Source>), String> {
        let model = ModelId::new(&self.model).map_err(|e| e.to_string())?;
        if self.version == 0 {
            return Err("version must be at least 1".into());
        }
        let sha = Sha256Digest::from_hex(&self.sha256).map_err(|e| e.to_string())?;
        let file = ModelFile::new(&self.file, sha, self.size).map_err(|e| e.to_string())?;
        if self.layers == 0 || self.layers > MAX_MANIFEST_LAYERS {
            return Err(format!("layers must be in 1..={MAX_MANIFEST_LAYERS}"));
        }
        if self.architecture != Architecture::Llama {
            return Err("only llama (GGUF) chat models have manifests".into());
        }
        if self.sources.is_empty() || self.sources.len() > MAX_MANIFEST_SOURCES {
            return Err(format!(
                "a manifest lists 1..={MAX_MANIFEST_SOURCES} sources"
            ));
        }
        let mut sources = Vec::with_capacity(self.sources.len());
        for spec in &self.sources {
            check_source_lengths(spec)?;
            if let SourceSpec::Path { path } = spec
                && !path.is_absolute()
            {
                return Err(format!("path source {} is not absolute", path.display()));
            }
            sources.push(spec.clone().validate(1).map_err(|e| e.to_string())?);
        }
        Ok((model, file, sources))
    }

    /// Checks the fields and signs: the form to gossip. `key` must be the publisher's.
    pub fn sign(&self, key: &Keypair) -> Result<SignedManifest, String> {
        if Did::from_public_key(key.public()) != self.publisher {
            return Err("the signing key is not the publisher's".into());
        }
        self.check()?;
        let body = serde_json::to_string(self).map_err(|e| e.to_string())?;
        let signature = key.sign(domains::MANIFEST, body.as_bytes()).to_hex();
        let signed = SignedManifest { body, signature };
        if signed.to_bytes().len() > MAX_MANIFEST_BYTES {
            return Err(format!(
                "the signed manifest is larger than {MAX_MANIFEST_BYTES} bytes"
            ));
        }
        Ok(signed)
    }
}

impl ModelManifest {
    /// The manifest of the weights file `file` as `version` of `model`, by `publisher`: the file
    /// name, the sha256 and size of its bytes and the layer count of its GGUF metadata (it must be
    /// a llama GGUF). Without `sources`, the file's absolute path is the source (readable by nodes
    /// on this machine only). What `mycel-node model publish` signs. Blocking (hashes the file).
    pub fn for_file(
        model: &str,
        version: u64,
        file: &Path,
        sources: Vec<SourceSpec>,
        publisher: Did,
    ) -> crate::Result<Self> {
        let io = |e| crate::NodeError::io(file, e);
        let absolute = std::fs::canonicalize(file).map_err(io)?;
        let layers = mycel_models::gguf_config(&absolute)?.n_layer;
        let sha256 = mycel_models::pull::sha256_file(&absolute)?;
        let size = std::fs::metadata(&absolute).map_err(io)?.len();
        let name = absolute
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sources = if sources.is_empty() {
            vec![SourceSpec::Path { path: absolute }]
        } else {
            sources
        };
        let issued_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Self {
            model: model.to_string(),
            version,
            file: name,
            sha256: sha256.to_hex(),
            size,
            layers,
            architecture: Architecture::Llama,
            sources,
            publisher,
            issued_at,
        })
    }
}

/// Every string field of a source is at most [`MAX_SOURCE_FIELD_LEN`] bytes.
fn check_source_lengths(spec: &SourceSpec) -> Result<(), String> {
    let long = |s: &str| s.len() > MAX_SOURCE_FIELD_LEN;
    let path_len = |p: &Path| p.as_os_str().len() > MAX_SOURCE_FIELD_LEN;
    let too_long = match spec {
        SourceSpec::Path { path } => path_len(path),
        SourceSpec::Url { url } => long(url),
        SourceSpec::PyPi {
            package,
            version,
            wheel,
            wheel_sha256,
            member_dir,
        } => {
            long(package)
                || long(version)
                || long(wheel)
                || wheel_sha256.as_deref().is_some_and(long)
                || long(member_dir)
        }
    };
    if too_long {
        return Err(format!(
            "a source field is longer than {MAX_SOURCE_FIELD_LEN} bytes"
        ));
    }
    Ok(())
}

impl SignedManifest {
    /// The gossip bytes: JSON `{"body", "signature"}`.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and verifies gossip bytes (size first, then the envelope, the fields, the
    /// signature); `Err` says why the message is invalid.
    pub fn from_bytes(bytes: &[u8]) -> Result<VerifiedManifest, String> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(format!("larger than {MAX_MANIFEST_BYTES} bytes"));
        }
        let signed: SignedManifest =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed envelope: {e}"))?;
        signed.verify()
    }

    /// Verifies the fields and the publisher's signature.
    pub fn verify(&self) -> Result<VerifiedManifest, String> {
        if self.body.len() + self.signature.len() > MAX_MANIFEST_BYTES {
            return Err(format!("larger than {MAX_MANIFEST_BYTES} bytes"));
        }
        let manifest: ModelManifest =
            serde_json::from_str(&self.body).map_err(|e| format!("malformed manifest: {e}"))?;
        let (model, file, sources) = manifest.check()?;
        let sig = Signature::from_hex(&self.signature).map_err(|e| e.to_string())?;
        manifest
            .publisher
            .public_key()
            .verify(domains::MANIFEST, self.body.as_bytes(), &sig)
            .map_err(|e| format!("bad signature: {e}"))?;
        Ok(VerifiedManifest {
            manifest,
            signed: self.clone(),
            model,
            file,
            sources,
        })
    }
}

impl VerifiedManifest {
    /// The model id.
    pub fn model(&self) -> &ModelId {
        &self.model
    }

    /// The pinned file (name, sha256, size).
    pub fn file(&self) -> &ModelFile {
        &self.file
    }

    /// The registry entry to pull and load this version with: `base` (the model's registry entry:
    /// kind, chat template, system prompt) with this manifest's file, sources, layers and
    /// architecture.
    pub fn entry(&self, base: &ModelEntry) -> ModelEntry {
        ModelEntry {
            id: self.model.clone(),
            architecture: self.manifest.architecture,
            layers: self.manifest.layers,
            files: vec![self.file.clone()],
            sources: self.sources.clone(),
            ..base.clone()
        }
    }

    fn key(&self) -> (String, String) {
        (
            self.manifest.publisher.to_string(),
            self.manifest.model.clone(),
        )
    }
}

/// What [`ManifestStore::offer`] did with a manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Kept: the first from this publisher for this model, or a newer version.
    New,
    /// This version (or another manifest with the same version) is already held.
    Known,
    /// An older version than the one held.
    Stale,
    /// The store is full of manifests it may not evict.
    Full,
}

/// One held manifest.
#[derive(Clone, Debug)]
struct Held {
    manifest: VerifiedManifest,
    trusted: bool,
}

/// The latest manifest per (publisher, model), at most `cap` of them. When full, a newcomer
/// evicts the untrusted manifest signed longest ago; manifests of trusted publishers are never
/// evicted, so strangers flooding the topic cannot push them out.
#[derive(Debug)]
pub struct ManifestStore {
    cap: usize,
    held: BTreeMap<(String, String), Held>,
}

impl ManifestStore {
    /// An empty store of at most `cap` manifests.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            held: BTreeMap::new(),
        }
    }

    /// Takes a verified manifest (whose publisher is `trusted` or not) if it is new.
    pub fn offer(&mut self, m: VerifiedManifest, trusted: bool) -> Offer {
        let key = m.key();
        if let Some(h) = self.held.get_mut(&key) {
            return match m.manifest.version.cmp(&h.manifest.manifest.version) {
                std::cmp::Ordering::Greater => {
                    *h = Held {
                        manifest: m,
                        trusted,
                    };
                    Offer::New
                }
                std::cmp::Ordering::Equal => Offer::Known,
                std::cmp::Ordering::Less => Offer::Stale,
            };
        }
        if self.held.len() >= self.cap {
            let victim = self
                .held
                .iter()
                .filter(|(_, h)| !h.trusted)
                .min_by_key(|(_, h)| h.manifest.manifest.issued_at)
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    self.held.remove(&k);
                }
                None => return Offer::Full,
            }
        }
        self.held.insert(
            key,
            Held {
                manifest: m,
                trusted,
            },
        );
        Offer::New
    }

    /// Manifests held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Held manifests with whether their publisher is trusted.
    pub fn iter(&self) -> impl Iterator<Item = (&VerifiedManifest, bool)> {
        self.held.values().map(|h| (&h.manifest, h.trusted))
    }
}

/// One line of `mycel_manifests`.
pub type ManifestInfo = mycel_rpc_api::ManifestInfo;

struct BookState {
    store: ManifestStore,
    /// The version this node serves, by model id (only models it adopted a manifest for).
    adopted: BTreeMap<String, VerifiedManifest>,
}

/// The node's manifests: the bounded store, the trusted publishers and the versions adopted,
/// shared by the swarm actor (which checks gossip), the adoption service and the RPC.
pub struct ManifestBook {
    trusted: BTreeSet<String>,
    state: Mutex<BookState>,
    changed: tokio::sync::Notify,
}

impl std::fmt::Debug for ManifestBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestBook")
            .field("trusted", &self.trusted.len())
            .finish()
    }
}

/// What became of a manifest message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Invalid (size, format, fields or signature): rejected, and the sender pays for it.
    Invalid(String),
    /// Valid; what the store did with it.
    Valid(Offer),
}

impl ManifestBook {
    /// A book trusting `trusted` publishers (DIDs), holding at most `cap` manifests.
    pub fn new(trusted: impl IntoIterator<Item = Did>, cap: usize) -> Self {
        Self {
            trusted: trusted.into_iter().map(|d| d.to_string()).collect(),
            state: Mutex::new(BookState {
                store: ManifestStore::new(cap),
                adopted: BTreeMap::new(),
            }),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this node's config trusts `publisher`'s manifests.
    pub fn is_trusted(&self, publisher: &Did) -> bool {
        self.trusted.contains(&publisher.to_string())
    }

    /// Checks gossip bytes and keeps the manifest if it is new (waking the adoption service).
    pub fn receive(&self, bytes: &[u8]) -> Received {
        match SignedManifest::from_bytes(bytes) {
            Ok(m) => Received::Valid(self.offer(m)),
            Err(e) => Received::Invalid(e),
        }
    }

    /// Keeps a verified manifest if it is new (waking the adoption service).
    pub fn offer(&self, m: VerifiedManifest) -> Offer {
        let trusted = self.is_trusted(&m.manifest.publisher);
        let (model, version, publisher) = (
            m.manifest.model.clone(),
            m.manifest.version,
            m.manifest.publisher,
        );
        let offer = self.lock().store.offer(m, trusted);
        if offer == Offer::New {
            if trusted {
                tracing::info!(%model, version, %publisher, "model manifest from a trusted publisher");
                self.changed.notify_one();
            } else {
                tracing::debug!(%model, version, %publisher, "model manifest from an untrusted publisher: relayed, not adopted");
            }
        }
        offer
    }

    /// Waits until a new manifest of a trusted publisher was kept since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The gossip bytes of every held manifest (for re-publication).
    pub fn held_bytes(&self) -> Vec<Vec<u8>> {
        self.lock()
            .store
            .iter()
            .map(|(m, _)| m.signed.to_bytes())
            .collect()
    }

    /// Held manifests of trusted publishers.
    pub fn trusted_manifests(&self) -> Vec<VerifiedManifest> {
        self.lock()
            .store
            .iter()
            .filter(|(_, trusted)| *trusted)
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// The manifest of the version this node serves of `model`, if it adopted one.
    pub fn adopted(&self, model: &str) -> Option<VerifiedManifest> {
        self.lock().adopted.get(model).cloned()
    }

    /// Every adopted manifest, by model id.
    pub fn all_adopted(&self) -> Vec<VerifiedManifest> {
        self.lock().adopted.values().cloned().collect()
    }

    /// Records that this node now serves `m`'s version (and holds `m`).
    pub fn set_adopted(&self, m: VerifiedManifest) {
        let trusted = self.is_trusted(&m.manifest.publisher);
        let mut s = self.lock();
        s.store.offer(m.clone(), trusted);
        s.adopted.insert(m.manifest.model.clone(), m);
    }

    /// The manifests held, with whether their publisher is trusted and whether this node serves
    /// that version (`mycel_manifests`), by publisher and model.
    pub fn list(&self) -> Vec<ManifestInfo> {
        let s = self.lock();
        s.store
            .iter()
            .map(|(m, trusted)| {
                let man = &m.manifest;
                ManifestInfo {
                    publisher: man.publisher.to_string(),
                    model: man.model.clone(),
                    version: man.version,
                    file: man.file.clone(),
                    sha256: m.file.sha256.to_hex(),
                    size: man.size,
                    layers: man.layers,
                    issued_at: man.issued_at,
                    trusted,
                    adopted: s.adopted.get(&man.model).is_some_and(|a| a == m),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(key: &Keypair, model: &str, version: u64) -> ModelManifest {
        ModelManifest {
            model: model.into(),
            version,
            file: "tiny-v2.gguf".into(),
            sha256: "ab".repeat(32),
            size: 1234,
            layers: 6,
            architecture: Architecture::Llama,
            sources: vec![
                SourceSpec::Path {
                    path: "/srv/models/tiny-v2.gguf".into(),
                },
                SourceSpec::Url {
                    url: "https://example.org/tiny-v2.gguf".into(),
                },
            ],
            publisher: Did::from_public_key(key.public()),
            issued_at: 1_700_000_000,
        }
    }

    fn signed_with(
        domain: mycel_identity::signing::Domain,
        m: &ModelManifest,
        key: &Keypair,
    ) -> Vec<u8> {
        let body = serde_json::to_string(m).expect("json");
        let signature = key.sign(domain, body.as_bytes()).to_hex();
        SignedManifest { body, signature }.to_bytes()
    }

    #[test]
    fn a_signed_manifest_verifies_and_round_trips() {
        let key = Keypair::generate();
        let m = manifest(&key, "tiny", 2);
        let bytes = m.sign(&key).expect("signs").to_bytes();
        let v = SignedManifest::from_bytes(&bytes).expect("verifies");
        assert_eq!(v.manifest, m);
        assert_eq!(v.model().as_str(), "tiny");
        assert_eq!(v.file().size, 1234);
        assert_eq!(v.signed.to_bytes(), bytes);
        let base = crate::models::base_entry("tiny").expect("tiny entry");
        let entry = v.entry(&base);
        assert_eq!(entry.files, vec![v.file().clone()]);
        assert_eq!(entry.sources.len(), 2);
        assert_eq!(entry.chat_template, base.chat_template);
    }

    #[test]
    fn tampered_wrongly_signed_and_oversized_manifests_are_rejected() {
        let key = Keypair::generate();
        let m = manifest(&key, "tiny", 2);
        let bytes = m.sign(&key).expect("signs").to_bytes();
        // A field changed after signing.
        let tampered = String::from_utf8(bytes.clone())
            .expect("utf-8")
            .replace("\\\"version\\\":2", "\\\"version\\\":3");
        assert_ne!(tampered.as_bytes(), &bytes[..], "the edit applied");
        assert!(SignedManifest::from_bytes(tampered.as_bytes()).is_err());
        // Signed in another domain, or by a key other than the publisher's.
        let other_domain = signed_with(domains::HEARTBEAT, &m, &key);
        assert!(
            SignedManifest::from_bytes(&other_domain)
                .expect_err("wrong domain")
                .contains("signature")
        );
        let impostor = signed_with(domains::MANIFEST, &m, &Keypair::generate());
        assert!(SignedManifest::from_bytes(&impostor).is_err());
        assert!(m.sign(&Keypair::generate()).is_err());
        // Too large before anything is parsed, and too large to sign.
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert!(
            SignedManifest::from_bytes(&huge)
                .expect_err("oversize")
                .contains("larger")
        );
        let mut many = m.clone();
        // Every field within its bound, the whole too large.
        many.sources = vec![
            SourceSpec::PyPi {
                package: "p".repeat(MAX_SOURCE_FIELD_LEN),
                version: "1".repeat(MAX_SOURCE_FIELD_LEN),
                wheel: "w.whl".into(),
                wheel_sha256: None,
                member_dir: "d".repeat(MAX_SOURCE_FIELD_LEN),
            };
            MAX_MANIFEST_SOURCES
        ];
        let sig_ok = signed_with(domains::MANIFEST, &many, &key);
        assert!(sig_ok.len() > MAX_MANIFEST_BYTES);
        assert!(SignedManifest::from_bytes(&sig_ok).is_err());
        assert!(many.sign(&key).is_err());
        assert!(SignedManifest::from_bytes(b"\xff garbage").is_err());
    }

    #[test]
    fn bad_fields_are_rejected_even_when_signed() {
        let key = Keypair::generate();
        let good = manifest(&key, "tiny", 2);
        type Edit = Box<dyn Fn(&mut ModelManifest)>;
        let cases: Vec<(&str, Edit)> = vec![
            ("version 0", Box::new(|m| m.version = 0)),
            ("bad model id", Box::new(|m| m.model = "Bad/Id".into())),
            ("short hash", Box::new(|m| m.sha256 = "abcd".into())),
            ("zero size", Box::new(|m| m.size = 0)),
            ("file path", Box::new(|m| m.file = "../x.gguf".into())),
            ("no layers", Box::new(|m| m.layers = 0)),
            (
                "too many layers",
                Box::new(|m| m.layers = MAX_MANIFEST_LAYERS + 1),
            ),
            ("bert", Box::new(|m| m.architecture = Architecture::Bert)),
            ("no source", Box::new(|m| m.sources.clear())),
            (
                "nine sources",
                Box::new(|m| {
                    m.sources = vec![
                        SourceSpec::Url {
                            url: "https://a/b".into()
                        };
                        MAX_MANIFEST_SOURCES + 1
                    ]
                }),
            ),
            (
                "relative path",
                Box::new(|m| {
                    m.sources = vec![SourceSpec::Path {
                        path: "models/x.gguf".into(),
                    }]
                }),
            ),
            (
                "ftp url",
                Box::new(|m| {
                    m.sources = vec![SourceSpec::Url {
                        url: "ftp://a/b".into(),
                    }]
                }),
            ),
            (
                "long url",
                Box::new(|m| {
                    m.sources = vec![SourceSpec::Url {
                        url: format!("https://a/{}", "b".repeat(MAX_SOURCE_FIELD_LEN)),
                    }]
                }),
            ),
        ];
        for (what, edit) in cases {
            let mut m = good.clone();
            edit(&mut m);
            assert!(m.sign(&key).is_err(), "{what} signed");
            let bytes = signed_with(domains::MANIFEST, &m, &key);
            assert!(
                SignedManifest::from_bytes(&bytes).is_err(),
                "{what} verified"
            );
        }
    }

    fn verified(key: &Keypair, model: &str, version: u64, issued_at: u64) -> VerifiedManifest {
        let mut m = manifest(key, model, version);
        m.issued_at = issued_at;
        m.sign(key).expect("signs").verify().expect("verifies")
    }

    #[test]
    fn the_store_keeps_the_latest_version_and_never_evicts_trusted_publishers() {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let mut s = ManifestStore::new(3);
        assert_eq!(s.offer(verified(&a, "m", 2, 10), true), Offer::New);
        assert_eq!(s.offer(verified(&a, "m", 2, 11), true), Offer::Known);
        assert_eq!(s.offer(verified(&a, "m", 1, 12), true), Offer::Stale);
        assert_eq!(s.offer(verified(&a, "m", 3, 13), true), Offer::New);
        assert_eq!(s.len(), 1);
        assert_eq!(s.offer(verified(&b, "m", 1, 5), false), Offer::New);
        assert_eq!(s.offer(verified(&b, "n", 1, 6), false), Offer::New);
        // Full: a newcomer evicts the untrusted manifest signed longest ago.
        assert_eq!(s.offer(verified(&b, "o", 1, 7), false), Offer::New);
        assert_eq!(s.len(), 3);
        let held: Vec<(String, bool)> = s
            .iter()
            .map(|(m, t)| (m.manifest.model.clone(), t))
            .collect();
        assert!(held.contains(&("m".into(), true)));
        assert!(!held.iter().any(|(m, t)| m == "m" && !t), "{held:?}");
        // Only trusted manifests left: nothing can be evicted.
        let mut t = ManifestStore::new(1);
        assert_eq!(t.offer(verified(&a, "m", 1, 1), true), Offer::New);
        assert_eq!(t.offer(verified(&b, "m", 9, 2), false), Offer::Full);
        assert_eq!(t.offer(verified(&a, "n", 1, 3), true), Offer::Full);
    }

    #[test]
    fn the_book_marks_trust_and_adoption() {
        let (a, b) = (Keypair::generate(), Keypair::generate());
        let book = ManifestBook::new([Did::from_public_key(a.public())], 8);
        let ma = verified(&a, "tiny", 2, 1);
        assert_eq!(
            book.receive(&ma.signed.to_bytes()),
            Received::Valid(Offer::New)
        );
        assert_eq!(
            book.receive(&verified(&b, "tiny", 5, 1).signed.to_bytes()),
            Received::Valid(Offer::New)
        );
        assert!(matches!(book.receive(b"{}"), Received::Invalid(_)));
        assert_eq!(book.trusted_manifests(), vec![ma.clone()]);
        book.set_adopted(ma.clone());
        let list = book.list();
        assert_eq!(list.len(), 2);
        let mine = list
            .iter()
            .find(|i| i.publisher == ma.manifest.publisher.to_string())
            .expect("listed");
        assert!(mine.trusted && mine.adopted && mine.version == 2);
        assert!(
            list.iter()
                .any(|i| !i.trusted && !i.adopted && i.version == 5)
        );
        assert_eq!(book.adopted("tiny"), Some(ma));
        assert_eq!(book.held_bytes().len(), 2);
    }
}
