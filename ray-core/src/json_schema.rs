//! A small JSON Schema check for structured output: the subset `llama-server` turns into a
//! grammar (`type`, `enum`, `const`, `properties`, `required`, `additionalProperties`,
//! `items`, `prefixItems`, `minItems`, `maxItems`, `minLength`, `maxLength`, `minimum`,
//! `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `anyOf`, `oneOf`, `allOf` and local
//! `$ref`s into `$defs`/`definitions`). Annotations (`title`, `description`, `default`,
//! `examples`, `format`) and `pattern` are not checked.
//!
//! Ray checks a grammar-constrained answer before it says 200, so the check only needs to be
//! exact where the grammar is; it is written here rather than taken from a general validator
//! crate to keep the gateway's dependency tree small on a 2 GB box.
//!
//! ```
//! use ray_core::json_schema::validate;
//! use serde_json::json;
//!
//! let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}},
//!                     "required": ["n"], "additionalProperties": false});
//! assert!(validate(&schema, &json!({"n": 3})).is_ok());
//! assert_eq!(validate(&schema, &json!({"n": 30})).unwrap_err(), "$.n: 30 is above the maximum 9");
//! assert!(validate(&schema, &json!({"n": 3, "m": 1})).is_err());
//! ```

use serde_json::{Map, Value};

/// Deepest nesting of schemas followed (through `$ref`s too).
const MAX_DEPTH: usize = 64;

/// Checks that every `$ref` in `schema` is local and resolves.
pub fn check_supported(schema: &Value) -> Result<(), String> {
    fn walk(root: &Value, node: &Value, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("is nested deeper than {MAX_DEPTH} levels"));
        }
        match node {
            Value::Object(map) => {
                if let Some(reference) = map.get("$ref") {
                    let reference = reference
                        .as_str()
                        .ok_or_else(|| "$ref must be a string".to_string())?;
                    resolve(root, reference)?;
                }
                map.values().try_for_each(|v| walk(root, v, depth + 1))
            }
            Value::Array(items) => items.iter().try_for_each(|v| walk(root, v, depth + 1)),
            _ => Ok(()),
        }
    }
    walk(schema, schema, 0)
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Result<&'a Value, String> {
    let pointer = reference.strip_prefix('#').ok_or_else(|| {
        format!("$ref {reference:?}: only local references (#/...) are supported")
    })?;
    root.pointer(pointer)
        .ok_or_else(|| format!("$ref {reference:?} does not resolve"))
}

/// Checks `value` against `schema`; the error names the first place that breaks it, as a
/// JSON path (`$.items[2].name: ...`).
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    Checker { root: schema }.check(schema, value, "$", 0)
}

struct Checker<'a> {
    root: &'a Value,
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    let actual = type_name(value);
    actual == name || (name == "number" && actual == "integer")
}

impl Checker<'_> {
    fn check(&self, schema: &Value, value: &Value, path: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{path}: the schema is nested deeper than {MAX_DEPTH} levels"
            ));
        }
        let map = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{path}: no value is allowed here")),
            Value::Object(map) => map,
            _ => return Err(format!("{path}: the schema here is not an object")),
        };
        if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
            let target = resolve(self.root, reference).map_err(|e| format!("{path}: {e}"))?;
            self.check(target, value, path, depth + 1)?;
        }
        if let Some(types) = map.get("type") {
            let names: Vec<&str> = match types {
                Value::String(one) => vec![one.as_str()],
                Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !names.is_empty() && !names.iter().any(|n| is_type(value, n)) {
                return Err(format!(
                    "{path}: expected {}, got {}",
                    names.join(" or "),
                    type_name(value)
                ));
            }
        }
        if let Some(allowed) = map.get("enum").and_then(Value::as_array)
            && !allowed.iter().any(|a| same(a, value))
        {
            return Err(format!(
                "{path}: {value} is not one of {}",
                Value::from(allowed.clone())
            ));
        }
        if let Some(constant) = map.get("const")
            && !same(constant, value)
        {
            return Err(format!("{path}: must be {constant}, got {value}"));
        }
        match value {
            Value::Object(object) => self.check_object(map, object, path, depth)?,
            Value::Array(items) => self.check_array(map, items, path, depth)?,
            Value::String(text) => check_string(map, text, path)?,
            Value::Number(_) => check_number(map, value, path)?,
            _ => {}
        }
        if let Some(all) = map.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, value, path, depth + 1)?;
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(options) = map.get(key).and_then(Value::as_array) {
                let passing = options
                    .iter()
                    .filter(|sub| self.check(sub, value, path, depth + 1).is_ok())
                    .count();
                let ok = if key == "anyOf" {
                    passing > 0
                } else {
                    passing == 1
                };
                if !ok {
                    return Err(format!(
                        "{path}: matches {passing} of the {} {key} schemas",
                        options.len()
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_object(
        &self,
        map: &Map<String, Value>,
        object: &Map<String, Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        if let Some(required) = map.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(format!("{path}: the required property {name:?} is missing"));
                }
            }
        }
        let properties = map.get("properties").and_then(Value::as_object);
        for (name, item) in object {
            let item_path = format!("{path}.{name}");
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => self.check(sub, item, &item_path, depth + 1)?,
                None => match map.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{path}: the property {name:?} is not allowed"));
                    }
                    Some(sub @ Value::Object(_)) => self.check(sub, item, &item_path, depth + 1)?,
                    _ => {}
                },
            }
        }
        for (key, too_few) in [("minProperties", true), ("maxProperties", false)] {
            if let Some(limit) = map.get(key).and_then(Value::as_u64) {
                let count = object.len() as u64;
                if (too_few && count < limit) || (!too_few && count > limit) {
                    return Err(format!("{path}: has {count} properties; {key} is {limit}"));
                }
            }
        }
        Ok(())
    }

    fn check_array(
        &self,
        map: &Map<String, Value>,
        items: &[Value],
        path: &str,
        depth: usize,
    ) -> Result<(), String> {
        let prefix = map
            .get("prefixItems")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, item) in items.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match prefix.get(i) {
                Some(sub) => self.check(sub, item, &item_path, depth + 1)?,
                None => {
                    if let Some(sub) = map.get("items") {
                        self.check(sub, item, &item_path, depth + 1)?;
                    }
                }
            }
        }
        for (key, too_few) in [("minItems", true), ("maxItems", false)] {
            if let Some(limit) = map.get(key).and_then(Value::as_u64) {
                let count = items.len() as u64;
                if (too_few && count < limit) || (!too_few && count > limit) {
                    return Err(format!("{path}: has {count} items; {key} is {limit}"));
                }
            }
        }
        Ok(())
    }
}

