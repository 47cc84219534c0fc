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
