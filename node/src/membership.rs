//! Consortium mode: a permissioned network among the holders of membership credentials.
//!
//! With a `[consortium]` config section the node admits only peers that prove membership right
//! after connecting: each side sends its VC-JWT ([`Presentation`]) on `/mycel/membership/1.0.0`, the
//! other checks it ([`verify_peer_credential`]: trusted issuer, subject = the remote PeerId's DID,
//! consortium, validity window, signature, not revoked). Until a peer is admitted the node neither
//! serves it, nor accepts its gossip, nor picks it as a provider ([`Admitted`]); a peer that fails,
//! or stays silent past the deadline, is disconnected and blocked.
//!
//! Revocations ([`mycel_identity::revocation::Revocation`], signed by a trusted issuer) spread on the
//! `mycel/membership/1` gossip topic; the node keeps them in a bounded set persisted as JSON
//! ([`RevocationSet`]), cuts revoked members off and refuses their credentials from then on.
//! An optional pre-shared key (libp2p pnet) keeps non-members from completing a transport handshake.
//!
//! [`Gatekeeper`] holds the state; the swarm actor in [`crate::network`] feeds it connection events,
//! presentations, revocations and the clock, and carries out its verdicts. specs/wire.md,
//! "Consortium mode", is the normative description.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::pnet::PreSharedKey;
use mycel_identity::credential::{self, CredentialError, Expectations, Membership};
use mycel_identity::revocation::{MAX_REVOCATION_LEN, Revocation};
use mycel_identity::{Did, Keypair};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::ConsortiumConfig;
use crate::error::{NodeError, Result};

/// Protocol id of the membership handshake (request-response, CBOR).
pub const MEMBERSHIP_PROTOCOL: &str = "/mycel/membership/1.0.0";
/// Gossip topic of signed revocations.
pub const MEMBERSHIP_TOPIC: &str = "mycel/membership/1";
/// Default deadline for a peer to present a valid credential after connecting.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest handshake request on the wire: a credential (at most [`credential::MAX_JWT_LEN`]) plus
/// CBOR framing.
pub const MAX_PRESENTATION_BYTES: u64 = credential::MAX_JWT_LEN as u64 + 256;
/// Largest handshake response on the wire.
pub const MAX_HANDSHAKE_RESPONSE_BYTES: u64 = 1024;
/// Longest refusal reason sent back to a peer.
const MAX_REASON_LEN: usize = 512;
/// Revocations a node keeps; further ones are refused (and logged) rather than growing the set.
pub const MAX_REVOCATIONS: usize = 4096;
/// Trusted issuers a config may name.
pub const MAX_TRUSTED_ISSUERS: usize = 64;
/// Peers waiting for their handshake at once (connection limits keep it lower in practice).
pub const MAX_PENDING_HANDSHAKES: usize = 256;
/// Admitted peers tracked at once (one per connected member; the connection limit is lower).
pub const MAX_ADMITTED: usize = 1024;
/// Largest pnet key file read.
const MAX_PSK_FILE_BYTES: u64 = 4096;
/// How often a task waiting for a peer's admission looks again.
const ADMISSION_POLL: Duration = Duration::from_millis(25);
/// How often the actor looks for peers past their handshake deadline.
pub const DEADLINE_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Deadline of one handshake request on the wire.
const HANDSHAKE_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshake streams open at once per connection.
const MAX_HANDSHAKE_STREAMS: usize = 8;

