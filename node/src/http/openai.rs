//! OpenAI-compatible routes: `GET /v1/models`, `POST /v1/chat/completions` (JSON or SSE).
//!
//! Bad input always gets a 4xx with an OpenAI error object; extra fields clients commonly send
//! (`presence_penalty`, `user`, …) are accepted and ignored.

use std::convert::Infallible;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use mycel_models::ChatMessage;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::SERVED_BY_HEADER;
use super::rpc::parse_role;
use crate::chat::{ChatAnswer, ChatEvent, ChatJob, SamplingRequest};
use crate::error::NodeError;
use crate::node::{ChatStream, Node};

/// Capacity of the channel feeding one SSE response.
const SSE_CHANNEL_CAPACITY: usize = 64;
/// How [`mycel_models::ModelsError::ContextOverflow`] reads, locally or relayed by a provider as
/// an invalid request: answered with OpenAI's `context_length_exceeded` code.
const CONTEXT_OVERFLOW: &str = "context length exceeded";

/// OpenAI's error envelope: `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// OpenAI's error object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    /// Human-readable message.
    pub message: String,
    /// `invalid_request_error` for bad input, `server_error` otherwise.
    #[serde(rename = "type")]
    pub kind: String,
    /// The offending parameter, when known.
    pub param: Option<String>,
    /// Machine-readable code (`model_not_found`, …).
    pub code: Option<String>,
}

struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, code: Option<&str>, message: String) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: ErrorObject {
                    message,
                    kind: kind.to_string(),
                    param: None,
                    code: code.map(str::to_string),
                },
            },
        }
    }

    fn invalid(message: String) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            message,
        )
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let msg = e.to_string();
        match e {
            NodeError::InvalidRequest(m) if m.starts_with(CONTEXT_OVERFLOW) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("context_length_exceeded"),
                msg,
            ),
            NodeError::InvalidRequest(_) => Self::invalid(msg),
            NodeError::ModelNotFound(_) => Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found"),
                msg,
            ),
            NodeError::Busy(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("busy"),
                msg,
            ),
            NodeError::UpstreamFailed { .. } => Self::new(
                StatusCode::BAD_GATEWAY,
                "server_error",
                Some("upstream_failed"),
                msg,
            ),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, msg),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// `stop` is a string or a list of strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum StopField {
    One(String),
    Many(Vec<String>),
}

/// Message content: a string, or a list of `{"type": "text", "text": …}` parts.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct OaiMessage {
    role: String,
    content: Content,
}

#[derive(Deserialize)]
struct CompletionRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<OaiMessage>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stop: Option<StopField>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    n: Option<u64>,
    /// mycel extension, with the model `experts`: `single` or `ensemble`.
    #[serde(default)]
    mode: Option<String>,
    /// mycel extension: experts an ensemble asks.
    #[serde(default)]
    k: Option<u64>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `GET /v1/models`.
pub(super) async fn list_models(State(node): State<Node>) -> Response {
    match node.models().await {
        Ok(models) => {
            let data: Vec<Value> = models
                .into_iter()
                .map(|m| {
                    json!({
                        "id": m.id,
                        "object": "model",
                        "created": 0,
                        "owned_by": "mycel",
                        "mycel": { "local": m.local, "served_by": m.served_by },
                    })
                })
                .collect();
            Json(json!({ "object": "list", "data": data })).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn to_job(node: &Node, req: CompletionRequest) -> Result<(ChatJob, bool), ApiError> {
    if req.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("only n = 1 is supported".into()));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in req.messages {
        let role = parse_role(&m.role)?;
        let content = match m.content {
            Content::Text(t) => t,
            Content::Parts(parts) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), p.text) {
                        ("text", Some(t)) => text.push_str(&t),
                        (kind, _) => {
                            return Err(ApiError::invalid(format!(
                                "content part of type `{kind}` is not supported (text only)"
                            )));
                        }
                    }
                }
                text
            }
        };
        messages.push(ChatMessage { role, content });
    }
    let stop = match req.stop {
        None => Vec::new(),
        Some(StopField::One(s)) => vec![s],
        Some(StopField::Many(v)) => v,
    };
    let model = req.model.unwrap_or_else(|| node.default_model());
    let ensemble = crate::chat::ensemble_size(&model, req.mode.as_deref(), req.k)?;
    let mut job = ChatJob::new(
        model,
        messages,
        &SamplingRequest {
            temperature: req.temperature,
            top_p: req.top_p,
            max_tokens: req.max_completion_tokens.or(req.max_tokens),
            seed: req.seed.map(|s| s as u64),
        },
        stop,
    )?;
    job.ensemble = ensemble;
    Ok((job, req.stream.unwrap_or(false)))
}

