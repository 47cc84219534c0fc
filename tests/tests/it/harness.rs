//! The TestNet harness: nodes start and answer, die and come back with the same identity, split and
//! heal, a slowed link changes which provider a forwarder picks, and a net with a ledger confirms a
//! wallet's sends on every node, restarted and late-joining ones included.

use std::collections::BTreeSet;
use std::time::Duration;

use mycel_ledger::{BlockHash, Credits};
use mycel_tests::client::{Api, Outcome};
use mycel_tests::ledger::SimWallet;
use mycel_tests::testnet::{LedgerSetup, Stakers};
use mycel_tests::{NetOptions, Role, TestNet, Topology};

const WAIT: Duration = Duration::from_secs(30);
const ASK: Duration = Duration::from_secs(30);

/// Asks node `at` through `api` and returns the index of the node that served the answer.
async fn served_by(net: &TestNet, at: usize, api: Api, seed: u64) -> usize {
    let q = TestNet::tiny_query("hello there", seed);
    let out = net.ask(at, api, &q, ASK).await.unwrap();
    let Outcome::Answered(a) = out else {
        panic!("node {at} via {api:?}: {out:?}")
    };
    assert!(!a.finish_reason.is_empty());
    net.index_of_did(&a.served_by)
        .unwrap_or_else(|| panic!("answer served by an unknown DID {}", a.served_by))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_gets_answers_from_providers_through_every_interface() {
    let net = TestNet::start(
        3,
        NetOptions {
            forwarders: 1,
            ..NetOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(net.role(2).unwrap(), Role::Forwarder);
    net.wait_connected(WAIT).await.unwrap();
    net.wait_covered(2, WAIT).await.unwrap();
    for (k, api) in Api::ALL.into_iter().enumerate() {
        let by = served_by(&net, 2, api, k as u64).await;
        assert_eq!(net.role(by).unwrap(), Role::Provider, "{api:?}");
    }
    // The node wrote its info file into its own data directory.
    let info = std::fs::read_to_string(net.data_dir(2).unwrap().join("node.json")).unwrap();
    assert!(info.contains(&net.did(2).unwrap().to_string()));
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_provider_is_failed_over_and_restarts_with_its_identity() {
    let mut net = TestNet::start(
        3,
        NetOptions {
            forwarders: 1,
            ..NetOptions::default()
        },
    )
    .await
    .unwrap();
    let f = 2;
    net.wait_covered(2, WAIT).await.unwrap();
    let victim = served_by(&net, f, Api::OpenAi, 1).await;
    let other = 1 - victim;
    let did_before = net.did(victim).unwrap().to_string();

    net.kill(victim).await.unwrap();
    assert!(!net.is_live(victim));
    // Every interface still answers, from the surviving provider.
    for (k, api) in Api::ALL.into_iter().enumerate() {
        assert_eq!(
            served_by(&net, f, api, 10 + k as u64).await,
            other,
            "{api:?}"
        );
    }
    net.wait_until(
        "the forwarder to drop the dead provider",
        WAIT,
        async |net| {
            net.providers_seen(f)
                .await
                .is_ok_and(|seen| seen == vec![other])
        },
    )
    .await
    .unwrap();

    net.restart(victim).await.unwrap();
    assert_eq!(net.starts(victim).unwrap(), 2);
    let info = net
        .rpc(victim, "mycel_nodeInfo", serde_json::json!([]))
        .await
        .unwrap();
    assert_eq!(info["did"], did_before, "same key after a restart");
    net.wait_covered(2, WAIT).await.unwrap();

    // With the other provider stopped cleanly, the restarted one serves, under its old DID.
    net.stop(other).await.unwrap();
    for (k, api) in Api::ALL.into_iter().enumerate() {
        assert_eq!(
            served_by(&net, f, api, 20 + k as u64).await,
            victim,
            "{api:?}"
        );
    }
    assert!(matches!(
        net.restart(f).await,
        Err(mycel_tests::Error::AlreadyRunning(2))
    ));
    assert!(matches!(
        net.node(other),
        Err(mycel_tests::Error::NotRunning(_))
    ));
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_splits_the_net_and_healing_joins_it_again() {
    // Providers 0..4, forwarders 4 and 5; each side gets two providers and a forwarder.
    let net = TestNet::start(
        6,
        NetOptions {
            forwarders: 2,
            ..NetOptions::default()
        },
    )
    .await
    .unwrap();
    let (a, b) = ([0, 1, 4], [2, 3, 5]);
    net.wait_connected(WAIT).await.unwrap();

    net.partition(&a, &b).await.unwrap();
    let apart = async |net: &TestNet| {
        for (side, other) in [(&a[..], &b[..]), (&b[..], &a[..])] {
            for &x in side {
                let Ok(peers) = net.connected_to(x).await else {
                    return false;
                };
                if peers.iter().any(|p| other.contains(p)) {
                    return false;
                }
            }
        }
        true
    };
    net.wait_until("the halves to drop each other", WAIT, apart)
        .await
        .unwrap();
    // Each forwarder is answered by its own side only, and the halves stay apart (the DHT and
    // gossip would reconnect them within seconds if the block did not hold).
    for k in 0..4 {
        assert!(a.contains(&served_by(&net, 4, Api::ALL[k], k as u64).await));
        assert!(b.contains(&served_by(&net, 5, Api::ALL[k], k as u64).await));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(apart(&net).await, "the partition leaked");

    net.heal(&a, &b).await.unwrap();
    net.wait_connected(WAIT).await.unwrap();
    for x in 0..6 {
        assert_eq!(net.connected_to(x).await.unwrap().len(), 5, "node {x}");
    }
    // Both sides' providers serve the forwarder of side A again.
    let mut seen = BTreeSet::new();
    for k in 0..4 {
        net.wait_covered(4, WAIT).await.unwrap();
        seen.extend(net.providers_seen(4).await.unwrap());
        seen.insert(served_by(&net, 4, Api::OpenAi, 100 + k).await);
    }
    assert!(seen.iter().any(|p| b.contains(p)), "{seen:?}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_link_shows_in_the_round_trip_and_the_fast_provider_is_chosen() {
    const DELAY: Duration = Duration::from_millis(150);
    let mut net = TestNet::start(
        3,
        NetOptions {
            forwarders: 1,
            topology: Topology::Isolated,
            ..NetOptions::default()
        },
    )
    .await
    .unwrap();
    let (slow, fast, f) = (0, 1, 2);
    net.delay_link(f, slow, DELAY).await.unwrap();
    net.connect(f, fast).await.unwrap();
    net.wait_covered(2, WAIT).await.unwrap();
    let rtts = async |net: &TestNet| {
        let peers = net.peers(f).await.unwrap_or_default();
        let rtt = |i: usize| {
            let id = net.peer_id(i).ok()?;
            peers.iter().find(|p| p.peer_id == id)?.rtt
        };
        (rtt(slow), rtt(fast))
    };
    net.wait_until("both round trips to be measured", WAIT, async |net| {
        matches!(rtts(net).await, (Some(_), Some(_)))
    })
    .await
    .unwrap();
    let (Some(slow_rtt), Some(fast_rtt)) = rtts(&net).await else {
        panic!("round trips vanished")
    };
    assert!(slow_rtt >= 2 * DELAY, "slow link rtt {slow_rtt:?}");
    assert!(
        fast_rtt + DELAY < slow_rtt,
        "fast {fast_rtt:?} vs slow {slow_rtt:?}"
    );
    for k in 0..3 {
        assert_eq!(served_by(&net, f, Api::OpenAi, k).await, fast);
    }
    net.shutdown().await;
}

/// Waits until every live node holds each of `blocks` confirmed.
async fn confirmed_on_every_live_node(net: &TestNet, blocks: &[BlockHash]) {
    let what = format!("{} blocks confirmed on every live node", blocks.len());
    net.wait_until(&what, WAIT, async |net| {
        for i in net.live() {
            for h in blocks {
                match net.ledger_block(i, h).await {
                    Ok(Some(b)) if b.confirmed => {}
                    _ => return false,
                }
            }
        }
        true
    })
    .await
    .unwrap();
}

/// The state roots of the live nodes, in index order.
async fn roots(net: &TestNet) -> Vec<String> {
    let mut out = Vec::new();
    for i in net.live() {
        out.push(net.ledger_info(i).await.unwrap().state_root);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_net_confirms_sends_while_an_unstaked_node_is_down_and_it_and_a_late_joiner_sync()
{
    // Providers 0 and 1, forwarders 2 and 3; only the forwarders are staked.
    let mut net = TestNet::start(
        4,
        NetOptions {
            forwarders: 2,
            ledger: Some(LedgerSetup {
                stakers: Stakers::Forwarders,
                ..LedgerSetup::default()
            }),
            ..NetOptions::default()
        },
    )
    .await
    .unwrap();
    net.wait_connected(WAIT).await.unwrap();
    let genesis = net.genesis().unwrap().clone();
    for i in 0..4 {
        let info = net.ledger_info(i).await.unwrap();
        assert_eq!(info.genesis_hash, hex::encode(genesis.hash()), "node {i}");
        let staked = net.role(i).unwrap() == Role::Forwarder;
        assert_eq!(info.node_weight != "0", staked, "node {i}: {info:?}");
        assert!(net.data_dir(i).unwrap().join("ledger.redb").exists());
    }
    let start_roots = roots(&net).await;
    assert!(
        start_roots.iter().all(|r| *r == start_roots[0]),
        "{start_roots:?}"
    );

    // A send through a provider confirms everywhere.
    let mut wallet = SimWallet::new(net.wallet_key().unwrap().clone(), &genesis).unwrap();
    let mut send = async |net: &TestNet, via: usize| {
        let epoch = net.ledger_info(via).await.unwrap().epoch;
        let block = wallet.next_send(epoch, Credits::whole(5)).unwrap();
        let r = net.ledger_submit(via, &block).await.unwrap();
        assert_eq!(r.status, "applied", "through node {via}");
        assert_eq!(r.hash, block.hash().to_hex());
        wallet.accepted(&block);
        block.hash()
    };
    let first = send(&net, 1).await;
    confirmed_on_every_live_node(&net, &[first]).await;

    // With provider 0 killed, the stakers still confirm. Restarted while the others still refuse
    // it, it holds what its ledger file held and nothing more; once healed, it catches up.
    let (zero, rest) = ([0], [1, 2, 3]);
    net.partition(&zero, &rest).await.unwrap();
    net.kill(0).await.unwrap();
    let second = send(&net, 2).await;
    confirmed_on_every_live_node(&net, &[first, second]).await;
    net.restart(0).await.unwrap();
    let kept = net
        .ledger_block(0, &first)
        .await
        .unwrap()
        .expect("kept in ledger.redb");
    assert!(kept.confirmed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        net.ledger_block(0, &second).await.unwrap().is_none(),
        "isolated, yet it synced"
    );
    net.heal(&zero, &rest).await.unwrap();
    confirmed_on_every_live_node(&net, &[first, second]).await;

    // A late joiner has no stake and no genesis account; it syncs both sends.
    let late = net.add_node(Role::Provider).await.unwrap();
    let late_account = net.account(late).unwrap();
    assert!(!genesis.accounts.iter().any(|a| a.account == late_account.0));
    assert_eq!(net.ledger_info(late).await.unwrap().node_weight, "0");
    confirmed_on_every_live_node(&net, &[first, second]).await;
    // A block submitted through the unstaked joiner reaches the stakers and confirms everywhere.
    let third = send(&net, late).await;
    confirmed_on_every_live_node(&net, &[first, second, third]).await;
    net.wait_until("every live node on one state root", WAIT, async |net| {
        let r = roots(net).await;
        r.iter().all(|x| *x == r[0])
    })
    .await
    .unwrap();
    let end_roots = roots(&net).await;
    assert_eq!(end_roots.len(), 5);
    assert_ne!(
        end_roots[0], start_roots[0],
        "three sends changed the state"
    );
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_net_without_a_ledger_refuses_ledger_calls_and_one_without_stakers_does_not_start() {
    let net = TestNet::start(1, NetOptions::default()).await.unwrap();
    assert!(net.genesis().is_none() && net.wallet_key().is_none());
    assert!(net.ledger_info(0).await.is_err());
    net.shutdown().await;
    // Staking only the forwarders of a net without any leaves the genesis without stake.
    let err = TestNet::start(
        1,
        NetOptions {
            ledger: Some(LedgerSetup {
                stakers: Stakers::Forwarders,
                ..LedgerSetup::default()
            }),
            ..NetOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("stake"), "{err}");
}