/// The request-response behaviour of the membership handshake (CBOR, size-limited both ways).
pub fn behaviour() -> libp2p::request_response::cbor::Behaviour<Presentation, HandshakeResponse> {
    use libp2p::StreamProtocol;
    use libp2p::request_response::{self, ProtocolSupport};
    let codec = request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(MAX_PRESENTATION_BYTES)
        .set_response_size_maximum(MAX_HANDSHAKE_RESPONSE_BYTES);
    request_response::Behaviour::with_codec(
        codec,
        [(
            StreamProtocol::new(MEMBERSHIP_PROTOCOL),
            ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(HANDSHAKE_REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_HANDSHAKE_STREAMS),
    )
}

/// The node's transport: TCP (+ pnet when a pre-shared key is set) with Noise and Yamux, plus QUIC
/// when there is no pre-shared key (pnet cannot wrap QUIC, which brings its own TLS).
pub fn transport(
    key: &libp2p::identity::Keypair,
    psk: Option<PreSharedKey>,
) -> std::result::Result<
    libp2p::core::transport::Boxed<(PeerId, libp2p::core::muxing::StreamMuxerBox)>,
    Box<dyn std::error::Error + Send + Sync>,
> {
    use futures::future::Either;
    use libp2p::core::muxing::StreamMuxerBox;
    use libp2p::core::upgrade::Version;
    use libp2p::{Transport, noise, quic, tcp, yamux};
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let noise = noise::Config::new(key)?;
    Ok(match psk {
        Some(psk) => tcp
            .and_then(move |socket, _| libp2p::pnet::PnetConfig::new(psk).handshake(socket))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
            .boxed(),
        None => tcp
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .or_transport(quic::tokio::Transport::new(quic::Config::new(key)))
            .map(|either, _| match either {
                Either::Left((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
                Either::Right((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
            })
            .boxed(),
    })
}

/// What each side sends right after connecting: its own membership credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presentation {
    /// The sender's VC-JWT.
    pub credential: String,
}

/// The receiver's verdict on a [`Presentation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeResponse {
    /// The credential is valid: the sender is admitted.
    Accepted,
    /// Refused, with the reason; the receiver disconnects and blocks the sender.
    Refused(String),
}

/// Why a peer's credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// The credential itself is bad: signature, structure, validity window, subject or consortium.
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// Signed by an issuer this node does not trust.
    #[error("credential issued by {0}, which is not a trusted issuer")]
    UntrustedIssuer(Box<Did>),
    /// The subject's membership was revoked.
    #[error("membership of {0} was revoked")]
    Revoked(Box<Did>),
    /// The peer's id does not inline an Ed25519 key, so it has no DID.
    #[error("peer {0} has no did:key (not an Ed25519 PeerId)")]
    NoDid(PeerId),
}

/// Checks a credential presented by `peer`: valid VC-JWT (signature, window at `now`, structure) for
/// `consortium`, naming the DID of `peer` as subject, issued by one of `issuers`, and the subject not
/// in `revoked`.
pub fn verify_peer_credential(
    jwt: &str,
    peer: &PeerId,
    consortium: &str,
    issuers: &[Did],
    revoked: &RevocationSet,
    now: OffsetDateTime,
) -> std::result::Result<Membership, MembershipError> {
    let subject = Did::from_peer_id(peer).map_err(|_| MembershipError::NoDid(*peer))?;
    let membership = credential::verify_membership(
        jwt,
        now,
        &Expectations {
            issuer: None,
            subject: Some(&subject),
            consortium: Some(consortium),
        },
    )?;
    if !issuers.contains(&membership.issuer) {
        return Err(MembershipError::UntrustedIssuer(Box::new(
            membership.issuer,
        )));
    }
    if revoked.contains(&membership.subject) {
        return Err(MembershipError::Revoked(Box::new(membership.subject)));
    }
    Ok(membership)
}

/// Checks the `[consortium]` section (called by [`crate::Config::validate`]).
pub fn validate_config(c: &ConsortiumConfig) -> Result<()> {
    let err = |m: String| Err(NodeError::Config(format!("[consortium] {m}")));
    if c.id.is_empty() || c.id.len() > credential::MAX_CONSORTIUM_LEN {
        return err(format!(
            "id must be 1..={} bytes",
            credential::MAX_CONSORTIUM_LEN
        ));
    }
    if c.trusted_issuers.is_empty() || c.trusted_issuers.len() > MAX_TRUSTED_ISSUERS {
        return err(format!(
            "trusted_issuers must name 1..={MAX_TRUSTED_ISSUERS} issuer DIDs"
        ));
    }
    for issuer in &c.trusted_issuers {
        if let Err(e) = Did::parse(issuer) {
            return err(format!("trusted issuer `{issuer}`: {e}"));
        }
    }
    if c.handshake_timeout_secs == 0 || c.handshake_timeout_secs > 600 {
        return err("handshake_timeout_secs must be between 1 and 600".into());
    }
    Ok(())
}

/// The settings of a consortium node, checked at start-up.
#[derive(Debug)]
pub struct Consortium {
    id: String,
    issuers: Vec<Did>,
    credential: String,
    psk: Option<PreSharedKey>,
    handshake_timeout: Duration,
    revocations_file: PathBuf,
}

impl Consortium {
    /// Reads and checks the node's own credential (issued by a trusted issuer to `key`'s DID for
    /// this consortium, valid at `now`) and the optional pnet key. Fails with an error that names the
    /// file and the problem.
    pub fn load(cfg: &ConsortiumConfig, key: &Keypair, now: OffsetDateTime) -> Result<Self> {
        validate_config(cfg)?;
        let issuers = cfg
            .trusted_issuers
            .iter()
            .map(|d| Did::parse(d))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let path = &cfg.credential;
        let text = read_bounded(path, credential::MAX_JWT_LEN as u64 + 64).map_err(|e| {
            NodeError::Config(format!(
                "consortium mode needs this node's membership credential at {}: {e}",
                path.display()
            ))
        })?;
        let text = text.trim().to_string();
        let me = Did::from_public_key(key.public());
        let no_revocations = RevocationSet::default();
        verify_peer_credential(
            &text,
            &key.peer_id(),
            &cfg.id,
            &issuers,
            &no_revocations,
            now,
        )
        .map_err(|e| {
            NodeError::Config(format!(
                "this node's membership credential {} is not usable (node DID {me}, consortium \
                 `{}`): {e}",
                path.display(),
                cfg.id
            ))
        })?;
        let psk = match &cfg.psk {
            None => None,
            Some(p) => {
                let text = read_bounded(p, MAX_PSK_FILE_BYTES).map_err(|e| {
                    NodeError::Config(format!("pnet key file {}: {e}", p.display()))
                })?;
                // The parse error never contains the key.
                Some(text.trim().parse::<PreSharedKey>().map_err(|e| {
                    NodeError::Config(format!(
                        "pnet key file {} is not a /key/swarm/psk/1.0.0/ key: {e}",
                        p.display()
                    ))
                })?)
            }
        };
        Ok(Self {
            id: cfg.id.clone(),
            issuers,
            credential: text,
            psk,
            handshake_timeout: Duration::from_secs(cfg.handshake_timeout_secs),
            revocations_file: cfg.revocations.clone(),
        })
    }

    /// The consortium name.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The pnet key, if any (its `Debug` shows only the fingerprint; never `Display` it).
    pub fn psk(&self) -> Option<PreSharedKey> {
        self.psk
    }
}

fn read_bounded(path: &Path, max: u64) -> std::io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{len} bytes, more than the {max} allowed"),
        ));
    }
    std::fs::read_to_string(path)
}

