//! Streamed inference between nodes on `/mycel/infer-stream/1.0.0` (raw libp2p streams).
//!
//! One stream per job. Every message is a frame: a 4-byte big-endian length, then that many bytes of
//! JSON. The requester writes one [`ChatJob`] frame; the server answers with [`StreamFrame`]s —
//! `Delta`s as tokens are generated, then one `Done` or one `Error` — and closes. Bounds are in
//! [`crate::wire`]; specs/wire.md is the normative text.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams, OpenStreamError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::chat::{ChatAnswer, ChatEvent, ChatJob, EVENT_CHANNEL_CAPACITY, ModelHost};
use crate::error::NodeError;
use crate::metrics::{Metrics, Route};
use crate::wire::{
    INFER_STREAM_PROTOCOL, InferErrorCode, MAX_INBOUND_STREAM_JOBS, MAX_INFER_REQUEST_BYTES,
    MAX_INFER_RESPONSE_BYTES, STREAM_REQUEST_READ_TIMEOUT, STREAM_STALL_TIMEOUT,
};

/// A server → requester frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamFrame {
    /// More answer text.
    Delta(String),
    /// The answer is complete (its text repeats all deltas).
    Done(ChatAnswer),
    /// Refused or failed; nothing follows.
    Error {
        /// Failure kind.
        code: InferErrorCode,
        /// Detail.
        message: String,
    },
}

/// The stream protocol id.
pub fn protocol() -> StreamProtocol {
    StreamProtocol::new(INFER_STREAM_PROTOCOL)
}

/// Writes one length-prefixed JSON frame.
pub async fn write_frame<W, T>(w: &mut W, value: &T) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    // Length prefix and body in one write: each write on a muxed stream may become its own frame.
    let mut frame = vec![0u8; 4];
    serde_json::to_writer(&mut frame, value).map_err(std::io::Error::other)?;
    let len = u32::try_from(frame.len() - 4).map_err(std::io::Error::other)?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    w.write_all(&frame).await?;
    w.flush().await
}

/// Reads one frame of at most `max` bytes (the length is checked before anything is allocated).
pub async fn read_frame<R, T>(r: &mut R, max: u64) -> std::io::Result<T>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    if u64::from(len) > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {max}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Accepts inbound streams until `incoming` ends, serving each job on the local host. Streams from
/// peers not `admitted` (consortium mode: no valid membership credential yet) are dropped unread.
pub async fn serve(
    mut incoming: IncomingStreams,
    host: Arc<ModelHost>,
    deadline: Duration,
    metrics: Arc<Metrics>,
    ledger: LedgerSlot,
    admitted: crate::membership::Admitted,
) {
    let slots = Arc::new(Semaphore::new(MAX_INBOUND_STREAM_JOBS));
    while let Some((peer, mut stream)) = incoming.next().await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let busy = StreamFrame::Error {
                code: InferErrorCode::Busy,
                message: "too many inbound jobs".into(),
            };
            tokio::spawn(async move {
                let _ = tokio::time::timeout(STREAM_REQUEST_READ_TIMEOUT, async {
                    // Read the job first: a requester still writing it would otherwise see a
                    // closed stream instead of a clean `busy` it can retry elsewhere.
                    let _: std::io::Result<ChatJob> =
                        read_frame(&mut stream, MAX_INFER_REQUEST_BYTES).await;
                    let _ = write_frame(&mut stream, &busy).await;
                    let _ = stream.close().await;
                })
                .await;
            });
            continue;
        };
        let host = host.clone();
        let ledger = ledger.get().cloned();
        metrics.request(Route::Inbound);
        let admitted = admitted.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // A stream can race the membership handshake of a new connection: wait for it.
            if !admitted.wait_for(&peer, STREAM_REQUEST_READ_TIMEOUT).await {
                tracing::debug!(%peer, "dropped an inference stream from a peer that is not a member");
                return;
            }
            if tokio::time::timeout(deadline, serve_one(peer, stream, host, ledger))
                .await
                .is_err()
            {
                tracing::debug!(%peer, "streamed job hit its deadline");
            }
        });
    }
}

