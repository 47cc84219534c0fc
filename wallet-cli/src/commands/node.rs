//! Commands that talk to a node over JSON-RPC: `chat`, `node status`, `peers`, `models`.

use std::io::{BufRead, IsTerminal, Write};

use jsonrpsee::core::client::Error as RpcError;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::WsClientBuilder;
use mycel_rpc_api::{ChatMessage, ChatRequest, MycelApiClient, error_codes};
use serde_json::json;

use crate::Report;
use crate::cli::ChatArgs;
use crate::context::Context;
use crate::error::{CliError, CliResult, Kind};

/// Most messages an interactive session keeps (oldest turns are dropped first).
const MAX_HISTORY: usize = 32;

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(Kind::Internal, format!("starting the async runtime: {e}")))
}

fn rpc_error(url: &str, e: RpcError) -> CliError {
    match e {
        RpcError::Call(obj) => {
            let kind = match obj.code() {
                error_codes::MODEL_NOT_FOUND => Kind::NotFound,
                error_codes::INVALID_PARAMS => Kind::Invalid,
                _ => Kind::Node,
            };
            CliError::new(kind, format!("the node refused: {}", obj.message()))
        }
        other => CliError::new(
            Kind::Node,
            format!(
                "cannot reach the node at {url}: {other} (is `mycel-node up` running? see --rpc)"
            ),
        ),
    }
}

fn http_client(url: &str) -> CliResult<HttpClient> {
    HttpClientBuilder::default()
        .build(url)
        .map_err(|e| CliError::new(Kind::Invalid, format!("bad --rpc URL `{url}`: {e}")))
}

/// The WebSocket URL of the same endpoint.
fn ws_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url.to_owned()
    }
}

