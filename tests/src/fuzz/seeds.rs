//! The valid messages the fuzzer starts from, one family per protocol: chat jobs, pipeline frames
//! with real hidden states, ledger blocks, votes and quorum shares signed by the attacker, signed
//! heartbeats and centroid updates, sync and audit requests, JSON-RPC calls and OpenAI bodies, and
//! hand-encoded protobuf for the libp2p protocols (gossipsub, Kademlia, identify push).
//!
//! Starting valid matters: a random byte string dies in the first parser, a mutated valid message
//! gets past it to the checks behind (signatures, bounds, state).

use std::sync::atomic::{AtomicU64, Ordering};

use mycel_identity::{Did, Keypair, domains};
use mycel_ledger::{AccountId, Block, BlockBody, BlockData, BlockHash, Credits, JobId, Vote};
use mycel_models::{ChatMessage, Role, SamplingParams};
use mycel_node::audit::AuditRequest;
use mycel_node::chat::ChatJob;
use mycel_node::config::TINY_MODEL_ID;
use mycel_node::ledger::wire::{QuorumShare, ShareKind, SyncRequest, VotesMessage};
use mycel_node::shard::ClientMsg;
use serde_json::{Value, json};

use crate::rng::SimRng;

/// Prompts of the seed chats.
const PROMPTS: [&str; 4] = ["hello", "What is a mycelium?", "Count to three.", "ok"];

/// Embedding width of centroid updates (all-minilm-l6-v2).
pub const CENTROID_DIM: usize = 384;

/// What the seeds need to know about the net under test.
#[derive(Debug)]
pub struct SeedContext {
    /// The funded wallet's account (its chain is the one that grows during the run).
    pub wallet: AccountId,
    /// DIDs of the nodes under test.
    pub dids: Vec<Did>,
    /// The ledger's current epoch (refreshed by the liveness probes).
    pub epoch: AtomicU64,
    /// Proof-of-work bits of an Open without source.
    pub open_work_bits: u32,
    /// Layers of `tiny`.
    pub n_layers: u32,
    /// Where the first pipeline range ends (node 0 serves `[0, split)`, the shard node the rest).
    pub split: u32,
    /// Vocabulary size of `tiny` (token ids of a first-range step are below it).
    pub vocab: u32,
    /// Real hidden states of layers `[0, split)` at position 0: `(tokens, MYHS blob)`.
    pub hidden: Vec<(u32, Vec<u8>)>,
}

impl SeedContext {
    /// The epoch to state in blocks and votes.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }
}

fn pick<'a, T>(rng: &mut SimRng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len())]
}

fn random32(rng: &mut SimRng) -> [u8; 32] {
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    out
}

/// A valid chat job for `tiny` (small answers, so a seed that is accepted costs little compute).
pub fn chat_job(rng: &mut SimRng) -> ChatJob {
    ChatJob {
        model: TINY_MODEL_ID.into(),
        messages: vec![ChatMessage {
            role: Role::User,
            content: pick(rng, &PROMPTS).to_string(),
        }],
        params: SamplingParams {
            temperature: 0.7,
            top_k: Some(40),
            top_p: Some(0.9),
            seed: rng.next_u64() >> 1,
            max_tokens: 1 + rng.below(8),
            stop_tokens: Vec::new(),
        },
        stop: Vec::new(),
        private: false,
        payment: None,
        seed_fixed: true,
        request_id: None,
        ensemble: None,
    }
}

