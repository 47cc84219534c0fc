//! `mycel_node::devnet` with five real nodes: a paid, audited query through the gateway moves credits
//! from the requester to the worker and to the validators that signed the verdicts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use mycel_ledger::Credits;
use mycel_node::config::TINY_MODEL_ID;
use mycel_node::devnet::{self, DevnetSpec, NODE_BALANCE};
use mycel_rpc_api::ledger::LedgerApiClient;
use mycel_rpc_api::{ChatMessage, ChatRequest, MycelApiClient};

fn client(url: &str) -> HttpClient {
    HttpClientBuilder::default().build(url).unwrap()
}

async fn liquid(c: &HttpClient, did: &str) -> u128 {
    c.balance(did.to_string())
        .await
        .unwrap()
        .liquid
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_audited_query_on_a_five_node_devnet_moves_credits() {
    let dir = tempfile::tempdir().unwrap();
    let mut params = devnet::devnet_params(3600);
    params.audit_bps = 10_000;
    params.audit_validators = 3;
    let prepared = devnet::prepare(DevnetSpec {
        nodes: 5,
        dir: dir.path().to_path_buf(),
        http_port: 0,
        params,
        ledger_tick: Duration::from_millis(300),
        heartbeat_secs: 1,
        gateway: true,
    })
    .unwrap();
    let tiny = mycel_node::models::load(TINY_MODEL_ID, Path::new("/nonexistent"), |_| {}).unwrap();
    let net = prepared
        .start(BTreeMap::from([(
            TINY_MODEL_ID.to_string(),
            Arc::new(tiny),
        )]))
        .await
        .unwrap();
    assert!(dir.path().join(devnet::DEVNET_FILE).exists());
    let info = net.info.clone();
    let gateway = client(&info.nodes[0].rpc);
    let gw_did = info.nodes[0].did.clone();

    // The gateway learns the providers from their heartbeats.
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway
        .models()
        .await
        .unwrap()
        .iter()
        .all(|m| m.id != TINY_MODEL_ID)
    {
        assert!(
            Instant::now() < deadline,
            "the gateway never saw a provider"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every job is audited by 3 seats; one whose seats mostly fell on the worker or the gateway (who
    // do not judge) stays inconclusive, so ask until one is claimed with verdicts.
    let mut claimed = None;
    'queries: for q in 0..10 {
        let answer = gateway
            .chat(ChatRequest {
                model: Some(TINY_MODEL_ID.into()),
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: format!("Question number {q}"),
                }],
                max_tokens: Some(6),
                temperature: Some(0.0),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(answer.remote, "the gateway serves no model");
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            let hist = gateway
                .history(answer.served_by.clone(), None)
                .await
                .unwrap();
            if let Some(c) = hist.iter().find(|b| {
                b.kind == "claim"
                    && b.confirmed
                    && b.body["verdicts"].as_array().is_some_and(|v| !v.is_empty())
            }) {
                claimed = Some((answer.served_by.clone(), c.body.clone()));
                break 'queries;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (worker, claim) = claimed.expect("no audited job was claimed in 10 queries");
    let signers: Vec<String> = claim["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["signer"].as_str().unwrap().to_string())
        .collect();
    assert!(!signers.contains(&worker) && !signers.contains(&gw_did));

    // After confirmation and the automatic receives: the requester paid, the worker and the
    // validators earned.
    let genesis = Credits::whole(NODE_BALANCE).0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let paid = liquid(&gateway, &gw_did).await < genesis;
        let worker_up = liquid(&gateway, &worker).await > genesis;
        let mut validators_up = true;
        for s in &signers {
            validators_up &= liquid(&gateway, s).await > genesis;
        }
        if paid && worker_up && validators_up {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "credits did not move: requester paid {paid}, worker up {worker_up}, validators up {validators_up}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    net.shutdown().await;
}
