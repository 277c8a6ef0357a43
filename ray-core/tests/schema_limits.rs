//! The JSON Schema carries every single-field rule of the validator: an independent validator
//! (the `jsonschema` crate) rejects a config that breaks any rule of `FIELD_LIMITS`, as
//! `check-config` does, and accepts every example and reference config.

#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use ray_core::config::{ConfigLoader, FIELD_LIMITS, Limit, json_schema, rule_path};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn schema_validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&json_schema()).unwrap()
}

/// A valid entry of each list or map whose size is limited.
fn sample_entry(path: &str, index: usize) -> (String, Value) {
    let value = match path {
        "asyncQueue.callbackAllowedHosts" => json!(format!("h{index}.example")),
        "promptCompiler.familyMetadataKeys" => json!(format!("key{index}")),
        "model.adapter.warmupRequests" => json!({ "input": "x" }),
        "model.adapter.launchProfile.extraArgs" => json!(format!("--flag-{index}")),
        "hooks" => json!({ "command": ["/bin/true"] }),
        "model.aliases" => json!(format!("alias{index}")),
        "models" => json!({ "id": format!("m{index}"), "adapter": { "kind": "mock" } }),
        "routing.rules" => {
            let model = ray_core::config::profile_defaults(ray_core::config::Profile::Sub1b);
            json!({ "model": model.model.id })
        }
        _ => json!("v"),
    };
    (format!("K{index}"), value)
}

/// Values that break `limit` (each alone).
fn breaking_values(path: &str, limit: &Limit) -> Vec<Value> {
    match *limit {
        Limit::Int { min, max } => vec![json!(max + 1), json!(min - 1)],
        // Below 0 the value does not fit its unsigned type: refused all the same.
        Limit::AtLeast { min } => vec![json!(min - 1)],
        Limit::Number {
            min,
            min_inclusive,
            max,
        } => {
            let low = if min_inclusive { min - 0.5 } else { min };
            vec![json!(low), json!(max + 1.0)]
        }
        Limit::Text {
            max_chars,
            allow_empty,
        } => {
            let mut values = vec![json!("x".repeat(max_chars as usize + 1)), json!("a\u{1}b")];
            if !allow_empty {
                values.push(json!("   "));
            }
            values
        }
        Limit::Entries { max } => {
            let count = max as usize + 1;
            if path == "model.adapter.headers" || path == "tags" {
                let map: serde_json::Map<String, Value> =
                    (0..count).map(|i| sample_entry(path, i)).collect();
                vec![Value::Object(map)]
            } else {
                vec![Value::Array(
                    (0..count).map(|i| sample_entry(path, i).1).collect(),
                )]
            }
        }
        Limit::KeyLength { max_chars } => vec![
            json!({ "": "v" }),
            json!({ "k".repeat(max_chars as usize + 1): "v" }),
        ],
        Limit::EnvVarName => vec![json!("1BAD"), json!("HAS-DASH"), json!("")],
        Limit::HttpUrl => vec![
            json!("htp//not a url"),
            json!("ftp://127.0.0.1:8081"),
            json!("http://user@127.0.0.1:8081"),
            json!("http://127.0.0.1:8081/?q=1"),
            json!("http://127.0.0.1:8081/#top"),
            json!("http://127.0.0.1:8081/a b"),
            json!("http://127.0.0.1:0"),
            json!("http://127.0.0.1:65536"),
            json!("http://127.0.0.1:99999/"),
            json!("http://127.0.0.1:+80"),
            json!("http://127.0.0.1:"),
            json!("http://::1:8081"),
            json!("http://[localhost]:8081"),
        ],
        Limit::LoopbackHost => vec![
            json!("10.0.0.1"),
            json!("0.0.0.0"),
            json!("example.com"),
            json!("[::1"),
            json!("0:0:0:0:0:0:0:2"),
            json!("::0.0.0.1"),
            json!("0:0:0:0:0:0:0::1"),
        ],
        Limit::HostPattern => vec![json!("bad host"), json!("*."), json!("-a.example")],
        Limit::BindHost => vec![
            json!("not a host"),
            json!("999.999.1.1"),
            json!("127.0.0.01"),
            json!("[127.0.0.1]"),
            json!("::ffff:127.0.0.1"),
            json!("1:2:3:4:5:6:7:8:9"),
            json!("[::1"),
            json!("box-.internal"),
            json!(""),
            json!(format!("{}.example", "a".repeat(250))),
        ],
        Limit::HeaderNames => vec![
            json!({ "Host": "x" }),
            json!({ "transfer-encoding": "x" }),
            json!({ "bad name": "x" }),
        ],
        Limit::HeaderValue => vec![
            json!("a\u{1}b"),
            json!("x".repeat(ray_core::config::HEADER_VALUE_MAX_CHARS + 1)),
        ],
        Limit::NotGeneratedFlag => vec![json!("--ctx-size=4096"), json!("-c"), json!("--port")],
        Limit::NotReserved(word) => vec![json!(word)],
        Limit::KeyId => vec![
            json!("xyz"),
            json!("ABCDEF12"),
            json!("0123abcd0"),
            json!("0123abcg"),
            json!(""),
        ],
        Limit::KeyIdAnyCase => vec![
            json!("xyz"),
            json!("0123ABCD0"),
            json!("0123abcg"),
            json!("0123 abc"),
            json!(""),
        ],
        Limit::Name { max_chars } => vec![json!(""), json!("é".repeat(max_chars as usize + 1))],
        _ => panic!("no breaking value for the rule of {path}: {limit:?}"),
    }
}

