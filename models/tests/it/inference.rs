//! Tiny random-weight model: generation, layer ranges, KV cache, sampling, streaming.

use std::sync::Arc;

use mycel_models::llama::{Logits, StageInput, StageOutput};
use mycel_models::tiny::{TINY_LAYERS, tiny_model};
use mycel_models::{
    ChatMessage, ChatModel, FinishReason, HiddenStates, LoadOptions, ModelsError, SamplingParams,
    TOKEN_CHANNEL_CAPACITY, Token, WireDType, hidden_to_wire, spawn_generate,
};
use tokio::sync::mpsc;

const SEED: u64 = 7;

fn model() -> ChatModel {
    tiny_model(SEED, &LoadOptions::default()).unwrap()
}

fn shard(a: u32, b: u32) -> ChatModel {
    tiny_model(
        SEED,
        &LoadOptions {
            range: Some((a, b)),
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// Runs a generation on this (non-async) thread, collecting the stream.
fn run(
    m: &ChatModel,
    msgs: &[ChatMessage],
    p: &SamplingParams,
) -> (Vec<Token>, mycel_models::Completion) {
    // Room for every token, so generate never waits on the receiver.
    let (tx, mut rx) = mpsc::channel(mycel_models::sampling::MAX_NEW_TOKENS);
    let mut s = m.new_session();
    let c = m.generate(&mut s, msgs, p, &tx).unwrap();
    drop(tx);
    let mut toks = Vec::new();
    while let Ok(t) = rx.try_recv() {
        toks.push(t);
    }
    (toks, c)
}

fn convo() -> Vec<ChatMessage> {
    vec![ChatMessage::user("the tiny model in the test")]
}

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatModel>();
    fn assert_send<T: Send>() {}
    assert_send::<mycel_models::Session>();
}

#[test]
fn tiny_builds_and_generates_greedily() {
    let m = model();
    assert_eq!(m.config().n_layer, TINY_LAYERS);
    let (toks, c) = run(&m, &convo(), &SamplingParams::greedy(20));
    assert!(!c.token_ids.is_empty());
    assert_eq!(toks.iter().map(|t| t.id).collect::<Vec<_>>(), c.token_ids);
    assert_eq!(
        toks.iter().map(|t| t.text.as_str()).collect::<String>(),
        c.text
    );
    // Greedy is deterministic.
    let (_, c2) = run(&model(), &convo(), &SamplingParams::greedy(20));
    assert_eq!(c.token_ids, c2.token_ids);
}

#[test]
fn same_seed_same_output_different_seed_differs() {
    let m = model();
    let p = SamplingParams {
        temperature: 1.0,
        top_k: Some(50),
        top_p: Some(0.95),
        seed: 1234,
        max_tokens: 40,
        stop_tokens: vec![],
    };
    let (_, a) = run(&m, &convo(), &p);
    let (_, b) = run(&m, &convo(), &p);
    assert_eq!(a.token_ids, b.token_ids);
    let (_, c) = run(
        &m,
        &convo(),
        &SamplingParams {
            seed: 99,
            ..p.clone()
        },
    );
    assert_ne!(
        a.token_ids, c.token_ids,
        "different seeds should diverge on random weights"
    );
}

#[test]
fn kv_cache_matches_full_recompute() {
    // Logits of the last position must not depend on whether earlier positions came from the
    // cache (incremental) or were computed in the same call.
    let m = model();
    let ids = m.encode_chat(&convo()).unwrap();
    let mut full = m.new_session();
    let all = m.forward_all_logits(&mut full, &ids).unwrap();
    let mut inc = m.new_session();
    let mut last = None;
    for &id in &ids {
        match m
            .forward_stage(&mut inc, StageInput::Tokens(&[id]))
            .unwrap()
        {
            StageOutput::Logits(l) => last = Some(l),
            StageOutput::Hidden(_) => panic!("full model returns logits"),
        }
    }
    let a = all.get(ids.len() - 1).unwrap().to_vec1::<f32>().unwrap();
    let b = last.unwrap().to_vec1::<f32>().unwrap();
    let max_diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        max_diff < 1e-3,
        "cached vs recomputed logits differ by {max_diff}"
    );
    let _ = Logits::All;
}

/// Greedy decoding through a chain of shards, hidden states serialized in between.
fn chained_greedy(stages: &[ChatModel], prompt: &[u32], n: usize) -> Vec<u32> {
    let mut sessions: Vec<_> = stages.iter().map(|s| s.new_session()).collect();
    let mut out = Vec::new();
    let mut input: Vec<u32> = prompt.to_vec();
    for _ in 0..n {
        let mut pos = sessions[0].len();
        let mut x = stages[0]
            .forward_stage(&mut sessions[0], StageInput::Tokens(&input))
            .unwrap();
        for (st, se) in stages.iter().zip(sessions.iter_mut()).skip(1) {
            let StageOutput::Hidden(h) = x else {
                panic!("middle stage returned logits")
            };
            // Across the wire and back.
            let wire = hidden_to_wire(&h, pos).unwrap().encode(WireDType::F32);
            let back = HiddenStates::decode(&wire).unwrap();
            assert_eq!(back.position as usize, pos);
            pos = se.len();
            x = st
                .forward_stage(se, StageInput::Hidden(back.to_tensor().unwrap()))
                .unwrap();
        }
        let StageOutput::Logits(l) = x else {
            panic!("last stage returns logits")
        };
        let id = mycel_models::sampling::argmax(&l.to_vec1::<f32>().unwrap());
        out.push(id);
        input = vec![id];
    }
    out
}

#[test]
fn layer_range_chain_equals_whole_model() {
    let whole = model();
    let prompt = whole.encode_chat(&convo()).unwrap();
    let reference = chained_greedy(std::slice::from_ref(&whole), &prompt, 16);
    let chain = [shard(0, 2), shard(2, 4), shard(4, TINY_LAYERS)];
    assert_eq!(chained_greedy(&chain, &prompt, 16), reference);
    // And the generate() path agrees with the manual loop.
    let (_, c) = run(&whole, &convo(), &SamplingParams::greedy(16));
    assert_eq!(c.token_ids[..], reference[..c.token_ids.len()]);
}

#[test]
fn stage_inputs_are_checked() {
    let mid = shard(2, 4);
    let mut s = mid.new_session();
    assert!(matches!(
        mid.forward_stage(&mut s, StageInput::Tokens(&[1, 2])),
        Err(ModelsError::LayerRange(_))
    ));
    assert!(matches!(
        tiny_model(
            SEED,
            &LoadOptions {
                range: Some((3, 3)),
                ..LoadOptions::default()
            }
        ),
        Err(ModelsError::LayerRange(_))
    ));
    assert!(
        tiny_model(
            SEED,
            &LoadOptions {
                range: Some((0, TINY_LAYERS + 1)),
                ..LoadOptions::default()
            }
        )
        .is_err()
    );
    // A session of another model instance is refused.
    let other = model();
    let mut foreign = other.new_session();
    assert!(
        model()
            .forward_stage(&mut foreign, StageInput::Tokens(&[5]))
            .is_err()
    );
}

#[test]
fn multi_turn_reuses_cache_prefix() {
    let m = model();
    let (tx, _rx) = mpsc::channel(4096);
    let mut s = m.new_session();
    let p = SamplingParams::greedy(8);
    let first = m.generate(&mut s, &convo(), &p, &tx).unwrap();
    assert_eq!(first.cached_prompt_tokens, 0);
    let mut msgs = convo();
    msgs.push(ChatMessage::assistant(first.text.clone()));
    msgs.push(ChatMessage::user("again"));
    let second = m.generate(&mut s, &msgs, &p, &tx).unwrap();
    assert!(
        second.cached_prompt_tokens >= first.prompt_tokens,
        "{second:?}"
    );
    // Same answer as a fresh session.
    let mut fresh = m.new_session();
    let third = m.generate(&mut fresh, &msgs, &p, &tx).unwrap();
    assert_eq!(second.token_ids, third.token_ids);
}

#[test]
fn context_limit_is_a_clear_error_and_stops_generation() {
    let m = tiny_model(
        SEED,
        &LoadOptions {
            max_context: 40,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    let (tx, _rx) = mpsc::channel(4096);
    let long = vec![ChatMessage::user("x ".repeat(100))];
    let mut s = m.new_session();
    match m.generate(&mut s, &long, &SamplingParams::greedy(5), &tx) {
        Err(ModelsError::ContextOverflow {
            prompt_tokens,
            limit,
        }) => {
            assert!(prompt_tokens > limit);
            assert_eq!(limit, 40);
        }
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
    let mut s = m.new_session();
    let c = m
        .generate(
            &mut s,
            &[ChatMessage::user("hi")],
            &SamplingParams {
                stop_tokens: vec![],
                ..SamplingParams::greedy(1000)
            },
            &tx,
        )
        .unwrap();
    assert!(
        matches!(
            c.finish_reason,
            FinishReason::ContextFull | FinishReason::Stop
        ),
        "{c:?}"
    );
    assert!(s.len() <= 40);
}

#[test]
fn invalid_sampling_is_rejected() {
    let m = model();
    let (tx, _rx) = mpsc::channel(1);
    let mut s = m.new_session();
    let p = SamplingParams {
        top_p: Some(1.5),
        ..SamplingParams::default()
    };
    assert!(matches!(
        m.generate(&mut s, &convo(), &p, &tx),
        Err(ModelsError::InvalidSampling(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_cancellation_and_concurrent_sessions() {
    let m = Arc::new(model());
    let p = SamplingParams {
        stop_tokens: vec![],
        ..SamplingParams::greedy(200)
    };
    // Cancellation: take 3 tokens then drop the receiver.
    let (tx, mut rx) = mpsc::channel(1);
    let h = spawn_generate(m.clone(), m.new_session(), convo(), p.clone(), tx);
    for _ in 0..3 {
        rx.recv().await.unwrap();
    }
    drop(rx);
    let (_session, res) = h.await.unwrap();
    let c = res.unwrap();
    if c.finish_reason != FinishReason::Stop {
        assert_eq!(c.finish_reason, FinishReason::Cancelled);
        assert!(
            c.token_ids.len() <= 5,
            "stopped promptly: {}",
            c.token_ids.len()
        );
    }
    // Several concurrent sessions, separate caches, same answers as sequential runs.
    let prompts = ["alpha", "the beta", "gamma in the"];
    let mut handles = Vec::new();
    for q in prompts {
        let (tx, mut rx) = mpsc::channel(TOKEN_CHANNEL_CAPACITY);
        let h = spawn_generate(
            m.clone(),
            m.new_session(),
            vec![ChatMessage::user(q)],
            SamplingParams::greedy(12),
            tx,
        );
        let collector = tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Some(t) = rx.recv().await {
                ids.push(t.id);
            }
            ids
        });
        handles.push((q, h, collector));
    }
    for (q, h, collector) in handles {
        let (_, res) = h.await.unwrap();
        let streamed = collector.await.unwrap();
        let c = res.unwrap();
        assert_eq!(streamed, c.token_ids);
        let m2 = m.clone();
        let (_, seq) = tokio::task::spawn_blocking(move || {
            run(&m2, &[ChatMessage::user(q)], &SamplingParams::greedy(12))
        })
        .await
        .unwrap();
        assert_eq!(seq.token_ids, c.token_ids, "prompt {q}");
    }
}

#[test]
fn tiny_tokenizer_round_trips_and_specials() {
    let m = model();
    let t = m.tokenizer();
    for s in [
        "the theory in the",
        "",
        "x",
        "héllo wörld ✓ 🎉",
        "12345 a\n\tb",
        "<|im_start|>user",
    ] {
        let ids = t.encode(s, false).unwrap();
        assert_eq!(t.decode(&ids, false), s, "round trip of {s:?}");
    }
    // Merges apply: " the" is one token.
    let ids = t.encode(" the", false).unwrap();
    assert_eq!(ids.len(), 1);
    // Digits are split one by one (smollm pre-tokenizer).
    assert_eq!(t.encode("123", false).unwrap().len(), 3);
    // Special tokens only with allow_special.
    let with = t.encode("<|im_start|>user", true).unwrap();
    assert_eq!(with[0], t.special_token("<|im_start|>").unwrap());
    let without = t.encode("<|im_start|>user", false).unwrap();
    assert!(!without.contains(&t.special_token("<|im_start|>").unwrap()));
    // Chat encoding equals tokenizing the rendered template with specials.
    let msgs = [
        ChatMessage::system("be brief"),
        ChatMessage::user("the tin"),
    ];
    let rendered =
        mycel_models::template::render_chat(mycel_models::ChatTemplate::ChatMl, &msgs, None);
    assert_eq!(
        m.encode_chat(&msgs).unwrap(),
        t.encode(&rendered, true).unwrap()
    );
}

#[test]
fn teacher_forced_verification_accepts_own_output_and_rejects_forgery() {
    let m = model();
    let prompt = m.encode_chat(&convo()).unwrap();
    let (_, c) = run(
        &m,
        &convo(),
        &SamplingParams {
            stop_tokens: vec![],
            ..SamplingParams::greedy(12)
        },
    );
    let policy = mycel_models::VerifyPolicy {
        top_k: 1,
        logit_margin: 1e-3,
    };
    let v = m.verify(&prompt, &c.token_ids, &policy).unwrap();
    assert!(
        v.accepted,
        "greedy output is the top-1 choice: {:?}",
        v.scores
    );
    assert!(v.scores.iter().all(|s| s.rank == 0));
    // Replace one token by another: no longer the model's choice.
    let mut forged = c.token_ids.clone();
    forged[3] ^= 1;
    let v2 = m.verify(&prompt, &forged, &policy).unwrap();
    assert!(!v2.accepted);
    assert_eq!(v2.first_rejected, Some(3));
    assert!(v2.scores[3].rank > 0 && v2.scores[3].logprob < v.scores[3].logprob);
}

#[test]
fn sampler_replay_accepts_seeded_output_and_rejects_forgeries() {
    let m = model();
    let prompt = m.encode_chat(&convo()).unwrap();
    for (top_k, top_p) in [(Some(40), Some(0.95)), (None, None), (None, Some(0.9))] {
        let params = SamplingParams {
            temperature: 0.9,
            top_k,
            top_p,
            seed: 11,
            stop_tokens: vec![],
            ..SamplingParams::greedy(16)
        };
        let (_, c) = run(&m, &convo(), &params);
        let out = &c.drawn_ids();
        assert!(out.len() >= 4, "{top_k:?} {top_p:?}: too short to test");
        // Same weights, same numeric path: every position replays exactly.
        let mut replay = m.replay_prompt(&prompt).unwrap();
        let r = replay.tolerances(out, &params, f32::INFINITY).unwrap();
        assert_eq!(r.tolerances, vec![0.0; out.len()], "{top_k:?} {top_p:?}");
        let v = m.verify_replay(&prompt, out, &params).unwrap();
        assert!(v.accepted, "{top_k:?} {top_p:?}: {:?}", v.first_rejected);
        // A substituted token (the least likely one at position 3) is rejected there.
        let worst = {
            let l = replay.logits(out, 3).unwrap();
            (0..l.len()).min_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32
        };
        let mut forged = out.clone();
        forged[3] = worst;
        let v2 = replay.verify(&forged, &params).unwrap();
        assert!(!v2.accepted, "{top_k:?} {top_p:?}");
        assert_eq!(v2.first_rejected, Some(3));
        // Another seed draws elsewhere: the same output no longer replays exactly (the tiny
        // model's flat logits may still fit it within the tolerance).
        let other = SamplingParams {
            seed: 12,
            ..params.clone()
        };
        let r3 = replay.tolerances(out, &other, f32::INFINITY).unwrap();
        assert!(
            r3.tolerances.iter().any(|&t| t > 0.0),
            "{top_k:?} {top_p:?}"
        );
    }
    let greedy = SamplingParams {
        stop_tokens: vec![],
        ..SamplingParams::greedy(12)
    };
    let (_, g) = run(&m, &convo(), &greedy);
    let out = g.drawn_ids();
    let v = m.verify_replay(&prompt, &out, &greedy).unwrap();
    assert!(v.accepted);
    assert!(v.scores.iter().all(|s| s.rank == 0));
}

#[test]
fn sampler_replay_checks_the_receipt_shape() {
    let m = model();
    let prompt = m.encode_chat(&convo()).unwrap();
    let replay = m.replay_prompt(&prompt).unwrap();
    let stop = m.stop_token_ids()[0];
    let p = SamplingParams {
        stop_tokens: vec![7],
        ..SamplingParams::greedy(4)
    };
    let shape = |out: &[u32]| replay.first_shape_error(out, &p);
    // Exactly max_tokens without a stop, or fewer followed by a stop token.
    assert_eq!(shape(&[5, 6, 5, 6]), None);
    assert_eq!(shape(&[5, 6, 5, stop]), None);
    assert_eq!(shape(&[5, 7]), None);
    // Cut short without a stop, a token after a stop, beyond max_tokens.
    assert_eq!(shape(&[5, 6]), Some(1));
    assert_eq!(shape(&[5, stop, 6]), Some(2));
    assert_eq!(shape(&[5, 6, 5, 6, 5]), Some(4));
    assert_eq!(shape(&[5, 6, 5, 6, stop]), Some(4));
    assert_eq!(shape(&[]), Some(0));
    let v = m.verify_replay(&prompt, &[5, 6], &p).unwrap();
    assert!(!v.accepted && v.scores.is_empty());
}

#[test]
fn sampler_replay_of_a_cut_output_checks_the_prefix() {
    let m = model();
    let prompt = m.encode_chat(&convo()).unwrap();
    let params = SamplingParams {
        temperature: 0.8,
        seed: 5,
        stop_tokens: vec![],
        ..SamplingParams::greedy(12)
    };
    let (_, c) = run(&m, &convo(), &params);
    assert!(c.token_ids.len() >= 4, "too short to test");
    // The consumer cut the answer after 3 tokens (a stop string, say): a complete generation it
    // is not, a faithful prefix it is.
    let cut = &c.token_ids[..3];
    assert!(!m.verify_replay(&prompt, cut, &params).unwrap().accepted);
    let v = m.verify_replay_cut(&prompt, cut, &params).unwrap();
    assert!(v.accepted, "{:?}", v.first_rejected);
    // A stop token inside, or more than max_tokens, is no prefix of a generation.
    let stop = m.stop_token_ids()[0];
    let v = m
        .verify_replay_cut(&prompt, &[cut[0], stop, cut[1]], &params)
        .unwrap();
    assert_eq!(v.first_rejected, Some(1));
    let long = SamplingParams {
        max_tokens: 2,
        ..params.clone()
    };
    assert_eq!(
        m.verify_replay_cut(&prompt, cut, &long)
            .unwrap()
            .first_rejected,
        Some(2)
    );
    // A substituted token (the least likely one) is rejected like in a complete output.
    let mut replay = m.replay_prompt(&prompt).unwrap();
    let worst = {
        let l = replay.logits(cut, 1).unwrap();
        (0..l.len()).min_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32
    };
    let forged = [cut[0], worst, cut[2]];
    assert_eq!(
        replay.verify_cut(&forged, &params).unwrap().first_rejected,
        Some(1)
    );
}