/// Tenths of a second a worker waits for a paid job's escrow to arrive before answering unpaid.
const RECEIPT_RETRIES: u32 = 30;

/// The node's ledger once it runs (the stream server starts before it): paid jobs get receipts.
pub type LedgerSlot = Arc<std::sync::OnceLock<crate::ledger::LedgerHandle>>;

/// For a paid job, the worker's signed receipt goes into the final answer; a job whose escrow this
/// node cannot see is answered without one (unpaid).
async fn with_receipt(
    job: &ChatJob,
    mut answer: ChatAnswer,
    ledger: Option<&crate::ledger::LedgerHandle>,
) -> ChatAnswer {
    if let (Some(payment), Some(ledger)) = (job.payment, ledger) {
        // The escrow travels by gossip and may arrive a moment after the job.
        let mut tries = 0;
        loop {
            match ledger.sign_receipt(payment, job.facts(&answer)).await {
                Ok(r) => answer.receipt = Some(r),
                Err(e) if tries < RECEIPT_RETRIES && e.to_string().contains("not known") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) => tracing::info!(error = %e, "answered a job without a receipt"),
            }
            break;
        }
    }
    answer
}

async fn serve_one(
    peer: PeerId,
    mut stream: Stream,
    host: Arc<ModelHost>,
    ledger: Option<crate::ledger::LedgerHandle>,
) {
    let job: ChatJob = match tokio::time::timeout(
        STREAM_REQUEST_READ_TIMEOUT,
        read_frame(&mut stream, MAX_INFER_REQUEST_BYTES),
    )
    .await
    {
        Ok(Ok(job)) => job,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad inference stream request");
            return;
        }
        Err(_) => return,
    };
    let refuse = |code, message: String| StreamFrame::Error { code, message };
    let events = if let Err(e) = job.validate() {
        Err(refuse(InferErrorCode::InvalidRequest, e.to_string()))
    } else if !host.serves(&job.model) {
        Err(refuse(
            InferErrorCode::ModelNotFound,
            format!("this node does not serve `{}`", job.model),
        ))
    } else {
        tracing::info!(%peer, model = %job.model, paid = job.payment.is_some(), "streaming inference for a peer");
        match host.start(job.clone()).await {
            Ok(rx) => Ok(rx),
            Err(NodeError::Busy(m)) => Err(refuse(InferErrorCode::Busy, m)),
            Err(NodeError::InvalidRequest(m)) => Err(refuse(InferErrorCode::InvalidRequest, m)),
            Err(e) => Err(refuse(InferErrorCode::Failed, e.to_string())),
        }
    };
    let mut events = match events {
        Ok(rx) => rx,
        Err(frame) => {
            let _ = write_frame(&mut stream, &frame).await;
            let _ = stream.close().await;
            return;
        }
    };
    // After its request the requester sends nothing more: anything on the read side (normally EOF,
    // when it closes or drops the stream) means it left. Writes alone would not tell: a half-closed
    // stream keeps accepting small frames, and the abandoned job would hold a generation slot until
    // it finished.
    let (mut reader, mut writer) = stream.split();
    let mut probe = [0u8; 1];
    loop {
        let ev = tokio::select! {
            ev = events.recv() => ev,
            _ = reader.read(&mut probe) => {
                tracing::debug!(%peer, "requester closed the stream: cancelling its job");
                // Dropping `events` cancels generation.
                return;
            }
        };
        let Some(ev) = ev else { break };
        let (frame, last) = match ev {
            ChatEvent::Delta(t) => (StreamFrame::Delta(t), false),
            ChatEvent::Done(a) => (
                StreamFrame::Done(with_receipt(&job, a, ledger.as_ref()).await),
                true,
            ),
            ChatEvent::Failed(m) => (refuse(InferErrorCode::Failed, m), true),
        };
        if write_frame(&mut writer, &frame).await.is_err() {
            // The requester left: dropping `events` cancels generation.
            return;
        }
        if last {
            break;
        }
    }
    let _ = writer.close().await;
}