/// Revoked members of one consortium (by subject DID), bounded by [`MAX_REVOCATIONS`] and persisted
/// as a JSON array of signed revocations, so a restart remembers them and each entry can be checked
/// again when read back.
#[derive(Debug, Default)]
pub struct RevocationSet {
    by_subject: HashMap<Did, Revocation>,
    path: Option<PathBuf>,
}

/// What became of a revocation handed to [`RevocationSet::insert`].
#[derive(Debug, PartialEq, Eq)]
pub enum RevocationOutcome {
    /// New: now in force (and persisted).
    Added,
    /// The subject was already revoked.
    Known,
}

impl RevocationSet {
    /// Loads the set from `path` (missing file: empty), keeping only entries that verify, come from
    /// one of `issuers` and name `consortium`.
    pub fn load(path: &Path, consortium: &str, issuers: &[Did]) -> Result<Self> {
        let mut set = Self {
            by_subject: HashMap::new(),
            path: Some(path.to_path_buf()),
        };
        let max = (MAX_REVOCATIONS * (MAX_REVOCATION_LEN + 8)) as u64;
        let text = match read_bounded(path, max) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(set),
            Err(e) => return Err(NodeError::io(path, e)),
        };
        let entries: Vec<Revocation> = serde_json::from_str(&text)
            .map_err(|e| NodeError::Config(format!("revocation file {}: {e}", path.display())))?;
        for r in entries.into_iter().take(MAX_REVOCATIONS) {
            if r.verify().is_ok() && r.consortium == consortium && issuers.contains(&r.issuer) {
                set.by_subject.insert(r.subject, r);
            } else {
                tracing::warn!(file = %path.display(), subject = %r.subject, "ignoring an invalid revocation");
            }
        }
        Ok(set)
    }

    /// Whether `subject` is revoked.
    pub fn contains(&self, subject: &Did) -> bool {
        self.by_subject.contains_key(subject)
    }

    /// Number of revoked members.
    pub fn len(&self) -> usize {
        self.by_subject.len()
    }

    /// Whether nobody is revoked.
    pub fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
    }

    /// Adds a revocation the caller already checked, and persists the set. Fails when the set is full
    /// or the file cannot be written (then the revocation is still in force until restart).
    pub fn insert(&mut self, r: Revocation) -> Result<RevocationOutcome> {
        if self.by_subject.contains_key(&r.subject) {
            return Ok(RevocationOutcome::Known);
        }
        if self.by_subject.len() >= MAX_REVOCATIONS {
            return Err(NodeError::Config(format!(
                "the revocation set is full ({MAX_REVOCATIONS} members); revocation of {} refused",
                r.subject
            )));
        }
        self.by_subject.insert(r.subject, r);
        self.save()?;
        Ok(RevocationOutcome::Added)
    }

    fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut list: Vec<&Revocation> = self.by_subject.values().collect();
        list.sort_by_key(|r| (r.issued_at, r.subject.to_string()));
        let json =
            serde_json::to_vec_pretty(&list).map_err(|e| NodeError::Config(e.to_string()))?;
        // Write then rename: a crash leaves the old file or the new one, never half of one.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json).map_err(|e| NodeError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| NodeError::io(path, e))
    }
}

