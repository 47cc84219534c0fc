#!/usr/bin/env python3
"""Drives a mycel node with the official `openai` Python client, unchanged but for the base URL.

    python3 scripts/openai_client_check.py http://127.0.0.1:7400 [model]

Lists models, asks a non-streaming and a streaming chat completion, and checks that a bad request
raises the client's own 4xx error types. Prints one line per check and exits non-zero on failure.
"""
import sys

import openai


def main() -> int:
    base = sys.argv[1].rstrip("/")
    model = sys.argv[2] if len(sys.argv) > 2 else None
    client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)

    ids = [m.id for m in client.models.list().data]
    assert ids, "no models listed"
    model = model or ids[0]
    assert model in ids, f"{model} not in {ids}"
    print(f"models: {ids}")

    messages = [{"role": "user", "content": "Say hello."}]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0, seed=1)
    text = r.choices[0].message.content
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.choices[0].finish_reason in ("stop", "length")
    print(f"completion: {text!r} ({r.usage.completion_tokens} tokens, finish {r.choices[0].finish_reason})")

    pieces = []
    finish = None
    for chunk in client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, temperature=0, seed=1, stream=True
    ):
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    streamed = "".join(pieces)
    assert streamed == text, f"stream {streamed!r} != {text!r}"
    assert finish in ("stop", "length")
    print(f"stream: {len(pieces)} chunks, same text, finish {finish}")

    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        print(f"unknown model: {e.status_code} {type(e).__name__}")
    try:
        client.chat.completions.create(model=model, messages=[])
        raise AssertionError("empty messages accepted")
    except openai.BadRequestError as e:
        print(f"empty messages: {e.status_code} {type(e).__name__}")
    try:
        client.chat.completions.create(model=model, messages=messages, temperature=7)
        raise AssertionError("temperature 7 accepted")
    except openai.BadRequestError as e:
        print(f"temperature 7: {e.status_code} {type(e).__name__}")
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
