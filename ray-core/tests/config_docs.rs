//! `docs/configuration.md` is generated from the JSON Schema, the profile defaults and the
//! environment table; this test regenerates it and fails on drift.

#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use std::path::Path;

use ray_core::config::{ENV_VARS, Profile, json_schema, profile_defaults};
use serde_json::Value;

const INTRO: &str = include_str!("config_docs_intro.md");

/// The sections, in the order the page lists them: (title, JSON path prefix, `$defs` name).
const SECTIONS: &[(&str, &str, &str)] = &[
    ("Top level", "", "RayConfig"),
    ("server", "server", "ServerConfig"),
    ("model", "model", "ModelConfig"),
    ("model.operational", "model.operational", "ModelOperational"),
    (
        "model.adapter (kind: mock)",
        "model.adapter",
        "AdapterConfig:mock",
    ),
    (
        "model.adapter (kind: openai-compatible)",
        "model.adapter",
        "AdapterConfig:openai-compatible",
    ),
    (
        "model.adapter (kind: llama.cpp)",
        "model.adapter",
        "AdapterConfig:llama.cpp",
    ),
    (
        "model.adapter.launchProfile",
        "model.adapter.launchProfile",
        "LaunchProfile",
    ),
    (
        "model.adapter.warmupRequests[]",
        "model.adapter.warmupRequests[]",
        "WarmupRequest",
    ),
    (
        "model.scheduler and models[].scheduler",
        "model.scheduler",
        "ModelSchedulerLimits",
    ),
    ("routing", "routing", "RoutingConfig"),
    ("routing.rules[]", "routing.rules[]", "RoutingRule"),
    ("scheduler", "scheduler", "SchedulerConfig"),
    ("priority", "priority", "PriorityConfig"),
    (
        "priority.classes.interactive (and batch, background)",
        "priority.classes.interactive",
        "ClassConfig",
    ),
    ("priority.apiKeys[]", "priority.apiKeys[]", "ApiKeyPriority"),
    ("streaming", "streaming", "StreamingConfig"),
    ("asyncQueue", "asyncQueue", "AsyncQueueConfig"),
    ("cache", "cache", "CacheConfig"),
    ("telemetry", "telemetry", "TelemetryConfig"),
    (
        "gracefulDegradation",
        "gracefulDegradation",
        "GracefulDegradationConfig",
    ),
    ("promptCompiler", "promptCompiler", "PromptCompilerConfig"),
    ("adaptiveTuning", "adaptiveTuning", "AdaptiveTuningConfig"),
    ("auth", "auth", "AuthConfig"),
    ("rateLimit", "rateLimit", "RateLimitConfig"),
    ("cluster", "cluster", "ClusterConfig"),
    ("lifecycle", "lifecycle", "LifecycleConfig"),
    ("hooks[]", "hooks[]", "HookConfig"),
];