/// The peers admitted to talk to this node, shared with the tasks that serve peers outside the swarm
/// actor (streamed inference). In an open network (no consortium) everyone is admitted.
#[derive(Clone, Debug, Default)]
pub struct Admitted(Option<Arc<RwLock<HashSet<PeerId>>>>);

impl Admitted {
    /// A gate that admits everyone (open network).
    pub fn open() -> Self {
        Self(None)
    }

    /// Whether `peer` may be served.
    pub fn contains(&self, peer: &PeerId) -> bool {
        match &self.0 {
            None => true,
            Some(set) => set.read().map(|s| s.contains(peer)).unwrap_or(false),
        }
    }

    /// Waits until `peer` is admitted, at most `timeout` (a new connection's handshake takes a
    /// round trip; an open network answers at once).
    pub async fn wait_for(&self, peer: &PeerId, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.contains(peer) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(ADMISSION_POLL).await;
        }
    }

    fn set(&self, peer: PeerId, admitted: bool) {
        if let Some(set) = &self.0
            && let Ok(mut s) = set.write()
        {
            if admitted {
                if s.len() < MAX_ADMITTED {
                    s.insert(peer);
                }
            } else {
                s.remove(&peer);
            }
        }
    }
}

/// What the actor must do about a peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Admit it (nothing to do: it is now served, gossiped with and used).
    Admit,
    /// Disconnect and block it, for this reason.
    Expel(String),
}

/// The membership state of a consortium node, owned by the swarm actor: the settings, the
/// revocations, the peers waiting for their handshake, and the admitted set.
#[derive(Debug)]
pub struct Gatekeeper {
    consortium: Arc<Consortium>,
    revocations: RevocationSet,
    /// Peers connected but not yet admitted, with their deadline.
    pending: HashMap<PeerId, Instant>,
    /// Admitted peers and the DID they proved.
    members: HashMap<PeerId, Did>,
    admitted: Admitted,
}

impl Gatekeeper {
    /// Starts from checked settings; loads the revocation set. Fails when this node's own membership
    /// is revoked.
    pub fn new(consortium: Arc<Consortium>, me: &Did) -> Result<Self> {
        let revocations = RevocationSet::load(
            &consortium.revocations_file,
            &consortium.id,
            &consortium.issuers,
        )?;
        if revocations.contains(me) {
            return Err(NodeError::Config(format!(
                "this node's membership ({me}) in consortium `{}` was revoked",
                consortium.id
            )));
        }
        Ok(Self {
            consortium,
            revocations,
            pending: HashMap::new(),
            members: HashMap::new(),
            admitted: Admitted(Some(Arc::default())),
        })
    }

    /// The shared admitted set (for the stream server).
    pub fn admitted(&self) -> Admitted {
        self.admitted.clone()
    }

    /// How long a new peer has to prove membership.
    pub fn handshake_timeout(&self) -> Duration {
        self.consortium.handshake_timeout
    }

    /// The settings.
    pub fn consortium(&self) -> &Consortium {
        &self.consortium
    }

