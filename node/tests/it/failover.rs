//! Failover mid-answer: three nodes on loopback, two providers of `tiny` (same weights) and a
//! forwarder; the provider serving a streamed answer is killed half-way, and the forwarder must
//! replay the job on the other provider so the caller still gets the undisturbed answer.

use std::time::{Duration, Instant};

use mycel_models::ChatMessage;
use mycel_node::chat::{ChatEvent, ChatJob, SamplingRequest, collect};
use mycel_node::config::TINY_MODEL_ID;

use crate::harness::{start_forwarder, start_provider};

/// Pause after each delta on the providers, so an answer takes long enough to be interrupted.
const DELTA_DELAY: Duration = Duration::from_millis(15);

fn job() -> ChatJob {
    ChatJob::new(
        TINY_MODEL_ID.into(),
        vec![ChatMessage::user("tell me a long story about the forest")],
        &SamplingRequest {
            temperature: Some(0.0),
            seed: Some(42),
            max_tokens: Some(160),
            ..Default::default()
        },
        vec![],
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_provider_mid_stream_fails_over_and_completes_the_answer() {
    let p1 = start_provider().await;
    let p2 = start_provider().await;
    let f = start_forwarder(&p1).await;
    f.node
        .network()
        .dial(p2.node.listen_addrs()[0].clone())
        .await
        .unwrap();
    // Wait until the forwarder has heartbeats from both providers.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let peers = f.node.peers().await.unwrap();
        let serving = peers
            .iter()
            .filter(|p| p.models.iter().any(|m| m == TINY_MODEL_ID));
        if serving.count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "forwarder never saw both providers"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The undisturbed answer, straight from a provider.
    let baseline = collect(p2.node.chat(job()).await.unwrap().events)
        .await
        .unwrap();
    assert!(
        baseline.completion_tokens >= 8,
        "the answer must be long enough to interrupt: {baseline:?}"
    );
    p1.node.set_generation_delay(DELTA_DELAY);
    p2.node.set_generation_delay(DELTA_DELAY);

    let mut chat = f.node.chat(job()).await.unwrap();
    assert!(chat.remote);
    let victim = chat.served_by_peer;
    let mut text = String::new();
    match chat.events.recv().await {
        Some(ChatEvent::Delta(t)) => text.push_str(&t),
        other => panic!("expected a first delta, got {other:?}"),
    }
    let (dead, alive) = if victim == p1.node.peer_id() {
        (p1, p2)
    } else {
        assert_eq!(victim, p2.node.peer_id());
        (p2, p1)
    };
    // Cut off mid-answer, as a crash would (a clean shutdown would drain and finish it).
    dead.stop().await;

    let answer = loop {
        match tokio::time::timeout(Duration::from_secs(60), chat.events.recv())
            .await
            .expect("answer within a minute")
        {
            Some(ChatEvent::Delta(t)) => text.push_str(&t),
            Some(ChatEvent::Done(a)) => break a,
            other => panic!("answer failed: {other:?}"),
        }
    };
    assert_eq!(
        text, baseline.text,
        "deltas add up to the undisturbed answer"
    );
    assert_eq!(answer.text, baseline.text);
    assert_eq!(answer.completion_tokens, baseline.completion_tokens);
    assert_eq!(f.node.metrics().failovers.get(), 1, "exactly one failover");
    let scrape = crate::harness::get(crate::harness::url(&f, "/metrics")).await;
    assert!(
        scrape.body.contains("mycel_inference_failovers_total 1"),
        "{}",
        scrape.body
    );
    f.shutdown().await;
    alive.shutdown().await;
}

/// A clean shutdown drains: the provider stops taking new jobs (they get `busy`) but finishes the
/// answer it is streaming before it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_running_answers_and_refuses_new_ones() {
    let provider = start_provider().await;
    let forwarder = start_forwarder(&provider).await;
    provider.node.set_generation_delay(DELTA_DELAY);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut stream = loop {
        match forwarder.node.chat(job()).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "no provider: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // The answer is under way.
    assert!(matches!(
        stream.events.recv().await,
        Some(ChatEvent::Delta(_))
    ));
    let node = provider.node.clone();
    let stopping = tokio::spawn(provider.shutdown());
    // While it drains, new jobs are refused as busy.
    let mut refused = false;
    for _ in 0..50 {
        match node.chat(job()).await {
            Err(mycel_node::NodeError::Busy(_)) => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(refused, "a draining node took a new job");
    let answer = collect(stream.events)
        .await
        .expect("the running answer finished");
    assert_eq!(answer.completion_tokens, 160);
    stopping.await.unwrap();
    forwarder.shutdown().await;
}