/// What Ray does with each section, by section title: who reads the fields and what the
/// operator sees. Every section must have an entry.
const BEHAVIOUR: &[(&str, &str)] = &[
    (
        "Top level",
        "`profile` picks the defaults of every field below. `tags` are labels: reported in \
         `/v1/config`, and `tags.modelRole` feeds each response's `diagnostics.taskRouting`. \
         `models` lists several models on one node; each entry has every field of `model` \
         (below), and takes `family`, `quantization`, `contextWindow`, `warmOnBoot`, \
         `maxOutputTokens` and `operational` from `model` when it leaves them out; its adapter \
         starts from `model.adapter` when the kinds match (else from the profile's defaults \
         for its `kind`), never with a `launchProfile`, and with `modelRef` = its `id`. \
         `defaultModel` serves requests that name no model and match no rule \
         ([operations.md](operations.md#several-models-on-one-box)). `policyFile` names the \
         host policy the config is clamped to, read at start and at each reload; \
         `check-config`, `print-config` and `doctor` name each value it cut \
         ([operations.md](operations.md#host-policy)).",
    ),
    (
        "server",
        "The gateway binds `host:port` once at start, before warm-up, so `/livez` answers at \
         once. Bodies over `requestBodyLimitBytes` are refused with 413 before they are read \
         whole. `ray-server render` points Caddy's `reverse_proxy` at `port` and gives Caddy a \
         body limit just above this one.",
    ),
    (
        "model.scheduler and models[].scheduler",
        "Each model has its own queue and permits. A field left out takes the top-level \
         `scheduler` value; lanes, batch window, affinity and deadlines are always the \
         top-level ones.",
    ),
    (
        "routing",
        "Requests that name no model, or the virtual model `auto`, go to the model of the \
         first rule in `rules` that matches, else to `defaultModel`; a request naming a model \
         (id or alias) goes to it. A model whose backend fails `cooldownAfterFailures` times \
         in a row (refused connections included) is in cooldown for `cooldownMs`: its requests \
         go to its `fallback` models at once, or are refused with 503 `provider_unavailable` \
         and `Retry-After`. `/health` and `/v1/models` show each model's state, reason, \
         failure count and cooldown end.",
    ),
    (
        "routing.rules[]",
        "Every condition a rule sets must hold; unset conditions always hold. Prompt tokens \
         are estimated at 4 chars a token, before any backend is asked. The response says \
         which model served and which rule chose it (`diagnostics.routing` on `/v1/infer`, \
         `X-Ray-Model` and `X-Ray-Route` headers on the OpenAI routes).",
    ),
    (
        "model",
        "`id` is the `model` of every response. `contextWindow` and `maxOutputTokens` bound each \
         request at admission (`maxTokens` defaults to and is clamped at `maxOutputTokens`; a \
         prompt plus `maxTokens` over the context is refused with 413). With `warmOnBoot`, \
         warm-up starts right after the listener is bound and `/readyz` answers 503 \
         `provider_warming` until it succeeds (it is retried). `family` and `quantization` are \
         reported in `/health` and `/v1/config`.",
    ),
    (
        "model.operational",
        "`recommendedPromptFormat` chooses the llama.cpp prompt format \
         ([operations.md](operations.md#backends)). `preferredCtxSize` is the context Ray \
         assumes when neither the backend nor a launch profile says. `memoryClassMiB` is the \
         memory budget `render` and `doctor` split between the gateway and `llama-server`. \
         `supportsJsonMode`, `tokensPerSecondTarget` and `chatTemplateKnown` are reported in \
         `/v1/config`; nothing acts on them.",
    ),
    (
        "model.adapter (kind: mock)",
        "Answers every request itself after `latencyMs`, with text derived from the prompt and \
         `seed`: for development and tests, no backend needed. `POST /v1/embeddings` gets \
         32-dimension unit vectors derived from a hash of each text.",
    ),
    (
        "model.adapter (kind: openai-compatible)",
        "Each request becomes a streamed `POST {baseUrl}/v1/chat/completions` with `modelRef`, \
         cancelled when the client leaves or `timeoutMs` passes; health is `GET /v1/models`. \
         Warm-up sends `warmupRequests` through the normal request path. `POST /v1/embeddings` \
         goes to `POST {baseUrl}/v1/embeddings` (at most 8 texts per call).",
    ),
    (
        "model.adapter (kind: llama.cpp)",
        "As the OpenAI-compatible adapter, plus llama.cpp's own endpoints: prompts are rendered \
         and counted with the backend's tokenizer before admission, generation goes to \
         `/completion` with `cache_prompt` and the permit's slot (or `slotId`), `/slots` \
         snapshots are reused for `slotStateTtlMs`, and the backend is probed every 2 s \
         ([operations.md](operations.md#backends)).",
    ),
    (
        "model.adapter.launchProfile",
        "How `llama-server` runs on this box. The gateway does not start it unless `supervise` \
         is set ([operations.md](operations.md#supervised-mode)); otherwise the fields become \
         the flags of `ray-llama-cpp.service` (`ray-server render`). `doctor` checks them \
         against `llama-server --help`, the model's GGUF header and the unit's memory limit; \
         `stage-model` installs `binaryPath` and `modelPath`. At run time Ray uses `ctxSize` as \
         the context until the backend reports its own, and refuses a config whose \
         `scheduler.maxInflightTokens` exceeds `ctxSize × parallel`.",
    ),
    (
        "model.adapter.warmupRequests[]",
        "Each is sent through the normal request path at warm-up (greedy, no cache); `/readyz` \
         turns 200 only after all of them succeed.",
    ),
    (
        "scheduler",
        "Admission: at most `concurrency` requests run at once, at most `maxQueue` wait (within \
         the token budgets and `requestTimeoutMs`), and anything more is refused at once with \
         503 `queue_full` and `Retry-After`. `/health` `runtime.queue` and the `ray_queue_*` \
         metrics show how full each bound is.",
    ),
    (
        "priority",
        "Each request runs in a class: `interactive` (HTTP requests by default), `batch` (jobs \
         by default) or `background`, asked for with `priority` on `/v1/infer` and jobs or \
         `X-Ray-Priority` on the OpenAI routes, never above its key's `maxClass` (a request \
         asking for more runs in the highest class it may use). Within a model's queue the \
         higher class goes first, but waiting raises a request, so an admitted request starts \
         within its class's `maxWaitMs` while permits turn over as estimated; \
         `reservedInteractive` permits are never taken by `batch` or `background` work; keys at \
         the same priority share permits by `weight`. A request that by the service-time \
         estimate cannot start within its deadline or class bound is refused at once with 503 \
         `queue_wait_exceeds_deadline` and `Retry-After` ([operations.md](operations.md#priority-and-fair-admission)).",
    ),
    (
        "priority.classes.interactive (and batch, background)",
        "The same field for each of the three classes; defaults 2 s, 30 s and 120 s. A lower \
         class may not have a shorter bound than a higher one.",
    ),
    (
        "priority.apiKeys[]",
        "Keys are named like in routing rules: the first 8 hex digits of the key's SHA-256. A key \
         not listed gets `defaultMaxClass` and weight 1; with auth off, clients are told apart \
         by address, each with weight 1.",
    ),
    (
        "hooks[]",
        "Each hook receives the events it names (all when `events` is absent) as one JSON \
         object (`type`, `id`, `time`, and the event's fields): a `command` (an argument \
         vector, no shell) on its standard input, or a `url` as a signed POST under the job \
         callbacks' address rules. Hooks never delay a request: events wait in a queue of 256 \
         (beyond it they are counted as dropped), at most two runs go at once, each within \
         `timeoutMs` (a command that outlives it is killed), a URL is tried three times \
         ([operations.md](operations.md#event-hooks)).",
    ),
    (
        "cluster",
        "Optional. With it, the node joins a NATS JetStream registry: it writes its record \
         (models and their state, queue depth, estimated wait, region, labels) every \
         `heartbeatMs`, and a record expires after three missed heartbeats. A request whose \
         model is not ready here, is in cooldown, or would wait longer than `overflowAfterMs` \
         is forwarded to a peer that has it ready (one hop, signed with the key in \
         `clusterKeyEnv`), and the answer says which node served it (`X-Ray-Node`). When NATS \
         is unreachable the node keeps serving its own models and `/health` says so \
         ([operations.md](operations.md#several-nodes)). Without the section no connection \
         is opened.",
    ),
    (
        "lifecycle",
        "Optional. Sizes the managed models (a llama.cpp `launchProfile` with `supervise: \
         true`) against `memoryBudgetMiB` (default: the cgroup limit, else the machine's \
         memory, less `reserveMiB`): `check-config` refuses a managed model whose footprint \
         (GGUF weights, KV cache for `ctxSize`, compute buffers, `cacheRamMiB`; the measured \
         figure once one is kept in `stateDir`) exceeds the budget on its own, and warns when \
         the `resident` models do not fit together. The supervisor records each \
         child's pid in `stateDir` and ends children an earlier run left. Loading on demand, \
         eviction by `minResidentMs`/`idleUnloadMs` and draining (`drainTimeoutMs`) follow \
         the lifecycle described in [operations.md](operations.md#model-lifecycle); until the \
         request path drives it, supervised models run all the time.",
    ),
    (
        "streaming",
        "Deadlines for streamed answers (`\"stream\": true` on `/v1/infer`, and the OpenAI \
         routes): the first token must come within `firstTokenTimeoutMs`, each next one within \
         `idleTimeoutMs`, the whole stream within `totalTimeoutMs`. A stream that misses one ends \
         with an error event (`stream_first_token_timeout`, `stream_idle_timeout`, \
         `stream_total_timeout`; a 504 if nothing was sent yet) and its backend generation is \
         stopped ([api.md](api.md#streaming)).",
    ),
    (
        "asyncQueue",
        "The job queue behind `/v1/jobs` ([api.md](api.md)). `render` gives the gateway \
         `/var/lib/ray` as its writable state directory, where a relative `storageDir` \
         resolves; `doctor` checks that `storageDir` is visible and writable under the units' \
         protections and has free space.",
    ),
    (
        "cache",
        "Successful results are kept under these bounds and answer identical requests at once \
         (`cached: true`); with the cache off, identical requests are not joined either unless \
         they carry a `dedupeKey`. Embedding vectors are kept here too, one entry per text, under \
         the same bounds. `/health` `runtime.cache` and `ray_cache_*` show its use.",
    ),
    (
        "telemetry",
        "Log lines are JSON on stdout (errors on stderr) with `service`, filtered by `logLevel`; \
         requests slower than `slowRequestThresholdMs` also log `slow inference request`. \
         `accessLog` decides which requests write an access line; refusals never write one \
         each: the first of a code logs at once and the rest are folded into one line a second \
         per code with their `count`, as are repeated failures and slow-request warnings \
         ([operations.md](operations.md#logs)).",
    ),
    (
        "gracefulDegradation",
        "Before admission each request is checked against these thresholds; under pressure its \
         output is clamped to `degradeToMaxTokens` and long prompts are trimmed, the response \
         says `degraded: true` with the reasons, and `/readyz` lists the pressure.",
    ),
    (
        "promptCompiler",
        "Normalises each prompt before the cache key and the token count are taken, so \
         requests that differ only in whitespace or repeated lines share a cache entry; the \
         family names the prompt family used for slot affinity and learned output caps.",
    ),
    (
        "adaptiveTuning",
        "Lowers a request's `maxTokens` when recent queue time or generation speed degrade, \
         and learns per-family output caps from completed requests; each response's \
         `diagnostics.adaptiveTuning` and `learnedOutputCap` say what was applied.",
    ),
    (
        "auth",
        "Protected routes require `Authorization: Bearer <key>` with a key from the variable \
         `apiKeyEnv` names (read once at start; restart to change keys), compared in constant \
         time; `render` writes that variable into the example environment file and `doctor` \
         checks it is set.",
    ),
    (
        "rateLimit",
        "`/v1/infer` and `/v1/jobs` are limited per key in fixed windows; over the limit, 429 \
         `rate_limited` with `Retry-After`. When the key table is full, new clients share one \
         overflow window; `/readyz` reports `rate_limit_pressure` from 90 %.",
    ),
];