fn check_string(map: &Map<String, Value>, text: &str, path: &str) -> Result<(), String> {
    let length = text.chars().count() as u64;
    for (key, too_short) in [("minLength", true), ("maxLength", false)] {
        if let Some(limit) = map.get(key).and_then(Value::as_u64)
            && ((too_short && length < limit) || (!too_short && length > limit))
        {
            return Err(format!("{path}: is {length} chars long; {key} is {limit}"));
        }
    }
    Ok(())
}

fn check_number(map: &Map<String, Value>, value: &Value, path: &str) -> Result<(), String> {
    let Some(number) = value.as_f64() else {
        return Ok(());
    };
    let bound = |key: &str| map.get(key).and_then(Value::as_f64);
    if let Some(min) = bound("minimum")
        && number < min
    {
        return Err(format!(
            "{path}: {value} is below the minimum {}",
            map["minimum"]
        ));
    }
    if let Some(max) = bound("maximum")
        && number > max
    {
        return Err(format!(
            "{path}: {value} is above the maximum {}",
            map["maximum"]
        ));
    }
    if let Some(min) = bound("exclusiveMinimum")
        && number <= min
    {
        return Err(format!(
            "{path}: {value} must be above {}",
            map["exclusiveMinimum"]
        ));
    }
    if let Some(max) = bound("exclusiveMaximum")
        && number >= max
    {
        return Err(format!(
            "{path}: {value} must be below {}",
            map["exclusiveMaximum"]
        ));
    }
    Ok(())
}

/// JSON equality with `1` and `1.0` the same number.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn checks_the_subset_llama_cpp_enforces() {
        let schema = json!({
            "$defs": {"tag": {"type": "string", "enum": ["a", "b"]}},
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 5},
                "n": {"type": "integer", "minimum": 0, "exclusiveMaximum": 10},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 2},
                "either": {"anyOf": [{"type": "null"}, {"type": "number"}]},
                "fixed": {"const": "x"}
            },
            "required": ["name", "n"],
            "additionalProperties": false
        });
        assert_eq!(check_supported(&schema), Ok(()));
        let good = json!({"name": "ok", "n": 9, "tags": ["a"], "either": null, "fixed": "x"});
        assert_eq!(validate(&schema, &good), Ok(()));
        for (bad, says) in [
            (
                json!({"n": 1}),
                "$: the required property \"name\" is missing",
            ),
            (
                json!({"name": "", "n": 1}),
                "$.name: is 0 chars long; minLength is 1",
            ),
            (
                json!({"name": "abcdef", "n": 1}),
                "$.name: is 6 chars long; maxLength is 5",
            ),
            (json!({"name": "a", "n": 10}), "$.n: 10 must be below 10"),
            (
                json!({"name": "a", "n": 1.5}),
                "$.n: expected integer, got number",
            ),
            (
                json!({"name": "a", "n": 1, "tags": ["c"]}),
                "$.tags[0]: \"c\" is not one of [\"a\",\"b\"]",
            ),
            (
                json!({"name": "a", "n": 1, "tags": ["a", "a", "b"]}),
                "$.tags: has 3 items; maxItems is 2",
            ),
            (
                json!({"name": "a", "n": 1, "either": "s"}),
                "$.either: matches 0 of the 2 anyOf schemas",
            ),
            (
                json!({"name": "a", "n": 1, "x": 1}),
                "$: the property \"x\" is not allowed",
            ),
            (
                json!({"name": "a", "n": 1, "fixed": "y"}),
                "$.fixed: must be \"x\", got \"y\"",
            ),
            (json!([1]), "$: expected object, got array"),
        ] {
            assert_eq!(validate(&schema, &bad).unwrap_err(), says, "{bad}");
        }
    }

    #[test]
    fn references_must_be_local_and_resolve() {
        assert!(check_supported(&json!({"$ref": "https://example.com/s.json"})).is_err());
        assert!(check_supported(&json!({"$ref": "#/$defs/missing"})).is_err());
        let looped = json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"});
        assert!(
            validate(&looped, &json!(1))
                .unwrap_err()
                .contains("nested deeper")
        );
    }
}