/// A config of the `sub1b` profile whose field at `path` (a table path) is `value`, with the
/// adapter kind the field belongs to.
fn config_with(path: &str, value: Value) -> Value {
    let mut config = json!({ "profile": "sub1b" });
    if matches!(path, "model.adapter.latencyMs" | "model.adapter.seed") {
        config["model"] = json!({ "adapter": { "kind": "mock" } });
    }
    let segments: Vec<&str> = path.split('.').collect();
    let mut node = &mut config;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let (name, list) = match segment.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (*segment, false),
        };
        let key = if name == "*" { "X-Key" } else { name };
        if !node.is_object() {
            *node = json!({});
        }
        let map = node.as_object_mut().unwrap();
        if list {
            let item = map.entry(key).or_insert_with(|| json!([{}]));
            if name == "warmupRequests" && !last {
                item[0] = json!({ "input": "x" });
            }
            if name == "apiKeys" && !last {
                item[0] = json!({ "id": "0123abcd" });
            }
            if name == "rules" && !last {
                let model = ray_core::config::profile_defaults(ray_core::config::Profile::Sub1b);
                item[0] = json!({ "model": model.model.id });
            }
            node = &mut item[0];
            if last {
                *node = value.clone();
                break;
            }
        } else if last {
            map.insert(key.to_string(), value.clone());
            break;
        } else {
            node = map.entry(key).or_insert_with(|| json!({}));
        }
    }
    config
}

#[test]
fn the_schema_rejects_every_broken_single_field_rule_as_check_config_does() {
    let validator = schema_validator();
    let mut checked = 0;
    for field in FIELD_LIMITS {
        for value in breaking_values(field.path, &field.limit) {
            let config = config_with(field.path, value);
            assert!(
                !validator.is_valid(&config),
                "the schema accepts {config} which breaks {} ({:?})",
                field.path,
                field.limit
            );
            let error = ConfigLoader::new()
                .with_json("broken.json", config.to_string())
                .load()
                .expect_err(&format!("check-config accepts {config}"));
            let expected = field.path.trim_end_matches(".*");
            assert!(
                error.diagnostics().iter().any(|d| d.is_error()
                    && (rule_path(&d.path) == field.path
                        || rule_path(&d.path).starts_with(expected))),
                "check-config refuses {config} but not at {}: {error}",
                field.path
            );
            checked += 1;
        }
    }
    assert!(checked > 200, "{checked} broken configs");
}

