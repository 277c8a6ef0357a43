// Ray's OpenAI-compatible routes with the official OpenAI Node SDK.
//
// Only the base URL and the API key change; everything else is the SDK as documented.
//
//   npm install openai
//   cargo run --release -p ray-server -- --config examples/config/ray.tiny.json   # another terminal
//   node examples/openai/chat.mjs
//
// Environment: RAY_BASE_URL (default http://127.0.0.1:3000/v1), RAY_API_KEY (any text when
// auth is off). With RAY_EXPECT_RATE_LIMIT=1 it also sends requests until Ray's rate limit
// answers 429, and checks that the SDK raises its RateLimitError.

import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({
  baseURL: process.env.RAY_BASE_URL ?? "http://127.0.0.1:3000/v1",
  apiKey: process.env.RAY_API_KEY ?? "not-needed",
});

const models = await client.models.list();
const model = models.data[0].id;
console.log(`model: ${model}`);

const messages = [
  { role: "system", content: "You are brief." },
  { role: "user", content: "Why does a small box need a bounded queue?" },
];

// A whole answer.
const answer = await client.chat.completions.create({ model, messages, max_tokens: 64 });
console.log("answer:", answer.choices[0].message.content);
assert.ok(answer.usage.total_tokens > 0);

// A streamed answer, with the usage in the last chunk.
let text = "";
let usage = null;
const stream = await client.chat.completions.create({
  model,
  messages: [...messages, { role: "assistant", content: answer.choices[0].message.content },
             { role: "user", content: "And with streaming?" }],
  max_tokens: 64,
  stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  text += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.usage) usage = chunk.usage;
}
console.log("streamed:", text);
assert.ok(text.length > 0, "the stream carried text");
assert.ok(usage && usage.completion_tokens > 0);

// Embeddings. The SDK asks for base64 unless told otherwise and decodes it to floats; Ray
// answers both encodings from the same vectors.
const texts = ["a bounded queue", "a permit"];
const decoded = await client.embeddings.create({ model, input: texts });
const floats = await client.embeddings.create({ model, input: texts, encoding_format: "float" });
console.log(`embeddings: ${decoded.data.length} vectors of ${decoded.data[0].embedding.length} dimensions`);
assert.deepEqual(decoded.data.map((d) => d.index), [0, 1]);
// JSON numbers are the shortest text of each f32, so read them back as f32 to compare exactly.
const asF32 = (data) => data.map((d) => d.embedding.map(Math.fround));
assert.deepEqual(asF32(decoded.data), asF32(floats.data), "base64 and float carry the same vector");
assert.ok(decoded.usage.prompt_tokens > 0);

if (process.env.RAY_EXPECT_RATE_LIMIT === "1") {
  const strict = client.withOptions({ maxRetries: 0 });
  let limited = false;
  for (let attempt = 0; attempt < 50 && !limited; attempt++) {
    try {
      await strict.chat.completions.create({ model, messages, max_tokens: 8 });
    } catch (error) {
      assert.ok(error instanceof OpenAI.RateLimitError, `unexpected error: ${error}`);
      assert.equal(error.status, 429);
      const retryAfter = error.headers?.get?.("retry-after");
      assert.ok(retryAfter, "429 carries Retry-After");
      console.log(`rate limited after ${attempt} more requests, Retry-After ${retryAfter}`);
      limited = true;
    }
  }
  assert.ok(limited, "Ray never answered 429");
}

console.log("ok");
