//! Signed DID → PeerId records in the DHT: a node two hops away finds where a DID's holder listens.

use std::time::{Duration, Instant};

use mycel_identity::{Did, Keypair};
use serde_json::{Value, json};

use crate::harness::{post, start_forwarder, start_provider, url};

async fn find_peer(node: &mycel_node::RunningNode, did: &str) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "mycel_findPeer", "params": [did]});
    post(url(node, "/"), body.to_string()).await.json()
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
    use mycel_node::{RunningNode, StartOptions};
    let start = |config: Config| {
        RunningNode::start(StartOptions {
            shards: Default::default(),
            models_dir: None,
            key: Keypair::generate(),
            config,
            models: Default::default(),
            info_file: None,
            ledger: None,
        })
    };
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
