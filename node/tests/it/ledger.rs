//! The ledger on real nodes: blocks submitted through JSON-RPC are gossiped, voted on and confirmed on
//! every node (real redb files, real libp2p); a late joiner syncs and agrees; a restart loses nothing;
//! a double spend ends with one confirmed winner everywhere.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use mycel_identity::{Did, Keypair};
use mycel_ledger::{
    AccountId, Block, BlockBody, BlockHash, ChainView, Credits, Genesis, GenesisAccount, Params,
    Wallet,
};
use mycel_node::config::Config;
use mycel_node::ledger::LedgerOptions;
use mycel_node::{RunningNode, StartOptions};
use mycel_rpc_api::error_codes;
use mycel_rpc_api::ledger::{LedgerApiClient, LedgerInfo};

use crate::harness::url;

/// How long a test waits for a confirmation, claim or slash: generous, because the suite runs on
/// two cores with other multi-node tests (a real-model audit took 18 s there under load); a test
/// that works returns as soon as it sees what it waits for.
const WAIT: Duration = Duration::from_secs(90);

fn id(k: &Keypair) -> AccountId {
    AccountId::from_public_key(&k.public())
}

/// Three staked node accounts and a funded wallet.
struct World {
    nodes: Vec<Keypair>,
    wallet: Keypair,
    genesis: Genesis,
}

fn world() -> World {
    let nodes: Vec<Keypair> = (0..3).map(|_| Keypair::generate()).collect();
    let wallet = Keypair::generate();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut accounts: Vec<GenesisAccount> = nodes
        .iter()
        .map(|k| GenesisAccount {
            account: *k.public().as_bytes(),
            balance: Credits::whole(100),
            stake: Credits::whole(1000),
        })
        .collect();
    accounts.push(GenesisAccount {
        account: *wallet.public().as_bytes(),
        balance: Credits::whole(1000),
        stake: Credits::ZERO,
    });
    let genesis = Genesis {
        network: "mycel-it".into(),
        seed: [5; 32],
        start_time: now.saturating_sub(1),
        accounts,
        params: Params {
            open_work_bits: 8,
            ..Params::default()
        },
    };
    World {
        nodes,
        wallet,
        genesis,
    }
}

async fn start(
    key: &Keypair,
    genesis: &Genesis,
    dir: &Path,
    bootstrap: Vec<String>,
) -> RunningNode {
    start_serving(key, genesis, dir, bootstrap, BTreeMap::new()).await
}

async fn start_serving(
    key: &Keypair,
    genesis: &Genesis,
    dir: &Path,
    bootstrap: Vec<String>,
    models: BTreeMap<String, std::sync::Arc<mycel_models::ChatModel>>,
) -> RunningNode {
    RunningNode::start(StartOptions {
        shards: Default::default(),
        models_dir: None,
        key: key.clone(),
        config: Config::loopback(bootstrap),
        models,
        info_file: None,
        ledger: Some(LedgerOptions {
            genesis: genesis.clone(),
            path: dir.join("ledger.redb"),
            tick: Duration::from_millis(300),
        }),
    })
    .await
    .unwrap()
}

fn client(node: &RunningNode) -> HttpClient {
    HttpClientBuilder::default().build(url(node, "/")).unwrap()
}

/// The chain head of `account` as node `via` reports it, for building the next block.
async fn chain(via: &HttpClient, account: &AccountId) -> Option<ChainView> {
    let a = via.account(account.to_hex()).await.unwrap()?;
    a.open.then(|| ChainView {
        height: a.height,
        frontier: BlockHash::from_hex(&a.frontier).unwrap(),
        epoch: a.epoch,
    })
}

async fn build(via: &HttpClient, key: &Keypair, body: BlockBody) -> Block {
    let info: LedgerInfo = via.info().await.unwrap();
    let view = chain(via, &id(key)).await;
    Wallet::new(key)
        .build(view.as_ref(), info.epoch, body)
        .unwrap()
}

async fn submit(via: &HttpClient, block: &Block) -> String {
    via.submit(hex::encode(block.encode())).await.unwrap().hash
}

