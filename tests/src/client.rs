//! Clients that talk to a node the way users do: the OpenAI-compatible HTTP API (JSON and SSE) and
//! JSON-RPC 2.0 (over HTTP, and the `mycel_subscribeChat` subscription over WebSocket).
//!
//! HTTP is spoken with hyper's HTTP/1.1 client on tokio, one connection per request, so hundreds of
//! concurrent streams cost tasks, not threads. Every body is read into a bounded buffer
//! ([`MAX_BODY_BYTES`], [`MAX_SSE_LINE_BYTES`]) and every exchange has a deadline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, Response, header};
use hyper_util::rt::TokioIo;
use jsonrpsee::ws_client::{RpcService, RpcServiceBuilder, WsClient, WsClientBuilder};
use mycel_rpc_api::{ChatMessage, ChatRequest, MycelApiClient, error_codes};
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Largest response body read whole (JSON answers and errors).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Longest line accepted in an SSE stream.
pub const MAX_SSE_LINE_BYTES: usize = 1024 * 1024;
/// Response header naming the DID of the node that ran the model.
pub const SERVED_BY_HEADER: &str = "x-mycel-served-by";

/// An HTTP reply read whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// The `x-mycel-served-by` header, when present.
    pub served_by: Option<String>,
    /// The body as text.
    pub body: String,
}

impl HttpReply {
    /// The body parsed as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).map_err(|e| Error::Protocol {
            url: String::new(),
            message: format!("body is not JSON ({e}): {}", clip(&self.body)),
        })
    }
}

/// One chat question.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatQuery {
    /// Model id.
    pub model: String,
    /// The user's message.
    pub prompt: String,
    /// Most tokens to generate.
    pub max_tokens: u32,
    /// Sampling temperature (0 is greedy).
    pub temperature: f32,
    /// Seed; the same seed, model and prompt give the same answer on any provider.
    pub seed: Option<u64>,
}

impl ChatQuery {
    /// A short question for `model` with a fixed seed.
    pub fn new(model: &str, prompt: &str, max_tokens: u32, seed: u64) -> Self {
        Self {
            model: model.to_string(),
            prompt: prompt.to_string(),
            max_tokens,
            temperature: 0.7,
            seed: Some(seed),
        }
    }

    fn openai_body(&self, stream: bool) -> Value {
        let mut v = json!({
            "model": self.model,
            "messages": [{ "role": "user", "content": self.prompt }],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": stream,
        });
        if let Some(seed) = self.seed {
            v["seed"] = json!(seed);
        }
        v
    }

    fn rpc_request(&self) -> ChatRequest {
        ChatRequest {
            model: Some(self.model.clone()),
            messages: vec![ChatMessage {
                role: "user".into(),
                content: self.prompt.clone(),
            }],
            temperature: Some(self.temperature),
            max_tokens: Some(self.max_tokens),
            seed: self.seed,
            ..Default::default()
        }
    }
}

/// Which interface a query goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /v1/chat/completions`, whole answer.
    OpenAi,
    /// `POST /v1/chat/completions` with `stream: true` (SSE).
    OpenAiStream,
    /// JSON-RPC `mycel_chat` over HTTP.
    Rpc,
    /// JSON-RPC `mycel_subscribeChat` subscription over WebSocket.
    RpcStream,
}

impl Api {
    /// Every interface, in a fixed order.
    pub const ALL: [Api; 4] = [Api::OpenAi, Api::OpenAiStream, Api::Rpc, Api::RpcStream];

    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::OpenAiStream => "openai_sse",
            Api::Rpc => "rpc",
            Api::RpcStream => "rpc_ws",
        }
    }
}

/// A complete answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The answer text.
    pub text: String,
    /// DID of the node that ran the model.
    pub served_by: String,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// Time to the first non-empty text delta (streaming interfaces only).
    pub ttft: Option<Duration>,
    /// Time to the complete answer.
    pub total: Duration,
}

