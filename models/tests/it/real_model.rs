//! Tests on the real SmolLM2 model, when it is in the cache. Set `MYCEL_MODEL_CACHE` to the
//! cache directory (`<data_dir>/models`); without it, or when the model is not pulled, these
//! tests print why and pass without checking anything.

use std::path::PathBuf;

use mycel_models::llama::{StageInput, StageOutput};
use mycel_models::sampling::argmax;
use mycel_models::{
    ChatMessage, ChatModel, HiddenStates, LoadOptions, Registry, SamplingParams, VerifiedModel,
    WireDType, hidden_to_wire, registry::DEFAULT_CHAT_MODEL, verify_cached,
};

fn cached() -> Option<VerifiedModel> {
    let Some(dir) = std::env::var_os("MYCEL_MODEL_CACHE").map(PathBuf::from) else {
        println!("skipped: MYCEL_MODEL_CACHE is not set");
        return None;
    };
    let reg = Registry::load_default().unwrap();
    match verify_cached(reg.get(DEFAULT_CHAT_MODEL).unwrap(), &dir) {
        Ok(Some(m)) => Some(m),
        Ok(None) => {
            println!("skipped: {DEFAULT_CHAT_MODEL} is not in {}", dir.display());
            None
        }
        Err(e) => panic!("cached model is corrupt: {e}"),
    }
}

