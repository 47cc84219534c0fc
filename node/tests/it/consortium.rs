//! Consortium mode through real nodes on loopback: members mesh and chat; non-members, expired and
//! rogue credentials are cut off and never used or served; pnet keeps keyless nodes out; a revocation
//! spreads by gossip and survives a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::pnet::PreSharedKey;
use mycel_identity::credential::issue_membership;
use mycel_identity::revocation::Revocation;
use mycel_identity::{Did, Keypair};
use mycel_node::config::{Config, ConsortiumConfig, TINY_MODEL_ID};
use mycel_node::{RunningNode, StartOptions, models};
use serde_json::json;
use tempfile::TempDir;
use time::OffsetDateTime;

use crate::harness::{post, url};

const CONSORTIUM: &str = "acme";

fn did(k: &Keypair) -> Did {
    Did::from_public_key(k.public())
}

/// A member-to-be: key, data dir, credential.
struct Member {
    key: Keypair,
    dir: TempDir,
}

impl Member {
    /// A node key with a credential from `issuer`, valid from an hour ago for `valid_for`.
    fn new(issuer: &Keypair, valid_for: time::Duration) -> Self {
        let key = Keypair::generate();
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let jwt = issue_membership(
            issuer,
            &did(&key),
            CONSORTIUM,
            now - time::Duration::hours(1),
            now + valid_for,
        )
        .unwrap();
        std::fs::write(dir.path().join("member.jwt"), jwt).unwrap();
        Self { key, dir }
    }

    fn config(
        &self,
        trusted: &[&Keypair],
        psk: Option<PreSharedKey>,
        bootstrap: Vec<String>,
    ) -> Config {
        let psk = psk.map(|k| {
            let path = self.dir.path().join("swarm.key");
            std::fs::write(&path, k.to_key_file()).unwrap();
            path
        });
        Config {
            consortium: Some(ConsortiumConfig {
                id: CONSORTIUM.into(),
                trusted_issuers: trusted.iter().map(|k| did(k).to_string()).collect(),
                credential: self.dir.path().join("member.jwt"),
                psk,
                revocations: self.dir.path().join("revocations.json"),
                handshake_timeout_secs: 2,
            }),
            ..Config::loopback(bootstrap)
        }
    }

    fn peer(&self) -> libp2p::PeerId {
        self.key.peer_id()
    }
}

async fn start(key: &Keypair, config: Config, serve_tiny: bool) -> mycel_node::Result<RunningNode> {
    let mut served = BTreeMap::new();
    if serve_tiny {
        let tiny = models::load(TINY_MODEL_ID, Path::new("/nonexistent"), |_| {}).unwrap();
        served.insert(TINY_MODEL_ID.to_string(), Arc::new(tiny));
    }
    RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: key.clone(),
        config,
        models: served,
        info_file: None,
        ledger: None,
    })
    .await
}

fn addr(n: &RunningNode) -> String {
    n.node.listen_addrs()[0].to_string()
}

async fn peer_ids(n: &RunningNode) -> Vec<libp2p::PeerId> {
    n.node
        .network()
        .peers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.peer_id)
        .collect()
}

