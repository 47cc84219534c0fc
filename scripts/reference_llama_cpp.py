#!/usr/bin/env python3
"""Reference check against llama.cpp (llama-cpp-python) on the same GGUF.

Usage: python3 scripts/reference_llama_cpp.py <path to SmolLM2 GGUF> [prompt]

Prints the ChatML prompt's token ids and the greedy continuation's ids (llama.cpp's own
tokenizer and sampler, temperature 0), to compare with
`cargo run -p mycel-models --example chat` (MYCEL_DEBUG_PROMPT=1 prints our prompt ids).
Requires `pip install llama-cpp-python` (builds llama.cpp from source; needs cmake).
"""
import sys

from llama_cpp import Llama

path = sys.argv[1]
question = sys.argv[2] if len(sys.argv) > 2 else "What is the capital of France?"
system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
prompt = (
    f"<|im_start|>system\n{system}<|im_end|>\n"
    f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
)
llm = Llama(model_path=path, n_ctx=512, n_threads=2, verbose=False)
ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
print("prompt ids:", ids)
out = []
for tok in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0):
    if tok == llm.token_eos() or len(out) >= 24:
        break
    out.append(tok)
print("greedy ids:", out)
print("greedy text:", llm.detokenize(out).decode(errors="replace"))
for text in ["naïve café — 東京 🎉", "x=1234567;", "  spaces\t\ttabs\n\nlines"]:
    print(repr(text), llm.tokenize(text.encode(), add_bos=False, special=False))