fn load(m: &VerifiedModel, range: Option<(u32, u32)>) -> ChatModel {
    ChatModel::load(
        m,
        &LoadOptions {
            range,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

/// The whole model with its matmul weights requantized to `requantize` (None: the file's own).
fn load_as(m: &VerifiedModel, requantize: Option<candle_core::quantized::GgmlDType>) -> ChatModel {
    ChatModel::load(
        m,
        &LoadOptions {
            requantize,
            ..LoadOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn real_tokenizer_round_trips_and_known_ids() {
    let Some(m) = cached() else { return };
    let model = load(&m, None);
    let t = model.tokenizer();
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.special_token("<|im_start|>"), Some(1));
    assert_eq!(t.special_token("<|im_end|>"), Some(2));
    // Known SmolLM2 ids: a newline, " the"; digits are split one by one.
    assert_eq!(t.encode("\n", false).unwrap(), vec![198]);
    assert_eq!(t.encode(" the", false).unwrap(), vec![260]);
    assert_eq!(t.encode("2024", false).unwrap().len(), 4);
    for s in [
        "What is the capital of France?",
        "naïve café — 東京 🎉",
        "  spaces\t\ttabs\n\nlines",
        "x=1234567;",
    ] {
        assert_eq!(t.decode(&t.encode(s, false).unwrap(), false), s);
    }
    let ids = t.encode("<|im_start|>user\nhi<|im_end|>", true).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
}

#[test]
fn real_layer_chain_equals_whole_model() {
    let Some(m) = cached() else { return };
    let whole = load(&m, None);
    let stages = [
        load(&m, Some((0, 10))),
        load(&m, Some((10, 20))),
        load(&m, Some((20, 30))),
    ];
    let prompt = whole
        .encode_chat(&[ChatMessage::user("What is the capital of France?")])
        .unwrap();
    let n = 12;
    let mut s = whole.new_session();
    let mut reference = Vec::new();
    let mut input = prompt.clone();
    for _ in 0..n {
        let StageOutput::Logits(l) = whole
            .forward_stage(&mut s, StageInput::Tokens(&input))
            .unwrap()
        else {
            panic!()
        };
        let id = argmax(&l.to_vec1::<f32>().unwrap());
        reference.push(id);
        input = vec![id];
    }
    let mut sessions: Vec<_> = stages.iter().map(|st| st.new_session()).collect();
    let mut chained = Vec::new();
    let mut input = prompt;
    for _ in 0..n {
        let pos = sessions[0].len();
        let mut x = stages[0]
            .forward_stage(&mut sessions[0], StageInput::Tokens(&input))
            .unwrap();
        for i in 1..3 {
            let StageOutput::Hidden(h) = x else { panic!() };
            let wire = hidden_to_wire(&h, pos).unwrap().encode(WireDType::F32);
            let h = HiddenStates::decode(&wire).unwrap().to_tensor().unwrap();
            x = stages[i]
                .forward_stage(&mut sessions[i], StageInput::Hidden(h))
                .unwrap();
        }
        let StageOutput::Logits(l) = x else { panic!() };
        let id = argmax(&l.to_vec1::<f32>().unwrap());
        chained.push(id);
        input = vec![id];
    }
    assert_eq!(chained, reference);
}

/// ChatML prompt ids for "What is the capital of France?" with the default system prompt, and
/// the first 24 greedy ids, as produced by llama.cpp (llama-cpp-python 0.3.36, f32 KV cache) on
/// the same GGUF's Q4_1 weights (scripts/reference_compare.py; this answer has no near-tie within
/// 24 tokens, most do, see `real_f32_matches_llama_cpp_greedy`). With llama.cpp's default f16 KV
/// cache the answer diverges at the 8th token, where the two best logits are 0.19 apart.
const REFERENCE_PROMPT: [u32; 37] = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407,
    19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531,
    198,
];
const REFERENCE_GREEDY: [u32; 24] = [
    60, 23, 39614, 1141, 552, 28, 2618, 2828, 313, 7712, 769, 28, 2618, 2849, 1558, 28, 2618, 2849,
    1558, 26261, 11708, 46767, 28, 2618,
];

#[test]
fn real_matches_llama_cpp_reference() {
    let Some(m) = cached() else { return };
    let model = load(&m, None);
    let msgs = [ChatMessage::user("What is the capital of France?")];
    assert_eq!(model.encode_chat(&msgs).unwrap(), REFERENCE_PROMPT);
    let t = model.tokenizer();
    // llama.cpp's tokenization of a few awkward strings.
    assert_eq!(
        t.encode("naïve café — 東京 🎉", false).unwrap(),
        [
            3546, 46494, 37366, 1841, 17097, 247, 126, 16736, 122, 15107, 232, 227
        ]
    );
    assert_eq!(
        t.encode("x=1234567;", false).unwrap(),
        [104, 45, 33, 34, 35, 36, 37, 38, 39, 43]
    );
    assert_eq!(
        t.encode("  spaces\t\ttabs\n\nlines", false).unwrap(),
        [216, 5600, 197, 197, 100, 7366, 198, 198, 5110]
    );
    let (tx, _rx) = tokio::sync::mpsc::channel(mycel_models::sampling::MAX_NEW_TOKENS);
    let p = SamplingParams {
        stop_tokens: vec![],
        ..SamplingParams::greedy(24)
    };
    let c = model
        .generate(&mut model.new_session(), &msgs, &p, &tx)
        .unwrap();
    assert_eq!(c.token_ids, REFERENCE_GREEDY, "text: {:?}", c.text);
    // Without the default system prompt this small model answers the question plainly.
    let ids = t
        .encode(
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            true,
        )
        .unwrap();
    let c = model
        .generate_from_ids(
            &mut model.new_session(),
            &ids,
            &SamplingParams::greedy(16),
            &tx,
        )
        .unwrap();
    assert_eq!(c.text, "The capital of France is Paris.");
    assert_eq!(c.finish_reason, mycel_models::FinishReason::Stop);
}

/// llama.cpp's greedy answers to 24 prompts on the file's weights dequantized to f32
/// (`scripts/reference_compare.py --save`): with float matmuls on both sides the two
/// implementations agree token for token (with the quantized weights, 8-bit activation rounding
/// makes them part at near-ties; the script reports where).
#[test]
fn real_f32_matches_llama_cpp_greedy() {
    let Some(m) = cached() else { return };
    let model = load_as(&m, Some(candle_core::quantized::GgmlDType::F32));
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("../data/llama_cpp_f32_greedy.json")).unwrap();
    let max_tokens = reference["max_tokens"].as_u64().unwrap() as usize;
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let (tx, _rx) = tokio::sync::mpsc::channel(mycel_models::sampling::MAX_NEW_TOKENS);
    let answers = reference["answers"].as_array().unwrap();
    assert!(answers.len() >= 20);
    for a in answers {
        let user = a["user"].as_str().unwrap();
        let prompt = model.encode_chat(&[ChatMessage::user(user)]).unwrap();
        assert_eq!(prompt, ids(&a["prompt"]), "prompt ids of {user:?}");
        let c = model
            .generate_from_ids(
                &mut model.new_session(),
                &prompt,
                &SamplingParams::greedy(max_tokens),
                &tx,
            )
            .unwrap();
        assert_eq!(c.token_ids, ids(&a["greedy"]), "greedy answer to {user:?}");
    }
}

#[test]
fn real_greedy_answer_is_deterministic() {
    let Some(m) = cached() else { return };
    let model = load(&m, None);
    let (tx, _rx) = tokio::sync::mpsc::channel(mycel_models::sampling::MAX_NEW_TOKENS);
    let msgs = [ChatMessage::user("What is the capital of France?")];
    let a = model
        .generate(
            &mut model.new_session(),
            &msgs,
            &SamplingParams::greedy(24),
            &tx,
        )
        .unwrap();
    let b = model
        .generate(
            &mut model.new_session(),
            &msgs,
            &SamplingParams::greedy(24),
            &tx,
        )
        .unwrap();
    println!("greedy answer: {:?}", a.text);
    assert!(!a.token_ids.is_empty());
    assert_eq!(a.token_ids, b.token_ids);
}

#[test]
fn real_embeddings_rank_related_text_higher() {
    let Some(dir) = std::env::var_os("MYCEL_MODEL_CACHE").map(PathBuf::from) else {
        println!("skipped: MYCEL_MODEL_CACHE is not set");
        return;
    };
    let reg = Registry::load_default().unwrap();
    let entry = reg
        .get(mycel_models::registry::DEFAULT_EMBEDDING_MODEL)
        .unwrap();
    let Some(m) = verify_cached(entry, &dir).unwrap() else {
        println!("skipped: embedding model is not in {}", dir.display());
        return;
    };
    let e = mycel_models::EmbeddingModel::load(&m).unwrap();
    let v = e
        .embed(&[
            "The cat sits on the mat.",
            "A kitten is resting on a rug.",
            "Stock markets fell sharply today.",
        ])
        .unwrap();
    assert_eq!(v[0].len(), 384);
    let n: f32 = v[0].iter().map(|x| x * x).sum();
    assert!((n - 1.0).abs() < 1e-4);
    let near = mycel_models::embed::cosine(&v[0], &v[1]);
    let far = mycel_models::embed::cosine(&v[0], &v[2]);
    println!("cos(cat, kitten) = {near:.3}, cos(cat, stocks) = {far:.3}");
    assert!(near > far + 0.2);
}

/// A worker's seeded answer as a receipt carries it: the emitted ids, then the stop token the
/// sampler drew when it stopped.
fn worker_answer(m: &ChatModel, prompt: &[u32], p: &SamplingParams) -> Vec<u32> {
    let (tx, _rx) = tokio::sync::mpsc::channel(p.max_tokens);
    m.generate_from_ids(&mut m.new_session(), prompt, p, &tx)
        .unwrap()
        .drawn_ids()
}

#[test]
fn real_sampled_answers_of_a_q4_1_worker_pass_the_q8_0_replay() {
    let Some(m) = cached() else { return };
    let worker = load_as(&m, None);
    let validator = load(&m, None);
    let questions = [
        "What is gravity?",
        "Write a short poem about rivers.",
        "Give one surprising fact about bees.",
    ];
    for (i, q) in questions.iter().enumerate() {
        let prompt = validator.encode_chat(&[ChatMessage::user(*q)]).unwrap();
        let p = SamplingParams {
            temperature: 0.7,
            top_k: Some(40),
            top_p: Some(0.95),
            seed: i as u64,
            max_tokens: 24,
            stop_tokens: vec![],
        };
        // Other weights (Q4_1 vs Q8_0): accepted within the tolerance.
        let out = worker_answer(&worker, &prompt, &p);
        let mut replay = validator.replay_prompt(&prompt).unwrap();
        let v = replay.verify(&out, &p).unwrap();
        assert!(v.accepted, "{q}: rejected at {:?}", v.first_rejected);
        // The least likely token substituted at position 2 is rejected there.
        let mut forged = out.clone();
        let l = replay.logits(&out, 2).unwrap();
        forged[2] = (0..l.len()).min_by(|&a, &b| l[a].total_cmp(&l[b])).unwrap() as u32;
        assert_eq!(replay.verify(&forged, &p).unwrap().first_rejected, Some(2));
        // Cut to half and claimed stopped: rejected at the claimed stop.
        let mut cut = out[..out.len() / 2].to_vec();
        cut.extend(validator.tokenizer().special_token("<|im_end|>"));
        let v = replay.verify(&cut, &p).unwrap();
        assert_eq!(v.first_rejected, Some(cut.len() - 1), "{q}");
        // Same weights, same numeric path: every position replays exactly.
        let own = worker_answer(&validator, &prompt, &p);
        let r = replay.tolerances(&own, &p, f32::INFINITY).unwrap();
        assert_eq!(r.tolerances, vec![0.0; own.len()], "{q}");
    }
}
