//! The single-field rules of the config (ranges, text lengths, names, URLs), in one table that
//! both the validator and the JSON Schema read, so the two cannot drift.
//!
//! Rules between two fields stay in [`super::validate`]; the schema cannot express them.

use serde_json::{Map, Value, json};

use super::reserved::{AUTO_MODEL, GENERATED_LLAMA_FLAGS, RESERVED_ADAPTER_HEADERS};

/// One single-field rule.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Limit {
    /// A whole number from `min` to `max`.
    Int {
        /// The smallest allowed value.
        min: i64,
        /// The largest allowed value.
        max: i64,
    },
    /// A whole number of at least `min`; its upper bound is another field.
    AtLeast {
        /// The smallest allowed value.
        min: i64,
    },
    /// A finite number above `min` (or from `min` when `min_inclusive`) and at most `max`.
    Number {
        /// The lower bound.
        min: f64,
        /// Whether `min` itself is allowed.
        min_inclusive: bool,
        /// The largest allowed value.
        max: f64,
    },
    /// Text of at most `max_chars` characters with no control characters; not blank unless
    /// `allow_empty`.
    Text {
        /// The most characters allowed.
        max_chars: u32,
        /// Whether an empty or blank text is allowed.
        allow_empty: bool,
    },
    /// A list (or an object) of at most `max` entries.
    Entries {
        /// The most entries allowed.
        max: u32,
    },
    /// Object keys of 1 to `max_chars` characters.
    KeyLength {
        /// The most characters a key may have.
        max_chars: u32,
    },
    /// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 256 chars.
    EnvVarName,
    /// An absolute http(s) URL with no credentials, query or fragment, at most 2048 chars; a
    /// port, when given, is 1 to 65535, and an IPv6 host is in brackets.
    HttpUrl,
    /// `localhost`, an IPv4 address in 127.0.0.0/8 or the IPv6 loopback in any hex form
    /// (`::1`, `0:0:0:0:0:0:0:1`), with or without brackets.
    LoopbackHost,
    /// A host name or `*.suffix`: dot-separated labels of letters, digits and inner hyphens.
    HostPattern,
    /// An address to listen on: an IPv4 address, an IPv6 address (with or without brackets,
    /// no dotted tail) or a host name (dot-separated labels of letters, digits and inner
    /// hyphens, not only digits and dots), at most 253 chars.
    BindHost,
    /// HTTP header names (object keys): tokens, none of [`RESERVED_ADAPTER_HEADERS`].
    HeaderNames,
    /// An HTTP header value: at most [`HEADER_VALUE_MAX_CHARS`] chars, no control characters
    /// but tab.
    HeaderValue,
    /// A `llama-server` argument that is none of the [`GENERATED_LLAMA_FLAGS`].
    NotGeneratedFlag,
    /// A name other than this reserved word (`auto` asks for routing by rules).
    NotReserved(&'static str),
    /// An API key id: the first 8 lowercase hex digits of the key's SHA-256.
    KeyId,
    /// An API key id compared case-insensitively (`routing.rules[].apiKeys[]`): the first 8
    /// hex digits of the key's SHA-256, in either case.
    KeyIdAnyCase,
    /// A name of 1 to `max_chars` characters, any characters allowed (a model alias, a routing
    /// rule's name or task).
    Name {
        /// The most characters a name may have.
        max_chars: u32,
    },
}

/// A rule and the field it applies to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldLimit {
    /// The field's JSON path: `[]` stands for any list index and `*` for any object key
    /// (`model.adapter.warmupRequests[].input`, `tags.*`).
    pub path: &'static str,
    /// The rule.
    pub limit: Limit,
}

const fn int(path: &'static str, min: i64, max: i64) -> FieldLimit {
    FieldLimit {
        path,
        limit: Limit::Int { min, max },
    }
}

const fn at_least(path: &'static str, min: i64) -> FieldLimit {
    FieldLimit {
        path,
        limit: Limit::AtLeast { min },
    }
}

const fn number(path: &'static str, min: f64, min_inclusive: bool, max: f64) -> FieldLimit {
    FieldLimit {
        path,
        limit: Limit::Number {
            min,
            min_inclusive,
            max,
        },
    }
}