    /// Revoked members.
    pub fn revocations(&self) -> &RevocationSet {
        &self.revocations
    }

    /// What this node presents to a new peer.
    pub fn presentation(&self) -> Presentation {
        Presentation {
            credential: self.consortium.credential.clone(),
        }
    }

    /// Whether `peer` proved its membership.
    pub fn is_admitted(&self, peer: &PeerId) -> bool {
        self.members.contains_key(peer)
    }

    /// A peer connected (first connection): it has until `now + deadline` to prove membership.
    /// `false` when too many handshakes are pending (the caller disconnects it).
    pub fn connected(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.members.contains_key(&peer) || self.pending.contains_key(&peer) {
            return true;
        }
        if self.pending.len() >= MAX_PENDING_HANDSHAKES {
            return false;
        }
        self.pending
            .insert(peer, now + self.consortium.handshake_timeout);
        true
    }

    /// The peer's last connection closed: it must prove membership again when it comes back.
    pub fn disconnected(&mut self, peer: &PeerId) {
        self.pending.remove(peer);
        self.members.remove(peer);
        self.admitted.set(*peer, false);
    }

    /// Judges a credential `peer` presented.
    pub fn presented(&mut self, peer: PeerId, jwt: &str, now: OffsetDateTime) -> Verdict {
        match verify_peer_credential(
            jwt,
            &peer,
            &self.consortium.id,
            &self.consortium.issuers,
            &self.revocations,
            now,
        ) {
            Ok(m) if self.members.len() < MAX_ADMITTED || self.members.contains_key(&peer) => {
                self.pending.remove(&peer);
                self.members.insert(peer, m.subject);
                self.admitted.set(peer, true);
                Verdict::Admit
            }
            Ok(_) => Verdict::Expel("too many members connected".into()),
            Err(e) => {
                self.forget(&peer);
                let mut reason = e.to_string();
                reason.truncate(MAX_REASON_LEN);
                Verdict::Expel(reason)
            }
        }
    }

    /// `peer` does not speak the membership protocol: it cannot prove membership, so it is expelled
    /// at once (instead of at its deadline) unless it already proved itself.
    pub fn cannot_present(&mut self, peer: &PeerId) -> Option<Verdict> {
        if self.members.contains_key(peer) {
            return None;
        }
        self.forget(peer);
        Some(Verdict::Expel(
            "does not speak the membership protocol".into(),
        ))
    }

    /// Peers whose deadline passed without a valid credential (removed from the pending set).
    pub fn overdue(&mut self, now: Instant) -> Vec<PeerId> {
        let late: Vec<PeerId> = self
            .pending
            .iter()
            .filter(|(_, deadline)| **deadline <= now)
            .map(|(p, _)| *p)
            .collect();
        for p in &late {
            self.pending.remove(p);
        }
        late
    }

    /// Handles a revocation received on gossip or submitted locally: checks the signature, that the
    /// issuer is trusted and the consortium is ours, and records it. Returns the revoked subject's
    /// PeerId when the revocation is new (the caller expels it), `None` when already known.
    pub fn revoke(&mut self, r: Revocation) -> std::result::Result<Option<PeerId>, String> {
        r.verify().map_err(|e| e.to_string())?;
        if r.consortium != self.consortium.id {
            return Err(format!(
                "revocation is for consortium `{}`, not `{}`",
                r.consortium, self.consortium.id
            ));
        }
        if !self.consortium.issuers.contains(&r.issuer) {
            return Err(format!(
                "revocation signed by {}, which is not a trusted issuer",
                r.issuer
            ));
        }
        let subject = r.subject;
        let outcome = match self.revocations.insert(r) {
            Ok(o) => o,
            Err(e) => {
                // In force in memory even when it could not be written.
                tracing::error!(error = %e, "revocation not persisted");
                if self.revocations.contains(&subject) {
                    RevocationOutcome::Added
                } else {
                    return Err(e.to_string());
                }
            }
        };
        if outcome == RevocationOutcome::Known {
            return Ok(None);
        }
        let peer = subject.peer_id();
        self.forget(&peer);
        Ok(Some(peer))
    }

