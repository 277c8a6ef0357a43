//! `print-config --explain`: the effective config in plain sentences, section by section, and
//! where each value came from (the profile's defaults, the file, a `RAY_*` variable).
//!
//! The sentences read the redacted JSON view of the config (the names an operator writes), so
//! no secret is ever printed. Every section of the config gets a heading, its sentences, and a
//! `Values:` line listing each of its settings with its source, so nothing is left out even
//! where no sentence speaks of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ray_core::config::{Diagnostic, ENV_VARS};
use serde_json::Value;

/// Where each setting of the effective config came from.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The profile and how it was chosen (`file`, `environment RAY_PROFILE`, `default`).
    pub profile: (String, String),
    /// The config file's JSON, when there was one.
    pub file: Option<Value>,
    /// The file's name, for the sentences.
    pub file_name: Option<String>,
    /// JSON path (dot separated) to the `RAY_*` variable that set it.
    pub env: BTreeMap<String, String>,
    /// JSON path (dot separated) of each value the host policy cut, to the policy
    /// (`policy /etc/ray/policy.json`).
    pub cut: BTreeMap<String, String>,
}

impl Provenance {
    /// The provenance of a config loaded from `file` (its JSON) with the process environment
    /// `env` (name, value) applied.
    pub fn new<'a>(
        profile: &str,
        file: Option<(String, Value)>,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Provenance {
        let env: BTreeMap<&str, &str> = env.into_iter().collect();
        let (file_name, file) = match file {
            Some((name, value)) => (Some(name), Some(value)),
            None => (None, None),
        };
        let profile_source = if file.as_ref().is_some_and(|f| f.get("profile").is_some()) {
            "the file".to_string()
        } else if env.contains_key("RAY_PROFILE") {
            "RAY_PROFILE".to_string()
        } else {
            "the default".to_string()
        };
        let env = ENV_VARS
            .iter()
            .filter(|var| env.get(var.name).is_some_and(|v| !v.is_empty()))
            .map(|var| (var.path.to_string(), var.name.to_string()))
            .collect();
        Provenance {
            profile: (profile.to_string(), profile_source),
            file,
            file_name,
            env,
            cut: BTreeMap::new(),
        }
    }

    /// Marks the values the host policy cut: the loader's `warnings` whose source is a policy
    /// (`policy <file>`), so such a value is named as the policy's, not as the file's.
    pub fn with_policy_cuts<'a>(
        mut self,
        warnings: impl IntoIterator<Item = &'a Diagnostic>,
    ) -> Provenance {
        for warning in warnings {
            if let Some(source) = warning.source.as_deref()
                && source.starts_with("policy ")
                && !warning.is_error()
            {
                self.cut.insert(warning.path.clone(), source.to_string());
            }
        }
        self
    }

    /// Where the setting at `path` came from: a value the host policy cut is the policy's;
    /// otherwise the environment wins over the file, the file over the profile's defaults.
    pub fn source(&self, path: &str) -> String {
        if let Some(policy) = self.cut.get(path) {
            return format!("cut by {policy}");
        }
        if let Some(var) = self.env.get(path) {
            return format!("env {var}");
        }
        let in_file = self.file.as_ref().is_some_and(|file| {
            let mut node = file;
            for key in path.split('.') {
                match node.get(key) {
                    Some(next) => node = next,
                    None => return false,
                }
            }
            true
        });
        if in_file {
            "file".into()
        } else {
            format!("profile {}", self.profile.0)
        }
    }
}

