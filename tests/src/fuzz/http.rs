//! The HTTP attacker: every JSON-RPC method (`mycel_rpc_api::openrpc::METHODS` and
//! `rpc.discover`) and every OpenAI route (`/v1/models`, `/v1/chat/completions`, `/metrics`) with
//! valid and mutated bodies, batches and notifications, the subscription methods over a raw
//! WebSocket, and transport-level abuse (garbage requests, oversized and lying bodies, bad
//! chunking, huge headers, slow headers).
//!
//! HTTP/1.1 is written by hand on a TCP socket, one connection per request (`Connection: close`),
//! so a request can be anything: invalid UTF-8, a wrong length, half a header.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mycel_identity::Keypair;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::mutate::{self, Mutated};
use super::seeds::{self, SeedContext};
use super::tally::{Outcome, Tally};
use crate::rng::SimRng;

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the attacker waits for a whole reply (a valid chat may generate for a while).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long it waits for a WebSocket handshake or a frame.
const WS_TIMEOUT: Duration = Duration::from_secs(3);
/// Most reply bytes read.
const MAX_REPLY_BYTES: usize = 256 * 1024;
/// An oversized body: above the node's 1 MiB limit.
const OVERSIZED_BODY_BYTES: usize = 1024 * 1024 + 512 * 1024;
/// JSON-RPC's internal error code: a node that answers it to bad input mapped a client error to a
/// server error (quoted in the report).
const INTERNAL_ERROR: i64 = -32603;

/// Every JSON-RPC method attacked (the OpenRPC list and the discovery method).
pub fn methods() -> Vec<&'static str> {
    let mut m: Vec<&'static str> = mycel_rpc_api::openrpc::METHODS.to_vec();
    m.push("rpc.discover");
    m
}

/// Subscription methods, attacked over WebSocket.
const WS_METHODS: [&str; 4] = [
    "mycel_subscribeChat",
    "ledger_subscribeConfirmations",
    "mycel_unsubscribeChat",
    "ledger_unsubscribeConfirmations",
];

/// A reply as read off the socket.
#[derive(Debug, Default)]
struct Reply {
    status: Option<u16>,
    body: Vec<u8>,
    eof: bool,
}

impl Reply {
    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn connect(addr: SocketAddr) -> Option<TcpStream> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    }
}