/// One length-prefixed JSON frame of `/mycel/infer-stream/1.0.0`.
pub fn stream_frame(json: &[u8]) -> Vec<u8> {
    let mut out = (json.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(json);
    out
}

/// One frame of `/mycel/shard/1.0.0`: total length, metadata length, metadata, blob.
pub fn shard_frame(meta: &[u8], blob: &[u8]) -> Vec<u8> {
    let total = (4 + meta.len() + blob.len()) as u32;
    let mut out = total.to_be_bytes().to_vec();
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(blob);
    out
}

/// The metadata of a valid pipeline session on `[from, to)`: `Open`, then one `Step` at position 0
/// (tokens for the first range, the blob's hidden states for a later one), then a second `Step`.
/// Returns the frames' metadata JSON and blobs.
pub fn shard_session(
    rng: &mut SimRng,
    ctx: &SeedContext,
    from: u32,
    to: u32,
) -> Vec<(Value, Vec<u8>)> {
    let open = ClientMsg::Open {
        model: TINY_MODEL_ID.into(),
        from,
        to,
        session: hex::encode(&random32(rng)[..16]),
    };
    let mut frames = vec![(
        serde_json::to_value(&open).unwrap_or(Value::Null),
        Vec::new(),
    )];
    if from == 0 || ctx.hidden.is_empty() {
        let n = 1 + rng.below(6);
        let ids: Vec<u32> = (0..n)
            .map(|_| rng.below(ctx.vocab as usize) as u32)
            .collect();
        let step = ClientMsg::Step {
            position: 0,
            tokens: Some(ids),
        };
        let next = ClientMsg::Step {
            position: n as u32,
            tokens: Some(vec![rng.below(ctx.vocab as usize) as u32]),
        };
        for s in [step, next] {
            frames.push((serde_json::to_value(&s).unwrap_or(Value::Null), Vec::new()));
        }
    } else {
        let (n, blob) = pick(rng, &ctx.hidden).clone();
        let step = ClientMsg::Step {
            position: 0,
            tokens: None,
        };
        frames.push((
            serde_json::to_value(&step).unwrap_or(Value::Null),
            blob.clone(),
        ));
        // The same states again at the next position: well-formed, but the header still says 0,
        // so the node must refuse it without harm.
        let next = ClientMsg::Step {
            position: n,
            tokens: None,
        };
        frames.push((serde_json::to_value(&next).unwrap_or(Value::Null), blob));
    }
    frames
}

/// A valid ledger sync request.
pub fn sync_request(rng: &mut SimRng, ctx: &SeedContext) -> SyncRequest {
    match rng.below(3) {
        0 => SyncRequest::Frontiers {
            after: (rng.below(2) == 0).then(|| random32(rng)),
        },
        1 => SyncRequest::Chain {
            account: ctx.wallet.0,
            from_height: rng.below(4) as u64,
        },
        _ => SyncRequest::Block {
            hash: random32(rng),
        },
    }
}

/// An audit request that looks like one (the receipt bytes are random, of the right length).
pub fn audit_request(rng: &mut SimRng) -> AuditRequest {
    let len = mycel_ledger::receipt::RECEIPT_LEN + 128;
    AuditRequest {
        settled: (0..len).map(|_| rng.next_u64() as u8).collect(),
        job: chat_job(rng),
        output: "a reply".into(),
        token_ids: (0..8).map(|_| rng.below(100) as u32).collect(),
        stop_token: (rng.below(2) == 0).then_some(2),
    }
}

/// A valid proof of work for an Open of `account` (about 2^bits hashes).
fn open_work(account: &AccountId, bits: u32) -> u64 {
    // The harness genesis asks 8 bits; never search for long whatever a genesis says.
    (0u64..1 << 20)
        .find(|w| mycel_ledger::ledger::work_ok(account, *w, bits))
        .unwrap_or(0)
}

/// A block of the attacker's own account: sometimes a valid Open by proof of work, else a block
/// the ledger must refuse or park (no funds, unknown previous, odd amounts, another signer).
pub fn attacker_block(rng: &mut SimRng, ctx: &SeedContext, key: &Keypair) -> Block {
    let account = AccountId::from_public_key(&key.public());
    let epoch = ctx.epoch();
    let random_hash = BlockHash(random32(rng));
    let (height, previous, body) = match rng.below(7) {
        0 | 1 => (
            0,
            BlockHash::ZERO,
            BlockBody::Open {
                source: BlockHash::ZERO,
                work: open_work(&account, ctx.open_work_bits),
            },
        ),
        2 => (
            1,
            random_hash,
            BlockBody::Send {
                destination: ctx.wallet,
                amount: Credits::whole(1 + rng.below(1000) as u128),
            },
        ),
        3 => (
            1,
            random_hash,
            BlockBody::Stake {
                amount: Credits(u128::MAX),
            },
        ),
        4 => (
            0,
            BlockHash::ZERO,
            BlockBody::Receive {
                source: BlockHash(random32(rng)),
            },
        ),
        5 => (
            1 + rng.below(1000) as u64,
            random_hash,
            BlockBody::Escrow {
                job_id: JobId(random32(rng)),
                worker: ctx.wallet,
                amount: Credits::whole(5),
                expires_epoch: epoch + 1,
                private: rng.below(2) == 0,
            },
        ),
        _ => (
            u64::MAX,
            random_hash,
            BlockBody::Unstake { amount: Credits(1) },
        ),
    };
    let data = BlockData {
        account,
        height,
        previous,
        epoch: if rng.below(8) == 0 { u64::MAX } else { epoch },
        body,
    };
    Block::sign(data, key)
}

/// A votes-topic message signed by the attacker (who holds no stake): block votes or a quorum
/// share for the next checkpoint.
pub fn votes(rng: &mut SimRng, ctx: &SeedContext, key: &Keypair) -> VotesMessage {
    let epoch = ctx.epoch();
    match rng.below(3) {
        0 | 1 => {
            let n = 1 + rng.below(4);
            VotesMessage::Votes(
                (0..n)
                    .map(|i| {
                        Vote::sign(
                            key,
                            BlockHash(random32(rng)),
                            epoch,
                            rng.below(2) == 0,
                            i as u64,
                        )
                    })
                    .collect(),
            )
        }
        _ => VotesMessage::Share(QuorumShare::sign(
            key,
            if rng.below(2) == 0 {
                ShareKind::Checkpoint
            } else {
                ShareKind::Mint
            },
            epoch + 1,
            vec![(
                AccountId::from_public_key(&key.public()),
                Credits::whole(1_000_000),
            )],
        )),
    }
}

/// The JSON body of an honest heartbeat of the attacker: no models, no shards.
pub fn heartbeat_body(key: &Keypair, seq: u64) -> Value {
    json!({ "peer_id": key.peer_id().to_base58(), "models": [], "load": 0, "seq": seq })
}

/// A lying heartbeat: the attacker claims to serve `tiny` whole and every layer of it, idle.
/// Correctly signed, so it is believed; jobs routed to the liar must fail over.
pub fn lying_heartbeat_body(key: &Keypair, seq: u64, n_layers: u32) -> Value {
    json!({
        "peer_id": key.peer_id().to_base58(), "models": [TINY_MODEL_ID], "load": 0, "seq": seq,
        "shards": [{ "model": TINY_MODEL_ID, "from": 0, "to": n_layers, "layer_us": 1 }],
    })
}

/// The gossip encoding of a heartbeat whose body is `body` (any text), signed by `key`.
pub fn sign_heartbeat(key: &Keypair, body: &[u8]) -> Vec<u8> {
    sign_envelope(key, domains::HEARTBEAT, body)
}

/// A centroid update body for a router of [`CENTROID_DIM`] dimensions (norm below the cap).
pub fn centroid_body(rng: &mut SimRng, round: u64) -> Value {
    let raw: Vec<f64> = (0..CENTROID_DIM).map(|_| rng.unit() - 0.5).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
    let vector: Vec<f64> = raw.iter().map(|x| x / norm).collect();
    json!({ "domain": "fuzz", "round": round, "vector": vector, "examples": 8 })
}

/// The gossip encoding of a centroid update whose body is `body`, signed by `key`.
pub fn sign_centroid(key: &Keypair, body: &[u8]) -> Vec<u8> {
    sign_envelope(key, domains::CENTROID_UPDATE, body)
}

/// `{"body": <text>, "signature": <hex>}` with the signature over the body's exact bytes. A body
/// that is not UTF-8 is carried lossily (the envelope is JSON): its signature then fails.
fn sign_envelope(key: &Keypair, domain: mycel_identity::Domain, body: &[u8]) -> Vec<u8> {
    let signature = key.sign(domain, body).to_hex();
    let body = String::from_utf8_lossy(body);
    json!({ "body": body, "signature": signature })
        .to_string()
        .into_bytes()
}

/// A valid JSON-RPC 2.0 call of `method` (one of `mycel_rpc_api::openrpc::METHODS` or
/// `rpc.discover`).
pub fn rpc_call(rng: &mut SimRng, ctx: &SeedContext, key: &Keypair, method: &str) -> Value {
    let account = ctx.wallet.to_hex();
    let params = match method {
        "mycel_chat" | "mycel_subscribeChat" => json!([chat_request(rng)]),
        "mycel_unsubscribeChat" | "ledger_unsubscribeConfirmations" => {
            json!([format!("{}", rng.next_u64())])
        }
        "mycel_jobStatus" => json!([format!("chatcmpl-{:032x}", rng.next_u64())]),
        "mycel_route" => json!([pick(rng, &PROMPTS)]),
        "mycel_revokeMembership" => {
            let subject = pick(rng, &ctx.dids);
            match mycel_identity::revocation::Revocation::sign(key, subject, "fuzz", 1) {
                Ok(r) => {
                    json!([serde_json::from_str::<Value>(&r.to_json()).unwrap_or(Value::Null)])
                }
                Err(_) => json!([{}]),
            }
        }
        "ledger_balance" | "ledger_account" => json!([account]),
        "ledger_block" => json!([BlockHash(random32(rng)).to_hex()]),
        "ledger_history" => json!([account, 1 + rng.below(20)]),
        "ledger_submit" => json!([hex::encode(attacker_block(rng, ctx, key).encode())]),
        _ => json!([]),
    };
    json!({ "jsonrpc": "2.0", "id": rng.below(1_000_000), "method": method, "params": params })
}

/// A `mycel_chat` request object.
pub fn chat_request(rng: &mut SimRng) -> Value {
    json!({
        "model": TINY_MODEL_ID,
        "messages": [{ "role": "user", "content": pick(rng, &PROMPTS) }],
        "max_tokens": 1 + rng.below(8),
        "temperature": 0.7,
        "seed": rng.next_u64() >> 1,
    })
}

/// A `POST /v1/chat/completions` body.
pub fn openai_body(rng: &mut SimRng, stream: bool) -> Value {
    json!({
        "model": TINY_MODEL_ID,
        "messages": [
            { "role": "system", "content": "Be brief." },
            { "role": "user", "content": pick(rng, &PROMPTS) }
        ],
        "max_tokens": 1 + rng.below(8),
        "temperature": 0.7,
        "top_p": 0.9,
        "seed": rng.next_u64() >> 1,
        "stop": ["\n\n"],
        "stream": stream,
    })
}

/// Protobuf encoding by hand (the few messages the libp2p protocols need).
pub mod pb {
    /// An unsigned LEB128 varint.
    pub fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// A length-delimited field.
    pub fn bytes(field: u32, data: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(field << 3 | 2), out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }

    /// A varint field.
    pub fn uint(field: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(field << 3), out);
        varint(v, out);
    }

    /// `message` with its varint length prefix (the framing of gossipsub, Kademlia, identify).
    pub fn framed(message: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(message.len() + 5);
        varint(message.len() as u64, &mut out);
        out.extend_from_slice(message);
        out
    }
}

