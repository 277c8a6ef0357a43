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