/// `mycel node status`.
pub fn status(url: &str) -> CliResult<Report> {
    runtime()?.block_on(async {
        let client = http_client(url)?;
        let info = client.node_info().await.map_err(|e| rpc_error(url, e))?;
        let peers = client.peers().await.map_err(|e| rpc_error(url, e))?;
        let models = client.models().await.map_err(|e| rpc_error(url, e))?;
        let mut text = format!(
            "did:      {}\npeer id:  {}\nversion:  {}\nhttp:     {}\n",
            info.did, info.peer_id, info.version, info.http_url
        );
        for addr in &info.listen_addrs {
            text.push_str(&format!("listen:   {addr}\n"));
        }
        text.push_str(&format!("serves:   {}\n", list_or_none(&info.models)));
        text.push_str(&format!("peers:    {}\n", peers.len()));
        let reachable: Vec<String> = models.iter().map(|m| m.id.clone()).collect();
        text.push_str(&format!("reachable models: {}", list_or_none(&reachable)));
        Ok(Report::new(
            text,
            json!({ "node": info, "peers": peers.len(), "models": models }),
        ))
    })
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// `mycel peers`.
pub fn peers(url: &str) -> CliResult<Report> {
    runtime()?.block_on(async {
        let peers = http_client(url)?
            .peers()
            .await
            .map_err(|e| rpc_error(url, e))?;
        let mut text = String::new();
        for p in &peers {
            let rtt = p
                .rtt_ms
                .map(|r| format!("{r} ms"))
                .unwrap_or_else(|| "-".into());
            text.push_str(&format!(
                "{}  rtt {:>6}  models: {}\n",
                p.did.as_deref().unwrap_or(&p.peer_id),
                rtt,
                list_or_none(&p.models)
            ));
        }
        if peers.is_empty() {
            text.push_str("no peers connected");
        }
        Ok(Report::new(text, json!({ "peers": peers })))
    })
}

/// `mycel models`.
pub fn models(url: &str) -> CliResult<Report> {
    runtime()?.block_on(async {
        let models = http_client(url)?
            .models()
            .await
            .map_err(|e| rpc_error(url, e))?;
        let mut text = String::new();
        for m in &models {
            let place = if m.local { "local" } else { "remote" };
            text.push_str(&format!(
                "{:<28} {place:<6} served by {}\n",
                m.id,
                m.served_by.len()
            ));
        }
        if models.is_empty() {
            text.push_str("no models reachable");
        }
        Ok(Report::new(text, json!({ "models": models })))
    })
}

fn request(args: &ChatArgs, messages: Vec<ChatMessage>) -> ChatRequest {
    ChatRequest {
        model: args.model.clone(),
        messages,
        temperature: args.temperature,
        top_p: args.top_p,
        max_tokens: args.max_tokens,
        seed: args.seed,
        stop: Vec::new(),
    }
}

fn message(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

/// `mycel chat`: one question, or an interactive session when no prompt is given.
pub fn chat(args: ChatArgs, url: &str, ctx: &Context) -> CliResult<Report> {
    let mut history: Vec<ChatMessage> = Vec::new();
    if let Some(system) = &args.system {
        history.push(message("system", system));
    }
    let rt = runtime()?;
    if let Some(prompt) = &args.prompt {
        history.push(message("user", prompt));
        if ctx.json {
            let answer = rt.block_on(async {
                http_client(url)?
                    .chat(request(&args, history))
                    .await
                    .map_err(|e| rpc_error(url, e))
            })?;
            let text = answer.content.clone();
            return Ok(Report::new(text, json!(answer)));
        }
        let (_, served_by) = rt.block_on(stream_answer(url, request(&args, history), ctx))?;
        return Ok(Report::new(
            String::new(),
            json!({ "served_by": served_by }),
        ));
    }
    if ctx.json {
        return Err(CliError::new(
            Kind::Invalid,
            "--json needs a prompt (the interactive session is for people)",
        ));
    }
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("Chatting through {url}. An empty line or Ctrl-D ends the session.");
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut turns = 0u64;
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.map_err(|e| CliError::new(Kind::Io, format!("reading stdin: {e}")))?;
        if line.trim().is_empty() {
            break;
        }
        history.push(message("user", line.trim()));
        let (answer, _) = rt.block_on(stream_answer(url, request(&args, history.clone()), ctx))?;
        history.push(message("assistant", &answer));
        // Keep the system message, drop the oldest turns.
        let keep_from = usize::from(args.system.is_some());
        while history.len() > MAX_HISTORY {
            history.remove(keep_from);
        }
        turns += 1;
    }
    Ok(Report::new(String::new(), json!({ "turns": turns })))
}

/// Streams one answer to stdout over a WebSocket subscription; returns the text and the serving DID.
async fn stream_answer(url: &str, req: ChatRequest, ctx: &Context) -> CliResult<(String, String)> {
    let ws = ws_url(url);
    let client = WsClientBuilder::default()
        .build(&ws)
        .await
        .map_err(|e| rpc_error(&ws, e))?;
    let mut sub = client
        .chat_stream(req)
        .await
        .map_err(|e| rpc_error(&ws, e))?;
    let mut out = std::io::stdout().lock();
    let mut answer = String::new();
    let mut served_by = String::new();
    let mut finished = false;
    while let Some(chunk) = sub.next().await {
        let chunk = chunk.map_err(|e| CliError::new(Kind::Node, format!("stream broke: {e}")))?;
        if let Some(error) = chunk.error {
            return Err(CliError::new(
                Kind::Node,
                format!("generation failed: {error}"),
            ));
        }
        served_by = chunk.served_by;
        answer.push_str(&chunk.delta);
        let _ = out.write_all(chunk.delta.as_bytes());
        let _ = out.flush();
        if let Some(reason) = chunk.finish_reason {
            let _ = writeln!(out);
            let usage = chunk
                .usage
                .map(|u| format!(", {} tokens", u.completion_tokens))
                .unwrap_or_default();
            let place = if chunk.remote { "remote" } else { "local" };
            ctx.note(format!(
                "[{reason}{usage}; answered by {served_by} ({place})]"
            ));
            finished = true;
            break;
        }
    }
    if !finished {
        return Err(CliError::new(
            Kind::Node,
            "the node closed the stream before the answer was complete",
        ));
    }
    Ok((answer, served_by))
}
