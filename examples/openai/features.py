"""The rest of the OpenAI door with the official OpenAI Python SDK: models.retrieve, an
out-of-range max_tokens, n=2, log probabilities, tool calls (whole and streamed) and structured
output with a JSON schema. Each either works or answers the documented clear error.

    pip install openai
    python examples/openai/features.py

Environment: RAY_BASE_URL (default http://127.0.0.1:3000/v1), RAY_API_KEY. With
RAY_EXPECT_FEATURES=1 the backend must support tools, log probabilities and JSON schemas (Ray
in front of llama-server with --jinja and a tool-capable template, as tools/e2e runs it);
without it, those answer the documented 400 unsupported_parameter (the mock adapter).
RAY_FORCE_TOOL_TOKEN names a token id to bias towards, which makes a random-weight test model
open its tool call at once.
"""

import json
import os
import sys

from openai import BadRequestError, NotFoundError, OpenAI

base_url = os.environ.get("RAY_BASE_URL", "http://127.0.0.1:3000/v1")
client = OpenAI(base_url=base_url, api_key=os.environ.get("RAY_API_KEY", "not-needed"),
                max_retries=0)
expect_features = os.environ.get("RAY_EXPECT_FEATURES") == "1"
messages = [{"role": "user", "content": "What is the weather in Paris?"}]

model = client.models.list().data[0].id
retrieved = client.models.retrieve(model)
assert retrieved.id == model and retrieved.object == "model", retrieved
try:
    client.models.retrieve("no-such-model")
    sys.exit("an unknown model was found")
except NotFoundError as error:
    assert error.body["code"] == "model_not_found", error.body
print(f"models.retrieve: {retrieved.id}")

try:
    client.chat.completions.create(model=model, messages=messages, max_tokens=100000)
    sys.exit("max_tokens 100000 was accepted")
except BadRequestError as error:
    assert error.body["param"] == "max_tokens", error.body
    assert "maxOutputTokens" in error.body["message"], error.body
    print(f"max_tokens out of range: {error.body['message']}")

two = client.chat.completions.create(model=model, messages=messages, max_tokens=6, n=2)
assert [c.index for c in two.choices] == [0, 1], two
print(f"n=2: {len(two.choices)} choices, usage {two.usage.completion_tokens} completion tokens")


def unsupported(call, param):
    """Without the feature, the documented 400 naming the parameter and the model."""
    try:
        call()
        sys.exit(f"{param} was accepted by a backend that cannot do it")
    except BadRequestError as error:
        assert error.body["code"] == "unsupported_parameter", error.body
        assert error.body["param"] == param, error.body
        print(f"{param}: refused as documented: {error.body['message']}")


def logprobs():
    answer = client.chat.completions.create(model=model, messages=messages, max_tokens=5,
                                            logprobs=True, top_logprobs=2)
    content = answer.choices[0].logprobs.content
    assert len(content) == 5 and all(len(t.top_logprobs) == 2 for t in content), content
    print(f"logprobs: {[round(t.logprob, 2) for t in content]}")


weather = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome"]}}, "required": ["city"]}}}
bias = ({os.environ["RAY_FORCE_TOOL_TOKEN"]: 10}
        if os.environ.get("RAY_FORCE_TOOL_TOKEN") else None)
tool_args = dict(model=model, messages=messages, tools=[weather], tool_choice="required",
                 max_tokens=48, temperature=0, logit_bias=bias)


def tools():
    answer = client.chat.completions.create(**tool_args)
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls", answer
    assert call.function.name == "get_weather", call
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Rome"), call
    print(f"tool call: {call.function.name}({call.function.arguments})")
    # Answer the call with its result; the model replies to it in text (tool_choice none: a
    # random-weight model left to choose may start a call that max_tokens cuts short).
    reply = client.chat.completions.create(
        model=model, tools=[weather], tool_choice="none", max_tokens=16,
        messages=messages + [answer.choices[0].message.model_dump(exclude_none=True),
                             {"role": "tool", "tool_call_id": call.id,
                              "content": json.dumps({"celsius": 21})}])
    assert reply.choices[0].finish_reason in ("stop", "length"), reply
    print(f"after the tool result: finish_reason {reply.choices[0].finish_reason}")
    calls, finish = {}, None
    for chunk in client.chat.completions.create(stream=True, **tool_args):
        if not chunk.choices:
            continue
        for piece in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(piece.index, {"name": "", "arguments": ""})
            entry["name"] += piece.function.name or ""
            entry["arguments"] += piece.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and calls[0]["name"] == "get_weather", (finish, calls)
    json.loads(calls[0]["arguments"])
    print(f"streamed tool call: {calls[0]}")


schema = {"type": "object", "properties": {
    "label": {"type": "string", "enum": ["spam", "ham"]},
    "score": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["label", "score"], "additionalProperties": False}
schema_format = {"type": "json_schema",
                 "json_schema": {"name": "verdict", "strict": True, "schema": schema}}


def structured():
    answer = client.chat.completions.create(model=model, messages=messages, max_tokens=100,
                                            temperature=0, response_format=schema_format)
    value = json.loads(answer.choices[0].message.content)
    assert value["label"] in ("spam", "ham") and 0 <= value["score"] <= 9, value
    print(f"structured output: {value}")


if expect_features:
    logprobs()
    tools()
    structured()
else:
    unsupported(logprobs, "logprobs")
    unsupported(tools, "tools")
    unsupported(structured, "response_format")

print("ok")