/// Waits until `n` lists every peer of `want` as an admitted peer.
async fn wait_for_peers(n: &RunningNode, want: &[libp2p::PeerId], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let have = peer_ids(n).await;
        if want.iter().all(|p| have.contains(p)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "peers {want:?} never admitted; have {have:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks `n` for a chat on `tiny`; returns (status, served_by).
async fn chat(n: &RunningNode, prompt: &str) -> (u16, Option<String>) {
    let body = json!({
        "model": TINY_MODEL_ID,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 8,
        "temperature": 0.8,
    });
    let r = post(url(n, "/v1/chat/completions"), body.to_string()).await;
    (r.status, r.served_by)
}

/// Retries a chat until it is served (the provider's heartbeat or DHT record may lag at start).
async fn chat_until_served(n: &RunningNode, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut i = 0;
    loop {
        i += 1;
        let (status, by) = chat(n, &format!("hello {i}")).await;
        if status == 200 {
            return by.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "chat never served (last status {status})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_form_a_mesh_and_answer_chat_across_it() {
    let admin = Keypair::generate();
    let (ma, mb, mc) = (
        Member::new(&admin, time::Duration::days(1)),
        Member::new(&admin, time::Duration::days(1)),
        Member::new(&admin, time::Duration::days(1)),
    );
    let a = start(&ma.key, ma.config(&[&admin], None, vec![]), true)
        .await
        .unwrap();
    let b = start(&mb.key, mb.config(&[&admin], None, vec![addr(&a)]), false)
        .await
        .unwrap();
    let c = start(&mc.key, mc.config(&[&admin], None, vec![addr(&b)]), false)
        .await
        .unwrap();
    wait_for_peers(&b, &[ma.peer(), mc.peer()], Duration::from_secs(10)).await;
    wait_for_peers(&a, &[mb.peer()], Duration::from_secs(10)).await;

    let a_did = did(&ma.key).to_string();
    // C knows only B: it finds A through B (heartbeats or the DHT), proves membership to A and is served.
    assert_eq!(chat_until_served(&c, Duration::from_secs(20)).await, a_did);
    assert_eq!(chat_until_served(&b, Duration::from_secs(10)).await, a_did);
    wait_for_peers(&a, &[mb.peer(), mc.peer()], Duration::from_secs(5)).await;
    for n in [c, b, a] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_members_are_cut_off_never_used_nor_served() {
    let admin = Keypair::generate();
    let rogue_admin = Keypair::generate();
    let (ma, mb) = (
        Member::new(&admin, time::Duration::days(1)),
        Member::new(&admin, time::Duration::days(1)),
    );
    let a = start(&ma.key, ma.config(&[&admin], None, vec![]), true)
        .await
        .unwrap();
    let b = start(&mb.key, mb.config(&[&admin], None, vec![addr(&a)]), false)
        .await
        .unwrap();
    wait_for_peers(&b, &[ma.peer()], Duration::from_secs(10)).await;

    // X serves tiny with a credential from an issuer the members do not trust.
    let mx = Member::new(&rogue_admin, time::Duration::days(1));
    let x = start(
        &mx.key,
        mx.config(&[&rogue_admin], None, vec![addr(&a), addr(&b)]),
        true,
    )
    .await
    .unwrap();
    // Y runs an open node (no credential at all).
    let ky = Keypair::generate();
    let y = start(&ky, Config::loopback(vec![addr(&a), addr(&b)]), false)
        .await
        .unwrap();
    // Z holds a credential that expires three seconds from now.
    let mz = Member::new(&admin, time::Duration::seconds(3));
    let z = start(&mz.key, mz.config(&[&admin], None, vec![]), false)
        .await
        .unwrap();

    // Once expired, the same credential no longer starts a node.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let refused = start(&mz.key, mz.config(&[&admin], None, vec![]), false).await;
    let err = refused
        .expect_err("an expired own credential must stop start-up")
        .to_string();
    assert!(err.contains("expired"), "{err}");
    // Z, still running, now presents an expired credential.
    z.node
        .network()
        .dial(a.node.listen_addrs()[0].clone())
        .await
        .unwrap();

    // B's answers always come from A, never from X.
    let a_did = did(&ma.key).to_string();
    for _ in 0..4 {
        assert_eq!(chat_until_served(&b, Duration::from_secs(10)).await, a_did);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in [&a, &b] {
        let have = peer_ids(n).await;
        for intruder in [mx.peer(), ky.peer_id(), mz.peer()] {
            assert!(!have.contains(&intruder), "{intruder} admitted: {have:?}");
        }
    }
    // The intruders are blocked: Y has nobody left to ask, and A serves it nothing.
    assert!(peer_ids(&y).await.is_empty(), "Y still connected");
    let (status, _) = chat(&y, "anyone?").await;
    assert_ne!(status, 200);
    assert!(peer_ids(&z).await.is_empty(), "Z still connected");
    for n in [x, y, z, b, a] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pnet_keeps_nodes_without_the_key_out() {
    let admin = Keypair::generate();
    let psk = PreSharedKey::new(rand::random());
    let (ma, mb, mc) = (
        Member::new(&admin, time::Duration::days(1)),
        Member::new(&admin, time::Duration::days(1)),
        Member::new(&admin, time::Duration::days(1)),
    );
    let a = start(&ma.key, ma.config(&[&admin], Some(psk), vec![]), true)
        .await
        .unwrap();
    let b = start(
        &mb.key,
        mb.config(&[&admin], Some(psk), vec![addr(&a)]),
        false,
    )
    .await
    .unwrap();
    // C is a member but lacks the network key; D has another key.
    let c = start(&mc.key, mc.config(&[&admin], None, vec![addr(&a)]), false)
        .await
        .unwrap();
    let md = Member::new(&admin, time::Duration::days(1));
    let other = PreSharedKey::new(rand::random());
    let d = start(
        &md.key,
        md.config(&[&admin], Some(other), vec![addr(&a)]),
        false,
    )
    .await
    .unwrap();

    assert_eq!(
        chat_until_served(&b, Duration::from_secs(15)).await,
        did(&ma.key).to_string()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for outsider in [&c, &d] {
        assert!(peer_ids(outsider).await.is_empty());
        let (status, _) = chat(outsider, "let me in").await;
        assert_ne!(status, 200);
    }
    let have = peer_ids(&a).await;
    assert!(
        !have.contains(&mc.peer()) && !have.contains(&md.peer()),
        "{have:?}"
    );
    for n in [d, c, b, a] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_cuts_a_member_off_everywhere_and_survives_a_restart() {
    let admin = Keypair::generate();
    let (ma, mb, mc) = (
        Member::new(&admin, time::Duration::days(1)),
        Member::new(&admin, time::Duration::days(1)),
        Member::new(&admin, time::Duration::days(1)),
    );
    let a = start(&ma.key, ma.config(&[&admin], None, vec![]), true)
        .await
        .unwrap();
    let b = start(&mb.key, mb.config(&[&admin], None, vec![addr(&a)]), false)
        .await
        .unwrap();
    let c = start(
        &mc.key,
        mc.config(&[&admin], None, vec![addr(&a), addr(&b)]),
        false,
    )
    .await
    .unwrap();
    wait_for_peers(&a, &[mb.peer(), mc.peer()], Duration::from_secs(10)).await;
    wait_for_peers(&b, &[ma.peer(), mc.peer()], Duration::from_secs(10)).await;
    assert_eq!(
        chat_until_served(&c, Duration::from_secs(15)).await,
        did(&ma.key).to_string()
    );
    // Let gossipsub build its mesh on the membership topic.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A revocation signed by someone else is refused.
    let forged = Revocation::sign(&Keypair::generate(), &did(&mc.key), CONSORTIUM, 1).unwrap();
    let rpc = |params: serde_json::Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": "mycel_revokeMembership", "params": [params]})
            .to_string()
    };
    let r = post(url(&b, "/"), rpc(serde_json::to_value(&forged).unwrap()))
        .await
        .json();
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a trusted issuer"),
        "{r}"
    );

    // The admin's revocation, submitted to B, reaches A by gossip.
    let revocation = Revocation::sign(&admin, &did(&mc.key), CONSORTIUM, 1).unwrap();
    let started = Instant::now();
    let r = post(
        url(&b, "/"),
        rpc(serde_json::to_value(&revocation).unwrap()),
    )
    .await
    .json();
    assert_eq!(r["result"]["status"], "applied", "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer_ids(&a).await.contains(&mc.peer()) || peer_ids(&b).await.contains(&mc.peer()) {
        assert!(
            Instant::now() < deadline,
            "C still connected after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "revoked member dropped everywhere in {:?}",
        started.elapsed()
    );
    let (status, _) = chat(&c, "still there?").await;
    assert_ne!(status, 200);

    // A restarts with the same data: it still refuses C.
    a.shutdown().await;
    let a = start(&ma.key, ma.config(&[&admin], None, vec![]), true)
        .await
        .unwrap();
    c.node
        .network()
        .dial(a.node.listen_addrs()[0].clone())
        .await
        .unwrap();
    b.node
        .network()
        .dial(a.node.listen_addrs()[0].clone())
        .await
        .unwrap();
    wait_for_peers(&a, &[mb.peer()], Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!peer_ids(&a).await.contains(&mc.peer()));
    assert!(
        peer_ids(&c).await.is_empty(),
        "C reconnected after the restart"
    );
    for n in [c, b, a] {
        n.shutdown().await;
    }
}