const fn text(path: &'static str, max_chars: u32, allow_empty: bool) -> FieldLimit {
    FieldLimit {
        path,
        limit: Limit::Text {
            max_chars,
            allow_empty,
        },
    }
}

const fn entries(path: &'static str, max: u32) -> FieldLimit {
    FieldLimit {
        path,
        limit: Limit::Entries { max },
    }
}

const fn rule(path: &'static str, limit: Limit) -> FieldLimit {
    FieldLimit { path, limit }
}

/// Entries of `models` at most.
pub(crate) const MAX_MODELS: u32 = 16;
/// Aliases one model may have at most (`model.aliases`, `models[].aliases`).
pub(crate) const MAX_ALIASES: u32 = 16;
/// The most chars of a model id or alias.
pub(crate) const MAX_NAME_CHARS: u32 = 256;
/// Entries of `routing.rules` at most.
pub(crate) const MAX_ROUTING_RULES: u32 = 64;
/// The most chars of a routing rule's name or of one of its tasks.
pub(crate) const MAX_RULE_WORD_CHARS: u32 = 64;

/// Every single-field rule of the config.
pub const FIELD_LIMITS: &[FieldLimit] = &[
    // server
    rule("server.host", Limit::BindHost),
    int("server.port", 0, 65_535),
    int("server.requestBodyLimitBytes", 1, 1_048_576),
    // model
    text("model.id", MAX_NAME_CHARS, false),
    rule("model.id", Limit::NotReserved(AUTO_MODEL)),
    entries("model.aliases", MAX_ALIASES),
    rule(
        "model.aliases[]",
        Limit::Name {
            max_chars: MAX_NAME_CHARS,
        },
    ),
    rule("model.aliases[]", Limit::NotReserved(AUTO_MODEL)),
    text("model.family", 256, false),
    int("model.contextWindow", 1, 32_768),
    int("model.maxOutputTokens", 1, 2_048),
    int("model.operational.tokensPerSecondTarget", 1, 1_000),
    int("model.operational.memoryClassMiB", 1, 65_536),
    int("model.operational.preferredCtxSize", 1, 32_768),
    // Per-model scheduler limits (also `models[].scheduler`): the ranges of `scheduler`.
    int("model.scheduler.concurrency", 1, 8),
    int("model.scheduler.maxQueue", 1, 512),
    int("model.scheduler.maxQueuedTokens", 1, 262_144),
    int("model.scheduler.maxInflightTokens", 1, 65_536),
    // model.adapter
    int("model.adapter.latencyMs", 0, 120_000),
    text("model.adapter.seed", 512, true),
    rule("model.adapter.baseUrl", Limit::HttpUrl),
    text("model.adapter.modelRef", 256, false),
    rule("model.adapter.apiKeyEnv", Limit::EnvVarName),
    int("model.adapter.timeoutMs", 1, 120_000),
    entries("model.adapter.headers", 64),
    rule("model.adapter.headers", Limit::HeaderNames),
    rule("model.adapter.headers.*", Limit::HeaderValue),
    entries("model.adapter.warmupRequests", 8),
    text("model.adapter.warmupRequests[].input", 8_192, true),
    text("model.adapter.warmupRequests[].system", 8_192, true),
    at_least("model.adapter.warmupRequests[].maxTokens", 1),
    int("model.adapter.slotStateTtlMs", 1, 120_000),
    at_least("model.adapter.slotSnapshotTimeoutMs", 1),
    int("model.adapter.promptScaffoldCacheEntries", 1, 4_096),
    // model.adapter.launchProfile
    text("model.adapter.launchProfile.binaryPath", 4_096, false),
    text("model.adapter.launchProfile.modelPath", 4_096, false),
    rule("model.adapter.launchProfile.host", Limit::LoopbackHost),
    int("model.adapter.launchProfile.port", 0, 65_535),
    text("model.adapter.launchProfile.alias", 256, false),
    text("model.adapter.launchProfile.slotSavePath", 4_096, false),
    int("model.adapter.launchProfile.ctxSize", 1, 32_768),
    int("model.adapter.launchProfile.parallel", 1, 8),
    int("model.adapter.launchProfile.threads", 1, 32),
    int("model.adapter.launchProfile.threadsBatch", 1, 32),
    int("model.adapter.launchProfile.threadsHttp", 1, 16),
    int("model.adapter.launchProfile.batchSize", 1, 4_096),
    at_least("model.adapter.launchProfile.ubatchSize", 1),
    int("model.adapter.launchProfile.cacheReuse", 0, 32_768),
    int("model.adapter.launchProfile.cacheRamMiB", -1, 8_192),
    entries("model.adapter.launchProfile.extraArgs", 64),
    rule(
        "model.adapter.launchProfile.extraArgs[]",
        Limit::NotGeneratedFlag,
    ),
    // models
    entries("models", MAX_MODELS),
    // routing
    entries("routing.rules", MAX_ROUTING_RULES),
    rule(
        "routing.rules[].name",
        Limit::Name {
            max_chars: MAX_RULE_WORD_CHARS,
        },
    ),
    rule(
        "routing.rules[].tasks[]",
        Limit::Name {
            max_chars: MAX_RULE_WORD_CHARS,
        },
    ),
    rule("routing.rules[].apiKeys[]", Limit::KeyIdAnyCase),
    int("routing.cooldownAfterFailures", 1, 100),
    int("routing.cooldownMs", 100, 600_000),
    // scheduler
    int("scheduler.concurrency", 1, 8),
    int("scheduler.maxQueue", 1, 512),
    int("scheduler.maxQueuedTokens", 1, 262_144),
    int("scheduler.maxInflightTokens", 1, 65_536),
    int("scheduler.requestTimeoutMs", 1, 120_000),
    int("scheduler.batchWindowMs", 0, 1_000),
    at_least("scheduler.affinityLookahead", 1),
    int("scheduler.maxDedupeWaiters", 1, 4_096),
    int("scheduler.maxChoices", 1, 16),
    at_least("scheduler.shortJobMaxTokens", 1),
    // priority
    int("priority.classes.interactive.maxWaitMs", 1, 3_600_000),
    int("priority.classes.batch.maxWaitMs", 1, 3_600_000),
    int("priority.classes.background.maxWaitMs", 1, 3_600_000),
    int("priority.reservedInteractive", 0, 7),
    entries("priority.apiKeys", 128),
    rule("priority.apiKeys[].id", Limit::KeyId),
    int("priority.apiKeys[].weight", 1, 100),
    // streaming
    int("streaming.firstTokenTimeoutMs", 1, 600_000),
    int("streaming.idleTimeoutMs", 1, 600_000),
    int("streaming.totalTimeoutMs", 1_000, 3_600_000),
    // asyncQueue
    text("asyncQueue.storageDir", 4_096, false),
    int("asyncQueue.maxJobs", 1, 2_000),
    int("asyncQueue.minFreeStorageMiB", 1, 1_048_576),
    int("asyncQueue.completedTtlMs", 0, 604_800_000),
    int("asyncQueue.pollIntervalMs", 1, 60_000),
    int("asyncQueue.dispatchConcurrency", 1, 8),
    int("asyncQueue.maxAttempts", 1, 100),
    int("asyncQueue.callbackTimeoutMs", 1, 30_000),
    int("asyncQueue.maxCallbackAttempts", 1, 100),
    entries("asyncQueue.callbackAllowedHosts", 64),
    rule("asyncQueue.callbackAllowedHosts[]", Limit::HostPattern),
    rule("asyncQueue.callbackSigningSecretEnv", Limit::EnvVarName),
    int("asyncQueue.maxRecordBytes", 4_096, 16_777_216),
    // cache
    int("cache.maxEntries", 1, 4_096),
    int("cache.maxBytes", 1, 268_435_456),
    int("cache.ttlMs", 0, 86_400_000),
    // telemetry
    text("telemetry.serviceName", 128, false),
    int("telemetry.slowRequestThresholdMs", 0, 120_000),
    int("telemetry.accessLogSampleEvery", 1, 1_000_000),
    // gracefulDegradation
    at_least("gracefulDegradation.queueDepthThreshold", 1),
    int("gracefulDegradation.maxPromptChars", 1, 65_536),
    at_least("gracefulDegradation.degradeToMaxTokens", 1),
    int("gracefulDegradation.memoryRssThresholdMiB", 1, 65_536),
    number(
        "gracefulDegradation.memoryCgroupPressureRatioThreshold",
        0.0,
        false,
        1.0,
    ),
    number(
        "gracefulDegradation.cpuThrottledRatioThreshold",
        0.0,
        false,
        1.0,
    ),
    number(
        "gracefulDegradation.memoryPsiSomeAvg10Threshold",
        0.0,
        false,
        100.0,
    ),
    number(
        "gracefulDegradation.memoryPsiFullAvg10Threshold",
        0.0,
        false,
        100.0,
    ),
    number(
        "gracefulDegradation.cpuPsiSomeAvg10Threshold",
        0.0,
        false,
        100.0,
    ),
    number(
        "gracefulDegradation.cpuPsiFullAvg10Threshold",
        0.0,
        false,
        100.0,
    ),
    number(
        "gracefulDegradation.criticalCgroupMemoryRatio",
        0.0,
        false,
        1.0,
    ),
    number(
        "gracefulDegradation.criticalMemoryPsiFullAvg10",
        0.0,
        false,
        100.0,
    ),
    // promptCompiler
    entries("promptCompiler.familyMetadataKeys", 16),
    text("promptCompiler.familyMetadataKeys[]", 128, false),
    // adaptiveTuning
    int("adaptiveTuning.sampleSize", 1, 512),
    int("adaptiveTuning.queueLatencyThresholdMs", 1, 120_000),
    number(
        "adaptiveTuning.minCompletionTokensPerSecond",
        0.0,
        false,
        1_000.0,
    ),
    number("adaptiveTuning.maxOutputReductionRatio", 0.0, true, 1.0),
    at_least("adaptiveTuning.minOutputTokens", 1),
    int("adaptiveTuning.familyHistorySize", 1, 1_024),
    at_least("adaptiveTuning.learnedCapMinSamples", 1),
    number("adaptiveTuning.draftPercentile", 0.0, true, 1.0),
    number("adaptiveTuning.shortPercentile", 0.0, true, 1.0),
    at_least("adaptiveTuning.learnedCapHeadroomTokens", 0),
    // auth
    rule("auth.apiKeyEnv", Limit::EnvVarName),
    // rateLimit
    int("rateLimit.windowMs", 1, 3_600_000),
    int("rateLimit.maxRequests", 1, 10_000),
    int("rateLimit.maxKeys", 1, 16_384),
    // hooks
    entries("hooks", 16),
    rule("hooks[].url", Limit::HttpUrl),
    // tags
    entries("tags", 64),
    rule("tags", Limit::KeyLength { max_chars: 128 }),
    text("tags.*", 4_096, true),
];