/// Waits until every node holds `hash` confirmed.
async fn confirmed_everywhere(clients: &[&HttpClient], hash: &str) {
    let deadline = Instant::now() + WAIT;
    for (i, c) in clients.iter().enumerate() {
        loop {
            let b = c.block(hash.to_string()).await.unwrap();
            if b.as_ref().is_some_and(|b| b.confirmed) {
                break;
            }
            if Instant::now() >= deadline {
                let info = c.info().await.unwrap();
                panic!("block {hash} never confirmed on client {i}: {b:?} {info:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn wait_connected(node: &RunningNode, n: usize) {
    let deadline = Instant::now() + WAIT;
    while node.node.peers().await.unwrap().len() < n {
        assert!(Instant::now() < deadline, "peers never connected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_confirm_everywhere_late_joiner_syncs_and_restart_keeps_them() {
    let w = world();
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(&w.nodes[0], &w.genesis, dirs[0].path(), vec![]).await;
    let boot = vec![a.node.listen_addrs()[0].to_string()];
    let b = start(&w.nodes[1], &w.genesis, dirs[1].path(), boot.clone()).await;
    let mut c = start(&w.nodes[2], &w.genesis, dirs[2].path(), boot.clone()).await;
    wait_connected(&a, 2).await;
    let (ca, cb, mut cc) = (client(&a), client(&b), client(&c));

    // Confirmation notifications over WebSocket on C.
    let ws = jsonrpsee::ws_client::WsClientBuilder::default()
        .build(format!("ws://{}", c.http_addr))
        .await
        .unwrap();
    let mut confirmations = ws.subscribe_confirmations().await.unwrap();

    // The wallet sends 10 credits to a fresh account through B.
    let recipient = Keypair::generate();
    let send = build(
        &cb,
        &w.wallet,
        BlockBody::Send {
            destination: id(&recipient),
            amount: Credits::whole(10),
        },
    )
    .await;
    let send_hash = submit(&cb, &send).await;
    assert_eq!(send_hash, send.hash().to_hex());
    confirmed_everywhere(&[&ca, &cb, &cc], &send_hash).await;
    let note = tokio::time::timeout(WAIT, async {
        loop {
            let n = confirmations.next().await.unwrap().unwrap();
            if n.hash == send_hash {
                break n;
            }
        }
    })
    .await
    .expect("C announced the confirmation");
    assert_eq!(note.kind, "send");
    assert_eq!(
        note.account,
        mycel_identity::Did::from_public_key(w.wallet.public()).to_string()
    );

    // The recipient opens its account by receiving, through C.
    let recv = build(
        &cc,
        &recipient,
        BlockBody::Receive {
            source: send.hash(),
        },
    )
    .await;
    assert!(matches!(recv.body, BlockBody::Open { .. }));
    let recv_hash = submit(&cc, &recv).await;
    confirmed_everywhere(&[&ca, &cb, &cc], &recv_hash).await;
    for cl in [&ca, &cb, &cc] {
        let bal = cl.balance(id(&recipient).to_hex()).await.unwrap();
        assert_eq!(bal.liquid, Credits::whole(10).0.to_string());
        let wb = cl
            .balance(mycel_identity::Did::from_public_key(w.wallet.public()).to_string())
            .await
            .unwrap();
        assert_eq!(wb.liquid, Credits::whole(990).0.to_string());
    }
    let root = ca.info().await.unwrap().state_root;
    assert_eq!(cb.info().await.unwrap().state_root, root);
    assert_eq!(cc.info().await.unwrap().state_root, root);

    // A late joiner with an empty ledger syncs every chain and confirms from the certificates.
    let late_key = Keypair::generate();
    let d = start(&late_key, &w.genesis, dirs[3].path(), boot.clone()).await;
    let cd = client(&d);
    confirmed_everywhere(&[&cd], &recv_hash).await;
    assert_eq!(cd.info().await.unwrap().state_root, root);

    // A restarted node still holds both blocks confirmed, straight from its redb file.
    c.shutdown().await;
    c = start(&w.nodes[2], &w.genesis, dirs[2].path(), boot).await;
    cc = client(&c);
    for h in [&send_hash, &recv_hash] {
        let blk = cc.block(h.to_string()).await.unwrap().expect("kept");
        assert!(blk.confirmed);
    }
    assert_eq!(cc.info().await.unwrap().state_root, root);

    let history = ca.history(id(&recipient).to_hex(), None).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].kind, "open");
    for n in [d, c, b, a] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_spend_ends_with_one_confirmed_winner_everywhere() {
    let w = world();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(&w.nodes[0], &w.genesis, dirs[0].path(), vec![]).await;
    let boot = vec![a.node.listen_addrs()[0].to_string()];
    let b = start(&w.nodes[1], &w.genesis, dirs[1].path(), boot.clone()).await;
    let c = start(&w.nodes[2], &w.genesis, dirs[2].path(), boot).await;
    wait_connected(&a, 2).await;
    let clients = [client(&a), client(&b), client(&c)];

    // Two sends at the same height spending the same credits, to different recipients, submitted to
    // different nodes at once.
    let x = build(
        &clients[0],
        &w.wallet,
        BlockBody::Send {
            destination: id(&Keypair::generate()),
            amount: Credits::whole(900),
        },
    )
    .await;
    let y = build(
        &clients[2],
        &w.wallet,
        BlockBody::Send {
            destination: id(&Keypair::generate()),
            amount: Credits::whole(900),
        },
    )
    .await;
    assert_eq!((x.height, x.previous), (y.height, y.previous));
    let (rx, ry) = tokio::join!(
        clients[0].submit(hex::encode(x.encode())),
        clients[2].submit(hex::encode(y.encode()))
    );
    rx.unwrap();
    ry.unwrap();

    let deadline = Instant::now() + WAIT;
    let winner = loop {
        let mut winners = Vec::new();
        for cl in &clients {
            for h in [x.hash(), y.hash()] {
                if let Some(b) = cl.block(h.to_hex()).await.unwrap()
                    && b.confirmed
                {
                    winners.push(h);
                }
            }
        }
        if winners.len() == 3 {
            assert!(
                winners.iter().all(|h| *h == winners[0]),
                "nodes confirmed different branches: {winners:?}"
            );
            break winners[0];
        }
        assert!(
            Instant::now() < deadline,
            "the fork never settled: {winners:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let loser = if winner == x.hash() {
        y.hash()
    } else {
        x.hash()
    };
    let root = clients[0].info().await.unwrap().state_root;
    for cl in &clients {
        assert!(cl.block(loser.to_hex()).await.unwrap().is_none());
        assert_eq!(cl.info().await.unwrap().state_root, root);
        let bal = cl.balance(id(&w.wallet).to_hex()).await.unwrap();
        assert_eq!(bal.liquid, Credits::whole(100).0.to_string());
    }
    for n in [c, b, a] {
        n.shutdown().await;
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, ClientError>) -> i32 {
    match r {
        Err(ClientError::Call(e)) => e.code(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_blocks_and_missing_ledgers_get_clear_errors() {
    let w = world();
    let dir = tempfile::tempdir().unwrap();
    let a = start(&w.nodes[0], &w.genesis, dir.path(), vec![]).await;
    let ca = client(&a);

    // Overspending, a forged signature, garbage, a bad account name.
    let over = build(
        &ca,
        &w.wallet,
        BlockBody::Send {
            destination: id(&Keypair::generate()),
            amount: Credits::whole(5000),
        },
    )
    .await;
    assert_eq!(
        code(ca.submit(hex::encode(over.encode())).await),
        error_codes::BLOCK_REJECTED
    );
    let good = build(
        &ca,
        &w.wallet,
        BlockBody::Send {
            destination: id(&Keypair::generate()),
            amount: Credits::whole(1),
        },
    )
    .await;
    let mut forged = good.encode();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let c = code(ca.submit(hex::encode(&forged)).await);
    assert!(
        c == error_codes::BLOCK_REJECTED || c == error_codes::INVALID_PARAMS,
        "{c}"
    );
    assert_eq!(
        code(ca.submit("zz".into()).await),
        error_codes::INVALID_PARAMS
    );
    assert_eq!(
        code(ca.balance("did:web:example".into()).await),
        error_codes::INVALID_PARAMS
    );
    // Nothing of that was applied; the good block still is.
    submit(&ca, &good).await;
    assert_eq!(ca.info().await.unwrap().blocks, 1);

    // A node started without a genesis says so.
    let plain = crate::harness::start_provider().await;
    let cp = client(&plain);
    assert_eq!(code(cp.info().await), error_codes::LEDGER_UNAVAILABLE);
    plain.shutdown().await;
    a.shutdown().await;
}

/// A query that B forwards to A is paid: B escrows, A signs a receipt, B countersigns, A claims; after
/// confirmation A holds more credits and B fewer, on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_query_is_paid_through_escrow_receipt_and_claim() {
    use mycel_rpc_api::MycelApiClient;
    let mut w = world();
    // Audits are drawn with probability 1/10⁴ here: an audited job needs validator verdicts, which
    // this test is not about.
    w.genesis.params.audit_bps = 1;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let tiny = mycel_node::models::load(
        mycel_node::config::TINY_MODEL_ID,
        Path::new("/nonexistent"),
        |_| {},
    )
    .unwrap();
    let models = BTreeMap::from([(
        mycel_node::config::TINY_MODEL_ID.to_string(),
        std::sync::Arc::new(tiny),
    )]);
    let a = start_serving(&w.nodes[0], &w.genesis, dirs[0].path(), vec![], models).await;
    let boot = vec![a.node.listen_addrs()[0].to_string()];
    let b = start(&w.nodes[1], &w.genesis, dirs[1].path(), boot.clone()).await;
    let c = start(&w.nodes[2], &w.genesis, dirs[2].path(), boot).await;
    wait_connected(&a, 2).await;
    let (ca, cb, cc) = (client(&a), client(&b), client(&c));

    let answer = cb.chat(greedy("tiny", "Pay me", 8)).await.unwrap();
    assert!(answer.remote);
    // The job names the escrow that pays for it (mycel_jobStatus), a block on B's chain.
    let payment = cb
        .job_status(answer.id.clone())
        .await
        .unwrap()
        .payment
        .expect("a paid job names its escrow");
    assert_eq!(payment.job_id.len(), 64);
    let escrow = cb.block(payment.escrow.clone()).await.unwrap();
    assert_eq!(escrow.expect("the escrow block is known").kind, "escrow");
    let tokens = u128::from(answer.usage.total_tokens);
    // The worker's share is price·(1 − v) whether or not the job is audited (specs/ledger.md §5.4);
    // unaudited, the validators' cut goes back to the requester.
    let price = w.genesis.params.price_per_token.0 * tokens;
    let v = u128::from(w.genesis.params.validator_share_bps);
    let price = price - price * v / 10_000;
    let genesis_liquid = Credits::whole(100).0;

    // Worker paid (liquid up by the price) and requester charged (down by the price, after its
    // refund of the unused escrow is received), on every node, with every block confirmed.
    let (worker, requester) = (id(&w.nodes[0]), id(&w.nodes[1]));
    let deadline = Instant::now() + WAIT;
    loop {
        let mut done = true;
        for cl in [&ca, &cb, &cc] {
            let wb = cl.balance(worker.to_hex()).await.unwrap();
            let rb = cl.balance(requester.to_hex()).await.unwrap();
            done &= wb.liquid == (genesis_liquid + price).to_string()
                && rb.liquid == (genesis_liquid - price).to_string()
                && rb.receivable == "0";
            let hist = cl.history(requester.to_hex(), None).await.unwrap();
            done &= !hist.is_empty() && hist.iter().all(|b| b.confirmed);
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "payment never settled (expected price {price} for {:?}): worker {:?} requester {:?} claims {:?}",
            answer.usage,
            ca.balance(worker.to_hex()).await.unwrap(),
            ca.balance(requester.to_hex()).await.unwrap(),
            ca.history(worker.to_hex(), None)
                .await
                .unwrap()
                .iter()
                .map(|b| b.body.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kinds: Vec<String> = ca
        .history(worker.to_hex(), None)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.kind)
        .collect();
    assert_eq!(kinds, ["claim"]);
    let root = ca.info().await.unwrap().state_root;
    assert_eq!(cb.info().await.unwrap().state_root, root);
    assert_eq!(cc.info().await.unwrap().state_root, root);
    for n in [c, b, a] {
        n.shutdown().await;
    }
}

/// Short epochs: the stake table is re-agreed by Checkpoint blocks every epoch, and blocks keep
/// confirming across the boundaries (votes are re-signed for each new table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_advance_the_epoch_and_sends_still_confirm() {
    let mut w = world();
    w.genesis.params.epoch_secs = 2;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(&w.nodes[0], &w.genesis, dirs[0].path(), vec![]).await;
    let boot = vec![a.node.listen_addrs()[0].to_string()];
    let b = start(&w.nodes[1], &w.genesis, dirs[1].path(), boot.clone()).await;
    let c = start(&w.nodes[2], &w.genesis, dirs[2].path(), boot).await;
    wait_connected(&a, 2).await;
    let clients = [client(&a), client(&b), client(&c)];

    let deadline = Instant::now() + WAIT;
    loop {
        let mut tables = Vec::new();
        for cl in &clients {
            tables.push(cl.info().await.unwrap().table_epoch);
        }
        if tables.iter().all(|t| *t >= 2) {
            break;
        }
        assert!(Instant::now() < deadline, "tables stuck at {tables:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let send = build(
        &clients[1],
        &w.wallet,
        BlockBody::Send {
            destination: id(&Keypair::generate()),
            amount: Credits::whole(1),
        },
    )
    .await;
    let hash = submit(&clients[1], &send).await;
    confirmed_everywhere(&[&clients[0], &clients[1], &clients[2]], &hash).await;
    // Every node ends with the same state (checkpoints posted by several nodes are no-ops).
    let deadline = Instant::now() + WAIT;
    loop {
        let mut roots = Vec::new();
        for cl in &clients {
            let info = cl.info().await.unwrap();
            assert!(info.epoch >= 2);
            roots.push((info.table_epoch, info.state_root));
        }
        if roots.iter().all(|r| *r == roots[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "states differ: {roots:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in [c, b, a] {
        n.shutdown().await;
    }
}

/// Four nodes for audits: A works (tiny, little stake), B is a gateway that pays (no stake, no model),
/// C and D validate (tiny, most of the stake). Every job is audited by 3 seats.
async fn audit_world(
    model_id: &str,
    model: std::sync::Arc<mycel_models::ChatModel>,
) -> (World, Vec<RunningNode>, Vec<tempfile::TempDir>) {
    audit_world_with(model_id, model, |_| {}).await
}

async fn audit_world_with(
    model_id: &str,
    model: std::sync::Arc<mycel_models::ChatModel>,
    tune: impl FnOnce(&mut Params),
) -> (World, Vec<RunningNode>, Vec<tempfile::TempDir>) {
    let mut w = world();
    w.nodes.push(Keypair::generate());
    let stakes = [100u128, 0, 1000, 1000];
    w.genesis.accounts = w
        .nodes
        .iter()
        .zip(stakes)
        .map(|(k, s)| GenesisAccount {
            account: *k.public().as_bytes(),
            balance: Credits::whole(100),
            stake: Credits::whole(s),
        })
        .collect();
    w.genesis.params.audit_bps = 10_000;
    w.genesis.params.audit_validators = 3;
    tune(&mut w.genesis.params);
    let tiny = || BTreeMap::from([(model_id.to_string(), model.clone())]);
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start_serving(&w.nodes[0], &w.genesis, dirs[0].path(), vec![], tiny()).await;
    let boot = vec![a.node.listen_addrs()[0].to_string()];
    let b = start(&w.nodes[1], &w.genesis, dirs[1].path(), boot.clone()).await;
    // C and D hold the model only to judge audits: A is the one provider.
    let c = start(&w.nodes[2], &w.genesis, dirs[2].path(), boot.clone()).await;
    let d = start(&w.nodes[3], &w.genesis, dirs[3].path(), boot).await;
    for v in [&c, &d] {
        for (id, m) in tiny() {
            v.node.add_audit_model(&id, m);
        }
    }
    wait_connected(&a, 3).await;
    (w, vec![a, b, c, d], dirs)
}

fn tiny_model() -> std::sync::Arc<mycel_models::ChatModel> {
    std::sync::Arc::new(
        mycel_node::models::load(
            mycel_node::config::TINY_MODEL_ID,
            Path::new("/nonexistent"),
            |_| {},
        )
        .unwrap(),
    )
}

/// Sends one query through the gateway B (A serves it), greedy or sampled at temperature 1 with
/// a seed B picks.
async fn ask_b(b: &RunningNode, model: &str, sampled: bool) -> mycel_rpc_api::ChatResponse {
    use mycel_rpc_api::MycelApiClient;
    let mut request = greedy(model, "Audit me", 8);
    if sampled {
        request.temperature = Some(1.0);
    }
    client(b).chat(request).await.unwrap()
}

async fn wait_for_kind(cl: &HttpClient, account: &AccountId, kind: &str) -> serde_json::Value {
    match find_kind(cl, account, kind, WAIT).await {
        Ok(body) => body,
        Err(kinds) => panic!("no confirmed {kind} on {account}: {kinds:?}"),
    }
}

/// The body of the first confirmed block of `kind` on `account`'s chain within `within`, else the
/// (kind, confirmed) list of its chain.
async fn find_kind(
    cl: &HttpClient,
    account: &AccountId,
    kind: &str,
    within: Duration,
) -> Result<serde_json::Value, Vec<(String, bool)>> {
    let deadline = Instant::now() + within;
    loop {
        let hist = cl.history(account.to_hex(), None).await.unwrap();
        if let Some(b) = hist.iter().find(|b| b.kind == kind && b.confirmed) {
            return Ok(b.body.clone());
        }
        if Instant::now() >= deadline {
            return Err(hist.into_iter().map(|b| (b.kind, b.confirmed)).collect());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks B (A serves) until A's claim for one of the answers confirms, at most 3 times: a job whose
/// escrow reaches A only after A answered (a heavily loaded host) is answered unpaid, and nothing
/// is ever claimed for it.
async fn ask_until_claimed(
    w: &World,
    nodes: &[RunningNode],
    model: &str,
    sampled: bool,
) -> serde_json::Value {
    let (ca, a) = (client(&nodes[0]), id(&w.nodes[0]));
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let answer = ask_b(&nodes[1], model, sampled).await;
        assert_eq!(answer.served_by, a.did().unwrap().to_string());
        match find_kind(&ca, &a, "claim", WAIT / 3).await {
            Ok(claim) => return claim,
            Err(k) => kinds = k,
        }
    }
    let b = id(&w.nodes[1]);
    let b_kinds = find_kind(&ca, &b, "none", Duration::ZERO).await.err();
    panic!("no confirmed claim on {a} after 3 answers: {kinds:?}; requester {b}: {b_kinds:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_audited_job_is_claimed_with_the_validators_verdicts() {
    let (w, nodes, _dirs) = audit_world("tiny", tiny_model()).await;
    // Sampled: the validators replay the worker's seeded draws.
    let claim = ask_until_claimed(&w, &nodes, "tiny", true).await;
    let verdicts = claim["verdicts"].as_array().expect("verdicts").len();
    assert!(verdicts >= 1, "claimed without verdicts: {claim}");
    for n in nodes.into_iter().rev() {
        n.shutdown().await;
    }
}

/// With the real model (the random-weight `tiny` model's logits are too flat to tell forged tokens
/// from sampled ones). Skipped, with a message, when the model is not cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_returning_forged_outputs_is_audited_rejected_and_slashed() {
    use mycel_models::registry::DEFAULT_CHAT_MODEL;
    let dir = std::env::var_os("MYCEL_TEST_MODELS_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::PathBuf::from(h).join(".cache/mycel/dev-data/models"))
        });
    let Some(dir) = dir.filter(|d| mycel_node::models::is_cached(DEFAULT_CHAT_MODEL, d)) else {
        println!("SKIPPED: {DEFAULT_CHAT_MODEL} is not cached (set MYCEL_TEST_MODELS_DIR)");
        return;
    };
    let model = tokio::task::spawn_blocking(move || {
        mycel_node::models::load(DEFAULT_CHAT_MODEL, &dir, |_| {})
    })
    .await
    .unwrap()
    .unwrap();
    let (w, nodes, _dirs) = audit_world(DEFAULT_CHAT_MODEL, std::sync::Arc::new(model)).await;
    let a_did = Did::from_public_key(w.nodes[0].public()).to_string();
    let cb = client(&nodes[1]);
    let claims = || async {
        cb.history(id(&w.nodes[0]).to_hex(), None)
            .await
            .unwrap()
            .into_iter()
            .filter(|b| b.kind == "claim")
            .count()
    };
    // An honest sampled answer first: the replay of its seeded draws accepts it and A claims.
    ask_until_claimed(&w, &nodes, DEFAULT_CHAT_MODEL, true).await;
    let honest_claims = claims().await;
    nodes[0].node.set_forge_outputs(true);
    assert_eq!(
        ask_b(&nodes[1], DEFAULT_CHAT_MODEL, false).await.served_by,
        a_did
    );
    let slash = wait_for_kind(&cb, &id(&w.nodes[1]), "slash").await;
    assert_eq!(slash["worker"], a_did);
    let a_bal = cb.balance(id(&w.nodes[0]).to_hex()).await.unwrap();
    assert!(
        a_bal.bonded.parse::<u128>().unwrap() < Credits::whole(100).0,
        "A's bond was not cut: {a_bal:?}"
    );
    assert_eq!(claims().await, honest_claims, "a cheating worker was paid");
    for n in nodes.into_iter().rev() {
        n.shutdown().await;
    }
}

/// Audited work is rewarded by the epoch's Mint: once the epoch (and the next) is over, the stake
/// table signs the emission split of the confirmed audited work and validation, and it is minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audited_work_is_minted_after_its_epoch() {
    let (w, nodes, _dirs) = audit_world_with("tiny", tiny_model(), |p| p.epoch_secs = 4).await;
    let genesis_supply: u128 = w
        .genesis
        .accounts
        .iter()
        .map(|a| a.balance.0 + a.stake.0)
        .sum();
    ask_until_claimed(&w, &nodes, "tiny", false).await;
    let ca = client(&nodes[0]);
    let clients: Vec<HttpClient> = nodes.iter().map(client).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut minted = true;
        let mut roots = Vec::new();
        for cl in &clients {
            let info = cl.info().await.unwrap();
            minted &= info.supply.parse::<u128>().unwrap() > genesis_supply;
            roots.push(info.state_root);
        }
        if minted && roots.iter().all(|r| *r == roots[0]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing minted (or states differ)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The worker's share of the emission arrives as a pending amount it receives by itself.
    let a = ca.balance(id(&w.nodes[0]).to_hex()).await.unwrap();
    assert!(
        a.liquid.parse::<u128>().unwrap() + a.receivable.parse::<u128>().unwrap()
            > Credits::whole(100).0 + Credits::whole(1).0 / 100,
        "the worker got no emission: {a:?}"
    );
    for n in nodes.into_iter().rev() {
        n.shutdown().await;
    }
}

/// A private job goes only to a trusted provider (A's stake is at the threshold), is paid through a
/// private escrow, and is never audited even where every public job is: A claims without verdicts.
/// A node without a ledger cannot tell whom to trust and refuses private jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_job_is_never_audited_and_needs_a_trusted_provider() {
    use mycel_rpc_api::{ChatRequest, MycelApiClient};
    let request = || ChatRequest {
        private: true,
        ..greedy("tiny", "Keep this between us", 8)
    };
    let (w, nodes, _dirs) = audit_world("tiny", tiny_model()).await;
    let answer = client(&nodes[1]).chat(request()).await.unwrap();
    assert_eq!(
        answer.served_by,
        Did::from_public_key(w.nodes[0].public()).to_string()
    );
    let ca = client(&nodes[0]);
    let claim = wait_for_kind(&ca, &id(&w.nodes[0]), "claim").await;
    assert_eq!(
        claim["verdicts"].as_array().map(Vec::len),
        Some(0),
        "{claim}"
    );
    let escrow = wait_for_kind(&ca, &id(&w.nodes[1]), "escrow").await;
    assert_eq!(escrow["private"], true);
    for n in nodes.into_iter().rev() {
        n.shutdown().await;
    }

    let pair = crate::harness::Pair::start().await;
    pair.wait_until_b_lists_tiny().await;
    match client(&pair.b).chat(request()).await {
        Err(ClientError::Call(e)) => assert_eq!(e.code(), error_codes::UPSTREAM_FAILED),
        other => panic!("a node without a ledger served a private job: {other:?}"),
    }
    pair.shutdown().await;
}

/// Five nodes in a chain (each bootstraps only to the previous one): the last finds the model's
/// provider, two hops away, through the DHT and gets a streamed answer; a block submitted at one end
/// is gossiped hop by hop and confirmed at the other; every node ends with the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_in_a_chain_find_providers_through_the_dht_and_gossip_end_to_end() {
    use mycel_rpc_api::MycelApiClient;
    let mut w = world();
    w.nodes.extend((0..2).map(|_| Keypair::generate()));
    w.genesis.accounts = w
        .nodes
        .iter()
        .map(|k| GenesisAccount {
            account: *k.public().as_bytes(),
            balance: Credits::whole(100),
            stake: Credits::whole(1000),
        })
        .chain(std::iter::once(GenesisAccount {
            account: *w.wallet.public().as_bytes(),
            balance: Credits::whole(1000),
            stake: Credits::ZERO,
        }))
        .collect();
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().unwrap()).collect();
    let models = BTreeMap::from([("tiny".to_string(), tiny_model())]);
    let mut nodes =
        vec![start_serving(&w.nodes[0], &w.genesis, dirs[0].path(), vec![], models).await];
    for i in 1..5 {
        let boot = vec![nodes[i - 1].node.listen_addrs()[0].to_string()];
        nodes.push(start(&w.nodes[i], &w.genesis, dirs[i].path(), boot).await);
    }
    let clients: Vec<HttpClient> = nodes.iter().map(client).collect();

    let deadline = Instant::now() + WAIT;
    let answer = loop {
        let r = clients[4].chat(greedy("tiny", "Who serves this?", 6)).await;
        match r {
            Ok(a) => break a,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "node 4 never reached a provider: {e}"
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    assert!(answer.remote);
    assert_eq!(
        answer.served_by,
        Did::from_public_key(w.nodes[0].public()).to_string()
    );

    let send = build(
        &clients[4],
        &w.wallet,
        BlockBody::Send {
            destination: id(&Keypair::generate()),
            amount: Credits::whole(3),
        },
    )
    .await;
    let hash = submit(&clients[4], &send).await;
    let refs: Vec<&HttpClient> = clients.iter().collect();
    confirmed_everywhere(&refs, &hash).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut roots = Vec::new();
        for c in &clients {
            roots.push(c.info().await.unwrap().state_root);
        }
        if roots.iter().all(|r| *r == roots[0]) {
            break;
        }
        assert!(Instant::now() < deadline, "states differ: {roots:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for n in nodes.into_iter().rev() {
        n.shutdown().await;
    }
}

/// A worker whose account is not in the genesis (a node that joined later) opens its chain with a
/// proof of work the first time it has something to post, and claims its pay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_outside_the_genesis_opens_its_account_and_claims() {
    use mycel_rpc_api::MycelApiClient;
    let mut w = world();
    w.genesis.params.audit_bps = 1;
    let newcomer = Keypair::generate();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let b = start(&w.nodes[1], &w.genesis, dirs[1].path(), vec![]).await;
    let boot = vec![b.node.listen_addrs()[0].to_string()];
    let c = start(&w.nodes[2], &w.genesis, dirs[2].path(), boot.clone()).await;
    let models = BTreeMap::from([("tiny".to_string(), tiny_model())]);
    let a = start_serving(&newcomer, &w.genesis, dirs[0].path(), boot, models).await;
    wait_connected(&b, 2).await;
    let cb = client(&b);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = cb.chat(greedy("tiny", "New here?", 6)).await;
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "no answer: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for_kind(&cb, &id(&newcomer), "claim").await;
    let kinds: Vec<String> = cb
        .history(id(&newcomer).to_hex(), None)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.kind)
        .collect();
    assert_eq!(kinds, ["claim", "open"]);
    let bal = cb.balance(id(&newcomer).to_hex()).await.unwrap();
    assert!(bal.liquid.parse::<u128>().unwrap() > 0);
    for n in [a, c, b] {
        n.shutdown().await;
    }
}

/// A greedy chat request of one user message.
fn greedy(model: &str, content: &str, max_tokens: u32) -> mycel_rpc_api::ChatRequest {
    mycel_rpc_api::ChatRequest {
        model: Some(model.into()),
        messages: vec![mycel_rpc_api::ChatMessage {
            role: "user".into(),
            content: content.into(),
        }],
        max_tokens: Some(max_tokens),
        temperature: Some(0.0),
        ..Default::default()
    }
}