#[test]
fn every_example_and_reference_config_passes_the_schema() {
    let validator = schema_validator();
    let mut files = Vec::new();
    for dir in [
        "examples/config",
        "ray-core/tests/fixtures/reference-configs",
    ] {
        for entry in std::fs::read_dir(repo_root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 38, "{files:?}");
    for file in files {
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        // The schema reference is relative to the file; it is not part of the config.
        if let Some(map) = config.as_object_mut() {
            map.remove("$schema");
        }
        let errors: Vec<String> = validator
            .iter_errors(&config)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
    }
}

#[test]
fn the_schema_accepts_every_profile_default() {
    let validator = schema_validator();
    for profile in ray_core::config::Profile::ALL {
        let config = serde_json::to_value(ray_core::config::profile_defaults(profile)).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&config)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{profile}: {errors:#?}");
    }
}

/// Values at the edge of a rule that both the schema and `check-config` accept: the two count
/// and spell things the same way.
#[test]
fn the_schema_and_check_config_accept_the_same_edge_values() {
    let validator = schema_validator();
    let long_value = "é".repeat(ray_core::config::HEADER_VALUE_MAX_CHARS);
    let mut cases = vec![("model.adapter.headers.*", json!(long_value), json!({}))];
    for url in [
        "http://127.0.0.1:1",
        "http://127.0.0.1:65535/v1",
        "https://backend.example:08443",
        "http://[::1]:8081",
        "http://[0:0:0:0:0:0:0:1]:8081/",
    ] {
        cases.push(("model.adapter.baseUrl", json!(url), json!({})));
    }
    for host in [
        "::1",
        "[::1]",
        "0:0:0:0:0:0:0:1",
        "[0:0:0:0:0:0:0:1]",
        "0000:0000:0000:0000:0000:0000:0000:0001",
        "0::1",
        "::0:0:0:0:0:0:1",
        "0:0:0::0:0:1",
        "127.0.0.1",
        "LocalHost",
    ] {
        // Ray reaches llama-server at the same address.
        let base = format!(
            "http://{}:8081",
            if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]")
            } else if host.eq_ignore_ascii_case("localhost") {
                "127.0.0.1".to_string()
            } else {
                host.to_string()
            }
        );
        cases.push((
            "model.adapter.launchProfile.host",
            json!(host),
            json!({ "baseUrl": base, "launchProfile": { "port": 8081 } }),
        ));
    }
    for host in [
        "0.0.0.0",
        "127.0.0.1",
        "10.1.2.3",
        "::",
        "::1",
        "[::1]",
        "fe80::1",
        "2001:DB8:0:0:8:800:200C:417A",
        "1:2:3:4:5:6:7::",
        "localhost",
        "my-box.internal",
        "4box",
    ] {
        cases.push(("server.host", json!(host), json!({})));
    }
    for (path, value, adapter) in cases {
        let mut config = config_with(path, value.clone());
        // The launch profile belongs to llama.cpp; URLs and headers are checked on an adapter
        // without one, so no rule between fields is involved.
        config["model"]["adapter"]["kind"] = if path.contains("launchProfile") {
            json!("llama.cpp")
        } else {
            json!("openai-compatible")
        };
        if let Some(extra) = adapter.as_object() {
            for (key, extra) in extra {
                let slot = &mut config["model"]["adapter"][key];
                if slot.is_object() && extra.is_object() {
                    for (k, v) in extra.as_object().unwrap() {
                        slot[k] = v.clone();
                    }
                } else {
                    *slot = extra.clone();
                }
            }
        }
        let errors: Vec<String> = validator
            .iter_errors(&config)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "the schema refuses {value} at {path}: {errors:#?}"
        );
        if let Err(error) = ConfigLoader::new()
            .with_json("edge.json", config.to_string())
            .load()
        {
            let shown: String = value.to_string().chars().take(60).collect();
            panic!("check-config refuses {shown} at {path}: {error}");
        }
    }
}

