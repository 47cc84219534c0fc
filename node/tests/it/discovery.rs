//! Signed DID → PeerId records in the DHT: a node two hops away finds where a DID's holder listens.

use std::time::{Duration, Instant};

use mycel_identity::{Did, Keypair};
use serde_json::{Value, json};

use crate::harness::{post, start_forwarder, start_provider, url};

async fn find_peer(node: &mycel_node::RunningNode, did: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "mycel_findPeer", "params": [did]});
    post(url(node, "/"), body.to_string()).await.json()
}

/// A node serving nothing, with a fresh key and no ledger.
async fn start(config: mycel_node::config::Config) -> mycel_node::Result<mycel_node::RunningNode> {
    mycel_node::RunningNode::start(mycel_node::StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: Keypair::generate(),
        config,
        models: Default::default(),
        info_file: None,
        ledger: None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_did_resolves_to_its_nodes_addresses_through_the_dht() {
    let a = start_provider().await;
    let b = start_forwarder(&a).await;
    let c = start_forwarder(&b).await;
    let did = a.node.did().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        let v = find_peer(&c, &did).await;
        if !v["result"].is_null() {
            break v["result"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no record of A found from C: {v}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(record["did"], did.as_str());
    assert_eq!(record["peer_id"], a.node.peer_id().to_base58());
    let addrs: Vec<&str> = record["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let listening = a.node.listen_addrs()[0].to_string();
    assert!(
        addrs.contains(&listening.as_str()),
        "{addrs:?} lacks {listening}"
    );

    // Nobody holds a record for a fresh DID; a malformed DID is invalid params.
    let stranger = Did::from_public_key(Keypair::generate().public()).to_string();
    assert!(find_peer(&c, &stranger).await["result"].is_null());
    assert_eq!(
        find_peer(&c, "did:web:example").await["error"]["code"],
        -32602
    );
    for n in [c, b, a] {
        n.shutdown().await;
    }
}

/// Circuit relay v2: R relays; A listens through R (a reservation); B, who only knows A's relayed
/// address, connects to A through R.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_reachable_through_a_relay() {
    use mycel_node::config::Config;
    let mut relay_cfg = Config::loopback(Vec::new());
    relay_cfg.relay_server = true;
    let r = start(relay_cfg).await.unwrap();
    let r_addr = r.node.listen_addrs()[0].to_string();
    let mut a_cfg = Config::loopback(vec![r_addr.clone()]);
    a_cfg.listen.push(format!("{r_addr}/p2p-circuit"));
    let a = start(a_cfg).await.unwrap();
    let via_relay = format!("{r_addr}/p2p-circuit/p2p/{}", a.node.peer_id());
    // A's reservation on R takes a moment; B dials A's relayed address until it connects.
    let deadline = Instant::now() + Duration::from_secs(30);
    let b = start(Config::loopback(Vec::new())).await.unwrap();
    loop {
        let _ = b.node.network().dial(via_relay.parse().unwrap()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let peers = b.node.peers().await.unwrap();
        if let Some(p) = peers
            .iter()
            .find(|p| p.peer_id == a.node.peer_id().to_base58())
        {
            assert!(
                p.addrs.iter().any(|a| a.contains("/p2p-circuit")),
                "B reached A, but not through the relay: {p:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "B never reached A through R");
    }
    for n in [b, a, r] {
        n.shutdown().await;
    }
}

/// Connection management: a hub that keeps a shortlist of 2 and a random pool of 1 closes the
/// connections beyond them (its bootstrap peer is kept besides; DHT queries may open new ones, which
/// the next heartbeat closes again); the leaves, below their own targets, dial each other from the
/// DHT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_keeps_its_shortlist_and_random_pool() {
    use mycel_node::RunningNode;
    use mycel_node::config::Config;
    let seed = start(Config::loopback(Vec::new())).await.unwrap();
    let seed_addr = seed.node.listen_addrs()[0].to_string();
    let mut hub_cfg = Config::loopback(vec![seed_addr]);
    (hub_cfg.shortlist_peers, hub_cfg.random_peers) = (2, 1);
    let hub = start(hub_cfg).await.unwrap();
    let hub_addr = hub.node.listen_addrs()[0].to_string();
    let mut leaves = Vec::new();
    for _ in 0..6 {
        leaves.push(
            start(Config::loopback(vec![hub_addr.clone()]))
                .await
                .unwrap(),
        );
    }
    let count = |n: &RunningNode| {
        let n = n.node.clone();
        async move { n.peers().await.unwrap().len() }
    };
    let pruned = || {
        let text = hub.node.metrics().encode();
        text.lines()
            .find_map(|l| l.strip_prefix("mycel_peers_pruned_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("the pruning counter")
    };
    // Seven peers dial the hub: within a few heartbeats it closed at least three and is down to
    // 2 + 1 + its bootstrap peer.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pruned() < 3.0 || count(&hub).await > 4 {
        assert!(
            Instant::now() < deadline,
            "the hub kept {} peers, closed {}",
            count(&hub).await,
            pruned()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peers = hub.node.peers().await.unwrap();
    assert!(
        peers
            .iter()
            .any(|p| p.peer_id == seed.node.peer_id().to_base58()),
        "the bootstrap peer is kept: {peers:?}"
    );
    // The leaves learned of each other through the hub's DHT and connected among themselves.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut meshed = true;
        for l in &leaves {
            meshed &= count(l).await >= 2;
        }
        if meshed {
            break;
        }
        assert!(Instant::now() < deadline, "leaves stayed isolated");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for n in leaves.into_iter().chain([hub, seed]) {
        n.shutdown().await;
    }
}
