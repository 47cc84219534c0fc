#!/usr/bin/env python3
"""llama.cpp (llama-cpp-python) throughput on a GGUF, for `mycel-node bench inference`.

Usage: python3 scripts/bench_llama_cpp.py <gguf> <tokens> <threads> <prompts as JSON [[ids…], …]>

Feeds each prompt's token ids (the same ids our engine gets), then decodes greedily one token
at a time, `tokens` tokens in all (the first comes from the prefill). Prints one JSON line:
{"prompt_tokens", "prompt_secs", "gen_tokens", "gen_secs", "outputs"}. f32 KV cache, as in the
conformance check of specs/models.md §4.
"""
import json
import sys
import time

import numpy as np
from llama_cpp import Llama

path, n, threads, prompts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
llm = Llama(model_path=path, n_ctx=1024, n_threads=threads, n_threads_batch=threads,
            type_k=0, type_v=0, verbose=False)
n_vocab = llm.n_vocab()


def greedy():
    # Last position's logits straight from the context (eval() keeps none without logits_all).
    return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(n_vocab,))))


res = {"prompt_tokens": 0, "prompt_secs": 0.0, "gen_tokens": 0, "gen_secs": 0.0, "outputs": []}
for ids in prompts:
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    tok = greedy()
    res["prompt_secs"] += time.perf_counter() - t
    res["prompt_tokens"] += len(ids)
    out = [tok]
    t = time.perf_counter()
    for _ in range(1, n):
        llm.eval([tok])
        tok = greedy()
        out.append(tok)
    res["gen_secs"] += time.perf_counter() - t
    res["gen_tokens"] += n - 1
    res["outputs"].append(out)
print(json.dumps(res))
