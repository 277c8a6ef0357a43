"""Several models behind one Ray, with the official OpenAI Python SDK.

tools/e2e runs it against a ray-server in front of three real llama-server processes (the
fixture's tiny models): a chat model "small" with its fallback "big", a second chat model
"big", and an embedding model started with --embeddings. It expects the config that
tools/e2e writes (see multi_model_e2e there):

- models small-chat (alias small, fallback big), big-chat (alias big), embed (role embedding)
- a rule sending task "classify" to small, one sending prompts of 200+ tokens to big

Environment: RAY_BASE_URL, RAY_SMALL_PID (the small backend's pid, killed to test fallback),
RAY_SMALL_RESTART (a shell command that starts the small backend again).
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import openai
from openai import OpenAI

base_url = os.environ["RAY_BASE_URL"]
root = base_url.rsplit("/v1", 1)[0]
client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)


def get(path):
    try:
        with urllib.request.urlopen(root + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def chat(model, text="Hello", **kwargs):
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": text}],
        max_tokens=8,
        **kwargs,
    )


# models.list: every model with its role and state.
models = {m.id: m for m in client.models.list().data}
print("models:", sorted(models))
assert set(models) == {"small-chat", "big-chat", "embed"}, models
assert models["embed"].model_extra["role"] == "embedding"
assert models["small-chat"].model_extra["aliases"] == ["small"]
for model in models.values():
    assert model.model_extra["contextWindow"] > 0

# Chat to each chat model by id and by alias.
for name, served in [("small-chat", "small-chat"), ("small", "small-chat"),
                     ("big-chat", "big-chat"), ("big", "big-chat")]:
    raw = chat(name)
    completion = raw.parse()
    assert completion.model == served, (name, completion.model)
    assert raw.headers["x-ray-model"] == served
    assert raw.headers["x-ray-route"] == "request"
    assert completion.usage.total_tokens > 0
print("chat by id and alias: ok")

# `auto` routed by a task rule (X-Ray-Task) and by prompt length.
raw = chat("auto", extra_headers={"X-Ray-Task": "classify"})
assert raw.parse().model == "small-chat", raw.parse().model
assert raw.headers["x-ray-route"] == "rule:classify", raw.headers["x-ray-route"]
raw = chat("auto", text="word " * 250)
assert raw.parse().model == "big-chat", raw.parse().model
assert raw.headers["x-ray-route"] == "rule:long", raw.headers["x-ray-route"]
raw = chat("auto", text="short")
assert raw.headers["x-ray-route"] == "default"
print("auto by task and by prompt length: ok")

# Streams are routed the same way and carry the serving model in their chunks.
stream = client.chat.completions.create(
    model="big", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
)
chunk_models = {chunk.model for chunk in stream}
assert chunk_models == {"big-chat"}, chunk_models

# Embeddings: by the model's id, and routed to the embedding model when it names none.
embedding = client.embeddings.create(model="embed", input=["a small box", "a big box"])
assert len(embedding.data) == 2 and len(embedding.data[0].embedding) > 0
assert embedding.model == "embed", embedding.model
routed = client.embeddings.create(model="auto", input="a small box")
assert routed.model == "embed", routed.model
assert routed.data[0].embedding == embedding.data[0].embedding
print("embeddings: ok,", len(embedding.data[0].embedding), "dimensions")

# An unknown model: 404 model_not_found, in the OpenAI shape, naming what exists.
try:
    chat("gpt-4")
    sys.exit("an unknown model was served")
except openai.NotFoundError as error:
    assert error.code == "model_not_found", error.code
    assert "small-chat" in error.message and "big" in error.message
print("unknown model: ok")

# Stop the small backend: its requests fall back to big at once, big stays ready, and small
# comes back by itself when its backend returns.
os.kill(int(os.environ["RAY_SMALL_PID"]), signal.SIGKILL)
time.sleep(0.5)
started = time.monotonic()
raw = chat("small", text="after the kill")
elapsed = time.monotonic() - started
assert raw.parse().model == "big-chat", raw.parse().model
assert "fallback-from=small-chat" in raw.headers["x-ray-route"], raw.headers["x-ray-route"]
assert elapsed < 5, elapsed
print(f"fallback after kill: ok ({elapsed * 1000:.0f} ms)")
status, body = get("/readyz?model=big")
assert status == 200, body
status, body = get("/readyz?model=small")
assert status == 503, body
# Keep failing until the cooldown shows.
for _ in range(4):
    chat("small", text="again")
status, health = get("/health")
small = next(m for m in health["models"] if m["id"] == "small-chat")
print("small while down:", small["state"], small.get("lastFailure"))
assert small["state"] in ("cooldown", "unavailable"), small
assert small["failures"] >= 1, small

subprocess.run(os.environ["RAY_SMALL_RESTART"], shell=True, check=True)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    status, _ = get("/readyz?model=small")
    if status == 200:
        break
    time.sleep(0.5)
assert status == 200, "small did not come back"
raw = chat("small", text="back again")
assert raw.parse().model == "small-chat"
assert raw.headers["x-ray-route"] == "request"
print(f"small back by itself after {30 - (deadline - time.monotonic()):.1f} s: ok")
print("several models with the OpenAI Python SDK: ok")
