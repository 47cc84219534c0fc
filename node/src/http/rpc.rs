//! The `mycel` JSON-RPC namespace implemented on a [`Node`].

use std::time::Instant;

use jsonrpsee::PendingSubscriptionSink;
use jsonrpsee::RpcModule;
use jsonrpsee::core::{RpcResult, SubscriptionResult, async_trait};
use jsonrpsee::types::ErrorObjectOwned;
use mycel_models::{ChatMessage, Role};
use mycel_rpc_api::ledger::LedgerApiServer;
use mycel_rpc_api::{
    ChatChunk, ChatRequest, ChatResponse, JobStatus, ModelInfo, MycelApiServer, NodeInfo, PeerInfo,
    Usage, error_codes,
};

use crate::chat::{self, ChatAnswer, ChatEvent, ChatJob, SamplingRequest};
use crate::error::NodeError;
use crate::node::Node;

/// Longest job id `mycel_jobStatus` accepts (ids are `chatcmpl-` and at most 32 hex digits).
const MAX_JOB_ID_LEN: usize = 64;

struct RpcImpl {
    node: Node,
}

/// The RPC module with every `mycel_*` method.
pub(super) fn module(node: Node) -> Result<RpcModule<()>, jsonrpsee::core::RegisterMethodError> {
    let mut m = RpcModule::new(());
    m.merge(RpcImpl { node: node.clone() }.into_rpc())?;
    m.merge(super::ledger::LedgerRpc { node }.into_rpc())?;
    // OpenRPC service discovery (https://spec.open-rpc.org/#service-discovery-method).
    let doc = mycel_rpc_api::openrpc::document(env!("CARGO_PKG_VERSION"));
    m.register_method("rpc.discover", move |_, _, _| doc.clone())?;
    Ok(m)
}

/// Maps a node error to a JSON-RPC error object (codes in specs/rpc.md).
pub(super) fn rpc_error(e: NodeError) -> ErrorObjectOwned {
    let code = match &e {
        NodeError::InvalidRequest(_) => error_codes::INVALID_PARAMS,
        NodeError::ModelNotFound(_) => error_codes::MODEL_NOT_FOUND,
        NodeError::UpstreamFailed { .. } => error_codes::UPSTREAM_FAILED,
        NodeError::Busy(_) => error_codes::BUSY,
        NodeError::Inference(_) => error_codes::INFERENCE_FAILED,
        _ => jsonrpsee::types::error::INTERNAL_ERROR_CODE,
    };
    ErrorObjectOwned::owned(code, e.to_string(), None::<()>)
}

/// Parses a role name; `developer` is OpenAI's newer name for `system`.
pub(super) fn parse_role(role: &str) -> Result<Role, NodeError> {
    match role {
        "system" | "developer" => Ok(Role::System),
        "user" => Ok(Role::User),
        "assistant" => Ok(Role::Assistant),
        other => Err(NodeError::InvalidRequest(format!(
            "unsupported role `{other}` (use system, user or assistant)"
        ))),
    }
}

impl RpcImpl {
    fn job(&self, request: ChatRequest) -> Result<ChatJob, NodeError> {
        let messages = request
            .messages
            .into_iter()
            .map(|m| {
                Ok(ChatMessage {
                    role: parse_role(&m.role)?,
                    content: m.content,
                })
            })
            .collect::<Result<Vec<_>, NodeError>>()?;
        let model = request.model.unwrap_or_else(|| self.node.default_model());
        let mut job = ChatJob::new(
            model,
            messages,
            &SamplingRequest {
                temperature: request.temperature.map(f64::from),
                top_p: request.top_p.map(f64::from),
                max_tokens: request.max_tokens.map(u64::from),
                seed: request.seed,
            },
            request.stop,
        )?;
        job.private = request.private;
        job.ensemble = chat::ensemble_size(
            &job.model,
            request.mode.as_deref(),
            request.k.map(u64::from),
        )?;
        Ok(job)
    }
}

fn usage(a: &ChatAnswer) -> Usage {
    Usage {
        prompt_tokens: a.prompt_tokens,
        completion_tokens: a.completion_tokens,
        total_tokens: a.prompt_tokens.saturating_add(a.completion_tokens),
    }
}