fn pointer<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .try_fold(value, |v, key| v.get(key))
}

fn render(value: &Value) -> String {
    match value {
        Value::String(s) if s.is_empty() => "`\"\"`".into(),
        Value::String(s) => format!("`{s}`"),
        Value::Array(items) if items.is_empty() => "`[]`".into(),
        Value::Object(map) if map.is_empty() => "`{}`".into(),
        other => format!("`{other}`"),
    }
}

/// The description without its trailing "Env: ..." sentence (the table has a column for it).
fn meaning(description: &str) -> String {
    let text = description.replace('\n', " ");
    let text = match text.find(" Env: ") {
        Some(index) => text[..index].to_string(),
        None => text,
    };
    text.replace('|', "\\|")
}

fn defaults_cell(path: &str, kind: Option<&str>) -> String {
    let mut cells: Vec<(Profile, Option<Value>)> = Vec::new();
    for profile in Profile::ALL {
        let config = serde_json::to_value(profile_defaults(profile)).unwrap();
        if let Some(kind) = kind
            && pointer(&config, "model.adapter.kind").and_then(Value::as_str) != Some(kind)
        {
            continue;
        }
        cells.push((profile, pointer(&config, path).cloned()));
    }
    let present: Vec<&(Profile, Option<Value>)> =
        cells.iter().filter(|(_, v)| v.is_some()).collect();
    if present.is_empty() {
        return "none".into();
    }
    let first = &present[0].1;
    if present.len() == cells.len() && present.iter().all(|(_, v)| v == first) {
        return render(first.as_ref().unwrap());
    }
    present
        .iter()
        .map(|(p, v)| format!("{p}: {}", render(v.as_ref().unwrap())))
        .collect::<Vec<_>>()
        .join("<br>")
}