/// A gossipsub RPC (framed): a subscription, a published message with a bogus signature on a
/// mycel topic, and control messages (GRAFT, IHAVE, IWANT).
pub fn gossipsub_rpc(rng: &mut SimRng, from: &[u8], data: &[u8]) -> Vec<u8> {
    let topic = *pick(
        rng,
        &[
            mycel_node::wire::HEALTH_TOPIC,
            mycel_node::ledger::wire::BLOCKS_TOPIC,
            mycel_node::ledger::wire::VOTES_TOPIC,
            mycel_node::experts::CENTROID_TOPIC,
        ],
    );
    let mut rpc = Vec::new();
    let mut sub = Vec::new();
    pb::uint(1, 1, &mut sub);
    pb::bytes(2, topic.as_bytes(), &mut sub);
    pb::bytes(1, &sub, &mut rpc);
    let mut msg = Vec::new();
    pb::bytes(1, from, &mut msg);
    pb::bytes(2, data, &mut msg);
    pb::bytes(3, &rng.next_u64().to_be_bytes(), &mut msg);
    pb::bytes(4, topic.as_bytes(), &mut msg);
    pb::bytes(5, &random32(rng).repeat(2), &mut msg);
    pb::bytes(2, &msg, &mut rpc);
    let mut control = Vec::new();
    let mut graft = Vec::new();
    pb::bytes(1, topic.as_bytes(), &mut graft);
    pb::bytes(3, &graft, &mut control);
    let mut ihave = Vec::new();
    pb::bytes(1, topic.as_bytes(), &mut ihave);
    for _ in 0..rng.below(50) {
        pb::bytes(2, &random32(rng)[..20], &mut ihave);
    }
    pb::bytes(1, &ihave, &mut control);
    let mut iwant = Vec::new();
    for _ in 0..rng.below(50) {
        pb::bytes(1, &random32(rng)[..20], &mut iwant);
    }
    pb::bytes(2, &iwant, &mut control);
    pb::bytes(3, &control, &mut rpc);
    pb::framed(&rpc)
}

