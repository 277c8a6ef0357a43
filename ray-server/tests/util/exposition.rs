//! A strict checker of the Prometheus text exposition format (version 0.0.4), with the naming
//! rules `promtool check metrics` enforces: what a scraper accepts, and what it lints.

use std::collections::{BTreeMap, BTreeSet};

/// One parsed sample line.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Parses `name{a="x",b="y"} value`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => return Err("a sample needs a value".into()),
    };
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = Vec::new();
    let rest = if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                break after;
            }
            let eq = body.find('=').ok_or("a label needs =")?;
            let label = &body[..eq];
            if !is_label_name(label) {
                return Err(format!("bad label name {label:?}"));
            }
            let mut chars = body[eq + 1..].char_indices();
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("a label value must be quoted".into());
            }
            let mut value = String::new();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape \\{other:?}")),
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    '\n' => return Err("a raw newline in a label value".into()),
                    c => value.push(c),
                }
            }
            let end = end.ok_or("an unterminated label value")?;
            if labels.iter().any(|(l, _)| l == label) {
                return Err(format!("label {label} twice"));
            }
            labels.push((label.to_string(), value));
            body = &body[eq + 1 + end + 1..];
            body = body.strip_prefix(',').unwrap_or(body);
        }
    } else {
        rest
    };
    let value = rest.strip_prefix(' ').ok_or("one space before the value")?;
    // An optional timestamp is allowed by the format; Ray never writes one.
    let value = parse_value(value).ok_or_else(|| format!("bad value {value:?}"))?;
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// The family a sample name belongs to, for a family of `kind`.
fn belongs(sample: &str, family: &str, kind: &str) -> bool {
    match kind {
        "histogram" => [
            format!("{family}_bucket"),
            format!("{family}_sum"),
            format!("{family}_count"),
        ]
        .contains(&sample.to_string()),
        "summary" => {
            sample == family
                || sample == format!("{family}_sum")
                || sample == format!("{family}_count")
        }
        _ => sample == family,
    }
}

/// Checks `text`; on failure, says which line broke which rule. Returns the number of families.
pub fn check(text: &str) -> Result<usize, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut kinds: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    // Histogram buckets per series (without `le`): (le, count), in order.
    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    let mut open = |family: &str, current: &mut Option<String>| -> Result<(), String> {
        if current.as_deref() != Some(family) {
            if closed.contains(family) {
                return Err(format!("family {family} is split in two places"));
            }
            if let Some(previous) = current.take() {
                closed.insert(previous);
            }
            *current = Some(family.to_string());
        }
        Ok(())
    };
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let keyword = words.next().unwrap_or_default();
            let family = words.next().unwrap_or_default();
            let rest = words.next().unwrap_or_default();
            match keyword {
                "HELP" => {
                    if !is_metric_name(family) || !helps.insert(family.to_string()) {
                        return Err(at(format!("bad or repeated HELP for {family}")));
                    }
                    if rest.trim().is_empty() {
                        return Err(at("an empty HELP text".into()));
                    }
                    open(family, &mut current).map_err(at)?;
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                        return Err(at(format!("unknown type {rest:?}")));
                    }
                    if !is_metric_name(family) || kinds.contains_key(family) {
                        return Err(at(format!("bad or repeated TYPE for {family}")));
                    }
                    let counter = rest == "counter";
                    if counter != family.ends_with("_total") {
                        return Err(at(
                            "counters, and only counters, end in _total (promtool)".into()
                        ));
                    }
                    if series.iter().any(|s| s.starts_with(&format!("{family}{{"))) {
                        return Err(at("TYPE after the family's samples".into()));
                    }
                    open(family, &mut current).map_err(at)?;
                    kinds.insert(family.to_string(), rest.to_string());
                }
                _ => return Err(at("a comment that is neither HELP nor TYPE".into())),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(at)?;
        let family = current
            .clone()
            .ok_or_else(|| at("a sample before any TYPE".into()))?;
        let kind = kinds
            .get(&family)
            .ok_or_else(|| at(format!("family {family} has no TYPE")))?;
        if !belongs(&sample.name, &family, kind) {
            return Err(at(format!("sample outside its family {family} ({kind})")));
        }
        if kind == "counter" && (sample.value < 0.0 || sample.value.is_nan()) {
            return Err(at("a negative or NaN counter".into()));
        }
        let mut labels = sample.labels.clone();
        labels.sort();
        let key = format!("{}{{{labels:?}}}", sample.name);
        if !series.insert(key) {
            return Err(at("the same series twice".into()));
        }
        if kind == "histogram" {
            let without_le: Vec<_> = labels.iter().filter(|(l, _)| l != "le").collect();
            let id = format!("{family}{without_le:?}");
            if sample.name.ends_with("_bucket") {
                let le = labels
                    .iter()
                    .find(|(l, _)| l == "le")
                    .and_then(|(_, v)| parse_value(v))
                    .ok_or_else(|| at("a bucket without a numeric le".into()))?;
                let list = buckets.entry(id).or_default();
                if let Some(&(last_le, last_count)) = list.last()
                    && (le <= last_le || sample.value < last_count)
                {
                    return Err(at("buckets must rise in le and be cumulative".into()));
                }
                list.push((le, sample.value));
            } else if sample.name.ends_with("_count") {
                counts.insert(id, sample.value);
            }
        }
    }
    for (id, list) in &buckets {
        let Some(&(le, count)) = list.last() else {
            continue;
        };
        if le != f64::INFINITY {
            return Err(format!("histogram {id} has no le=\"+Inf\" bucket"));
        }
        if counts.get(id) != Some(&count) {
            return Err(format!(
                "histogram {id}: _count differs from the +Inf bucket"
            ));
        }
    }
    if let Some(family) = kinds.keys().find(|f| !helps.contains(*f)) {
        return Err(format!("family {family} has no HELP"));
    }
    Ok(kinds.len())
}
