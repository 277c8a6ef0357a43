"""Ray's OpenAI-compatible routes with the official OpenAI Python SDK.

Only the base URL and the API key change; everything else is the SDK as documented.

    pip install openai
    cargo run --release -p ray-server -- --config examples/config/ray.tiny.json   # another terminal
    python examples/openai/chat.py

Environment: RAY_BASE_URL (default http://127.0.0.1:3000/v1), RAY_API_KEY (any text when
auth is off). With RAY_EXPECT_RATE_LIMIT=1 it also sends requests until Ray's rate limit
answers 429, and checks that the SDK raises its RateLimitError (tools/e2e runs it that way).
"""

import os
import struct
import sys

from openai import OpenAI, RateLimitError

base_url = os.environ.get("RAY_BASE_URL", "http://127.0.0.1:3000/v1")
client = OpenAI(base_url=base_url, api_key=os.environ.get("RAY_API_KEY", "not-needed"))

model = client.models.list().data[0].id
print(f"model: {model}")

messages = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "Why does a small box need a bounded queue?"},
]

# A whole answer.
answer = client.chat.completions.create(model=model, messages=messages, max_tokens=64)
print("answer:", answer.choices[0].message.content)
print("usage:", answer.usage)
assert answer.choices[0].finish_reason in ("stop", "length")
assert answer.usage.total_tokens > 0

# A streamed answer, with the usage in the last chunk.
text, usage = "", None
stream = client.chat.completions.create(
    model=model,
    messages=messages + [{"role": "assistant", "content": answer.choices[0].message.content},
                         {"role": "user", "content": "And with streaming?"}],
    max_tokens=64,
    stream=True,
    stream_options={"include_usage": True},
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
print("streamed:", text)
assert text, "the stream carried text"
assert usage is not None and usage.completion_tokens > 0, usage

# The legacy completions endpoint.
completion = client.completions.create(model=model, prompt="Queues are", max_tokens=16)
assert completion.choices[0].text

# Embeddings. The SDK asks for base64 unless told otherwise and decodes it to floats; Ray
# answers both encodings from the same vectors.
texts = ["a bounded queue", "a permit"]
decoded = client.embeddings.create(model=model, input=texts)
floats = client.embeddings.create(model=model, input=texts, encoding_format="float")
print(f"embeddings: {len(decoded.data)} vectors of {len(decoded.data[0].embedding)} dimensions, "
      f"usage {decoded.usage}")
assert [d.index for d in decoded.data] == [0, 1]
assert len(decoded.data[0].embedding) > 0
# JSON numbers are the shortest text of each f32, so read them back as f32 to compare exactly.
as_f32 = lambda xs: list(struct.unpack(f"<{len(xs)}f", struct.pack(f"<{len(xs)}f", *xs)))
for a, b in zip(decoded.data, floats.data):
    assert as_f32(a.embedding) == as_f32(b.embedding), "base64 and float carry the same vector"
assert decoded.data[0].embedding != decoded.data[1].embedding
assert decoded.usage.prompt_tokens > 0

if os.environ.get("RAY_EXPECT_RATE_LIMIT") == "1":
    strict = client.with_options(max_retries=0)
    for attempt in range(50):
        try:
            strict.chat.completions.create(model=model, messages=messages, max_tokens=8)
        except RateLimitError as error:
            print(f"rate limited after {attempt} more requests: {error.status_code}, "
                  f"Retry-After {error.response.headers.get('retry-after')}")
            assert error.status_code == 429
            assert error.response.headers.get("retry-after")
            break
    else:
        sys.exit("Ray never answered 429")

print("ok")
