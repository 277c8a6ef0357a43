use super::*;

#[test]
fn concrete_paths_map_to_table_paths() {
    assert_eq!(
        rule_path("model.adapter.warmupRequests[3].input"),
        "model.adapter.warmupRequests[].input"
    );
    assert_eq!(rule_path("tags.modelRole"), "tags.*");
    assert_eq!(
        rule_path("model.adapter.headers.X-Key"),
        "model.adapter.headers.*"
    );
    assert_eq!(rule_path("scheduler.maxQueue"), "scheduler.maxQueue");
}

#[test]
fn every_rule_reaches_the_schema() {
    let schema = schemars::schema_for!(super::super::types::RayConfig).to_value();
    for field in FIELD_LIMITS {
        let segments: Vec<&str> = field.path.split('.').collect();
        let mut targets = Vec::new();
        find_targets(&schema, String::new(), &segments, &mut targets);
        assert!(!targets.is_empty(), "no schema for {}", field.path);
    }
}