    fn forget(&mut self, peer: &PeerId) {
        self.pending.remove(peer);
        self.members.remove(peer);
        self.admitted.set(*peer, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mycel_identity::credential::issue_membership;
    use time::Duration as TimeDuration;

    struct World {
        admin: Keypair,
        member: Keypair,
        now: OffsetDateTime,
    }

    fn world() -> World {
        World {
            admin: Keypair::generate(),
            member: Keypair::generate(),
            now: OffsetDateTime::now_utc(),
        }
    }

    fn did(k: &Keypair) -> Did {
        Did::from_public_key(k.public())
    }

    fn credential(issuer: &Keypair, subject: &Keypair, consortium: &str, w: &World) -> String {
        issue_membership(
            issuer,
            &did(subject),
            consortium,
            w.now - TimeDuration::hours(1),
            w.now + TimeDuration::hours(1),
        )
        .expect("issue")
    }

    #[test]
    fn handshake_verification_checks_every_condition() {
        let w = world();
        let issuers = [did(&Keypair::generate()), did(&w.admin)];
        let none = RevocationSet::default();
        let peer = w.member.peer_id();
        let good = credential(&w.admin, &w.member, "acme", &w);
        let m = verify_peer_credential(&good, &peer, "acme", &issuers, &none, w.now)
            .expect("valid member");
        assert_eq!(m.subject, did(&w.member));

        // Someone else's credential replayed by another peer.
        let thief = Keypair::generate().peer_id();
        assert!(matches!(
            verify_peer_credential(&good, &thief, "acme", &issuers, &none, w.now),
            Err(MembershipError::Credential(
                CredentialError::WrongSubject { .. }
            ))
        ));
        // Another consortium.
        assert!(matches!(
            verify_peer_credential(&good, &peer, "other", &issuers, &none, w.now),
            Err(MembershipError::Credential(
                CredentialError::WrongConsortium { .. }
            ))
        ));
        // An untrusted issuer.
        let rogue = credential(&Keypair::generate(), &w.member, "acme", &w);
        assert!(matches!(
            verify_peer_credential(&rogue, &peer, "acme", &issuers, &none, w.now),
            Err(MembershipError::UntrustedIssuer(_))
        ));
        // Expired.
        assert!(matches!(
            verify_peer_credential(
                &good,
                &peer,
                "acme",
                &issuers,
                &none,
                w.now + TimeDuration::hours(2)
            ),
            Err(MembershipError::Credential(CredentialError::Expired { .. }))
        ));
        // Tampered.
        let mut bad = good.clone().into_bytes();
        let last = bad.len() - 3;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        let bad = String::from_utf8(bad).expect("ascii");
        assert!(matches!(
            verify_peer_credential(&bad, &peer, "acme", &issuers, &none, w.now),
            Err(MembershipError::Credential(
                CredentialError::BadSignature | CredentialError::Malformed(_)
            ))
        ));
        // Revoked.
        let mut revoked = RevocationSet::default();
        let r = Revocation::sign(&w.admin, &did(&w.member), "acme", 1).expect("sign");
        assert_eq!(revoked.insert(r).expect("insert"), RevocationOutcome::Added);
        assert!(matches!(
            verify_peer_credential(&good, &peer, "acme", &issuers, &revoked, w.now),
            Err(MembershipError::Revoked(_))
        ));
    }

    fn config(dir: &Path, w: &World, jwt: &str) -> ConsortiumConfig {
        let credential = dir.join("member.jwt");
        std::fs::write(&credential, jwt).expect("write");
        ConsortiumConfig {
            id: "acme".into(),
            trusted_issuers: vec![did(&w.admin).to_string()],
            credential,
            psk: None,
            revocations: dir.join("revocations.json"),
            handshake_timeout_secs: 10,
        }
    }

    #[test]
    fn own_credential_is_checked_at_start() {
        let w = world();
        let dir = tempfile::tempdir().expect("tempdir");
        let good = credential(&w.admin, &w.member, "acme", &w);
        Consortium::load(&config(dir.path(), &w, &good), &w.member, w.now).expect("usable");

        let expired = config(dir.path(), &w, &good);
        let e = Consortium::load(&expired, &w.member, w.now + TimeDuration::days(1))
            .expect_err("expired");
        assert!(e.to_string().contains("expired"), "{e}");
        let e = Consortium::load(&config(dir.path(), &w, &good), &Keypair::generate(), w.now)
            .expect_err("another DID");
        assert!(e.to_string().contains("is for"), "{e}");
        let other = credential(&w.admin, &w.member, "other", &w);
        let e = Consortium::load(&config(dir.path(), &w, &other), &w.member, w.now)
            .expect_err("another consortium");
        assert!(e.to_string().contains("consortium"), "{e}");
        let rogue = credential(&Keypair::generate(), &w.member, "acme", &w);
        let e = Consortium::load(&config(dir.path(), &w, &rogue), &w.member, w.now)
            .expect_err("untrusted issuer");
        assert!(e.to_string().contains("not a trusted issuer"), "{e}");
        let mut missing = config(dir.path(), &w, &good);
        missing.credential = dir.path().join("nope.jwt");
        let e = Consortium::load(&missing, &w.member, w.now).expect_err("missing");
        assert!(e.to_string().contains("nope.jwt"), "{e}");

        // A pnet key file in the go-libp2p format; a bad one is refused without echoing it.
        let mut with_psk = config(dir.path(), &w, &good);
        let key_file = dir.path().join("swarm.key");
        std::fs::write(&key_file, PreSharedKey::new([7; 32]).to_key_file()).expect("write");
        with_psk.psk = Some(key_file.clone());
        let c = Consortium::load(&with_psk, &w.member, w.now).expect("psk");
        assert_eq!(c.psk(), Some(PreSharedKey::new([7; 32])));
        std::fs::write(&key_file, "/key/swarm/psk/1.0.0/\n/base16/\nzz").expect("write");
        assert!(Consortium::load(&with_psk, &w.member, w.now).is_err());
    }

    #[test]
    fn gatekeeper_admits_expels_and_remembers_revocations() {
        let w = world();
        let dir = tempfile::tempdir().expect("tempdir");
        let own = credential(&w.admin, &w.member, "acme", &w);
        let cfg = config(dir.path(), &w, &own);
        let load = || {
            Gatekeeper::new(
                Arc::new(Consortium::load(&cfg, &w.member, w.now).expect("load")),
                &did(&w.member),
            )
        };
        let mut gate = load().expect("gate");
        let peer_key = Keypair::generate();
        let peer = peer_key.peer_id();
        let t0 = Instant::now();
        assert!(gate.connected(peer, t0));
        assert!(!gate.is_admitted(&peer));
        assert!(!gate.admitted().contains(&peer));
        assert!(gate.overdue(t0).is_empty());
        let jwt = credential(&w.admin, &peer_key, "acme", &w);
        assert_eq!(gate.presented(peer, &jwt, w.now), Verdict::Admit);
        assert!(gate.is_admitted(&peer) && gate.admitted().contains(&peer));
        assert!(gate.overdue(t0 + Duration::from_secs(60)).is_empty());

        // A silent peer misses its deadline.
        let silent = Keypair::generate().peer_id();
        assert!(gate.connected(silent, t0));
        assert_eq!(gate.overdue(t0 + Duration::from_secs(11)), vec![silent]);

        // Revocation: untrusted issuers and other consortia are refused; a trusted one expels.
        let rogue =
            Revocation::sign(&Keypair::generate(), &did(&peer_key), "acme", 1).expect("test setup");
        assert!(gate.revoke(rogue).is_err());
        let elsewhere =
            Revocation::sign(&w.admin, &did(&peer_key), "other", 1).expect("test setup");
        assert!(gate.revoke(elsewhere).is_err());
        let r = Revocation::sign(&w.admin, &did(&peer_key), "acme", 1).expect("test setup");
        assert_eq!(gate.revoke(r.clone()), Ok(Some(peer)));
        assert!(!gate.admitted().contains(&peer));
        assert_eq!(gate.revoke(r), Ok(None));
        assert!(
            matches!(gate.presented(peer, &jwt, w.now), Verdict::Expel(m) if m.contains("revoked"))
        );

        // A restart remembers; revoking this node itself stops it from starting.
        let gate = load().expect("restart");
        assert!(gate.revocations().contains(&did(&peer_key)));
        let me = Revocation::sign(&w.admin, &did(&w.member), "acme", 2).expect("test setup");
        let mut set =
            RevocationSet::load(&cfg.revocations, "acme", &[did(&w.admin)]).expect("test setup");
        set.insert(me).expect("test setup");
        assert!(
            load()
                .expect_err("own membership revoked")
                .to_string()
                .contains("revoked")
        );
    }
}