/// Configs whose validity depends on layering (the profile under the file) or on rules of a
/// whole entry: the schema and `check-config` give the same answer, the expected one.
#[test]
fn the_schema_and_check_config_agree_on_layered_configs() {
    let model = |extra: Value| {
        let mut entry = json!({ "id": "a", "adapter": { "kind": "mock" } });
        for (key, value) in extra.as_object().unwrap() {
            entry[key] = value.clone();
        }
        json!({ "profile": "tiny", "models": [entry] })
    };
    let hooks = |list: Value| json!({ "profile": "tiny", "hooks": list });
    let keys = |list: Value| json!({ "profile": "tiny", "priority": { "apiKeys": list } });
    let rules = |list: Value| {
        json!({ "profile": "tiny", "routing": { "rules": [{ "model": "a", "apiKeys": list }] },
                "models": [{ "id": "a" }] })
    };
    let cluster = json!({
        "natsUrls": ["nats://127.0.0.1:4222"],
        "nodeId": "n1",
        "clusterKeyEnv": "RAY_CLUSTER_KEY",
        "advertiseUrl": "http://127.0.0.1:18720",
    });
    let accepted = vec![
        // An adapter without `kind` has the profile's kind.
        json!({ "profile": "sub1b", "model": { "adapter": { "timeoutMs": 5000 } } }),
        json!({ "profile": "tiny", "model": { "adapter": { "latencyMs": 5 } } }),
        json!({ "model": { "adapter": { "slotStateTtlMs": 300 } } }),
        json!({ "profile": "vps", "model": { "adapter": { "baseUrl": "http://127.0.0.1:9" } } }),
        // `null` where the profile has no object.
        json!({ "profile": "tiny", "model": { "operational": null } }),
        json!({ "profile": "vps", "model": { "adapter": { "kind": "llama.cpp", "launchProfile": null } } }),
        // Per-model scheduler limits at the edges of the top-level ones.
        model(json!({ "scheduler": { "concurrency": 1, "maxQueue": 512 } })),
        model(json!({ "scheduler": { "concurrency": 8, "maxQueue": 1 } })),
        model(json!({ "scheduler": { "maxQueuedTokens": 262_144, "maxInflightTokens": 65_536 } })),
        model(json!({ "scheduler": { "maxQueuedTokens": 1, "maxInflightTokens": 1 } })),
        model(json!({ "aliases": ["Auto", "automatic"] })),
        json!({ "profile": "tiny", "model": { "id": "Auto" } }),
        hooks(json!([{ "command": ["/bin/true"] }])),
        hooks(json!([{ "command": ["/bin/true", ""], "events": ["backend_down", "job_failed"] }])),
        hooks(json!([{ "url": "https://hooks.example/ray" }])),
        hooks(json!([{ "command": null, "url": "http://127.0.0.1:18799/" }])),
        hooks(json!(vec![json!({ "command": ["/bin/true"] }); 16])),
        keys(
            json!([{ "id": "0123abcd" }, { "id": "ffffffff", "maxClass": "batch", "weight": 100 }]),
        ),
        json!({ "profile": "tiny", "cluster": cluster }),
        // An entry of `models` needs only its `id`; its adapter without `kind` has the kind of
        // `model.adapter`: the file's, else the profile's.
        json!({ "profile": "tiny", "models": [{ "id": "a" }] }),
        json!({
            "profile": "tiny",
            "models": (0..16).map(|i| json!({ "id": format!("m{i}") })).collect::<Vec<_>>(),
        }),
        json!({ "profile": "tiny", "models": [{ "id": "a", "adapter": { "latencyMs": 5 } }] }),
        json!({ "models": [{ "id": "a", "adapter": { "timeoutMs": 5000 } }] }),
        json!({
            "profile": "sub1b",
            "model": { "adapter": { "kind": "mock" } },
            "models": [{ "id": "a", "adapter": { "latencyMs": 5 } }],
        }),
        json!({
            "profile": "tiny",
            "model": { "adapter": { "kind": "openai-compatible" } },
            "models": [{ "id": "a", "adapter": { "timeoutMs": 5000 } }],
        }),
        // Aliases: up to 16, each up to 256 chars (not bytes).
        model(json!({ "aliases": (0..16).map(|i| format!("alias{i}")).collect::<Vec<_>>() })),
        model(json!({ "aliases": ["é".repeat(256)] })),
        // Hook arguments: up to 4096 chars (not bytes).
        hooks(json!([{ "command": ["/bin/true", "é".repeat(4_096)] }])),
        // Routing by API key: 8 hex digits, compared case-insensitively.
        rules(json!(["0123abcd", "0123ABCD"])),
        // Routing: the edges of the cooldown, names and tasks of up to 64 chars (not bytes).
        json!({ "routing": { "cooldownAfterFailures": 1, "cooldownMs": 100 } }),
        json!({ "routing": { "cooldownAfterFailures": 100, "cooldownMs": 600_000 } }),
        json!({
            "profile": "tiny",
            "models": [{ "id": "a" }],
            "routing": { "rules": [{ "model": "a", "name": "é".repeat(64), "tasks": ["é".repeat(64)] }] },
        }),
    ];
    let mut refused = vec![
        // A field of no adapter kind, or of another kind than the profile's.
        json!({ "profile": "sub1b", "model": { "adapter": { "bogus": 1 } } }),
        json!({ "profile": "sub1b", "model": { "adapter": { "latencyMs": 5 } } }),
        json!({ "profile": "tiny", "model": { "adapter": { "timeoutMs": 5000 } } }),
        json!({ "model": { "adapter": { "latencyMs": 5 } } }),
        json!({ "profile": "vps", "model": { "adapter": { "slotId": 0 } } }),
        // `null` where the profile has an object.
        json!({ "profile": "sub1b", "model": { "operational": null } }),
        json!({ "model": { "operational": null } }),
        json!({ "profile": "1b", "model": { "adapter": { "launchProfile": null } } }),
        json!({ "profile": "sub1b", "model": { "adapter": { "kind": "llama.cpp", "launchProfile": null } } }),
        model(json!({ "scheduler": { "concurrency": 0 } })),
        model(json!({ "scheduler": { "concurrency": 9 } })),
        model(json!({ "scheduler": { "maxQueue": 0 } })),
        model(json!({ "scheduler": { "maxQueue": 600 } })),
        model(json!({ "scheduler": { "maxQueuedTokens": 262_145 } })),
        model(json!({ "scheduler": { "maxInflightTokens": 65_537 } })),
        model(json!({ "id": "auto" })),
        model(json!({ "aliases": ["auto"] })),
        json!({ "profile": "tiny", "model": { "id": "auto" } }),
        json!({ "profile": "tiny", "model": { "aliases": ["auto"] } }),
        hooks(json!([{}])),
        hooks(json!([{ "command": null, "url": null }])),
        hooks(json!([{ "command": ["/bin/true"], "url": "http://127.0.0.1:18799/" }])),
        hooks(json!([{ "command": [] }])),
        hooks(json!([{ "command": ["true"] }])),
        hooks(json!([{ "command": [" "] }])),
        hooks(json!([{ "command": ["/bin/true", "a\u{0}b"] }])),
        hooks(json!([{ "url": "ftp://x" }])),
        hooks(json!([{ "command": ["/bin/true"], "events": ["bogus.event"] }])),
        hooks(json!(vec![json!({ "command": ["/bin/true"] }); 17])),
        keys(json!([{}])),
        keys(json!([{ "maxClass": "batch" }])),
        keys(json!([{ "id": "xyz" }])),
        keys(json!([{ "id": "ABCDEF12" }])),
        json!({ "profile": "tiny", "cluster": {} }),
        json!({ "profile": "tiny", "models": [{ "adapter": { "kind": "mock" } }] }),
        json!({ "profile": "tiny", "models": [{}] }),
        json!({ "profile": "tiny", "models": [{ "id": "a", "adapter": { "timeoutMs": 5000 } }] }),
        json!({ "models": [{ "id": "a", "adapter": { "latencyMs": 5 } }] }),
        json!({ "profile": "vps", "models": [{ "id": "a", "adapter": { "slotId": 0 } }] }),
        json!({
            "profile": "sub1b",
            "model": { "adapter": { "kind": "mock" } },
            "models": [{ "id": "a", "adapter": { "timeoutMs": 5000 } }],
        }),
        json!({
            "profile": "tiny",
            "model": { "adapter": { "kind": "openai-compatible" } },
            "models": [{ "id": "a", "adapter": { "latencyMs": 5 } }],
        }),
        model(json!({ "aliases": (0..17).map(|i| format!("alias{i}")).collect::<Vec<_>>() })),
        model(json!({ "aliases": ["é".repeat(257)] })),
        model(json!({ "aliases": [""] })),
        json!({ "profile": "tiny", "model": { "aliases": ["é".repeat(257)] } }),
        hooks(json!([{ "command": ["/bin/true", "é".repeat(4_097)] }])),
        rules(json!(["0123abc"])),
        rules(json!(["0123abcg"])),
        rules(json!(["0123abcd0"])),
    ];
    for field in ["natsUrls", "nodeId", "clusterKeyEnv", "advertiseUrl"] {
        let mut partial = cluster.clone();
        partial.as_object_mut().unwrap().remove(field);
        refused.push(json!({ "profile": "tiny", "cluster": partial }));
    }
    let validator = schema_validator();
    for (config, expected) in accepted
        .into_iter()
        .map(|c| (c, true))
        .chain(refused.into_iter().map(|c| (c, false)))
    {
        let errors: Vec<String> = validator
            .iter_errors(&config)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert_eq!(
            errors.is_empty(),
            expected,
            "the schema {} {config}: {errors:#?}",
            if expected { "refuses" } else { "accepts" }
        );
        let loaded = ConfigLoader::new()
            .with_json("layered.json", config.to_string())
            .load();
        match loaded {
            Ok(_) if !expected => panic!("check-config accepts {config}"),
            Err(error) if expected => panic!("check-config refuses {config}: {error}"),
            _ => {}
        }
    }
}

/// A per-model override has the range of the top-level field it overrides.
#[test]
fn per_model_scheduler_limits_have_the_top_level_ranges() {
    let fields = [
        "concurrency",
        "maxQueue",
        "maxQueuedTokens",
        "maxInflightTokens",
    ];
    for field in fields {
        // `model.scheduler` is also the rule of `models[].scheduler` (the same schema).
        let own: Vec<_> =
            ray_core::config::limits_of(&format!("model.scheduler.{field}")).collect();
        let top: Vec<_> = ray_core::config::limits_of(&format!("scheduler.{field}")).collect();
        assert!(!top.is_empty(), "scheduler.{field}");
        assert_eq!(own, top, "model.scheduler.{field}");
    }
    let schema = json_schema();
    let limits = &schema["$defs"]["ModelSchedulerLimits"]["properties"];
    assert_eq!(limits.as_object().unwrap().len(), fields.len(), "{limits}");
}