/// Sends `request` and reads the reply until EOF, [`MAX_REPLY_BYTES`] or `wait`.
async fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> Option<Reply> {
    let mut s = connect(addr).await?;
    if s.write_all(request).await.is_err() {
        return Some(Reply {
            eof: true,
            ..Reply::default()
        });
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + wait;
    let mut eof = false;
    while buf.len() < MAX_REPLY_BYTES {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                eof = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    Some(parse(buf, eof))
}

fn parse(buf: Vec<u8>, eof: bool) -> Reply {
    let status = buf
        .strip_prefix(b"HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| c.parse().ok());
    let body = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => buf[at + 4..].to_vec(),
        None => Vec::new(),
    };
    Reply { status, body, eof }
}

/// A request with a body.
fn request(method: &str, path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n").into_bytes()
}

/// How a JSON-RPC reply over HTTP reads. `excused`: ids of calls to subscription methods, which
/// jsonrpsee refuses over HTTP with an internal error (-32603) by design — a refusal, not a fault.
fn judge_rpc(reply: &Reply, excused: &dyn Fn(&Value) -> bool) -> Outcome {
    match reply.status {
        None if reply.eof => Outcome::Closed,
        None => Outcome::Timeout,
        Some(204) => Outcome::Delivered,
        Some(200) => judge_json_rpc_text(&reply.body_text(), excused),
        Some(503) => Outcome::Busy,
        Some(s) if s >= 500 => Outcome::ServerError,
        Some(_) => Outcome::Refused,
    }
}

/// A JSON-RPC response (or batch) body: any internal error counts first, then any result.
fn judge_json_rpc_text(text: &str, excused: &dyn Fn(&Value) -> bool) -> Outcome {
    let parsed: Option<Value> = serde_json::from_str(text.trim()).ok();
    let items: Vec<Value> = match parsed {
        Some(Value::Array(a)) => a,
        Some(v) => vec![v],
        // A streamed or cut reply: judge by what shows.
        None if text.contains("\"result\"") => return Outcome::Accepted,
        None if text.contains("\"error\"") => return Outcome::Refused,
        None => return Outcome::Closed,
    };
    let codes: Vec<i64> = items
        .iter()
        .filter_map(|i| {
            let code = i["error"]["code"].as_i64()?;
            Some(if code == INTERNAL_ERROR && excused(&i["id"]) {
                i64::from(jsonrpsee::types::error::INVALID_REQUEST_CODE)
            } else {
                code
            })
        })
        .collect();
    if codes.contains(&INTERNAL_ERROR) {
        Outcome::ServerError
    } else if items.iter().any(|i| i.get("result").is_some()) {
        Outcome::Accepted
    } else if codes.contains(&i64::from(mycel_rpc_api::error_codes::BUSY)) {
        Outcome::Busy
    } else if codes.is_empty() {
        Outcome::Closed
    } else {
        Outcome::Refused
    }
}

/// How an OpenAI or metrics reply reads.
fn judge_http(reply: &Reply) -> Outcome {
    match reply.status {
        None if reply.eof => Outcome::Closed,
        None => Outcome::Timeout,
        Some(200..=299) => Outcome::Accepted,
        Some(503) => Outcome::Busy,
        // A forwarder whose providers refused the (mutated) job: the client's fault, reported as
        // a gateway error.
        Some(502) => Outcome::Refused,
        Some(s) if s >= 500 => Outcome::ServerError,
        Some(_) => Outcome::Refused,
    }
}

/// Everything one HTTP attack needs.
pub struct HttpAttack<'a> {
    /// The seeded choices.
    pub rng: &'a mut SimRng,
    /// Seeds.
    pub ctx: &'a SeedContext,
    /// Signs the seeds that need a signature (revocations, blocks).
    pub key: &'a Keypair,
    /// Where outcomes and suspicious answers go.
    pub tally: &'a Tally,
}

/// A JSON body shaped: valid (1 in 8), mutated structurally or byte-wise.
fn shaped(rng: &mut SimRng, valid: &Value) -> (Vec<u8>, &'static str) {
    match rng.below(8) {
        0 => (valid.to_string().into_bytes(), "valid"),
        1..=5 => {
            let (m, name) = mutate::json(rng, valid);
            (m.into_bytes(), name)
        }
        6 => {
            // Only the params (or the messages) mutated: the envelope still routes the call.
            let field = if valid.get("params").is_some() {
                "params"
            } else {
                "messages"
            };
            let mut v = valid.clone();
            match v.get_mut(field) {
                Some(inner) => {
                    let (m, name) = mutate::json(rng, inner);
                    match m {
                        Mutated::Value(p) => {
                            *inner = p;
                            (v.to_string().into_bytes(), name)
                        }
                        Mutated::Raw(b) => (b, name),
                    }
                }
                None => {
                    let (m, name) = mutate::json(rng, valid);
                    (m.into_bytes(), name)
                }
            }
        }
        _ => mutate::bytes(rng, valid.to_string().as_bytes()),
    }
}

/// One HTTP attack on the node at `addr`; records and returns the outcome.
pub async fn attack(a: &mut HttpAttack<'_>, addr: SocketAddr) -> Outcome {
    let roll = a.rng.below(100);
    let (family, name, mutation, outcome) = match roll {
        0..=39 => {
            let all = methods();
            let method = all[a.rng.below(all.len())];
            let valid = seeds::rpc_call(a.rng, a.ctx, a.key, method);
            // A mutation may change the id: any internal error of a subscription call is excused.
            let subscription = WS_METHODS.contains(&method);
            let (body, m) = shaped(a.rng, &valid);
            let reply = exchange(
                addr,
                &request("POST", "/", "application/json", &body),
                REPLY_TIMEOUT,
            )
            .await;
            let o = reply
                .as_ref()
                .map_or(Outcome::Failed, |r| judge_rpc(r, &|_| subscription));
            quote(a.tally, o, method, m, &body, reply.as_ref());
            ("rpc", method.to_string(), m, o)
        }
        40..=44 => {
            // A batch of calls, some of them notifications (no id).
            let all = methods();
            let n = 1 + a.rng.below(20);
            let calls: Vec<Value> = (0..n)
                .map(|_| {
                    let method = all[a.rng.below(all.len())];
                    let mut c = seeds::rpc_call(a.rng, a.ctx, a.key, method);
                    if a.rng.below(4) == 0
                        && let Some(o) = c.as_object_mut()
                    {
                        o.remove("id");
                    }
                    c
                })
                .collect();
            let batch = Value::Array(calls);
            let excused = subscription_ids(&batch);
            let (body, m) = shaped(a.rng, &batch);
            let reply = exchange(
                addr,
                &request("POST", "/", "application/json", &body),
                REPLY_TIMEOUT,
            )
            .await;
            // A mutation may change ids: with a subscription call in the batch, jsonrpsee's bare
            // "Internal error" items are its refusals (the node's own internal errors say more).
            let has_subscription = !excused.is_empty();
            let o = reply.as_ref().map_or(Outcome::Failed, |r| {
                judge_rpc(r, &|id| {
                    excused.contains(id) || (has_subscription && bare_internal(r, id))
                })
            });
            quote(a.tally, o, "batch", m, &body, reply.as_ref());
            ("rpc", "batch".to_string(), m, o)
        }
        45..=64 => {
            let stream = a.rng.below(2) == 0;
            let valid = seeds::openai_body(a.rng, stream);
            let (body, m) = shaped(a.rng, &valid);
            let path = "/v1/chat/completions";
            let reply = exchange(
                addr,
                &request("POST", path, "application/json", &body),
                REPLY_TIMEOUT,
            )
            .await;
            let o = reply.as_ref().map_or(Outcome::Failed, judge_http);
            let name = format!("POST {path}{}", if stream { " (stream)" } else { "" });
            quote(a.tally, o, &name, m, &body, reply.as_ref());
            ("http", name, m, o)
        }
        65..=71 => {
            let (path, m) = match a.rng.below(4) {
                0 => ("/v1/models".to_string(), "valid"),
                1 => ("/metrics".to_string(), "valid"),
                2 => (
                    format!("/v1/models?{}", "a=1&".repeat(a.rng.below(5000))),
                    "long_query",
                ),
                _ => ("/metrics/../v1/models".to_string(), "path_traversal"),
            };
            let reply = exchange(addr, &get(&path), REPLY_TIMEOUT).await;
            let o = reply.as_ref().map_or(Outcome::Failed, judge_http);
            let route = if path.starts_with("/metrics") && m == "valid" {
                "GET /metrics"
            } else {
                "GET /v1/models"
            };
            ("http", route.to_string(), m, o)
        }
        72..=83 => {
            let method = WS_METHODS[a.rng.below(WS_METHODS.len())];
            let valid = seeds::rpc_call(a.rng, a.ctx, a.key, method);
            let (body, m) = shaped(a.rng, &valid);
            let o = websocket(a.rng, addr, &body).await;
            quote(a.tally, o, method, m, &body, None);
            ("ws", method.to_string(), m, o)
        }
        _ => {
            let (req, m) = transport(a.rng, a.ctx, a.key);
            let reply = exchange(addr, &req, REPLY_TIMEOUT).await;
            let o = reply.as_ref().map_or(Outcome::Failed, judge_http);
            quote(a.tally, o, "transport", m, &req, reply.as_ref());
            ("http", "transport".to_string(), m, o)
        }
    };
    a.tally.record(family, &name, mutation, outcome);
    outcome
}

/// Whether the reply's item with `id` is jsonrpsee's own internal error (message "Internal error").
fn bare_internal(reply: &Reply, id: &Value) -> bool {
    let Ok(Value::Array(items)) = serde_json::from_slice::<Value>(&reply.body) else {
        return false;
    };
    items
        .iter()
        .any(|i| i["id"] == *id && i["error"]["message"] == "Internal error")
}

/// Ids of the calls to subscription methods in a call or batch.
fn subscription_ids(calls: &Value) -> Vec<Value> {
    let one = |c: &Value| {
        c["method"]
            .as_str()
            .is_some_and(|m| WS_METHODS.contains(&m))
            .then(|| c["id"].clone())
    };
    match calls {
        Value::Array(a) => a.iter().filter_map(one).collect(),
        c => one(c).into_iter().collect(),
    }
}

/// Quotes an internal server error with what provoked it.
fn quote(
    tally: &Tally,
    o: Outcome,
    what: &str,
    mutation: &str,
    body: &[u8],
    reply: Option<&Reply>,
) {
    if o != Outcome::ServerError {
        return;
    }
    let one_line = |b: &[u8]| String::from_utf8_lossy(b).replace(['\r', '\n'], " ");
    let head = one_line(&body[..body.len().min(160)]);
    let (status, answer) = reply
        .map(|r| (r.status, one_line(&r.body)))
        .unwrap_or_default();
    tally.example(
        format!("{what}/{mutation}"),
        format!("{what} ({mutation}): HTTP {status:?} {answer} <- {head}"),
    );
}

/// Requests that abuse HTTP itself.
fn transport(rng: &mut SimRng, ctx: &SeedContext, key: &Keypair) -> (Vec<u8>, &'static str) {
    let call = seeds::rpc_call(rng, ctx, key, "ledger_info").to_string();
    match rng.below(8) {
        0 => (mutate::random_bytes(rng, 4096), "garbage_request"),
        1 => {
            // Honest length, over the body limit (sent at most 1 in ~100 attacks).
            let pad = "x".repeat(OVERSIZED_BODY_BYTES);
            let body = json!({"jsonrpc": "2.0", "id": 1, "method": "mycel_route", "params": [pad]});
            (
                request("POST", "/", "application/json", body.to_string().as_bytes()),
                "oversized_body",
            )
        }
        2 => {
            // The length says less than what follows: the rest reads as a second request.
            let mut r = format!(
                "POST / HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                call.len() / 2
            )
            .into_bytes();
            r.extend_from_slice(call.as_bytes());
            (r, "content_length_short")
        }
        3 => {
            let r = format!(
                "POST / HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{call}\r\n\
                 ffffffffffffffff\r\n0\r\n\r\n"
            );
            (r.into_bytes(), "chunked_garbage")
        }
        4 => (
            request("POST", "/", "text/plain", call.as_bytes()),
            "wrong_content_type",
        ),
        5 => (
            request(
                "BREW",
                "/v1/chat/completions",
                "application/json",
                call.as_bytes(),
            ),
            "unknown_method",
        ),
        6 => {
            let mut r = b"GET /v1/models HTTP/1.1\r\nHost: fuzz\r\nX-Fuzz: ".to_vec();
            r.extend(std::iter::repeat_n(b'a', 64 * 1024 + rng.below(64 * 1024)));
            r.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
            (r, "huge_header")
        }
        _ => {
            let mut r = b"GET /v1/".to_vec();
            r.extend_from_slice(&[0xff, 0xfe, 0x80]);
            r.extend_from_slice(b" HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n");
            (r, "invalid_utf8_path")
        }
    }
}

/// Opens a WebSocket on `/`, sends `payload` as one frame (sometimes with a lying length, a wrong
/// opcode or no mask), and judges the first answer.
async fn websocket(rng: &mut SimRng, addr: SocketAddr, payload: &[u8]) -> Outcome {
    let Some(mut s) = connect(addr).await else {
        return Outcome::Failed;
    };
    let handshake = "GET / HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    if s.write_all(handshake.as_bytes()).await.is_err() {
        return Outcome::Closed;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let deadline = tokio::time::Instant::now() + WS_TIMEOUT;
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match tokio::time::timeout_at(deadline, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            Ok(_) => return Outcome::Closed,
            Err(_) => return Outcome::Timeout,
        }
    }
    match parse(head, false).status {
        Some(101) => {}
        Some(503) => return Outcome::Busy,
        Some(_) => return Outcome::Refused,
        None => return Outcome::Closed,
    }
    let frame = match rng.below(10) {
        0 => ws_frame(0x1, payload, true, Some(1 << 62)),
        1 => ws_frame(0x2, payload, true, None),
        2 => ws_frame(0x1, payload, false, None),
        3 => ws_frame(0x3 + rng.below(5) as u8, payload, true, None),
        _ => ws_frame(0x1, payload, true, None),
    };
    if s.write_all(&frame).await.is_err() {
        return Outcome::Closed;
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8192];
    let deadline = tokio::time::Instant::now() + WS_TIMEOUT;
    let mut eof = false;
    while buf.len() < MAX_REPLY_BYTES {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                eof = true;
                break;
            }
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                // The first answer (a result, an error, a subscription's first item) is enough.
                if buf
                    .windows(8)
                    .any(|w| w == b"\"result\"" || w == b"\"params\"")
                    || buf.windows(7).any(|w| w == b"\"error\"")
                {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf);
    if text.contains("-32603") {
        Outcome::ServerError
    } else if text.contains("\"result\"") || text.contains("\"params\"") {
        Outcome::Accepted
    } else if text.contains("\"error\"") {
        Outcome::Refused
    } else if eof || !buf.is_empty() {
        // Closed, or a close frame.
        Outcome::Closed
    } else {
        Outcome::Timeout
    }
}