/// A Kademlia request (framed): FIND_NODE, GET_PROVIDERS of `model/tiny`, or ADD_PROVIDER naming
/// `provider` at a loopback address.
pub fn kad_request(rng: &mut SimRng, provider: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    match rng.below(3) {
        0 => {
            pb::uint(1, 4, &mut m);
            pb::bytes(2, &random32(rng), &mut m);
        }
        1 => {
            pb::uint(1, 3, &mut m);
            pb::bytes(2, &mycel_node::wire::model_key(TINY_MODEL_ID), &mut m);
        }
        _ => {
            pb::uint(1, 2, &mut m);
            pb::bytes(2, &mycel_node::wire::model_key(TINY_MODEL_ID), &mut m);
            let mut peer = Vec::new();
            pb::bytes(1, provider, &mut peer);
            // /ip4/127.0.0.1/tcp/9
            pb::bytes(2, &[0x04, 127, 0, 0, 1, 0x06, 0, 9], &mut peer);
            pb::bytes(9, &peer, &mut m);
        }
    }
    pb::framed(&m)
}

/// An identify push (framed): protocol and agent versions, a listen address, protocols.
pub fn identify_push(rng: &mut SimRng) -> Vec<u8> {
    let mut m = Vec::new();
    pb::bytes(5, mycel_node::wire::IDENTIFY_PROTOCOL.as_bytes(), &mut m);
    pb::bytes(6, b"mycel-fuzz/0.1", &mut m);
    pb::bytes(2, &[0x04, 127, 0, 0, 1, 0x06, 0, 9], &mut m);
    for p in ["/mycel/infer/1.0.0", "/mycel/kad/1.0.0"] {
        pb::bytes(3, p.as_bytes(), &mut m);
    }
    if rng.below(2) == 0 {
        pb::bytes(4, &[0x04, 10, 0, 0, 1, 0x06, 0x1f, 0x90], &mut m);
    }
    pb::framed(&m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_varints_and_frames() {
        let mut v = Vec::new();
        pb::varint(300, &mut v);
        assert_eq!(v, [0xac, 0x02]);
        assert_eq!(pb::framed(&[1, 2, 3]), [3, 1, 2, 3]);
        let mut f = Vec::new();
        pb::bytes(2, b"ab", &mut f);
        assert_eq!(f, [0x12, 2, b'a', b'b']);
    }

    #[test]
    fn seed_messages_are_valid() {
        let mut rng = SimRng::new(3);
        for _ in 0..20 {
            chat_job(&mut rng).validate().expect("a valid job");
        }
        let frame = shard_frame(b"{}", b"xy");
        assert_eq!(&frame[..4], &8u32.to_be_bytes());
        assert_eq!(&frame[4..8], &2u32.to_be_bytes());
        let key = Keypair::generate();
        let body = heartbeat_body(&key, 1).to_string();
        let hb = sign_heartbeat(&key, body.as_bytes());
        assert!(mycel_node::heartbeat::Heartbeat::verify(&hb, &key.peer_id()).is_some());
        let body = centroid_body(&mut rng, 1).to_string();
        let update = sign_centroid(&key, body.as_bytes());
        mycel_node::experts::CentroidUpdate::verify(&update, &key.peer_id(), CENTROID_DIM)
            .expect("a valid update");
        let ctx = SeedContext {
            wallet: AccountId([7; 32]),
            dids: vec![Did::from_public_key(key.public())],
            epoch: AtomicU64::new(0),
            open_work_bits: 8,
            n_layers: 6,
            split: 3,
            vocab: 100,
            hidden: Vec::new(),
        };
        let mut opens = 0;
        for _ in 0..20 {
            let b = attacker_block(&mut rng, &ctx, &key);
            assert_eq!(Block::decode(&b.encode()).expect("decodes"), b);
            if let BlockBody::Open { work, .. } = b.body {
                assert!(mycel_ledger::ledger::work_ok(&b.account, work, 8));
                opens += 1;
            }
        }
        assert!(opens > 0);
        let msg = votes(&mut rng, &ctx, &key);
        assert_eq!(VotesMessage::decode(&msg.encode()).expect("decodes"), msg);
        for m in mycel_rpc_api::openrpc::METHODS {
            let call = rpc_call(&mut rng, &ctx, &key, m);
            assert_eq!(call["method"], m);
        }
    }
}