/// Result of opening a streamed job on a provider.
#[derive(Debug)]
pub enum Opened {
    /// The provider started answering; events follow (the first is already in the channel).
    Streaming(mpsc::Receiver<ChatEvent>),
    /// The provider refused or failed before any text.
    Refused {
        /// Failure kind.
        code: InferErrorCode,
        /// Detail.
        message: String,
    },
    /// The provider does not speak the stream protocol (use request-response).
    Unsupported,
}

/// Sends `job` to `peer` and waits for the first frame; the rest is read by a background task that
/// stops when the receiver is dropped or `deadline` (counted from now) passes.
pub async fn open(
    mut control: Control,
    peer: PeerId,
    job: &ChatJob,
    deadline: Duration,
) -> Result<Opened, String> {
    let started = tokio::time::Instant::now();
    let mut stream = match control.open_stream(peer, protocol()).await {
        Ok(s) => s,
        Err(OpenStreamError::UnsupportedProtocol(_)) => return Ok(Opened::Unsupported),
        Err(e) => return Err(e.to_string()),
    };
    write_frame(&mut stream, job)
        .await
        .map_err(|e| format!("sending the job: {e}"))?;
    let first: StreamFrame =
        tokio::time::timeout(deadline, read_frame(&mut stream, MAX_INFER_RESPONSE_BYTES))
            .await
            .map_err(|_| "deadline exceeded before the first token".to_string())?
            .map_err(|e| format!("reading the answer: {e}"))?;
    let (tx, rx) = mpsc::channel(EVENT_CHANNEL_CAPACITY);
    let done = match first {
        StreamFrame::Error { code, message } => return Ok(Opened::Refused { code, message }),
        StreamFrame::Delta(t) => {
            let _ = tx.send(ChatEvent::Delta(t)).await;
            false
        }
        StreamFrame::Done(a) => {
            let _ = tx.send(ChatEvent::Done(a)).await;
            true
        }
    };
    if !done {
        let until = started + deadline;
        tokio::spawn(async move {
            loop {
                let stall = tokio::time::Instant::now() + STREAM_STALL_TIMEOUT;
                let frame = tokio::time::timeout_at(
                    until.min(stall),
                    read_frame::<_, StreamFrame>(&mut stream, MAX_INFER_RESPONSE_BYTES),
                )
                .await;
                let (event, last) = match frame {
                    Ok(Ok(StreamFrame::Delta(t))) => (ChatEvent::Delta(t), false),
                    Ok(Ok(StreamFrame::Done(a))) => (ChatEvent::Done(a), true),
                    Ok(Ok(StreamFrame::Error { message, .. })) => {
                        (ChatEvent::Failed(message), true)
                    }
                    Ok(Err(e)) => (
                        ChatEvent::Failed(format!("provider stream broke: {e}")),
                        true,
                    ),
                    Err(_) if stall < until => (
                        ChatEvent::Failed("provider stalled (no frame in time)".into()),
                        true,
                    ),
                    Err(_) => (ChatEvent::Failed("deadline exceeded".into()), true),
                };
                if tx.send(event).await.is_err() || last {
                    break;
                }
            }
            let _ = stream.close().await;
        });
    }
    Ok(Opened::Streaming(rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused() {
        let mut buf = Vec::new();
        let frame = StreamFrame::Delta("héllo".into());
        write_frame(&mut buf, &frame).await.expect("write");
        let back: StreamFrame = read_frame(&mut buf.as_slice(), 1024).await.expect("read");
        assert_eq!(back, frame);
        let err = read_frame::<_, StreamFrame>(&mut buf.as_slice(), 4).await;
        assert!(err.is_err(), "a frame over the limit must be refused");
        let huge = u32::MAX.to_be_bytes();
        assert!(
            read_frame::<_, StreamFrame>(&mut huge.as_slice(), 1024)
                .await
                .is_err()
        );
        let truncated = &buf[..buf.len() - 1];
        assert!(
            read_frame::<_, StreamFrame>(&mut &truncated[..], 1024)
                .await
                .is_err()
        );
    }
}
