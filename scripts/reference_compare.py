#!/usr/bin/env python3
"""Greedy generation: mycel's engine vs llama.cpp (llama-cpp-python) on the same weights, token for token.

Usage: python3 scripts/reference_compare.py <models cache dir> [max tokens (32)]
           [--save models/tests/data/llama_cpp_f32_greedy.json]

For each of the prompts below, llama.cpp tokenizes the ChatML prompt itself (special tokens on)
and generates greedily (argmax of its logits, f32 KV cache, 2 threads) until an end-of-turn token
or max tokens; our engine (`cargo run -p mycel-models --example reference_ids`) does the same.
Three comparisons:

- f32: the SmolLM2 file's weights dequantized (exactly) to f32 on both sides — llama.cpp runs a
  GGUF written by the `dequantize_gguf` example. No quantized matmul, so the two implementations
  must agree token for token; the script exits 1 when any prompt differs. `--save` writes
  llama.cpp's f32 answers to a file that the test `real_f32_matches_llama_cpp_greedy` replays.
- q4_1: the file's Q4_1 weights on both sides. Both quantize activations to 8 bits per 32-value
  block before each matmul; a last-bit difference upstream flips a rounding step, and the flips
  move logits by ~0.1–0.5 — so greedy paths part at near-ties (reported, with both margins).
- q8_0: our engine as the node runs it (weights requantized to Q8_0) vs llama.cpp's Q4_1.

Per prompt it prints whether the prompt ids and the greedy ids are equal, or where they first
differ and the best-vs-second logit margin of each side there. Requires
`pip install llama-cpp-python==0.3.36`.
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from llama_cpp import Llama

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# <|endoftext|> and <|im_end|>: the ends of an answer, as for our engine (with llama.cpp's EOS).
END_OF_TURN = {0, 2}
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "What is 17 times 23?",
    "List three primary colors.",
    "Translate 'good morning' into Spanish.",
    "Write a Python function that reverses a string.",
    "Who wrote Romeo and Juliet?",
    "Give me a synonym for happy.",
    "What does a CPU do?",
    "How many days are in a leap year?",
    "Summarize the plot of Cinderella in two sentences.",
    "What is the boiling point of water in Fahrenheit?",
    "Name a mammal that can fly.",
    "Why is the sky blue?",
    "Write a short greeting for a birthday card.",
    "What is the square root of 144?",
    "Describe a cat to someone who has never seen one.",
    "What are the three states of matter?",
    "Suggest a name for a pet goldfish.",
    "How do I boil an egg?",
    "What is the largest planet in the solar system?",
    "Convert 5 kilometers to miles.",
    "Tell me a fun fact about octopuses.",
]


def chatml(question):
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )


def llama_cpp_side(gguf, max_tokens):
    # type_k / type_v 0 = GGML_TYPE_F32. A plain greedy loop over eval(), keeping each position's
    # top-two logit margin (the same loop as llama.cpp's greedy sampler, lowest id on ties).
    llm = Llama(model_path=gguf, n_ctx=1024, n_threads=2, type_k=0, type_v=0, verbose=False)
    stops = END_OF_TURN | {llm.token_eos()}
    out = []
    for q in PROMPTS:
        ids = llm.tokenize(chatml(q).encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        gen, margins = [], []
        while len(gen) < max_tokens:
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            best = int(np.argmax(logits))
            margins.append(float(logits[best] - np.partition(logits, -2)[-2]))
            if best in stops:
                break
            gen.append(best)
            llm.eval([best])
        out.append({"prompt": ids, "greedy": gen, "margins": margins})
    return out


def cargo(args, stdin=None):
    """Runs `cargo run -q -p mycel-models <args>` in the repository; its stdout."""
    run = subprocess.run(["cargo", "run", "-q", "-p", "mycel-models"] + args, input=stdin,
                         capture_output=True, text=True,
                         cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    if run.returncode != 0:
        sys.exit(f"cargo {' '.join(args)} failed:\n{run.stderr}")
    return run.stdout


def save_reference(path, ref, max_tokens):
    about = ("llama.cpp (llama-cpp-python 0.3.36) greedy ids on SmolLM2-135M-Instruct's Q4_1 "
             "weights dequantized to f32, f32 KV cache; written by scripts/reference_compare.py --save")
    answers = [json.dumps({"user": q, "prompt": r["prompt"], "greedy": r["greedy"]})
               for q, r in zip(PROMPTS, ref)]
    with open(path, "w") as f:
        f.write(f'{{"about": {json.dumps(about)},\n "max_tokens": {max_tokens},\n "answers": [\n  ')
        f.write(",\n  ".join(answers))
        f.write("\n ]\n}\n")


def json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def main():
    args = sys.argv[1:]
    save = None
    if "--save" in args:
        i = args.index("--save")
        save = args[i + 1]
        del args[i:i + 2]
    if not args:
        sys.exit(__doc__)
    cache = args[0]
    max_tokens = int(args[1]) if len(args) > 1 else 32
    gguf = os.path.join(cache, "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.exists(gguf):
        sys.exit(f"{gguf} not found: run `mycel-node model pull smollm2-135m-instruct` first")
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "smollm2-f32.gguf")
        cargo(["--example", "dequantize_gguf", "--", gguf, f32])
        ref_f32 = llama_cpp_side(f32, max_tokens)
    if save:
        save_reference(save, ref_f32, max_tokens)
    ref_q4 = llama_cpp_side(gguf, max_tokens)
    summary = []
    for weights, ref, theirs in [("f32", ref_f32, "f32 GGUF"), ("q4_1", ref_q4, "Q4_1 file"),
                                 ("q8_0", ref_q4, "Q4_1 file")]:
        got = json_lines(cargo(["--example", "reference_ids", "--", cache, weights,
                                str(max_tokens)], "\n".join(PROMPTS) + "\n"))
        print(f"\n== ours ({weights}) vs llama.cpp ({theirs}, f32 KV), {max_tokens} tokens max ==")
        equal_prompts, equal, parted = 0, 0, []
        for q, r, g in zip(PROMPTS, ref, got):
            p = first_difference(r["prompt"], g["prompt"])
            d = first_difference(r["greedy"], g["greedy"])
            equal_prompts += p is None
            equal += d is None
            if d is None:
                where = "equal"
            else:
                # Both sides' best-vs-second margins where they part: a near-tie, or a fault.
                gap = (r["margins"][d], g["margins"][d])
                parted.append((d, max(gap)))
                where = (f"first differs at token {d} (margins there: llama.cpp {gap[0]:.3f}, "
                         f"ours {gap[1]:.3f})")
            print(f"  {'ok ' if d is None and p is None else 'DIFF'} {len(r['greedy']):2} tokens, "
                  f"prompt {'equal' if p is None else f'differs at {p}'}, greedy {where}: {q}")
        line = (f"{weights}: prompt ids equal {equal_prompts}/{len(PROMPTS)}, greedy ids equal "
                f"{equal}/{len(PROMPTS)}")
        if parted:
            line += (f"; the others part at token {min(d for d, _ in parted)}.."
                     f"{max(d for d, _ in parted)}, where the larger margin is at most "
                     f"{max(m for _, m in parted):.3f}")
        summary.append((weights, equal_prompts == len(PROMPTS) and equal == len(PROMPTS), line))
    print()
    for _, _, line in summary:
        print(line)
    sys.exit(0 if summary[0][1] else 1)


if __name__ == "__main__":
    main()