/// The table path of a concrete path: list indices become `[]`, and the key under `tags` or
/// `model.adapter.headers` becomes `*`.
pub fn rule_path(path: &str) -> String {
    for map in ["tags.", "model.adapter.headers."] {
        if path.starts_with(map) {
            return format!("{map}*");
        }
    }
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for ch in path.chars() {
        match ch {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(ch),
        }
    }
    out
}

/// The rules of a field, by its concrete path.
pub fn limits_of(path: &str) -> impl Iterator<Item = &'static Limit> {
    let rule = rule_path(path);
    FIELD_LIMITS
        .iter()
        .filter(move |limit| limit.path == rule)
        .map(|limit| &limit.limit)
}

/// Regular expressions of the schema (ECMA 262 syntax, also read by Rust's `regex`).
const NO_CONTROL: &str = "^[^\\x00-\\x1F\\x7F-\\x9F]*$";
const NOT_BLANK_NO_CONTROL: &str =
    "^[^\\x00-\\x1F\\x7F-\\x9F]*[^\\x00-\\x1F\\x7F-\\x9F\\s][^\\x00-\\x1F\\x7F-\\x9F]*$";
const ENV_VAR_NAME: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
const HTTP_URL: &str = concat!(
    "^[Hh][Tt][Tt][Pp][Ss]?://",
    // A host: an IPv6 address in brackets, or anything without separators.
    "(\\[[0-9A-Fa-f:.]+\\]|[^\\s\\x00-\\x1F@/?#:\\[\\]]+)",
    // A port of 1 to 65535.
    "(:0*([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
    "(/[^\\s\\x00-\\x1F?#]*)?$"
);
/// The IPv6 loopback address in any hex form: all groups zero but the last, which is 1, with
/// or without one `::` (standing for at least one group).
const IPV6_LOOPBACK: &str = concat!(
    "((0{1,4}:){7}",
    "|::(0{1,4}:){0,6}",
    "|(0{1,4}:){1}:(0{1,4}:){0,5}",
    "|(0{1,4}:){2}:(0{1,4}:){0,4}",
    "|(0{1,4}:){3}:(0{1,4}:){0,3}",
    "|(0{1,4}:){4}:(0{1,4}:){0,2}",
    "|(0{1,4}:){5}:(0{1,4}:){0,1}",
    "|(0{1,4}:){6}:",
    ")0{0,3}1"
);
/// An IPv6 address in any hex form, without a dotted tail: eight groups, or fewer around one
/// `::`.
const IPV6: &str = concat!(
    "(([0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
    "|([0-9A-Fa-f]{1,4}:){1,7}:",
    "|([0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}",
    "|([0-9A-Fa-f]{1,4}:){1,5}(:[0-9A-Fa-f]{1,4}){1,2}",
    "|([0-9A-Fa-f]{1,4}:){1,4}(:[0-9A-Fa-f]{1,4}){1,3}",
    "|([0-9A-Fa-f]{1,4}:){1,3}(:[0-9A-Fa-f]{1,4}){1,4}",
    "|([0-9A-Fa-f]{1,4}:){1,2}(:[0-9A-Fa-f]{1,4}){1,5}",
    "|[0-9A-Fa-f]{1,4}:(:[0-9A-Fa-f]{1,4}){1,6}",
    "|:((:[0-9A-Fa-f]{1,4}){1,7}|:))"
);
/// The most chars of an HTTP header value in the config (`model.adapter.headers.*`).
pub const HEADER_VALUE_MAX_CHARS: usize = 8_192;
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const HOST_LABEL: &str = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
const HEADER_TOKEN: &str = "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,256}$";
const HEADER_VALUE: &str = "^[^\\x00-\\x08\\x0A-\\x1F\\x7F-\\x9F]*$";

