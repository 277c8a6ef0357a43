//! Duplicate keys in a config file. `serde_json` keeps the last of two equal keys in one
//! object without a word; request bodies refuse them, and so does the config loader, naming
//! the key and both places. This is a second pass over text that already parsed as JSON, so
//! it only needs to follow strings, nesting and the key position.

use std::collections::HashMap;

/// A key that appears twice in one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DuplicateKey {
    /// The key's path, e.g. `scheduler.maxQueue` (array elements as `[i]`).
    pub(crate) path: String,
    /// Line and column (1-based, in characters) of the first occurrence.
    pub(crate) first: (usize, usize),
    /// Line and column of the second.
    pub(crate) second: (usize, usize),
}

struct Frame {
    object: bool,
    path: String,
    /// Keys seen in this object and the byte offset of each.
    keys: HashMap<String, usize>,
    expecting_key: bool,
    current_key: String,
    index: usize,
}

/// Every duplicate key in `text` (valid JSON), in the order of their second occurrence.
pub(crate) fn duplicate_keys(text: &str) -> Vec<DuplicateKey> {
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'[' => {
                let path = child_path(stack.last());
                stack.push(Frame {
                    object: bytes[i] == b'{',
                    path,
                    keys: HashMap::new(),
                    expecting_key: bytes[i] == b'{',
                    current_key: String::new(),
                    index: 0,
                });
            }
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    if top.object {
                        top.expecting_key = true;
                    } else {
                        top.index += 1;
                    }
                }
            }
            b':' => {
                if let Some(top) = stack.last_mut() {
                    top.expecting_key = false;
                }
            }
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if let Some(top) = stack.last_mut()
                    && top.object
                    && top.expecting_key
                {
                    let raw = &text[start..(i + 1).min(text.len())];
                    let key: String = serde_json::from_str(raw).unwrap_or_else(|_| raw.to_string());
                    if let Some(first) = top.keys.get(&key) {
                        found.push(DuplicateKey {
                            path: join(&top.path, &key),
                            first: position(text, *first),
                            second: position(text, start),
                        });
                    } else {
                        top.keys.insert(key.clone(), start);
                    }
                    top.current_key = key;
                }
            }
            _ => {}
        }
        i += 1;
    }
    found
}

fn child_path(parent: Option<&Frame>) -> String {
    match parent {
        None => String::new(),
        Some(frame) if frame.object => join(&frame.path, &frame.current_key),
        Some(frame) => format!("{}[{}]", frame.path, frame.index),
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |last| last.chars().count())
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_with_both_places() {
        let text = "{\"profile\":\"tiny\",\n \"profile\":\"sub1b\"}";
        assert_eq!(
            duplicate_keys(text),
            vec![DuplicateKey {
                path: "profile".into(),
                first: (1, 2),
                second: (2, 2),
            }]
        );
    }

    #[test]
    fn nested_objects_arrays_and_escapes_are_followed() {
        let text = r#"{"a":{"b":1,"c":"x\"y","b":2},"list":[{"k":1},{"k":2,"k":3}],
            "s":"{\"a\":1,\"a\":2}","\u0061":0}"#;
        let found: Vec<String> = duplicate_keys(text).into_iter().map(|d| d.path).collect();
        assert_eq!(found, vec!["a.b", "list[1].k", "a"]);
    }

    #[test]
    fn equal_keys_in_different_objects_are_fine() {
        let text = r#"{"a":{"x":1},"b":{"x":1},"c":[{"x":1},{"x":2}]}"#;
        assert!(duplicate_keys(text).is_empty());
    }
}