/// How one query ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A complete answer.
    Answered(Answer),
    /// The node shed load: backpressure, not a fault. HTTP 503 `busy` or JSON-RPC -32003; and,
    /// see [`all_providers_busy`], a forwarder's `upstream_failed` in which every provider it tried
    /// refused as busy.
    Busy(String),
    /// Anything else: an error status, a broken or malformed stream, a deadline.
    Failed(String),
}

impl Outcome {
    /// The answer, if there is one.
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Outcome::Answered(a) => Some(a),
            _ => None,
        }
    }
}

/// Asks `query` at the node whose HTTP API is at `addr`, through `api`, within `timeout`.
pub async fn ask(api: Api, addr: SocketAddr, query: &ChatQuery, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let run = async {
        match api {
            Api::RpcStream => match RpcStreamClient::connect(addr, timeout).await {
                Ok(c) => c.chat_stream_inner(query, started).await,
                Err(e) => Outcome::Failed(e.to_string()),
            },
            http => HttpClient::new(addr).ask_inner(http, query, started).await,
        }
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed(format!(
            "{} query: no complete answer within {:.1}s",
            api.name(),
            timeout.as_secs_f64()
        )),
    }
}

/// `GET http://addr{path}`, read whole.
pub async fn get(addr: SocketAddr, path: &str) -> Result<HttpReply> {
    HttpClient::new(addr).get(path).await
}

/// `POST http://addr{path}` with a JSON body, read whole.
pub async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Result<HttpReply> {
    HttpClient::new(addr).post_json(path, body).await
}

/// An HTTP/1.1 client for one node that keeps its connection open across requests (as real
/// clients do), reconnecting when the node closed it.
pub struct HttpClient {
    addr: SocketAddr,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("addr", &self.addr)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl HttpClient {
    /// A client for the node whose HTTP API is at `addr` (connects on first use).
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// `GET {path}`, read whole.
    pub async fn get(&mut self, path: &str) -> Result<HttpReply> {
        let resp = self.send(Method::GET, path, None).await?;
        read_whole(self.addr, path, resp).await
    }

    /// `POST {path}` with a JSON body, read whole.
    pub async fn post_json(&mut self, path: &str, body: &Value) -> Result<HttpReply> {
        let resp = self
            .send(Method::POST, path, Some(body.to_string().into_bytes()))
            .await?;
        read_whole(self.addr, path, resp).await
    }

    /// Asks `query` through an HTTP interface (`api` must not be [`Api::RpcStream`]) within
    /// `timeout`.
    pub async fn ask(&mut self, api: Api, query: &ChatQuery, timeout: Duration) -> Outcome {
        let started = Instant::now();
        match tokio::time::timeout(timeout, self.ask_inner(api, query, started)).await {
            Ok(o) => o,
            Err(_) => {
                // The connection may be mid-response: do not reuse it.
                self.conn = None;
                Outcome::Failed(format!(
                    "{} query: no complete answer within {:.1}s",
                    api.name(),
                    timeout.as_secs_f64()
                ))
            }
        }
    }

    async fn ask_inner(&mut self, api: Api, query: &ChatQuery, started: Instant) -> Outcome {
        match api {
            Api::OpenAi => self.openai_chat(query, started).await,
            Api::OpenAiStream => self.openai_stream(query, started).await,
            Api::Rpc => self.rpc_chat(query, started).await,
            Api::RpcStream => Outcome::Failed("WebSocket queries need an RpcStreamClient".into()),
        }
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>> {
        let addr = self.addr;
        let url = format!("http://{addr}{path}");
        let http_err = |message: String| Error::Http {
            url: url.clone(),
            message,
        };
        if let Some(conn) = &mut self.conn
            && conn.ready().await.is_err()
        {
            self.conn = None;
        }
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| http_err(format!("connect: {e}")))?;
                let _ = stream.set_nodelay(true);
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| http_err(format!("handshake: {e}")))?;
                // The connection task ends when the node closes it or `sender` is dropped.
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                self.conn.insert(sender)
            }
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string());
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| http_err(format!("request: {e}")))?;
        match conn.send_request(req).await {
            Ok(resp) => Ok(resp),
            Err(e) => {
                self.conn = None;
                Err(http_err(format!("request: {e}")))
            }
        }
    }
}

