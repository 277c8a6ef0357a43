use super::*;

#[test]
fn booleans_accept_the_documented_spellings() {
    for yes in ["true", "1", "YES", " on "] {
        assert_eq!(parse_env_value(EnvKind::Bool, yes), Ok(Value::Bool(true)));
    }
    for no in ["false", "0", "No", "OFF"] {
        assert_eq!(parse_env_value(EnvKind::Bool, no), Ok(Value::Bool(false)));
    }
    assert!(parse_env_value(EnvKind::Bool, "maybe").is_err());
}

#[test]
fn lists_are_trimmed_and_blanks_dropped() {
    assert_eq!(
        parse_env_value(EnvKind::List, " a.example, *.b.example ,,").unwrap(),
        serde_json::json!(["a.example", "*.b.example"])
    );
}

#[test]
fn numbers_must_be_finite() {
    assert!(parse_env_value(EnvKind::Number, "NaN").is_err());
    assert!(parse_env_value(EnvKind::Int, "1.5").is_err());
    assert_eq!(
        parse_env_value(EnvKind::Int, "-1").unwrap(),
        Value::from(-1)
    );
}

#[test]
fn variable_names_follow_the_section_rule() {
    for entry in ENV_VARS {
        assert!(entry.name.starts_with("RAY_"), "{}", entry.name);
        assert!(
            entry
                .name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "{}",
            entry.name
        );
    }
}