/// A client WebSocket frame: FIN, `opcode`, masked or not, with the true payload length or the
/// `declared` one.
fn ws_frame(opcode: u8, payload: &[u8], masked: bool, declared: Option<u64>) -> Vec<u8> {
    let mut f = vec![0x80 | (opcode & 0x0f)];
    let mask_bit = if masked { 0x80 } else { 0 };
    let len = declared.unwrap_or(payload.len() as u64);
    if len < 126 {
        f.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        f.push(mask_bit | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(mask_bit | 127);
        f.extend_from_slice(&len.to_be_bytes());
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// How an HTTP stall starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpStall {
    /// Headers never finished (slowloris).
    PartialHeaders,
    /// Headers announce a body of 100 KiB, 10 bytes follow.
    ShortBody,
    /// A WebSocket handshake, then nothing.
    IdleWebSocket,
}

impl HttpStall {
    /// Every kind.
    pub const ALL: [HttpStall; 3] = [
        HttpStall::PartialHeaders,
        HttpStall::ShortBody,
        HttpStall::IdleWebSocket,
    ];

    fn name(self) -> &'static str {
        match self {
            HttpStall::PartialHeaders => "http partial headers",
            HttpStall::ShortBody => "http short body",
            HttpStall::IdleWebSocket => "ws idle",
        }
    }
}

/// Opens a connection, starts a request as `kind` says, and holds it for `hold`;
/// [`Outcome::Closed`] when the node closed it first, [`Outcome::Refused`] when it answered,
/// [`Outcome::Timeout`] when the hold ran out. Returns the outcome and how long it stayed open.
pub async fn stall(
    tally: &Tally,
    addr: SocketAddr,
    kind: HttpStall,
    hold: Duration,
) -> (Outcome, Duration) {
    let started = Instant::now();
    let first: &[u8] = match kind {
        HttpStall::PartialHeaders => b"POST / HTTP/1.1\r\nHost: fuzz\r\nContent-Type: applic",
        HttpStall::ShortBody => {
            b"POST / HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n\
              Content-Length: 102400\r\n\r\n{\"jsonrpc\""
        }
        HttpStall::IdleWebSocket => {
            b"GET / HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        }
    };
    let outcome = match connect(addr).await {
        None => Outcome::Failed,
        Some(mut s) => {
            if s.write_all(first).await.is_err() {
                Outcome::Closed
            } else {
                let mut buf = [0u8; 1024];
                let deadline = tokio::time::Instant::now() + hold;
                // An answer other than a WebSocket upgrade (a 400 or 408, say).
                let mut answered = false;
                let mut upgraded = false;
                loop {
                    match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                        Err(_) if answered => break Outcome::Refused,
                        Err(_) => break Outcome::Timeout,
                        Ok(Ok(0)) | Ok(Err(_)) if answered => break Outcome::Refused,
                        Ok(Ok(0)) | Ok(Err(_)) => break Outcome::Closed,
                        Ok(Ok(n)) => {
                            if kind != HttpStall::IdleWebSocket {
                                answered = true;
                            } else if !upgraded {
                                upgraded = buf[..n].starts_with(b"HTTP/1.1 101");
                                answered = !upgraded;
                            }
                            // Frames on an upgraded idle WebSocket are the server's pings: not
                            // an answer; what counts is whether it closes.
                        }
                    }
                }
            }
        }
    };
    tally.record("stall", kind.name(), "stall", outcome);
    (outcome, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_and_judge() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":5}"
                .to_vec(),
            true,
        );
        assert_eq!(r.status, Some(200));
        let none = |_: &Value| false;
        assert_eq!(judge_rpc(&r, &none), Outcome::Accepted);
        let err = parse(
            b"HTTP/1.1 200 OK\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32602,\"message\":\"x\"}}".to_vec(),
            true,
        );
        assert_eq!(judge_rpc(&err, &none), Outcome::Refused);
        let internal = parse(
            b"HTTP/1.1 200 OK\r\n\r\n[{\"id\":1,\"error\":{\"code\":-32603}},{\"id\":2,\"result\":1}]"
                .to_vec(),
            true,
        );
        assert_eq!(judge_rpc(&internal, &none), Outcome::ServerError);
        assert_eq!(
            judge_rpc(&internal, &|id| *id == json!(1)),
            Outcome::Accepted
        );
        assert_eq!(
            judge_http(&parse(b"HTTP/1.1 413 Too Large\r\n\r\n".to_vec(), true)),
            Outcome::Refused
        );
        assert_eq!(judge_http(&parse(Vec::new(), true)), Outcome::Closed);
        assert_eq!(
            judge_http(&parse(b"HTTP/1.1 500 x\r\n\r\n".to_vec(), true)),
            Outcome::ServerError
        );
    }

    #[test]
    fn websocket_frames_encode_lengths_and_masks() {
        let f = ws_frame(0x1, b"hi", true, None);
        assert_eq!(f[0], 0x81);
        assert_eq!(f[1], 0x80 | 2);
        assert_eq!(f.len(), 2 + 4 + 2);
        assert_eq!(f[6] ^ f[2], b'h');
        let long = ws_frame(0x1, &[0u8; 300], false, None);
        assert_eq!(&long[1..4], &[126, 1, 44]);
        let lie = ws_frame(0x1, b"x", true, Some(1 << 62));
        assert_eq!(lie[1], 0x80 | 127);
    }
}