fn generate() -> String {
    let schema = json_schema();
    let defs = &schema["$defs"];
    let mut out = String::from(INTRO);
    for (title, prefix, definition) in SECTIONS {
        let def = if *definition == "RayConfig" {
            &schema
        } else if let Some(kind) = definition.strip_prefix("AdapterConfig:") {
            defs["AdapterConfig"]["anyOf"]
                .as_array()
                .expect("adapter variants")
                .iter()
                .find(|v| v["properties"]["kind"]["const"] == kind)
                .expect("adapter kind")
        } else {
            &defs[*definition]
        };
        let kind = if title.contains("kind: mock") {
            Some("mock")
        } else if title.contains("openai-compatible") {
            Some("openai-compatible")
        } else if title.contains("kind: llama.cpp") || prefix.contains("launchProfile") {
            Some("llama.cpp")
        } else {
            None
        };
        out.push_str(&format!("\n## `{title}`\n\n"));
        if let Some(description) = def["description"].as_str() {
            out.push_str(&meaning(description));
            out.push_str("\n\n");
        }
        let behaviour = BEHAVIOUR
            .iter()
            .find(|(section, _)| section == title)
            .map(|(_, text)| *text)
            .unwrap_or_else(|| panic!("no BEHAVIOUR entry for section {title}"));
        out.push_str(&format!("**What Ray does with it.** {behaviour}\n\n"));
        out.push_str("| Field | Meaning | Environment | Default by profile |\n");
        out.push_str("|---|---|---|---|\n");
        let properties = def["properties"].as_object().expect(definition);
        for (field, property) in properties {
            if *definition == "RayConfig" && property.get("$ref").is_some() {
                continue;
            }
            if field == "kind" {
                out.push_str(&format!(
                    "| `kind` | Selects this adapter. | file only | `{}` |\n",
                    property["const"].as_str().unwrap_or("")
                ));
                continue;
            }
            let path = if prefix.is_empty() {
                field.clone()
            } else {
                format!("{prefix}.{field}")
            };
            let env: Vec<String> = ENV_VARS
                .iter()
                .filter(|v| v.path == path)
                .map(|v| format!("`{}`", v.name))
                .collect();
            let extra_env = match path.as_str() {
                "profile" => vec!["`RAY_PROFILE` (only when the file names none)".to_string()],
                _ => Vec::new(),
            };
            let env = env.into_iter().chain(extra_env).collect::<Vec<_>>();
            let description = property["description"].as_str().unwrap_or("");
            let default = if prefix.ends_with("[]") || path == "$schema" {
                "none".to_string()
            } else {
                defaults_cell(&path, kind)
            };
            out.push_str(&format!(
                "| `{field}` | {} | {} | {} |\n",
                meaning(description),
                if env.is_empty() {
                    "file only".into()
                } else {
                    env.join(", ")
                },
                default
            ));
        }
    }
    out
}

#[test]
fn configuration_reference_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
    let generated = generate();
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    if current != generated {
        std::fs::write(&path, &generated).unwrap();
        panic!(
            "docs/configuration.md was out of date and has been regenerated; review and commit it"
        );
    }
}
