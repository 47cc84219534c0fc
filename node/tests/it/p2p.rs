//! Hostile input on the inference protocol: the node must refuse it and keep serving.

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, noise, tcp, yamux};
use mycel_node::infer_stream::{self, StreamFrame};
use mycel_node::wire::{INFER_PROTOCOL, InferErrorCode, MAX_INFER_REQUEST_BYTES};
use serde_json::json;

use crate::harness::{post, start_provider, url};

/// Writes requests as raw bytes, whatever they are.
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> std::io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        if v.is_empty() {
            // The node closed the stream without answering.
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(v)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> std::io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_inference_protocol_does_not_hurt_the_node() {
    let a = start_provider().await;
    let a_peer = a.node.peer_id();
    let a_addr = a.node.network().listen_addrs()[0].clone();

    let mut client = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(
                    StreamProtocol::new(INFER_PROTOCOL),
                    ProtocolSupport::Outbound,
                )],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            )
        })
        .unwrap()
        .build();
    client.add_peer_address(a_peer, a_addr);

    let payloads: Vec<Vec<u8>> = vec![
        b"\xff\xfe garbage that is not CBOR".to_vec(),
        Vec::new(),
        vec![0xa1; 64],                                     // truncated CBOR maps
        vec![0u8; MAX_INFER_REQUEST_BYTES as usize + 4096], // over the size limit
        json!({"model": "tiny"}).to_string().into_bytes(),  // JSON, not CBOR
    ];
    for payload in payloads {
        let len = payload.len();
        let id = client.behaviour_mut().send_request(&a_peer, payload);
        let outcome = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match client.select_next_some().await {
                    SwarmEvent::Behaviour(request_response::Event::Message {
                        message:
                            request_response::Message::Response {
                                request_id,
                                response,
                            },
                        ..
                    }) if request_id == id => {
                        return format!("response of {} bytes", response.len());
                    }
                    SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                        request_id,
                        error,
                        ..
                    }) if request_id == id => return format!("refused: {error}"),
                    _ => {}
                }
            }
        })
        .await
        .expect("the node neither answered nor closed the stream");
        println!("{len}-byte garbage request: {outcome}");
        assert!(
            !outcome.starts_with("response"),
            "garbage must not get an answer"
        );
    }

    // Still healthy: a real chat works.
    let r = post(
        url(&a, "/v1/chat/completions"),
        json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_stream_protocol_does_not_hurt_the_node() {
    let a = start_provider().await;
    let a_peer = a.node.peer_id();
    let a_addr = a.node.network().listen_addrs()[0].clone();
    let mut client = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .build();
    let control = client.behaviour().new_control();
    client
        .dial(a_addr.with(libp2p::multiaddr::Protocol::P2p(a_peer)))
        .unwrap();
    let driver = tokio::spawn(async move {
        loop {
            client.select_next_some().await;
        }
    });

    let garbage: Vec<Vec<u8>> = vec![
        u32::MAX.to_be_bytes().to_vec(),                 // absurd length
        [&8u32.to_be_bytes()[..], b"not json"].concat(), // right length, wrong content
        vec![0, 0],                                      // truncated length
        Vec::new(),                                      // nothing at all
    ];
    for bytes in garbage {
        let mut s = control
            .clone()
            .open_stream(a_peer, infer_stream::protocol())
            .await
            .unwrap();
        s.write_all(&bytes).await.unwrap();
        s.close().await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut rest))
            .await
            .expect("the node must close a garbage stream");
        assert!(
            read.is_err() || rest.is_empty(),
            "garbage got an answer: {rest:?}"
        );
    }

    // A well-formed job for a model A lacks gets a typed refusal.
    let job = mycel_node::chat::ChatJob::new(
        "not-here".into(),
        vec![mycel_models::ChatMessage::user("hi")],
        &Default::default(),
        vec![],
    )
    .unwrap();
    let mut s = control
        .clone()
        .open_stream(a_peer, infer_stream::protocol())
        .await
        .unwrap();
    infer_stream::write_frame(&mut s, &job).await.unwrap();
    let frame: StreamFrame = infer_stream::read_frame(&mut s, 1 << 16).await.unwrap();
    assert!(
        matches!(
            frame,
            StreamFrame::Error {
                code: InferErrorCode::ModelNotFound,
                ..
            }
        ),
        "{frame:?}"
    );

    let r = post(
        url(&a, "/v1/chat/completions"),
        json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
            .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    driver.abort();
    a.shutdown().await;
}