/// Calls a JSON-RPC method over HTTP; the `result`, or the `error` object as [`Error::Protocol`].
pub async fn rpc_call(addr: SocketAddr, method: &str, params: Value) -> Result<Value> {
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let reply = post_json(addr, "/", &body).await?;
    let url = format!("http://{addr}/ {method}");
    let v = reply.json().map_err(|e| Error::Protocol {
        url: url.clone(),
        message: e.to_string(),
    })?;
    if let Some(result) = v.get("result") {
        return Ok(result.clone());
    }
    Err(Error::Protocol {
        url,
        message: format!("JSON-RPC error: {}", v.get("error").unwrap_or(&v)),
    })
}

/// A JSON-RPC WebSocket connection for `mycel_subscribeChat`, kept open across queries.
pub struct RpcStreamClient {
    client: WsClient<RpcService>,
    url: String,
}

impl std::fmt::Debug for RpcStreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcStreamClient")
            .field("url", &self.url)
            .finish()
    }
}

impl RpcStreamClient {
    /// Opens the WebSocket to the node whose HTTP API is at `addr`.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let url = format!("ws://{addr}");
        let client = WsClientBuilder::default()
            .set_rpc_middleware(RpcServiceBuilder::new())
            .request_timeout(timeout)
            .connection_timeout(timeout)
            .build(&url)
            .await
            .map_err(|e| Error::Http {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok(Self { client, url })
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// Streams one answer within `timeout`.
    pub async fn chat_stream(&self, query: &ChatQuery, timeout: Duration) -> Outcome {
        let started = Instant::now();
        match tokio::time::timeout(timeout, self.chat_stream_inner(query, started)).await {
            Ok(o) => o,
            Err(_) => Outcome::Failed(format!(
                "rpc_ws query: no complete answer within {:.1}s",
                timeout.as_secs_f64()
            )),
        }
    }

    async fn chat_stream_inner(&self, query: &ChatQuery, started: Instant) -> Outcome {
        let mut sub = match self.client.subscribe_chat(query.rpc_request()).await {
            Ok(s) => s,
            Err(jsonrpsee::core::client::Error::Call(e))
                if e.code() == error_codes::BUSY
                    || (e.code() == error_codes::UPSTREAM_FAILED
                        && all_providers_busy(e.message())) =>
            {
                return Outcome::Busy(e.message().to_string());
            }
            Err(e) => return Outcome::Failed(format!("{}: mycel_subscribeChat: {e}", self.url)),
        };
        let mut text = String::new();
        let mut ttft = None;
        while let Some(chunk) = sub.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Outcome::Failed(format!("{}: bad chunk: {e}", self.url)),
            };
            if let Some(error) = chunk.error {
                return Outcome::Failed(format!("{}: generation failed: {error}", self.url));
            }
            if !chunk.delta.is_empty() && ttft.is_none() {
                ttft = Some(started.elapsed());
            }
            text.push_str(&chunk.delta);
            if let Some(finish_reason) = chunk.finish_reason {
                return Outcome::Answered(Answer {
                    text,
                    served_by: chunk.served_by,
                    finish_reason,
                    ttft,
                    total: started.elapsed(),
                });
            }
        }
        Outcome::Failed(format!(
            "{}: subscription ended without a last chunk",
            self.url
        ))
    }
}

impl HttpClient {
    async fn openai_chat(&mut self, query: &ChatQuery, started: Instant) -> Outcome {
        let path = "/v1/chat/completions";
        let reply = match self.post_json(path, &query.openai_body(false)).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if reply.status != 200 {
            return http_error_outcome(&reply);
        }
        let Ok(v) = reply.json() else {
            return Outcome::Failed(format!("answer is not JSON: {}", clip(&reply.body)));
        };
        let text = v["choices"][0]["message"]["content"].as_str();
        let finish = v["choices"][0]["finish_reason"].as_str();
        let served_by = v["mycel"]["served_by"].as_str();
        match (text, finish, served_by) {
            (Some(text), Some(finish), Some(by)) => Outcome::Answered(Answer {
                text: text.to_string(),
                served_by: by.to_string(),
                finish_reason: finish.to_string(),
                ttft: None,
                total: started.elapsed(),
            }),
            _ => Outcome::Failed(format!("incomplete answer: {}", clip(&reply.body))),
        }
    }

