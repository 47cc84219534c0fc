//! TEMPORARY probe (to be removed).
use std::path::PathBuf;

use mycel_models::llama::{StageInput, StageOutput};
use mycel_models::{
    ChatMessage, ChatModel, LoadOptions, Registry, registry::DEFAULT_CHAT_MODEL, verify_cached,
};

fn maxdiff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

fn last(m: &ChatModel, s: &mut mycel_models::Session, ids: &[u32]) -> Vec<f32> {
    let StageOutput::Logits(l) = m.forward_stage(s, StageInput::Tokens(ids)).unwrap() else {
        panic!()
    };
    l.to_vec1::<f32>().unwrap()
}

#[test]
#[ignore]
fn probe() {
    let dir = PathBuf::from(std::env::var_os("MYCEL_MODEL_CACHE").unwrap());
    let reg = Registry::load_default().unwrap();
    let v = verify_cached(reg.get(DEFAULT_CHAT_MODEL).unwrap(), &dir)
        .unwrap()
        .unwrap();
    let q4 = std::env::var("PROBE_Q4").is_ok();
    let m = ChatModel::load(&v, &LoadOptions { requantize: if q4 { None } else { LoadOptions::default().requantize }, ..LoadOptions::default() }).unwrap();
    let prompt = m
        .encode_chat(&[ChatMessage::user("Tell me about rivers and cats.")])
        .unwrap();
    let out = m.tokenizer().encode(" Rivers are long flowing bodies of water, and cats are small furry animals that people love.", false).unwrap();
    let all: Vec<u32> = prompt.iter().chain(&out).copied().collect();
    let p = prompt.len();
    println!("prompt {p} out {}", out.len());
    let batch = |m: &ChatModel| {
        let mut s = m.new_session();
        let t = m.forward_all_logits(&mut s, &all).unwrap();
        (0..all.len())
            .map(|i| t.get(i).unwrap().to_vec1::<f32>().unwrap())
            .collect::<Vec<_>>()
    };
    let a = batch(&m);
    let a2 = batch(&m);
    // C: prefill prompt then one at a time.
    let mut s = m.new_session();
    let mut c = vec![last(&m, &mut s, &prompt)];
    for &t in &out {
        c.push(last(&m, &mut s, &[t]));
    }
    // B: one at a time from scratch.
    let mut s = m.new_session();
    let b: Vec<Vec<f32>> = all.iter().map(|&t| last(&m, &mut s, &[t])).collect();
    for r in 0..p {
        if r < 12 {
            println!("B row {r}: |A-B| {:.5}", maxdiff(&a[r], &b[r]));
        }
    }
    // E: two batched chunks: all[..20], then all[20..] (pos > 0, seq > 1).
    let mut s = m.new_session();
    let _ = m.forward_all_logits(&mut s, &all[..20]).unwrap();
    let e = m.forward_all_logits(&mut s, &all[20..]).unwrap();
    for r in [20usize, 21, 22, 23, 30, 40, 50] {
        println!(
            "E row {r}: |A-E| {:.5}",
            maxdiff(&a[r], &e.get(r - 20).unwrap().to_vec1::<f32>().unwrap())
        );
    }
    // F: prefill 37, one single step, then batch the rest.
    let mut s = m.new_session();
    let _ = last(&m, &mut s, &all[..p]);
    let _ = last(&m, &mut s, &all[p..p + 1]);
    let f = m.forward_all_logits(&mut s, &all[p + 1..]).unwrap();
    for r in [p + 1, p + 2, p + 5] {
        println!(
            "F row {r}: |A-F| {:.5}",
            maxdiff(&a[r], &f.get(r - p - 1).unwrap().to_vec1::<f32>().unwrap())
        );
    }
    // G: prefill 37, then a batch of 1 token via forward_all_logits, then single.
    // D: prefix-only batched passes: logits at row p-1+k from a batch of all[..p+k].
    for k in 0..out.len() {
        let r = p - 1 + k;
        let mut s = m.new_session();
        let d = last(&m, &mut s, &all[..=r]);
        println!(
            "row {r}: |A-A'| {:.5} |A-B| {:.5} |A-C| {:.5} |B-C| {:.5} |A-D| {:.5} |C-D| {:.5}",
            maxdiff(&a[r], &a2[r]),
            maxdiff(&a[r], &b[r]),
            maxdiff(&a[r], &c[k]),
            maxdiff(&b[r], &c[k]),
            maxdiff(&a[r], &d),
            maxdiff(&c[k], &d)
        );
    }
}