/// `12000` as `12,000`.
fn thousands(value: &Value) -> String {
    let Some(n) = value.as_u64() else {
        return plain(value);
    };
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A value as a person reads it: strings without quotes, lists joined.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "none".into(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items.iter().map(plain).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Milliseconds as `250 ms`, `20 s`, `5 min`, `24 h`.
fn duration(value: &Value) -> String {
    let Some(ms) = value.as_u64() else {
        return plain(value);
    };
    match ms {
        0 => "0 ms".into(),
        ms if ms % 3_600_000 == 0 => format!("{} h", ms / 3_600_000),
        ms if ms % 60_000 == 0 && ms >= 120_000 => format!("{} min", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{} s", ms / 1_000),
        ms if ms >= 10_000 => format!("{:.1} s", ms as f64 / 1_000.0),
        ms => format!("{ms} ms"),
    }
}

fn on(value: &Value) -> bool {
    value.as_bool().unwrap_or(false)
}

/// What `scheduler.batchWindowMs` does with this config, and why its default is 0 (the
/// figures are in `docs/performance.md`, "The batch window"). Read from the redacted JSON view.
pub fn batch_window(config: &Value) -> String {
    let window = config["scheduler"]["batchWindowMs"].as_u64().unwrap_or(0);
    let cache_ram = config["model"]["adapter"]["launchProfile"]["cacheRamMiB"].as_i64();
    let llama = config["model"]["adapter"]["kind"] == "llama.cpp";
    if window == 0 && !llama {
        return "A freed permit goes to the next waiting request at once (batchWindowMs 0, the \
                default; holding it for the prompt family it just served pays only in front of \
                a backend that keeps no prompt cache of its own)."
            .into();
    }
    if window == 0 {
        return "A freed permit goes to the next waiting request at once (batchWindowMs 0, the \
                default: with llama-server's own prompt cache, holding a permit for the prompt \
                family it just served measured no more throughput and a p99 three times higher \
                at 8 clients; 10 ms pays only in front of a backend without such a cache)."
            .into();
    }
    let why = match cache_ram {
        Some(mib) if mib != 0 => format!(
            "the default is 0: with the backend's prompt cache on (launchProfile.cacheRamMiB \
             {mib}) a held permit measured no more throughput and a p99 three times higher"
        ),
        Some(_) => "the default is 0; with launchProfile.cacheRamMiB 0 the backend keeps no \
                    prompt cache of its own, which is where a window pays: it doubled \
                    throughput under contention, at a higher p99"
            .into(),
        None => "the default is 0; it pays only in front of a backend that keeps no prompt \
                 cache of its own (llama-server keeps one unless started with --cache-ram 0), \
                 where it doubled throughput under contention at a higher p99"
            .into(),
    };
    format!(
        "When others wait, a freed permit is held up to {} for a request of the prompt family \
         it just served (batchWindowMs; {why}).",
        duration(&Value::from(window))
    )
}

/// The sentences of one section.
fn sentences(section: &str, config: &Value) -> Vec<String> {
    let s = &config[section];
    let mut out = Vec::new();
    match section {
        "profile" => {}
        "server" => out.push(format!(
            "Ray listens on {}:{} and reads request bodies of at most {} bytes.",
            plain(&s["host"]),
            s["port"],
            thousands(&s["requestBodyLimitBytes"])
        )),
        "model" => {
            let adapter = &s["adapter"];
            out.push(format!(
                "It serves the model {:?} ({} family), with a context window of {} tokens and \
                 at most {} output tokens per request; a request asking for more is refused on \
                 the OpenAI routes and brought down to that on /v1/infer.",
                plain(&s["id"]),
                plain(&s["family"]),
                thousands(&s["contextWindow"]),
                thousands(&s["maxOutputTokens"])
            ));
            match adapter["kind"].as_str() {
                Some("mock") => out.push(
                    "The backend is the built-in mock, which echoes its prompt (no model runs)."
                        .into(),
                ),
                Some(kind) => {
                    out.push(format!(
                        "The backend is {kind} at {}, asked for the model {:?}; one backend \
                         call may take {}.",
                        plain(&adapter["baseUrl"]),
                        plain(&adapter["modelRef"]),
                        duration(&adapter["timeoutMs"])
                    ));
                    if on(&adapter["requireBackendModelMatch"]) {
                        out.push(
                            "Ray is not ready while the backend reports serving another model."
                                .into(),
                        );
                    }
                }
                None => {}
            }
            if on(&s["warmOnBoot"]) {
                out.push("The model is warmed up when Ray starts.".into());
            }
        }
        "scheduler" => {
            out.push(format!(
                "Up to {} requests run at once; up to {} wait, for at most {} (queue wait plus \
                 execution); a request that would exceed {} queued tokens is refused with 503 \
                 queue_full, and at most {} tokens run at once.",
                s["concurrency"],
                s["maxQueue"],
                duration(&s["requestTimeoutMs"]),
                thousands(&s["maxQueuedTokens"]),
                thousands(&s["maxInflightTokens"])
            ));
            out.push(format!(
                "Requests for at most {} tokens take the short lane.{} An OpenAI request may ask \
                 for up to {} choices (n), each admitted on its own.",
                s["shortJobMaxTokens"],
                if on(&s["dedupeInflight"]) {
                    format!(
                        " Identical requests in flight share one generation (up to {} waiting \
                         on one).",
                        s["maxDedupeWaiters"]
                    )
                } else {
                    " Identical requests in flight each run.".into()
                },
                s["maxChoices"]
            ));
            out.push(batch_window(config));
        }
        "streaming" => out.push(format!(
            "A streamed answer must send its first token within {}, each next one within {}, \
             and finish within {}, or it ends with a timeout error and its generation stops.",
            duration(&s["firstTokenTimeoutMs"]),
            duration(&s["idleTimeoutMs"]),
            duration(&s["totalTimeoutMs"])
        )),
        "asyncQueue" => {
            if on(&s["enabled"]) {
                out.push(format!(
                    "Jobs (POST /v1/jobs) are kept on disk in {}, at most {}, each tried up to \
                     {} times; finished jobs are kept for {}.",
                    plain(&s["storageDir"]),
                    s["maxJobs"],
                    s["maxAttempts"],
                    duration(&s["completedTtlMs"])
                ));
            } else {
                out.push("The job queue is off: /v1/jobs answers 503 async_queue_disabled.".into());
            }
        }
        "cache" => {
            if on(&s["enabled"]) {
                out.push(format!(
                    "Answers are cached for {}, at most {} of them and {} bytes, keyed by {}.",
                    duration(&s["ttlMs"]),
                    thousands(&s["maxEntries"]),
                    thousands(&s["maxBytes"]),
                    plain(&s["keyStrategy"])
                ));
            } else {
                out.push("Answers are not cached.".into());
            }
        }
        "telemetry" => out.push(format!(
            "Logs are written at level {} as service {:?}; requests slower than {} are logged \
             as slow.",
            plain(&s["logLevel"]),
            plain(&s["serviceName"]),
            duration(&s["slowRequestThresholdMs"])
        )),
        "gracefulDegradation" => {
            if on(&s["enabled"]) {
                out.push(format!(
                    "Under pressure (a queue of {} or more, memory or CPU pressure) answers are \
                     cut to {} tokens, and prompts longer than {} characters are shortened; \
                     the response says so in its diagnostics.",
                    s["queueDepthThreshold"],
                    s["degradeToMaxTokens"],
                    thousands(&s["maxPromptChars"])
                ));
            } else {
                out.push("Answers are never degraded under pressure.".into());
            }
            if on(&s["refuseOnCriticalMemory"]) {
                out.push(
                    "When memory pressure is critical, new work is refused with 503 \
                     memory_pressure_critical."
                        .into(),
                );
            }
        }
        "promptCompiler" => out.push(if on(&s["enabled"]) {
            "Prompts are normalised (whitespace collapsed, repeated lines dropped) before they \
             are cached and sent."
                .into()
        } else {
            "Prompts are sent as written.".into()
        }),
        "adaptiveTuning" => {
            out.push(if on(&s["enabled"]) {
                format!(
                    "When the queue is slow or generation is below {} tokens/s, answers are \
                     shortened by up to {:.0} %.",
                    s["minCompletionTokensPerSecond"],
                    s["maxOutputReductionRatio"].as_f64().unwrap_or(0.0) * 100.0
                )
            } else {
                "Answers are not shortened for speed.".into()
            });
            if on(&s["learnedFamilyCapEnabled"]) {
                out.push(format!(
                    "Each prompt family's answers are capped near what it needed before, once \
                     {} samples are known.",
                    s["learnedCapMinSamples"]
                ));
            }
        }
        "auth" => out.push(if on(&s["enabled"]) {
            format!(
                "Every route but /, /livez and /readyz needs a Bearer key from the variable {}.",
                plain(&s["apiKeyEnv"])
            )
        } else {
            "No API key is needed.".into()
        }),
        "rateLimit" => out.push(if on(&s["enabled"]) {
            format!(
                "Each client (by {}) may send {} requests per {}; more answer 429 rate_limited.",
                plain(&s["keyStrategy"]),
                s["maxRequests"],
                duration(&s["windowMs"])
            )
        } else {
            "Requests are not rate limited.".into()
        }),
        "priority" => {
            let concurrency = config["scheduler"]["concurrency"].as_u64().unwrap_or(1);
            let reserved = s["reservedInteractive"]
                .as_u64()
                .unwrap_or(if concurrency >= 2 { 1 } else { 0 })
                .min(concurrency.saturating_sub(1));
            let kept = match reserved {
                0 => "no permit is kept for them".to_string(),
                1 => "one permit is kept for them".to_string(),
                n => format!("{n} permits are kept for them"),
            };
            let classes = &s["classes"];
            out.push(format!(
                "interactive requests start within {}; {kept}; jobs run in the batch class \
                 (start within {}); background requests start within {}.",
                duration(&classes["interactive"]["maxWaitMs"]),
                duration(&classes["batch"]["maxWaitMs"]),
                duration(&classes["background"]["maxWaitMs"])
            ));
            out.push(
                "Waiting raises a request's place, so an admitted request starts within its \
                 class's bound while permits turn over as estimated; a request that by the \
                 estimate cannot start within its bound or deadline is refused at once with 503 \
                 queue_wait_exceeds_deadline and Retry-After."
                    .into(),
            );
            let keys = s["apiKeys"].as_array().map(Vec::len).unwrap_or(0);
            out.push(format!(
                "Requests ask for a class with priority (or X-Ray-Priority); without a listed \
                 key they may use at most {}; {keys} API keys have their own ceiling and \
                 fairness weight, and keys at the same priority share the permits by weight.",
                plain(&s["defaultMaxClass"])
            ));
        }
        "lifecycle" => out.push(format!(
            "Managed models share a memory budget of {}; a model loaded for at least {} and \
             not pinned may be unloaded to make room, a busy one drains for up to {} first, \
             and pid files and measured footprints live in {}.",
            if s["memoryBudgetMiB"].is_null() {
                "the cgroup limit (else the machine's memory) less the reserve".to_string()
            } else {
                format!("{} MiB", s["memoryBudgetMiB"])
            },
            duration(&s["minResidentMs"]),
            duration(&s["drainTimeoutMs"]),
            plain(&s["stateDir"])
        )),
        "policyFile" => out.push(format!(
            "The host policy in {} bounds this config: a value over it is cut to it, and each \
             cut is named in its section's values and in the warnings.",
            plain(s)
        )),
        "tags" => {
            let tags = s.as_object().map(|m| m.len()).unwrap_or(0);
            out.push(format!(
                "{tags} free-form tags label this gateway in its metrics."
            ));
        }
        _ => {}
    }
    out
}

/// Every leaf setting under `value`, as (dot path, value).
fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                leaves(&format!("{prefix}.{key}"), child, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// The explanation of `config` (its redacted JSON view), each value with its source.
pub fn explain(config: &Value, provenance: &Provenance) -> String {
    let mut text = String::new();
    let (profile, chosen_by) = &provenance.profile;
    let _ = writeln!(
        text,
        "Profile {profile} (chosen by {chosen_by}) gives every default below; {}, and RAY_* \
         variables override both.",
        match &provenance.file_name {
            Some(name) => format!("the file {name} overrides them"),
            None => "there is no config file".into(),
        }
    );
    let Some(sections) = config.as_object() else {
        return text;
    };
    for (section, value) in sections {
        if section == "profile" || section == "$schema" {
            continue;
        }
        let _ = writeln!(text, "\n{section}");
        for sentence in sentences(section, config) {
            let _ = writeln!(text, "  {sentence}");
        }
        let mut values = Vec::new();
        leaves(section, value, &mut values);
        let listed: Vec<String> = values
            .iter()
            .map(|(path, v)| {
                let name = path.strip_prefix(&format!("{section}.")).unwrap_or(path);
                format!("{name} = {} ({})", plain(v), provenance.source(path))
            })
            .collect();
        let _ = writeln!(text, "  Values: {}.", listed.join("; "));
    }
    text
}

#[cfg(test)]
mod tests {
    use ray_core::config::{ConfigLoader, redacted_json};

    use super::*;

    #[test]
    fn every_section_is_explained_with_its_sources() {
        let file = r#"{"profile":"tiny","scheduler":{"maxQueue":16},
                       "model":{"adapter":{"kind":"mock","latencyMs":0}}}"#;
        let loaded = ConfigLoader::new()
            .with_json("ray.json", file)
            .with_env([("RAY_SCHEDULER_CONCURRENCY", "2")])
            .load()
            .unwrap();
        let view = redacted_json(&loaded.config);
        let provenance = Provenance::new(
            "tiny",
            Some(("ray.json".into(), serde_json::from_str(file).unwrap())),
            [("RAY_SCHEDULER_CONCURRENCY", "2")],
        );
        let text = explain(&view, &provenance);
        for section in view.as_object().unwrap().keys() {
            if section != "profile" {
                assert!(
                    text.contains(&format!("\n{section}\n")),
                    "{section} has no heading:\n{text}"
                );
            }
        }
        assert!(text.contains("Profile tiny (chosen by the file)"), "{text}");
        assert!(
            text.contains("Up to 2 requests run at once; up to 16 wait, for at most 8 s"),
            "{text}"
        );
        assert!(
            text.contains("concurrency = 2 (env RAY_SCHEDULER_CONCURRENCY)"),
            "{text}"
        );
        assert!(text.contains("maxQueue = 16 (file)"), "{text}");
        assert!(
            text.contains("maxQueuedTokens = 12000 (profile tiny)"),
            "{text}"
        );
        assert!(text.contains("12,000 queued tokens is refused with 503 queue_full"));
        assert!(
            text.contains(
                "A freed permit goes to the next waiting request at once (batchWindowMs 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "interactive requests start within 2 s; one permit is kept for them; jobs run \
                 in the batch class"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_batch_window_sentence_says_why_its_default_is_off() {
        let config = serde_json::json!({
            "scheduler": {"batchWindowMs": 10},
            "model": {"adapter": {"launchProfile": {"cacheRamMiB": 512}}}
        });
        let sentence = batch_window(&config);
        assert!(
            sentence.starts_with("When others wait, a freed permit is held up to 10 ms")
                && sentence.contains("launchProfile.cacheRamMiB 512"),
            "{sentence}"
        );
        let without_cache = serde_json::json!({
            "scheduler": {"batchWindowMs": 10},
            "model": {"adapter": {"launchProfile": {"cacheRamMiB": 0}}}
        });
        assert!(
            batch_window(&without_cache)
                .contains("cacheRamMiB 0 the backend keeps no prompt cache"),
            "{}",
            batch_window(&without_cache)
        );
    }

    #[test]
    fn durations_and_numbers_read_plainly() {
        assert_eq!(duration(&Value::from(20_000)), "20 s");
        assert_eq!(duration(&Value::from(250)), "250 ms");
        assert_eq!(duration(&Value::from(300_000)), "5 min");
        assert_eq!(duration(&Value::from(86_400_000)), "24 h");
        assert_eq!(thousands(&Value::from(24_000)), "24,000");
        assert_eq!(thousands(&Value::from(512)), "512");
    }
}
