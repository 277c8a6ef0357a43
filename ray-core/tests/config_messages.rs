//! The message of every rule between two fields: when a value came from the profile, it says
//! so and names the field to set; when the file set both, it states the rule.

#![cfg(feature = "config")]
#![allow(clippy::unwrap_used)]

use ray_core::config::ConfigLoader;

/// The error messages of a config layered over its profile, as `path: message`.
fn errors(json: &str) -> Vec<String> {
    let error = ConfigLoader::new()
        .with_json("test.json", json)
        .load()
        .expect_err("the config must be refused");
    error
        .diagnostics()
        .iter()
        .filter(|d| d.is_error())
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect()
}

/// Each case: a config, then the exact message each named field must get.
const CASES: &[(&str, &[&str])] = &[
    // model.maxOutputTokens <= model.contextWindow, launchProfile.ctxSize <= model.contextWindow
    (
        r#"{"profile":"sub1b","model":{"contextWindow":100}}"#,
        &[
            "model.maxOutputTokens: is 256 from the sub1b profile; set it to at most 100, or \
             raise model.contextWindow",
            "model.adapter.launchProfile.ctxSize: is 3072 from the sub1b profile; set it to at \
             most 100, or raise model.contextWindow",
        ],
    ),
    (
        r#"{"profile":"sub1b","model":{"contextWindow":100,"maxOutputTokens":200}}"#,
        &["model.maxOutputTokens: must be at most model.contextWindow (100), got 200"],
    ),
    // scheduler.batchWindowMs < scheduler.requestTimeoutMs
    (
        r#"{"profile":"sub1b","scheduler":{"batchWindowMs":900,"requestTimeoutMs":500}}"#,
        &["scheduler.batchWindowMs: must be less than scheduler.requestTimeoutMs (500), got 900"],
    ),
    (
        r#"{"profile":"sub1b","scheduler":{"batchWindowMs":900}}"#,
        &[],
    ),
    // scheduler.affinityLookahead <= scheduler.maxQueue,
    // gracefulDegradation.queueDepthThreshold <= scheduler.maxQueue - 1
    (
        r#"{"profile":"sub1b","scheduler":{"maxQueue":4}}"#,
        &[
            "scheduler.affinityLookahead: is 24 from the sub1b profile; set it to at most 4, or \
             raise scheduler.maxQueue",
            "gracefulDegradation.queueDepthThreshold: is 16 from the sub1b profile; set it to at \
             most 3, or raise scheduler.maxQueue",
        ],
    ),
    (
        r#"{"profile":"sub1b","scheduler":{"affinityLookahead":100}}"#,
        &[
            "scheduler.affinityLookahead: must be at most scheduler.maxQueue (64), got 100; \
           scheduler.maxQueue (64) comes from the sub1b profile: set it to at least 100, or \
           lower scheduler.affinityLookahead",
        ],
    ),
    // scheduler.shortJobMaxTokens, gracefulDegradation.degradeToMaxTokens,
    // adaptiveTuning.minOutputTokens, adaptiveTuning.learnedCapHeadroomTokens
    // <= model.maxOutputTokens
    (
        r#"{"profile":"sub1b","model":{"maxOutputTokens":32}}"#,
        &[
            "scheduler.shortJobMaxTokens: is 96 from the sub1b profile; set it to at most 32, or \
             raise model.maxOutputTokens",
            "gracefulDegradation.degradeToMaxTokens: is 128 from the sub1b profile; set it to at \
             most 32, or raise model.maxOutputTokens",
            "adaptiveTuning.minOutputTokens: is 64 from the sub1b profile; set it to at most 32, \
             or raise model.maxOutputTokens",
        ],
    ),
    (
        r#"{"profile":"sub1b","adaptiveTuning":{"learnedCapHeadroomTokens":300}}"#,
        &[
            "adaptiveTuning.learnedCapHeadroomTokens: must be at most model.maxOutputTokens (256), \
           got 300; model.maxOutputTokens (256) comes from the sub1b profile: set it to at least \
           300, or lower adaptiveTuning.learnedCapHeadroomTokens",
        ],
    ),
    // adaptiveTuning.learnedCapMinSamples <= adaptiveTuning.familyHistorySize
    (
        r#"{"profile":"sub1b","adaptiveTuning":{"familyHistorySize":2}}"#,
        &[
            "adaptiveTuning.learnedCapMinSamples: is 8 from the sub1b profile; set it to at most \
           2, or raise adaptiveTuning.familyHistorySize",
        ],
    ),
    // scheduler.maxInflightTokens and maxQueuedTokens >= model.maxOutputTokens + 1
    (
        r#"{"profile":"sub1b","scheduler":{"maxInflightTokens":200}}"#,
        &[
            "scheduler.maxInflightTokens: must be at least model.maxOutputTokens + 1 (257) so a \
           request of the largest output fits, got 200; model.maxOutputTokens (256) comes from \
           the sub1b profile: set it to at most 199, or raise scheduler.maxInflightTokens",
        ],
    ),
    (
        r#"{"profile":"sub1b","model":{"maxOutputTokens":300},"scheduler":{"maxQueuedTokens":300}}"#,
        &[
            "scheduler.maxQueuedTokens: must be at least model.maxOutputTokens + 1 (301) so a \
           request of the largest output fits, got 300",
        ],
    ),
    // scheduler.maxInflightTokens <= launchProfile.ctxSize × parallel
    (
        r#"{"profile":"sub1b","scheduler":{"maxInflightTokens":10000,"maxQueuedTokens":20000}}"#,
        &[
            "scheduler.maxInflightTokens: must be at most launchProfile.ctxSize × parallel \
           (6144), got 10000; model.adapter.launchProfile.ctxSize (3072) comes from the sub1b \
           profile: raise it or parallel so ctxSize × parallel is at least 10000, or lower \
           scheduler.maxInflightTokens",
        ],
    ),
    // model.adapter.warmupRequests[].maxTokens <= model.maxOutputTokens
    (
        r#"{"profile":"sub1b","model":{"maxOutputTokens":200,
            "adapter":{"warmupRequests":[{"input":"x","maxTokens":300}]}}}"#,
        &[
            "model.adapter.warmupRequests[0].maxTokens: must be at most model.maxOutputTokens \
           (200), got 300",
        ],
    ),
    // model.adapter.slotSnapshotTimeoutMs <= model.adapter.timeoutMs
    (
        r#"{"profile":"sub1b","model":{"adapter":{"timeoutMs":100}}}"#,
        &[
            "model.adapter.slotSnapshotTimeoutMs: is 250 from the sub1b profile; set it to at \
           most 100, or raise model.adapter.timeoutMs",
        ],
    ),
    // launchProfile.ubatchSize <= launchProfile.batchSize
    (
        r#"{"profile":"sub1b","model":{"adapter":{"launchProfile":{"batchSize":64}}}}"#,
        &[
            "model.adapter.launchProfile.ubatchSize: is 128 from the sub1b profile; set it to at \
           most 64, or raise model.adapter.launchProfile.batchSize",
        ],
    ),
    // launchProfile.port != server.port; baseUrl is not the gateway itself
    (
        r#"{"profile":"sub1b","server":{"port":8081}}"#,
        &[
            "model.adapter.launchProfile.port: is 8081 from the sub1b profile; set it to a port \
             other than 8081 (and model.adapter.baseUrl to match), or change server.port",
            "model.adapter.baseUrl: is http://127.0.0.1:8081 from the sub1b profile; set it to \
             the backend's address, or change server.port",
        ],
    ),
    // baseUrl's port, host, scheme and path against the launch profile
    (
        r#"{"profile":"sub1b","model":{"adapter":{"baseUrl":"http://127.0.0.1:34781"}}}"#,
        &[
            "model.adapter.baseUrl: port 34781 differs from launchProfile.port 8081; \
           model.adapter.launchProfile.port (8081) comes from the sub1b profile: set it to 34781 \
           as well, so the launch profile (render, doctor, supervise) runs llama-server where \
           baseUrl points; or point baseUrl at port 8081",
        ],
    ),
    (
        r#"{"profile":"sub1b","model":{"adapter":{"baseUrl":"http://127.0.0.1:34781",
            "launchProfile":{"port":8082}}}}"#,
        &["model.adapter.baseUrl: port 34781 differs from launchProfile.port 8082"],
    ),
    (
        r#"{"profile":"sub1b","model":{"adapter":{"baseUrl":"http://127.0.0.2:8081"}}}"#,
        &[
            "model.adapter.baseUrl: host 127.0.0.2 differs from launchProfile.host 127.0.0.1; \
           model.adapter.launchProfile.host (127.0.0.1) comes from the sub1b profile: set it to \
           127.0.0.2 as well, so llama-server listens where baseUrl points; or point baseUrl at \
           127.0.0.1",
        ],
    ),
    (
        r#"{"profile":"sub1b","model":{"adapter":{"baseUrl":"https://127.0.0.1:8081"}}}"#,
        &[
            "model.adapter.baseUrl: must be plain http when a launchProfile is set (llama-server \
           listens on loopback); model.adapter.launchProfile (on 127.0.0.1:8081) comes from the \
           sub1b profile: it says llama-server listens on http://127.0.0.1:8081 (render, doctor \
           and supervise read it): set model.adapter.launchProfile.host and .port to where \
           baseUrl points, or point baseUrl there",
        ],
    ),
    (
        r#"{"profile":"sub1b","model":{"adapter":{"baseUrl":"http://127.0.0.1:8081/v1"}}}"#,
        &[
            "model.adapter.baseUrl: must have no path when a launchProfile is set (llama-server \
           serves at /); model.adapter.launchProfile (on 127.0.0.1:8081) comes from the sub1b \
           profile: it says llama-server listens on http://127.0.0.1:8081 (render, doctor and \
           supervise read it): set model.adapter.launchProfile.host and .port to where baseUrl \
           points, or point baseUrl there",
        ],
    ),
    (
        r#"{"profile":"sub1b","model":{"adapter":{"baseUrl":"http://10.0.0.5:8081"}}}"#,
        &[
            "model.adapter.baseUrl: must be a loopback address when a launchProfile is set; \
           model.adapter.launchProfile (on 127.0.0.1:8081) comes from the sub1b profile: it says \
           llama-server listens on http://127.0.0.1:8081 (render, doctor and supervise read it): \
           set model.adapter.launchProfile.host and .port to where baseUrl points, or point \
           baseUrl there",
        ],
    ),
];