/// A case-insensitive regex alternative for an ASCII word: `[Hh][Oo][Ss][Tt]`.
fn any_case(word: &str) -> String {
    word.chars()
        .map(|ch| {
            if ch.is_ascii_alphabetic() {
                format!("[{}{}]", ch.to_ascii_uppercase(), ch.to_ascii_lowercase())
            } else if ch.is_ascii_alphanumeric() || ch == '_' {
                ch.to_string()
            } else {
                format!("\\{ch}")
            }
        })
        .collect()
}

/// The JSON Schema keywords of a rule.
pub fn schema_keywords(limit: &Limit) -> Map<String, Value> {
    let value = match *limit {
        Limit::Int { min, max } => json!({ "minimum": min, "maximum": max }),
        Limit::AtLeast { min } => json!({ "minimum": min }),
        Limit::Number {
            min,
            min_inclusive,
            max,
        } => {
            if min_inclusive {
                json!({ "minimum": min, "maximum": max })
            } else {
                json!({ "exclusiveMinimum": min, "maximum": max })
            }
        }
        Limit::Text {
            max_chars,
            allow_empty,
        } => json!({
            "maxLength": max_chars,
            "pattern": if allow_empty { NO_CONTROL } else { NOT_BLANK_NO_CONTROL },
        }),
        Limit::Entries { max } => json!({ "maxItems": max, "maxProperties": max }),
        Limit::KeyLength { max_chars } => {
            json!({ "propertyNames": { "minLength": 1, "maxLength": max_chars } })
        }
        Limit::EnvVarName => json!({ "pattern": ENV_VAR_NAME, "maxLength": 256 }),
        Limit::HttpUrl => json!({ "pattern": HTTP_URL, "maxLength": 2_048 }),
        Limit::LoopbackHost => json!({
            "pattern": format!(
                "^({IPV6_LOOPBACK}|\\[{IPV6_LOOPBACK}\\]|{}|127\\.{OCTET}\\.{OCTET}\\.{OCTET})$",
                any_case("localhost")
            ),
        }),
        Limit::BindHost => json!({
            "maxLength": 253,
            "anyOf": [
                { "pattern": format!("^{OCTET}\\.{OCTET}\\.{OCTET}\\.{OCTET}$") },
                { "pattern": format!("^({IPV6}|\\[{IPV6}\\])$") },
                {
                    "pattern": format!("^{HOST_LABEL}(\\.{HOST_LABEL})*$"),
                    "not": { "pattern": "^[0-9.]*$" },
                },
            ],
        }),
        Limit::HostPattern => json!({
            "pattern": format!("^(\\*\\.)?{HOST_LABEL}(\\.{HOST_LABEL})*$"),
            "maxLength": 255,
        }),
        Limit::HeaderNames => {
            let reserved: Vec<String> = RESERVED_ADAPTER_HEADERS
                .iter()
                .map(|h| any_case(h))
                .collect();
            json!({
                "propertyNames": {
                    "pattern": HEADER_TOKEN,
                    "not": { "pattern": format!("^({})$", reserved.join("|")) },
                },
            })
        }
        Limit::HeaderValue => {
            json!({ "pattern": HEADER_VALUE, "maxLength": HEADER_VALUE_MAX_CHARS })
        }
        Limit::NotGeneratedFlag => {
            let flags: Vec<String> = GENERATED_LLAMA_FLAGS
                .iter()
                .map(|f| any_case_flag(f))
                .collect();
            json!({ "not": { "pattern": format!("^({})(=.*)?$", flags.join("|")) } })
        }
        Limit::NotReserved(word) => json!({ "not": { "const": word } }),
        Limit::KeyId => json!({ "pattern": "^[0-9a-f]{8}$" }),
        Limit::KeyIdAnyCase => json!({ "pattern": "^[0-9A-Fa-f]{8}$" }),
        Limit::Name { max_chars } => json!({ "minLength": 1, "maxLength": max_chars }),
    };
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A flag as a regex, case-sensitive (llama-server's flags are).
fn any_case_flag(flag: &str) -> String {
    flag.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() {
                ch.to_string()
            } else {
                format!("\\{ch}")
            }
        })
        .collect()
}

