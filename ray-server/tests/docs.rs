//! The operator docs stay true: every metric the server emits is documented (and nothing
//! documented is missing), and the API's error table matches the error codes.
#![allow(clippy::unwrap_used)]

mod util;

use std::collections::BTreeSet;
use std::path::Path;

use ray_core::ErrorCode;
use ray_core::wire::InferRequest;
use util::TestServer;

fn doc(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(name),
    )
    .unwrap()
}

/// The first column of every table row that names something in backticks.
fn table_names(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn every_metric_is_documented_and_every_documented_metric_exists() {
    let store = tempfile::tempdir().unwrap();
    let server = TestServer::start(&format!(
        r#"{{"profile":"tiny","model":{{"adapter":{{"kind":"mock","latencyMs":0}}}},
            "rateLimit":{{"enabled":true}},
            "asyncQueue":{{"enabled":true,"storageDir":{:?},"minFreeStorageMiB":1}},
            "cluster":{{"natsUrls":["nats://127.0.0.1:{}"],"nodeId":"docs",
              "advertiseUrl":"http://127.0.0.1:9","clusterKeyEnv":"CARGO_MANIFEST_DIR"}}}}"#,
        store.path().display().to_string(),
        // No NATS listens there: the cluster families are emitted all the same. (Tests cannot
        // set a variable, so one cargo sets stands in for the cluster key.)
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    ))
    .await;
    server
        .client()
        .infer(&InferRequest::new("x"))
        .await
        .unwrap();
    let text = server.client().metrics_text().await.unwrap();
    let emitted: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    let documented = table_names(&doc("metrics.md"));
    let undocumented: Vec<_> = emitted.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&emitted).collect();
    assert!(
        undocumented.is_empty(),
        "not in docs/metrics.md: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "documented but not emitted: {missing:?}"
    );
    server.stop().await;
}

#[test]
fn the_error_table_matches_the_codes() {
    let api = doc("api.md");
    for code in ErrorCode::ALL {
        let row = api
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", code.as_str())))
            .unwrap_or_else(|| panic!("{code} is not in docs/api.md"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[2], code.status().to_string(), "status of {code}");
        let retry = cells[3];
        match code.retry_after_secs() {
            _ if *code == ErrorCode::RateLimited => assert!(retry.contains("window")),
            // The lifecycle sets it from the model's measured load time or its retry backoff.
            _ if *code == ErrorCode::ModelLoading => assert!(retry.contains("measurement")),
            Some(seconds) => assert_eq!(retry, seconds.to_string(), "Retry-After of {code}"),
            None => assert_eq!(retry, "no", "Retry-After of {code}"),
        }
    }
}