    async fn rpc_chat(&mut self, query: &ChatQuery, started: Instant) -> Outcome {
        let body = json!({
            "jsonrpc": "2.0", "id": 1, "method": "mycel_chat", "params": [query.rpc_request()],
        });
        let reply = match self.post_json("/", &body).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let Ok(v) = reply.json() else {
            return Outcome::Failed(format!(
                "HTTP {}: not JSON: {}",
                reply.status,
                clip(&reply.body)
            ));
        };
        if let Some(err) = v.get("error") {
            let message = err["message"].as_str().unwrap_or_default();
            let code = err["code"].as_i64();
            if code == Some(i64::from(error_codes::BUSY))
                || (code == Some(i64::from(error_codes::UPSTREAM_FAILED))
                    && all_providers_busy(message))
            {
                return Outcome::Busy(message.to_string());
            }
            return Outcome::Failed(format!("mycel_chat: {err}"));
        }
        let r = &v["result"];
        match (
            r["content"].as_str(),
            r["finish_reason"].as_str(),
            r["served_by"].as_str(),
        ) {
            (Some(text), Some(finish), Some(by)) => Outcome::Answered(Answer {
                text: text.to_string(),
                served_by: by.to_string(),
                finish_reason: finish.to_string(),
                ttft: None,
                total: started.elapsed(),
            }),
            _ => Outcome::Failed(format!(
                "incomplete mycel_chat result: {}",
                clip(&reply.body)
            )),
        }
    }