/// Adds every rule of [`FIELD_LIMITS`] to the schema generated from the config types.
pub(crate) fn apply_to_schema(schema: &mut Value) {
    for field in FIELD_LIMITS {
        let segments: Vec<&str> = field.path.split('.').collect();
        let mut targets = Vec::new();
        find_targets(schema, String::new(), &segments, &mut targets);
        debug_assert!(!targets.is_empty(), "no schema for {}", field.path);
        let keywords = schema_keywords(&field.limit);
        for target in targets {
            if let Some(Value::Object(node)) = schema.pointer_mut(&target) {
                for (key, value) in &keywords {
                    node.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

/// The JSON pointers of the schemas that hold the values at `segments` below `at`.
fn find_targets(root: &Value, at: String, segments: &[&str], out: &mut Vec<String>) {
    let Some((segment, rest)) = segments.split_first() else {
        out.push(at);
        return;
    };
    let Some(node) = root.pointer(&at) else {
        return;
    };
    if let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        if let Some(name) = reference.strip_prefix("#/$defs/") {
            find_targets(root, format!("/$defs/{name}"), segments, out);
        }
        return;
    }
    for combinator in ["anyOf", "oneOf", "allOf"] {
        if let Some(variants) = node.get(combinator).and_then(Value::as_array) {
            for index in 0..variants.len() {
                find_targets(root, format!("{at}/{combinator}/{index}"), segments, out);
            }
            return;
        }
    }
    if *segment == "*" {
        if node
            .get("additionalProperties")
            .is_some_and(Value::is_object)
        {
            find_targets(root, format!("{at}/additionalProperties"), rest, out);
        }
        return;
    }
    let (name, list) = match segment.strip_suffix("[]") {
        Some(name) => (name, true),
        None => (*segment, false),
    };
    if node.get("properties").and_then(|p| p.get(name)).is_none() {
        return;
    }
    let property = format!("{at}/properties/{name}");
    if list {
        find_items(root, property, rest, out);
    } else {
        find_targets(root, property, rest, out);
    }
}

/// Like [`find_targets`], from the items of the list schema at `at`.
fn find_items(root: &Value, at: String, rest: &[&str], out: &mut Vec<String>) {
    let Some(node) = root.pointer(&at) else {
        return;
    };
    if node.get("items").is_some() {
        find_targets(root, format!("{at}/items"), rest, out);
        return;
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(variants) = node.get(combinator).and_then(Value::as_array) {
            for index in 0..variants.len() {
                find_items(root, format!("{at}/{combinator}/{index}"), rest, out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
