//! Commands that talk to a node over JSON-RPC: `chat`, `node status`, `peers`, `models`, `job`.

use std::io::{BufRead, IsTerminal, Write};

use mycel_rpc_api::{ChatMessage, ChatRequest, JobState, JobStatus, MycelApiClient};
use serde_json::json;

use crate::Report;
use crate::cli::ChatArgs;
use crate::context::Context;
use crate::error::{CliError, CliResult, Kind};
use crate::rpc::{Endpoint, runtime};

/// Most messages an interactive session keeps (oldest turns are dropped first).
const MAX_HISTORY: usize = 32;

/// `mycel node status`.
pub fn status(node: &Endpoint) -> CliResult<Report> {
    runtime()?.block_on(async {
        let client = node.http()?;
        let info = client.node_info().await.map_err(|e| node.error(e))?;
        let peers = client.peers().await.map_err(|e| node.error(e))?;
        let models = client.models().await.map_err(|e| node.error(e))?;
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
pub fn peers(node: &Endpoint) -> CliResult<Report> {
    runtime()?.block_on(async {
        let peers = node.http()?.peers().await.map_err(|e| node.error(e))?;
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
pub fn models(node: &Endpoint) -> CliResult<Report> {
    runtime()?.block_on(async {
        let models = node.http()?.models().await.map_err(|e| node.error(e))?;
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

/// `mycel job <id>`.
pub fn job(id: &str, node: &Endpoint) -> CliResult<Report> {
    runtime()?.block_on(async {
        let status = node
            .http()?
            .job_status(id.to_owned())
            .await
            .map_err(|e| node.error(e))?;
        Ok(Report::new(describe_job(&status), json!(status)))
    })
}

/// Unix milliseconds as RFC 3339 (UTC, millisecond precision).
fn unix_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms after 1970"))
}

/// The text form of a job's status.
fn describe_job(s: &JobStatus) -> String {
    let state = match s.state {
        JobState::Running => "running",
        JobState::Done => "done",
        JobState::Failed => "failed",
    };
    let mut text = format!(
        "job:      {}\nstate:    {state}\nmodel:    {}\n",
        s.id, s.model
    );
    let place = if s.remote {
        "another node"
    } else {
        "this node"
    };
    match &s.served_by {
        Some(did) if s.cached => text.push_str(&format!(
            "served:   from the node's cache (first answered by {did}, {place})\n"
        )),
        Some(did) => text.push_str(&format!("served:   {did} ({place})\n")),
        None => text.push_str("served:   not yet (finding a provider)\n"),
    }
    text.push_str(&format!("created:  {}\n", unix_ms(s.created_ms)));
    if let Some(done) = s.finished_ms {
        text.push_str(&format!(
            "finished: {} ({} ms)\n",
            unix_ms(done),
            done.saturating_sub(s.created_ms)
        ));
    }
    if let (Some(p), Some(c)) = (s.prompt_tokens, s.completion_tokens) {
        let reason = s.finish_reason.as_deref().unwrap_or("-");
        text.push_str(&format!(
            "tokens:   {p} prompt, {c} completion (finish: {reason})\n"
        ));
    }
    if let Some(error) = &s.error {
        text.push_str(&format!("error:    {error}\n"));
    }
    match &s.payment {
        Some(p) => text.push_str(&format!(
            "payment:  escrow {} (job id {})\n",
            p.escrow, p.job_id
        )),
        None => text.push_str("payment:  none\n"),
    }
    text
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
        private: args.private,
        mode: None,
        k: None,
    }
}

fn message(role: &str, content: &str) -> ChatMessage {
    ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

/// `mycel chat`: one question, or an interactive session when no prompt is given.
pub fn chat(args: ChatArgs, node: &Endpoint, ctx: &Context) -> CliResult<Report> {
    let mut history: Vec<ChatMessage> = Vec::new();
    if let Some(system) = &args.system {
        history.push(message("system", system));
    }
    let rt = runtime()?;
    if let Some(prompt) = &args.prompt {
        history.push(message("user", prompt));
        if ctx.json {
            let answer = rt.block_on(async {
                node.http()?
                    .chat(request(&args, history))
                    .await
                    .map_err(|e| node.error(e))
            })?;
            let text = answer.content.clone();
            return Ok(Report::new(text, json!(answer)));
        }
        let (_, served_by) = rt.block_on(stream_answer(node, request(&args, history), ctx))?;
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
        eprintln!(
            "Chatting through {}. An empty line or Ctrl-D ends the session.",
            node.url
        );
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
        let (answer, _) = rt.block_on(stream_answer(node, request(&args, history.clone()), ctx))?;
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
async fn stream_answer(
    node: &Endpoint,
    req: ChatRequest,
    ctx: &Context,
) -> CliResult<(String, String)> {
    let client = node.ws().await?;
    let mut sub = client
        .subscribe_chat(req)
        .await
        .map_err(|e| node.error(e))?;
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
            let place = match (chunk.cached, chunk.remote) {
                (true, _) => "cached",
                (false, true) => "remote",
                (false, false) => "local",
            };
            let job = if chunk.id.is_empty() {
                String::new()
            } else {
                format!("; job {}", chunk.id)
            };
            ctx.note(format!(
                "[{reason}{usage}; answered by {served_by} ({place}){job}]"
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

#[cfg(test)]
mod tests {
    use mycel_rpc_api::JobPayment;

    use super::*;

    #[test]
    fn a_job_reads_as_text() {
        let mut s = JobStatus {
            id: "chatcmpl-1".into(),
            model: "tiny".into(),
            state: JobState::Done,
            served_by: Some("did:key:z6MkA".into()),
            remote: true,
            cached: false,
            created_ms: 1_700_000_000_000,
            finished_ms: Some(1_700_000_000_250),
            prompt_tokens: Some(12),
            completion_tokens: Some(8),
            finish_reason: Some("length".into()),
            error: None,
            payment: Some(JobPayment {
                escrow: "ab".repeat(32),
                job_id: "cd".repeat(32),
            }),
            pipeline: None,
        };
        let text = describe_job(&s);
        assert!(text.contains("state:    done"), "{text}");
        assert!(text.contains("did:key:z6MkA (another node)"), "{text}");
        assert!(text.contains("2023-11-14T22:13:20Z"), "{text}");
        assert!(text.contains("(250 ms)"), "{text}");
        assert!(
            text.contains("12 prompt, 8 completion (finish: length)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("escrow {}", "ab".repeat(32))),
            "{text}"
        );
        s.state = JobState::Running;
        s.served_by = None;
        s.finished_ms = None;
        s.payment = None;
        let text = describe_job(&s);
        assert!(text.contains("not yet"), "{text}");
        assert!(text.contains("payment:  none"), "{text}");
        assert!(!text.contains("finished"), "{text}");
    }
}