    async fn openai_stream(&mut self, query: &ChatQuery, started: Instant) -> Outcome {
        let path = "/v1/chat/completions";
        let body = query.openai_body(true).to_string().into_bytes();
        let resp = match self.send(Method::POST, path, Some(body)).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if resp.status() != 200 {
            return match read_whole(self.addr, path, resp).await {
                Ok(reply) => http_error_outcome(&reply),
                Err(e) => Outcome::Failed(e.to_string()),
            };
        }
        let header_by = resp
            .headers()
            .get(SERVED_BY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = resp.into_body();
        let mut line = Vec::new();
        let mut text = String::new();
        let mut ttft = None;
        let mut finish: Option<(String, String)> = None;
        loop {
            let frame = match body.frame().await {
                None => break,
                Some(Err(e)) => return Outcome::Failed(format!("SSE stream broke: {e}")),
                Some(Ok(f)) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            for &b in data.iter() {
                if b != b'\n' {
                    if line.len() >= MAX_SSE_LINE_BYTES {
                        return Outcome::Failed("SSE line too long".into());
                    }
                    line.push(b);
                    continue;
                }
                let l = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_string();
                line.clear();
                let Some(data) = l.strip_prefix("data:") else {
                    continue;
                };
                let data = data.trim_start();
                if data == "[DONE]" {
                    // Read the end of the body so the connection can carry the next request.
                    while let Some(Ok(_)) = body.frame().await {}
                    return match finish {
                        Some((finish_reason, served_by)) => Outcome::Answered(Answer {
                            text,
                            served_by,
                            finish_reason,
                            ttft,
                            total: started.elapsed(),
                        }),
                        None => Outcome::Failed("SSE [DONE] without a last chunk".into()),
                    };
                }
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    return Outcome::Failed(format!("SSE data is not JSON: {}", clip(data)));
                };
                if let Some(err) = v.get("error") {
                    return Outcome::Failed(format!("generation failed mid-stream: {err}"));
                }
                let choice = &v["choices"][0];
                if let Some(t) = choice["delta"]["content"].as_str()
                    && !t.is_empty()
                {
                    ttft.get_or_insert_with(|| started.elapsed());
                    text.push_str(t);
                }
                if let Some(f) = choice["finish_reason"].as_str() {
                    let by = v["mycel"]["served_by"]
                        .as_str()
                        .map(str::to_string)
                        .or_else(|| header_by.clone())
                        .unwrap_or_default();
                    finish = Some((f.to_string(), by));
                }
            }
        }
        Outcome::Failed("SSE stream ended before [DONE]".into())
    }
}

/// Whether an `upstream_failed` error message says that every provider tried refused as busy.
///
/// A forwarder reports `` no provider answered for model `m`: PEER: Busy: …; PEER: Busy: … ``
/// as HTTP 502 `upstream_failed` (JSON-RPC -32002) even when the only trouble was load; clients
/// retry a 503 but not a 502. Until the node reports that case as busy, the simulations read the
/// reasons: only when *every* one is `Busy` is the refusal counted as shed load.
pub fn all_providers_busy(message: &str) -> bool {
    let Some((_, reasons)) = message.split_once("`: ") else {
        return false;
    };
    let mut n = 0;
    for reason in reasons.split("; ") {
        n += 1;
        let mut parts = reason.splitn(3, ": ");
        let (_peer, code) = (parts.next(), parts.next());
        if code != Some("Busy") {
            return false;
        }
    }
    n > 0
}

fn http_error_outcome(reply: &HttpReply) -> Outcome {
    let v = reply.json().ok();
    let field = |k: &str| {
        v.as_ref()
            .and_then(|v| v["error"][k].as_str().map(str::to_string))
    };
    let (code, message) = (field("code"), field("message").unwrap_or_default());
    let busy = match (reply.status, code.as_deref()) {
        (503, Some("busy")) => true,
        (502, Some("upstream_failed")) => all_providers_busy(&message),
        _ => false,
    };
    if busy {
        Outcome::Busy(clip(&reply.body))
    } else {
        Outcome::Failed(format!("HTTP {}: {}", reply.status, clip(&reply.body)))
    }
}

async fn read_whole(addr: SocketAddr, path: &str, resp: Response<Incoming>) -> Result<HttpReply> {
    let url = format!("http://{addr}{path}");
    let status = resp.status().as_u16();
    let served_by = resp
        .headers()
        .get(SERVED_BY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::Http {
            url: url.clone(),
            message: format!("body: {e}"),
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_BODY_BYTES {
                return Err(Error::Protocol {
                    url,
                    message: format!("body larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(HttpReply {
        status,
        served_by,
        body: String::from_utf8_lossy(&buf).into_owned(),
    })
}

/// The first 300 characters of a body, for error messages.
fn clip(s: &str) -> String {
    const MAX: usize = 300;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_all_busy_upstream_failure_counts_as_busy() {
        let p = "12D3KooWBU2ea78ypbdBDZ1642kSEXr4aq8eijcKnxZ8vjr89Sqv";
        let all = format!(
            "no provider answered for model `tiny`: {p}: Busy: 2 generations running and 16 \
             queued; {p}: Busy: too many inbound jobs"
        );
        assert!(all_providers_busy(&all));
        let mixed = format!(
            "no provider answered for model `tiny`: {p}: Busy: 2 running; {p}: sending the job: \
             connection is closed"
        );
        assert!(!all_providers_busy(&mixed));
        let failed = format!("no provider answered for model `tiny`: {p}: Failed: boom");
        assert!(!all_providers_busy(&failed));
        assert!(!all_providers_busy("something else entirely"));

        let reply = |status, body: &str| HttpReply {
            status,
            served_by: None,
            body: body.to_string(),
        };
        let body = |code: &str, msg: &str| {
            json!({ "error": { "message": msg, "type": "server_error", "code": code } }).to_string()
        };
        let busy = http_error_outcome(&reply(503, &body("busy", "2 running")));
        assert!(matches!(busy, Outcome::Busy(_)));
        let upstream_busy = http_error_outcome(&reply(502, &body("upstream_failed", &all)));
        assert!(matches!(upstream_busy, Outcome::Busy(_)));
        let upstream_mixed = http_error_outcome(&reply(502, &body("upstream_failed", &mixed)));
        assert!(matches!(upstream_mixed, Outcome::Failed(_)));
        let server = http_error_outcome(&reply(500, &body("busy", "odd")));
        assert!(matches!(server, Outcome::Failed(_)));
    }
}