/// `POST /v1/chat/completions`.
pub(super) async fn chat_completions(
    State(node): State<Node>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(e.status(), "invalid_request_error", None, e.body_text())
                .into_response();
        }
    };
    let req: CompletionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return ApiError::invalid(format!("bad JSON body: {e}")).into_response(),
    };
    let (job, stream) = match to_job(&node, req) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let chat = match node.chat(job).await {
        Ok(c) => c,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let served_by = HeaderValue::from_str(&chat.served_by.to_string()).ok();
    let mut resp = if stream {
        sse_response(chat, started)
    } else {
        json_response(chat, started).await
    };
    if let Some(v) = served_by {
        resp.headers_mut().insert(SERVED_BY_HEADER, v);
    }
    resp
}

fn mycel_field(chat: &ChatStream, started: Instant) -> Value {
    let mut v = json!({
        "served_by": chat.served_by.to_string(),
        "served_by_peer": chat.served_by_peer.to_base58(),
        "remote": chat.remote,
        "latency_ms": started.elapsed().as_millis() as u64,
        "cached": chat.cached,
    });
    if let Some(r) = &chat.routing {
        v["routing"] = r.clone();
    }
    v
}

fn usage(a: &ChatAnswer) -> Value {
    json!({
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens.saturating_add(a.completion_tokens),
    })
}

async fn json_response(mut chat: ChatStream, started: Instant) -> Response {
    let events = std::mem::replace(&mut chat.events, mpsc::channel(1).1);
    let answer = match crate::chat::collect(events).await {
        Ok(a) => a,
        Err(e) => return ApiError::from(e).into_response(),
    };
    Json(json!({
        "id": chat.id,
        "object": "chat.completion",
        "created": now_secs(),
        "model": chat.model,
        "system_fingerprint": chat.served_by.to_string(),
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": answer.text },
            "finish_reason": answer.finish.as_str(),
        }],
        "usage": usage(&answer),
        "mycel": mycel_field(&chat, started),
    }))
    .into_response()
}

fn sse_response(mut chat: ChatStream, started: Instant) -> Response {
    let id = chat.id.clone();
    let created = now_secs();
    let (tx, mut rx) = mpsc::channel::<Result<Event, Infallible>>(SSE_CHANNEL_CAPACITY);
    let mut events = std::mem::replace(&mut chat.events, mpsc::channel(1).1);
    tokio::spawn(async move {
        let fingerprint = chat.served_by.to_string();
        let chunk = |delta: Value, finish: Option<&str>| {
            json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": chat.model,
                "system_fingerprint": fingerprint,
                "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
            })
        };
        // Content deltas are most of the stream: their JSON is a fixed frame around the text,
        // built once (the same fields and values as `chunk`).
        let frame = chunk(json!({ "content": "\u{0}" }), None).to_string();
        let (head, tail) = frame
            .split_once("\"\\u0000\"")
            .map(|(h, t)| (h.to_string(), t.to_string()))
            .unwrap_or_default();
        let delta_event = |text: &str| {
            let text = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
            Ok::<_, Infallible>(Event::default().data(format!("{head}{text}{tail}")))
        };
        let send = |v: Value| Ok::<_, Infallible>(Event::default().data(v.to_string()));
        if tx
            .send(send(chunk(
                json!({ "role": "assistant", "content": "" }),
                None,
            )))
            .await
            .is_err()
        {
            return;
        }
        while let Some(ev) = events.recv().await {
            let msg = match ev {
                ChatEvent::Delta(text) if head.is_empty() => {
                    send(chunk(json!({ "content": text }), None))
                }
                ChatEvent::Delta(text) => delta_event(&text),
                ChatEvent::Done(answer) => {
                    let mut last = chunk(json!({}), Some(answer.finish.as_str()));
                    last["usage"] = usage(&answer);
                    last["mycel"] = mycel_field(&chat, started);
                    let _ = tx.send(send(last)).await;
                    break;
                }
                ChatEvent::Failed(e) => {
                    let err = ApiError::from(NodeError::Inference(e)).body;
                    let _ = tx.send(send(json!(err))).await;
                    break;
                }
            };
            if tx.send(msg).await.is_err() {
                // The client left; dropping `events` cancels generation.
                return;
            }
        }
        let _ = tx.send(Ok(Event::default().data("[DONE]"))).await;
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Sse::new(stream).into_response()
}