#[test]
fn each_rule_between_fields_says_where_its_values_came_from() {
    for (json, expected) in CASES {
        if expected.is_empty() {
            // The profile's batch window is below this timeout: nothing to explain.
            assert!(
                ConfigLoader::new().with_json("t", *json).load().is_ok(),
                "{json}"
            );
            continue;
        }
        let errors = errors(json);
        for message in *expected {
            assert!(
                errors.iter().any(|e| e == message),
                "{json}\nexpected: {message}\ngot: {errors:#?}"
            );
        }
    }
}

#[test]
fn a_value_set_by_the_environment_is_not_blamed_on_the_profile() {
    let error = ConfigLoader::new()
        .with_json("test.json", r#"{"profile":"sub1b"}"#)
        .with_env([("RAY_SCHEDULER_AFFINITY_LOOKAHEAD", "100")])
        .load()
        .expect_err("refused");
    let diagnostic = error
        .diagnostics()
        .iter()
        .find(|d| d.path == "scheduler.affinityLookahead")
        .unwrap();
    assert_eq!(
        diagnostic.to_string(),
        "scheduler.affinityLookahead: must be at most scheduler.maxQueue (64), got 100; \
         scheduler.maxQueue (64) comes from the sub1b profile: set it to at least 100, or lower \
         scheduler.affinityLookahead (set by env RAY_SCHEDULER_AFFINITY_LOOKAHEAD)"
    );
}