#[async_trait]
impl MycelApiServer for RpcImpl {
    async fn node_info(&self) -> RpcResult<NodeInfo> {
        Ok(self.node.info())
    }

    async fn peers(&self) -> RpcResult<Vec<PeerInfo>> {
        self.node.peers().await.map_err(rpc_error)
    }

    async fn models(&self) -> RpcResult<Vec<ModelInfo>> {
        self.node.models().await.map_err(rpc_error)
    }

    async fn chat(&self, request: ChatRequest) -> RpcResult<ChatResponse> {
        let started = Instant::now();
        let job = self.job(request).map_err(rpc_error)?;
        let stream = self.node.chat(job).await.map_err(rpc_error)?;
        let answer = chat::collect(stream.events).await.map_err(rpc_error)?;
        Ok(ChatResponse {
            id: stream.id,
            model: stream.model,
            usage: usage(&answer),
            content: answer.text,
            finish_reason: answer.finish.as_str().to_string(),
            served_by: stream.served_by.to_string(),
            served_by_peer: stream.served_by_peer.to_base58(),
            remote: stream.remote,
            latency_ms: started.elapsed().as_millis() as u64,
            cached: stream.cached,
            routing: stream.routing,
        })
    }

    async fn subscribe_chat(
        &self,
        pending: PendingSubscriptionSink,
        request: ChatRequest,
    ) -> SubscriptionResult {
        let started = match self.job(request) {
            Ok(job) => self.node.chat(job).await,
            Err(e) => Err(e),
        };
        let mut stream = match started {
            Ok(s) => s,
            Err(e) => {
                pending.reject(rpc_error(e)).await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let served_by = stream.served_by.to_string();
        let chunk = |delta: String| ChatChunk {
            delta,
            finish_reason: None,
            usage: None,
            served_by: served_by.clone(),
            remote: stream.remote,
            error: None,
            id: stream.id.clone(),
            cached: stream.cached,
        };
        while let Some(ev) = stream.events.recv().await {
            let (c, last) = match ev {
                ChatEvent::Delta(t) => (chunk(t), false),
                ChatEvent::Done(a) => (
                    ChatChunk {
                        finish_reason: Some(a.finish.as_str().to_string()),
                        usage: Some(usage(&a)),
                        ..chunk(String::new())
                    },
                    true,
                ),
                ChatEvent::Failed(e) => (
                    ChatChunk {
                        error: Some(e),
                        ..chunk(String::new())
                    },
                    true,
                ),
            };
            // A closed subscription drops `stream.events`, which cancels generation.
            sink.send(serde_json::value::to_raw_value(&c)?).await?;
            if last {
                break;
            }
        }
        Ok(())
    }

    async fn find_peer(&self, did: String) -> RpcResult<Option<mycel_rpc_api::PeerRecordInfo>> {
        self.node.find_peer(&did).await.map_err(rpc_error)
    }

    async fn route(&self, query: String) -> RpcResult<mycel_rpc_api::RouteInfo> {
        self.node.route_query(query).await.map_err(rpc_error)
    }

    async fn router(&self) -> RpcResult<mycel_rpc_api::RouterInfo> {
        self.node.router_info().await.map_err(rpc_error)
    }

    async fn manifests(&self) -> RpcResult<Vec<mycel_rpc_api::ManifestInfo>> {
        Ok(self.node.manifests().list())
    }

    async fn job_status(&self, id: String) -> RpcResult<JobStatus> {
        if id.is_empty() || id.len() > MAX_JOB_ID_LEN {
            return Err(ErrorObjectOwned::owned(
                error_codes::INVALID_PARAMS,
                format!("a job id is 1..={MAX_JOB_ID_LEN} bytes (`chatcmpl-…`)"),
                None::<()>,
            ));
        }
        self.node.job_status(&id).ok_or_else(|| {
            ErrorObjectOwned::owned(
                error_codes::JOB_NOT_FOUND,
                format!(
                    "no job `{id}` here: this node never took it, or it is older than the latest {} jobs it remembers",
                    crate::jobs::MAX_JOBS
                ),
                None::<()>,
            )
        })
    }
}
