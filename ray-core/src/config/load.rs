//! Config layering: profile defaults, then the file, then `RAY_*` variables, then explicit
//! overrides; typed, path-resolved and validated, with every problem reported at once.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::env::{apply_env, pointer, set_pointer};
use super::profiles::{adapter_defaults, profile_defaults};
use super::types::*;
use super::validate::{Diagnostic, validate};

/// Largest config file accepted, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 256 * 1024;

/// Object keys refused anywhere in a config file (the existing Ray refuses them, and a config
/// that relies on them would behave differently there).
const RESERVED_KEYS: [&str; 3] = ["__proto__", "constructor", "prototype"];

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a regular file.
    #[error("{}: not a regular file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than [`MAX_CONFIG_FILE_BYTES`].
    #[error("{}: config file is larger than {MAX_CONFIG_FILE_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The file is not valid JSON.
    #[error("{name}: not valid JSON: {source}")]
    Parse {
        /// The file name (or the name given to inline JSON).
        name: String,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The config has errors; every one of them is listed.
    #[error("{}", DiagnosticList { name: name.as_deref(), diagnostics })]
    Invalid {
        /// The file name, when there was one.
        name: Option<String>,
        /// Every error (and the warnings found alongside them).
        diagnostics: Vec<Diagnostic>,
    },
}

impl ConfigError {
    /// The diagnostics of an [`ConfigError::Invalid`], else empty.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid { diagnostics, .. } => diagnostics,
            _ => &[],
        }
    }
}

struct DiagnosticList<'a> {
    name: Option<&'a str>,
    diagnostics: &'a [Diagnostic],
}

impl fmt::Display for DiagnosticList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors: Vec<_> = self.diagnostics.iter().filter(|d| d.is_error()).collect();
        let name = self.name.unwrap_or("config");
        write!(f, "{name}: {} error(s)", errors.len())?;
        for error in errors {
            write!(f, "\n{name}: {error}")?;
        }
        Ok(())
    }
}

/// A config that passed validation. Cheap to clone; dereferences to [`RayConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig(Arc<RayConfig>);

impl ValidConfig {
    /// Validates a config built in code. Returns it with its warnings, or every error.
    pub fn new(config: RayConfig) -> Result<(ValidConfig, Vec<Diagnostic>), ConfigError> {
        let diagnostics = validate(&config);
        if diagnostics.iter().any(Diagnostic::is_error) {
            return Err(ConfigError::Invalid {
                name: None,
                diagnostics,
            });
        }
        Ok((ValidConfig(Arc::new(config)), diagnostics))
    }

    /// The defaults of a profile, which are always valid.
    pub fn from_profile(profile: Profile) -> ValidConfig {
        ValidConfig(Arc::new(profile_defaults(profile)))
    }

    /// The config itself.
    pub fn get(&self) -> &RayConfig {
        &self.0
    }
}

impl Deref for ValidConfig {
    type Target = RayConfig;

    fn deref(&self) -> &RayConfig {
        &self.0
    }
}

/// A loaded config with the warnings found while loading it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The effective config.
    pub config: ValidConfig,
    /// Warnings: the config works, but maybe not as intended.
    pub warnings: Vec<Diagnostic>,
    /// The file it came from, if any.
    pub file: Option<PathBuf>,
}

/// Builds a [`ValidConfig`] from its layers, in this order: the profile's defaults, the file,
/// the `RAY_*` variables, then explicit overrides.
///
/// ```
/// use ray_core::config::{ConfigLoader, Profile};
///
/// let loaded = ConfigLoader::new()
///     .with_json("inline", r#"{"profile":"tiny","scheduler":{"maxQueue":16}}"#)
///     .with_env([("RAY_SCHEDULER_CONCURRENCY", "1")])
///     .with_override("server.port", 0.into())
///     .load()?;
/// assert_eq!(loaded.config.profile, Profile::Tiny);
/// assert_eq!(loaded.config.scheduler.max_queue, 16);
/// assert_eq!(loaded.config.server.port, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    inline: Option<(String, String)>,
    env: BTreeMap<String, String>,
    overrides: Vec<(String, Value)>,
    base_dir: Option<PathBuf>,
}

impl ConfigLoader {
    /// A loader with no file, no environment and no overrides (the default profile as is).
    pub fn new() -> ConfigLoader {
        ConfigLoader::default()
    }

    /// Reads the config from a JSON file (at most 256 KiB, a regular file).
    pub fn with_file(mut self, path: impl Into<PathBuf>) -> ConfigLoader {
        self.file = Some(path.into());
        self.inline = None;
        self
    }

    /// Uses JSON text instead of a file; `name` appears in error messages.
    pub fn with_json(mut self, name: impl Into<String>, text: impl Into<String>) -> ConfigLoader {
        self.inline = Some((name.into(), text.into()));
        self.file = None;
        self
    }

    /// Adds environment variables; only `RAY_*` names are kept, empty values are ignored.
    pub fn with_env<I, K, V>(mut self, vars: I) -> ConfigLoader
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (key, value) in vars {
            let key = key.into();
            if key.starts_with("RAY_") {
                self.env.insert(key, value.into());
            }
        }
        self
    }

    /// Adds the process environment's `RAY_*` variables.
    pub fn with_process_env(self) -> ConfigLoader {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        self.with_env(vars)
    }

    /// Sets a field by its dotted JSON path after every other layer, e.g.
    /// `("server.port", 0.into())`.
    pub fn with_override(mut self, path: impl Into<String>, value: Value) -> ConfigLoader {
        self.overrides.push((path.into(), value));
        self
    }

    /// Resolves relative paths (storage dir, model path) against `dir` instead of the current
    /// working directory.
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> ConfigLoader {
        self.base_dir = Some(dir.into());
        self
    }

    /// Loads, layers, types and validates the config.
    pub fn load(&self) -> Result<LoadedConfig, ConfigError> {
        let (name, file_value) = self.read_source()?;
        let mut diagnostics = Vec::new();
        let mut sources: BTreeMap<String, String> = BTreeMap::new();

        // 1. The profile: an override, else the file, else RAY_PROFILE, else sub1b.
        let profile = self.select_profile(file_value.as_ref(), &mut diagnostics)?;

        // 2. The profile's defaults, with the adapter switched when the file picks another kind.
        let mut defaults =
            serde_json::to_value(profile_defaults(profile)).map_err(|e| ConfigError::Invalid {
                name: name.clone(),
                diagnostics: vec![Diagnostic::error("", format!("internal: {e}"))],
            })?;
        if let Some(kind) = file_value
            .as_ref()
            .and_then(|v| pointer(v, "model.adapter.kind"))
        {
            match kind.as_str() {
                Some(kind) => {
                    let model_id = file_value
                        .as_ref()
                        .and_then(|v| pointer(v, "model.id"))
                        .and_then(Value::as_str)
                        .or_else(|| pointer(&defaults, "model.id").and_then(Value::as_str))
                        .unwrap_or("model")
                        .to_string();
                    match adapter_defaults(kind, &model_id, profile) {
                        Some(adapter) => {
                            let adapter = serde_json::to_value(adapter).unwrap_or(Value::Null);
                            set_pointer(&mut defaults, "model.adapter", adapter);
                        }
                        None => diagnostics.push(Diagnostic::error(
                            "model.adapter.kind",
                            format!(
                                "unknown adapter kind {kind:?}; expected mock, openai-compatible \
                                 or llama.cpp"
                            ),
                        )),
                    }
                }
                None => diagnostics.push(Diagnostic::error(
                    "model.adapter.kind",
                    "must be a string: mock, openai-compatible or llama.cpp",
                )),
            }
        }

        // 3. The file over the defaults.
        let mut merged = defaults.clone();
        let file_json = file_value.clone();
        if let Some(file_value) = file_value {
            merge(&mut merged, file_value, "", &mut diagnostics);
        }
        set_pointer(
            &mut merged,
            "profile",
            Value::String(profile.as_str().into()),
        );

        // 4. Environment.
        let outcome = apply_env(&mut merged, &self.env);
        for (path, var) in outcome.set {
            sources.insert(path, format!("env {var}"));
        }
        for (path, var, message) in outcome.errors {
            let mut d = Diagnostic::error(path, message);
            d.source = Some(format!("env {var}"));
            diagnostics.push(d);
        }
        for (path, message) in outcome.warnings {
            diagnostics.push(Diagnostic::warning(path, message));
        }

        // 5. Explicit overrides.
        for (path, value) in &self.overrides {
            set_pointer(&mut merged, path, value.clone());
            sources.insert(path.clone(), "override".into());
        }

        // 5b. Each entry of `models` takes its unset model fields from `model`; its adapter
        //     starts from the profile's defaults for its kind.
        expand_models(&mut merged, profile, &mut diagnostics);

        // 6. Typed, repairing what it can so every problem is reported in one pass.
        let config = type_config(&mut merged, &defaults, &mut diagnostics);

        // 7. Paths and validation.
        let config = config.map(|mut config| {
            self.resolve_paths(&mut config);
            diagnostics.extend(validate(&config));
            config
        });
        for diagnostic in &mut diagnostics {
            if diagnostic.source.is_none() {
                diagnostic.source = sources.get(&diagnostic.path).cloned();
            }
            explain_profile_value(diagnostic, profile, |path| {
                !sources.contains_key(path)
                    && file_json.as_ref().is_none_or(|file| !has_path(file, path))
            });
        }
        match config {
            Some(config) if !diagnostics.iter().any(Diagnostic::is_error) => Ok(LoadedConfig {
                config: ValidConfig(Arc::new(config)),
                warnings: diagnostics,
                file: self.file.clone(),
            }),
            _ => {
                if !diagnostics.iter().any(Diagnostic::is_error) {
                    diagnostics.push(Diagnostic::error("", "the config could not be typed"));
                }
                Err(ConfigError::Invalid { name, diagnostics })
            }
        }
    }

    /// Reads the file or inline JSON; `None` when neither is given.
    fn read_source(&self) -> Result<(Option<String>, Option<Value>), ConfigError> {
        let (name, text) = if let Some(path) = &self.file {
            (path.display().to_string(), read_config_file(path)?)
        } else if let Some((name, text)) = &self.inline {
            (name.clone(), text.clone())
        } else {
            return Ok((None, None));
        };
        // A byte-order mark (some Windows editors write one) is not JSON; it is accepted.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let value: Value = serde_json::from_str(text).map_err(|source| ConfigError::Parse {
            name: name.clone(),
            source,
        })?;
        let duplicates = super::duplicates::duplicate_keys(text);
        if !duplicates.is_empty() {
            return Err(ConfigError::Invalid {
                name: Some(name),
                diagnostics: duplicates
                    .into_iter()
                    .map(|d| {
                        Diagnostic::error(
                            d.path,
                            format!(
                                "the key appears twice in one object, at line {} column {} and \
                                 line {} column {}; keep one",
                                d.first.0, d.first.1, d.second.0, d.second.1
                            ),
                        )
                    })
                    .collect(),
            });
        }
        if !value.is_object() {
            return Err(ConfigError::Invalid {
                name: Some(name),
                diagnostics: vec![Diagnostic::error(
                    "",
                    format!(
                        "the config must be a JSON object, got {}",
                        json_type(&value)
                    ),
                )],
            });
        }
        Ok((Some(name), Some(value)))
    }

    fn select_profile(
        &self,
        file: Option<&Value>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Result<Profile, ConfigError> {
        let from_override = self
            .overrides
            .iter()
            .rev()
            .find(|(path, _)| path == "profile")
            .map(|(_, v)| (v.clone(), "override"));
        let from_file = file
            .and_then(|f| f.get("profile"))
            .map(|v| (v.clone(), "file"));
        let from_env = self
            .env
            .get("RAY_PROFILE")
            .filter(|v| !v.trim().is_empty())
            .map(|v| (Value::String(v.trim().to_string()), "env RAY_PROFILE"));
        if let (Some((file_profile, _)), Some((env_profile, _))) = (&from_file, &from_env)
            && file_profile != env_profile
            && from_override.is_none()
        {
            diagnostics.push(Diagnostic::warning(
                "profile",
                format!(
                    "RAY_PROFILE={} is ignored because the file names profile {}",
                    env_profile.as_str().unwrap_or("?"),
                    file_profile
                ),
            ));
        }
        let Some((value, origin)) = from_override.or(from_file).or(from_env) else {
            return Ok(Profile::DEFAULT);
        };
        match value.as_str().and_then(Profile::parse) {
            Some(profile) => Ok(profile),
            None => {
                let names: Vec<_> = Profile::ALL.iter().map(|p| p.as_str()).collect();
                let mut d = Diagnostic::error(
                    "profile",
                    format!(
                        "unknown profile {value}; expected one of {}",
                        names.join(", ")
                    ),
                );
                if origin != "file" {
                    d.source = Some(origin.to_string());
                }
                Err(ConfigError::Invalid {
                    name: self.source_name(),
                    diagnostics: vec![d],
                })
            }
        }
    }

    fn source_name(&self) -> Option<String> {
        self.file
            .as_ref()
            .map(|p| p.display().to_string())
            .or_else(|| self.inline.as_ref().map(|(n, _)| n.clone()))
    }

    fn resolve_paths(&self, config: &mut RayConfig) {
        let base = match &self.base_dir {
            Some(dir) => dir.clone(),
            None => match std::env::current_dir() {
                Ok(dir) => dir,
                Err(_) => return,
            },
        };
        let absolutise = |path: &str| -> String {
            let p = Path::new(path);
            // A blank path stays blank, so validation refuses it rather than the directory.
            if p.is_absolute() || path.trim().is_empty() {
                path.to_string()
            } else {
                base.join(p).display().to_string()
            }
        };
        config.async_queue.storage_dir = absolutise(&config.async_queue.storage_dir);
        if let Some(lifecycle) = &mut config.lifecycle {
            lifecycle.state_dir = absolutise(&lifecycle.state_dir);
        }
        if let AdapterConfig::LlamaCpp(llama) = &mut config.model.adapter
            && let Some(launch) = &mut llama.launch_profile
        {
            launch.model_path = absolutise(&launch.model_path);
            // A bare name (`llama-server`) is looked up on PATH, so only paths are resolved.
            if launch.binary_path.contains('/') {
                launch.binary_path = absolutise(&launch.binary_path);
            }
        }
    }
}

/// Reads a config file, refusing non-files and files over [`MAX_CONFIG_FILE_BYTES`].
fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(read_error)?;
    if !metadata.is_file() {
        return Err(ConfigError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if metadata.len() > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read_error)?
        .take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Whether `value` holds the dotted `path`, whose segments may end in `[index]`
/// (`model.adapter.warmupRequests[0].maxTokens`).
fn has_path(value: &Value, path: &str) -> bool {
    let mut current = value;
    for segment in path.split('.') {
        let (key, indices) = match segment.find('[') {
            Some(at) => segment.split_at(at),
            None => (segment, ""),
        };
        let Some(next) = current.get(key) else {
            return false;
        };
        current = next;
        for index in indices.split('[').filter(|i| !i.is_empty()) {
            let Some(next) = index
                .trim_end_matches(']')
                .parse::<usize>()
                .ok()
                .and_then(|i| current.get(i))
            else {
                return false;
            };
            current = next;
        }
    }
    true
}

/// Rewrites the message of a failed rule between two fields when one of its values came from
/// the profile (`from_profile(path)`), so it names the profile and the field to set:
/// `is 96 from the sub1b profile; set it to at most 32, or raise model.maxOutputTokens`.
fn explain_profile_value(
    diagnostic: &mut Diagnostic,
    profile: Profile,
    from_profile: impl Fn(&str) -> bool,
) {
    let Some(cross) = diagnostic.cross.as_deref() else {
        return;
    };
    if from_profile(&diagnostic.path) {
        diagnostic.message = format!(
            "is {} from the {profile} profile; set it to {}, or {}",
            cross.value, cross.requirement, cross.alternative
        );
    } else if from_profile(&cross.other) {
        diagnostic.message = format!(
            "{}; {} ({}) comes from the {profile} profile: {}",
            diagnostic.message, cross.other, cross.other_value, cross.other_fix
        );
    }
}

/// Deep merge: objects merge key by key, arrays and scalars replace. `null` where the default
/// is an object or array, and an object where the default is not one, are errors.
fn merge(base: &mut Value, overlay: Value, path: &str, diagnostics: &mut Vec<Diagnostic>) {
    match (base, overlay) {
        (Value::Object(base_map), Value::Object(overlay_map)) => {
            for (key, value) in overlay_map {
                let child = join(path, &key);
                if RESERVED_KEYS.contains(&key.as_str()) {
                    diagnostics.push(Diagnostic::error(child, "reserved key is not allowed"));
                    continue;
                }
                check_reserved(&value, &child, diagnostics);
                match base_map.get_mut(&key) {
                    Some(existing) => merge(existing, value, &child, diagnostics),
                    None => {
                        base_map.insert(key, value);
                    }
                }
            }
        }
        (base @ (Value::Object(_) | Value::Array(_)), Value::Null) => {
            diagnostics.push(Diagnostic::error(
                path,
                format!(
                    "must be {}, got null (leave the field out to use the profile default)",
                    json_type(base)
                ),
            ));
        }
        (Value::Object(_), overlay) => {
            diagnostics.push(Diagnostic::error(
                path,
                format!("must be an object, got {}", json_type(&overlay)),
            ));
        }
        (base, overlay) => *base = overlay,
    }
}

fn check_reserved(value: &Value, path: &str, diagnostics: &mut Vec<Diagnostic>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let child_path = join(path, key);
                if RESERVED_KEYS.contains(&key.as_str()) {
                    diagnostics.push(Diagnostic::error(child_path, "reserved key is not allowed"));
                } else {
                    check_reserved(child, &child_path, diagnostics);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_reserved(item, &format!("{path}[{i}]"), diagnostics);
            }
        }
        _ => {}
    }
}

/// Types the merged JSON. The adapter is typed on its own first so errors inside it keep their
/// paths (serde loses them through internally tagged enums).
fn type_config(
    merged: &mut Value,
    defaults: &Value,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<RayConfig> {
    if let Some(adapter) = merged
        .get_mut("model")
        .and_then(|m| m.get_mut("adapter"))
        .and_then(Value::as_object_mut)
    {
        let kind = adapter
            .get("kind")
            .and_then(Value::as_str)
            .map(String::from);
        let adapter_defaults = pointer(defaults, "model.adapter")
            .cloned()
            .unwrap_or(Value::Null);
        let mut body = Value::Object(adapter.clone());
        if let Value::Object(map) = &mut body {
            map.remove("kind");
        }
        let ok = match kind.as_deref() {
            Some("mock") => repair::<MockAdapterConfig>(
                &mut body,
                &adapter_defaults,
                "model.adapter",
                diagnostics,
            ),
            Some("openai-compatible") => repair::<OpenAiAdapterConfig>(
                &mut body,
                &adapter_defaults,
                "model.adapter",
                diagnostics,
            ),
            Some("llama.cpp") => repair::<LlamaCppAdapterConfig>(
                &mut body,
                &adapter_defaults,
                "model.adapter",
                diagnostics,
            ),
            // An unknown kind was reported already; fall back to the defaults.
            _ => false,
        };
        let mut repaired = if ok { body } else { adapter_defaults.clone() };
        if ok && let (Value::Object(map), Some(kind)) = (&mut repaired, kind) {
            map.insert("kind".into(), Value::String(kind));
        }
        if let Value::Object(map) = repaired {
            *adapter = map;
        }
    }
    if repair::<RayConfig>(merged, defaults, "", diagnostics) {
        serde_json::from_value(merged.clone()).ok()
    } else {
        None
    }
}

/// Fields of `model` an entry of `models` inherits when it leaves them out.
const INHERITED_MODEL_FIELDS: [&str; 6] = [
    "family",
    "quantization",
    "contextWindow",
    "warmOnBoot",
    "maxOutputTokens",
    "operational",
];

/// Fills each entry of `models` from `model` (see [`INHERITED_MODEL_FIELDS`]); its adapter
/// starts from `model.adapter` when the kinds match (the entry's kind defaults to that of
/// `model.adapter`), else from the profile's defaults for its kind, never with a
/// `launchProfile` and with `modelRef` defaulting to the entry's id. Entries that are not objects are left for typing to report.
fn expand_models(merged: &mut Value, profile: Profile, diagnostics: &mut Vec<Diagnostic>) {
    let template = merged.get("model").cloned().unwrap_or(Value::Null);
    let template_kind = pointer(&template, "adapter.kind")
        .and_then(Value::as_str)
        .unwrap_or("mock")
        .to_string();
    let Some(Value::Array(entries)) = merged.get_mut("models") else {
        return;
    };
    for (index, entry) in entries.iter_mut().enumerate() {
        let Value::Object(fields) = entry else {
            continue;
        };
        for name in INHERITED_MODEL_FIELDS {
            if !fields.contains_key(name)
                && let Some(value) = template.get(name)
            {
                fields.insert(name.into(), value.clone());
            }
        }
        let id = fields
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("model")
            .to_string();
        let adapter = fields
            .remove("adapter")
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        let kind = match adapter.get("kind") {
            None => template_kind.clone(),
            Some(Value::String(kind)) => kind.clone(),
            Some(_) => {
                diagnostics.push(Diagnostic::error(
                    format!("models[{index}].adapter.kind"),
                    "must be a string: mock, openai-compatible or llama.cpp",
                ));
                fields.insert("adapter".into(), adapter);
                continue;
            }
        };
        // The same kind as `model.adapter`: start from it; another kind: from the profile's
        // defaults for that kind.
        let inherited = template
            .get("adapter")
            .filter(|_| kind == template_kind)
            .cloned();
        let mut base = match inherited {
            Some(adapter) => adapter,
            None => match adapter_defaults(&kind, &id, profile) {
                Some(defaults) => serde_json::to_value(defaults).unwrap_or(Value::Null),
                None => {
                    diagnostics.push(Diagnostic::error(
                        format!("models[{index}].adapter.kind"),
                        format!(
                            "unknown adapter kind {kind:?}; expected mock, openai-compatible or \
                             llama.cpp"
                        ),
                    ));
                    fields.insert("adapter".into(), adapter);
                    continue;
                }
            },
        };
        // A launch profile describes one process and `modelRef` names one model: an entry
        // never inherits them (its `modelRef` defaults to its id).
        if let Value::Object(map) = &mut base {
            map.remove("launchProfile");
            if kind != "mock" {
                map.insert("modelRef".into(), Value::String(id.clone()));
            }
        }
        merge(
            &mut base,
            adapter,
            &format!("models[{index}].adapter"),
            diagnostics,
        );
        fields.insert("adapter".into(), base);
    }
}

/// Deserializes `T` from `value`; on each error, records it with its path and repairs the value
/// (unknown keys removed, bad values replaced by the default) so the next error can be found.
/// Returns whether `value` finally deserializes.
fn repair<T: DeserializeOwned>(
    value: &mut Value,
    defaults: &Value,
    prefix: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> bool {
    let mut seen = Vec::new();
    for _ in 0..128 {
        let error = match serde_path_to_error::deserialize::<_, T>(&*value) {
            Ok(_) => return true,
            Err(error) => error,
        };
        let segments: Vec<String> = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = error.into_inner().to_string();
        let fingerprint = (segments.clone(), message.clone());
        if seen.contains(&fingerprint) {
            return false;
        }
        seen.push(fingerprint);

        let mut path = prefix.to_string();
        for segment in &segments {
            if segment.starts_with('[') {
                path.push_str(segment);
            } else {
                path = join(&path, segment);
            }
        }
        if let Some(field) = backticked(&message, "unknown field `") {
            // The path normally ends with the unknown key itself; be robust if it does not.
            let parent = match segments.split_last() {
                Some((last, parent)) if *last == field => parent,
                _ => &segments[..],
            };
            let shown = if segments.last() == Some(&field) {
                path.clone()
            } else {
                join(&path, &field)
            };
            diagnostics.push(Diagnostic::error(
                shown,
                unknown_field_message(&field, &message),
            ));
            let removed = match navigate_mut(value, parent) {
                Some(Value::Object(map)) => map.remove(&field).is_some(),
                _ => false,
            };
            if !removed {
                return false;
            }
        } else if let Some(field) = backticked(&message, "missing field `") {
            diagnostics.push(Diagnostic::error(
                join(&path, &field),
                "is required here and has no default",
            ));
            let mut field_path = segments.clone();
            field_path.push(field);
            let Some(default) = navigate(defaults, &field_path).cloned() else {
                return false;
            };
            if let Some(Value::Object(map)) = navigate_mut(value, &segments) {
                map.insert(field_path.pop().unwrap_or_default(), default);
            } else {
                return false;
            }
        } else {
            diagnostics.push(Diagnostic::error(path.clone(), clean_message(&message)));
            let default = navigate(defaults, &segments).cloned();
            let Some((last, parent)) = segments.split_last() else {
                return false;
            };
            match (navigate_mut(value, parent), default) {
                (Some(Value::Object(map)), Some(default)) => {
                    map.insert(last.clone(), default);
                }
                (Some(Value::Object(map)), None) => {
                    map.remove(last);
                }
                (Some(Value::Array(items)), _) => {
                    let index = last
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .parse::<usize>()
                        .ok();
                    match index {
                        Some(i) if i < items.len() => {
                            items.remove(i);
                        }
                        _ => return false,
                    }
                }
                _ => return false,
            }
        }
    }
    false
}

fn navigate<'a>(value: &'a Value, segments: &[String]) -> Option<&'a Value> {
    segments.iter().try_fold(value, |current, segment| {
        if let Some(index) = segment.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current.as_array()?.get(index.parse::<usize>().ok()?)
        } else {
            current.as_object()?.get(segment)
        }
    })
}

fn navigate_mut<'a>(value: &'a mut Value, segments: &[String]) -> Option<&'a mut Value> {
    segments.iter().try_fold(value, |current, segment| {
        if let Some(index) = segment.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current
                .as_array_mut()?
                .get_mut(index.parse::<usize>().ok()?)
        } else {
            current.as_object_mut()?.get_mut(segment)
        }
    })
}

fn backticked(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    Some(rest.split('`').next()?.to_string())
}

/// "unknown field `x`, expected one of `a`, `b`" becomes a sentence with a suggestion.
fn unknown_field_message(field: &str, serde_message: &str) -> String {
    let expected: Vec<&str> = serde_message
        .split_once("expected")
        .map(|(_, list)| {
            list.split('`')
                .enumerate()
                .filter(|(i, _)| i % 2 == 1)
                .map(|(_, s)| s)
                .collect()
        })
        .unwrap_or_default();
    let closest = expected
        .iter()
        .map(|candidate| (edit_distance(field, candidate), *candidate))
        .filter(|(distance, _)| *distance <= 3)
        .min();
    match closest {
        Some((_, suggestion)) => format!("unknown field; did you mean \"{suggestion}\"?"),
        None if expected.is_empty() => "unknown field".to_string(),
        None => format!("unknown field; expected one of {}", expected.join(", ")),
    }
}

/// serde's messages mention Rust types; say what a config author needs instead.
fn clean_message(message: &str) -> String {
    let message = message
        .replace("u16", "a port number (0 to 65535)")
        .replace("u32", "a whole number from 0 to 4294967295")
        .replace("u64", "a whole number from 0 to 18446744073709551615")
        .replace("i32", "a whole number from -2147483648 to 2147483647")
        .replace(
            "i64",
            "a whole number from -9223372036854775808 to 9223372036854775807",
        )
        .replace("f64", "a number");
    message.replace("invalid type: ", "wrong type: ")
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current[j + 1] = (previous[j] + cost)
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// The config as JSON with secrets replaced: adapter header values become `"[redacted]"`.
/// API keys never appear in the config (only the names of the variables that hold them).
pub fn redacted_json(config: &RayConfig) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(Value::Object(headers)) = value
        .get_mut("model")
        .and_then(|m| m.get_mut("adapter"))
        .and_then(|a| a.get_mut("headers"))
    {
        for header in headers.values_mut() {
            *header = Value::String("[redacted]".into());
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Severity;

    fn load(json: &str) -> Result<LoadedConfig, ConfigError> {
        ConfigLoader::new().with_json("test.json", json).load()
    }

    fn error_lines(error: &ConfigError) -> Vec<String> {
        error
            .diagnostics()
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn no_file_gives_the_default_profile() {
        let loaded = ConfigLoader::new().load().unwrap();
        assert_eq!(loaded.config.profile, Profile::Sub1b);
    }

    #[test]
    fn the_file_merges_over_its_profile() {
        let loaded = load(r#"{"profile":"tiny","scheduler":{"maxQueue":9}}"#).unwrap();
        assert_eq!(loaded.config.scheduler.max_queue, 9);
        assert_eq!(loaded.config.scheduler.concurrency, 1);
        assert_eq!(loaded.config.model.id, "tiny-dev");
    }

    #[test]
    fn env_beats_the_file_and_overrides_beat_env() {
        let loaded = ConfigLoader::new()
            .with_json("t", r#"{"profile":"tiny","scheduler":{"maxQueue":9}}"#)
            .with_env([("RAY_SCHEDULER_MAX_QUEUE", "12"), ("RAY_PORT", "4000")])
            .with_override("server.port", 0.into())
            .load()
            .unwrap();
        assert_eq!(loaded.config.scheduler.max_queue, 12);
        assert_eq!(loaded.config.server.port, 0);
    }

    #[test]
    fn ray_profile_applies_only_without_a_file_profile() {
        let loaded = ConfigLoader::new()
            .with_env([("RAY_PROFILE", "1b")])
            .load()
            .unwrap();
        assert_eq!(loaded.config.profile, Profile::OneB);
        let loaded = ConfigLoader::new()
            .with_json("t", r#"{"profile":"tiny"}"#)
            .with_env([("RAY_PROFILE", "1b")])
            .load()
            .unwrap();
        assert_eq!(loaded.config.profile, Profile::Tiny);
        assert!(loaded.warnings.iter().any(|w| w.path == "profile"));
    }

    #[test]
    fn unknown_profile_is_an_error_naming_the_choices() {
        let error = load(r#"{"profile":"huge"}"#).unwrap_err();
        let lines = error_lines(&error);
        assert!(
            lines[0].starts_with("profile: unknown profile \"huge\""),
            "{lines:?}"
        );
        assert!(lines[0].contains("sub1b-cax11"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let error = load(
            r#"{"profile":"tiny","scheduler":{"maxQueue":0,"concurency":2},
                "cache":{"maxEntries":"many"},"rateLimit":{"maxKeys":0}}"#,
        )
        .unwrap_err();
        let lines = error_lines(&error);
        assert!(
            lines.contains(
                &"scheduler.concurency: unknown field; did you mean \"concurrency\"?".into()
            ),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("cache.maxEntries: wrong type")),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"scheduler.maxQueue: must be at least 1, got 0".into()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"rateLimit.maxKeys: must be at least 1, got 0".into()),
            "{lines:?}"
        );
    }

    #[test]
    fn errors_inside_the_adapter_keep_their_path() {
        let error = load(
            r#"{"profile":"sub1b","model":{"adapter":{"kind":"llama.cpp","timeoutMs":"x",
                "launchProfile":{"parallel":0,"bogus":1}}}}"#,
        )
        .unwrap_err();
        let lines = error_lines(&error);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("model.adapter.timeoutMs: wrong type")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("model.adapter.launchProfile.bogus: unknown field")),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"model.adapter.launchProfile.parallel: must be at least 1, got 0".into()
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn env_errors_name_the_variable() {
        let error = ConfigLoader::new()
            .with_json("t", r#"{"profile":"tiny"}"#)
            .with_env([
                ("RAY_SCHEDULER_MAX_QUEUE", "lots"),
                ("RAY_CACHE_MAX_ENTRIES", "0"),
            ])
            .load()
            .unwrap_err();
        let lines = error_lines(&error);
        assert!(
            lines.contains(&"scheduler.maxQueue: expected a whole number, got \"lots\" (set by env RAY_SCHEDULER_MAX_QUEUE)".into()),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"cache.maxEntries: must be at least 1, got 0 (set by env RAY_CACHE_MAX_ENTRIES)"
                    .into()
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn the_critical_memory_guard_is_set_from_the_environment() {
        let loaded = ConfigLoader::new()
            .with_json("t", r#"{"profile":"tiny"}"#)
            .with_env([
                ("RAY_DEGRADATION_REFUSE_ON_CRITICAL_MEMORY", "off"),
                ("RAY_DEGRADATION_CRITICAL_CGROUP_MEMORY_RATIO", "0.95"),
                ("RAY_DEGRADATION_CRITICAL_MEMORY_PSI_FULL_AVG10", "40"),
            ])
            .load()
            .unwrap();
        let g = &loaded.config.graceful_degradation;
        assert!(!g.refuse_on_critical_memory);
        assert_eq!(g.critical_cgroup_memory_ratio, 0.95);
        assert_eq!(g.critical_memory_psi_full_avg10, 40.0);
        let error = ConfigLoader::new()
            .with_env([("RAY_DEGRADATION_CRITICAL_CGROUP_MEMORY_RATIO", "2")])
            .load()
            .unwrap_err();
        assert!(error_lines(&error).contains(
            &"gracefulDegradation.criticalCgroupMemoryRatio: must be at most 1, got 2 (set by env \
              RAY_DEGRADATION_CRITICAL_CGROUP_MEMORY_RATIO)"
                .into()
        ));
    }

    #[test]
    fn switching_away_from_the_mock_starts_from_that_kinds_defaults() {
        let loaded = load(
            r#"{"profile":"tiny","model":{"adapter":{"kind":"openai-compatible","baseUrl":"http://127.0.0.1:8081"}}}"#,
        )
        .unwrap();
        let http = loaded.config.model.adapter.http().unwrap();
        assert_eq!(http.model_ref, "tiny-dev");
        assert_eq!(http.timeout_ms, 20_000);
    }

    #[test]
    fn switching_between_http_adapters_inherits_the_profile_adapter_s_shared_fields() {
        // As the existing Ray's merge over the profile's adapter object does: the fields both
        // kinds have come from the profile's adapter, not from built-in constants.
        for (profile, kind, model_ref, timeout_ms) in [
            ("vps", "llama.cpp", "qwen2.5-3b-instruct-q4_k_m", 20_000),
            (
                "balanced",
                "llama.cpp",
                "mistral-7b-instruct-q4_k_m",
                25_000,
            ),
            (
                "sub1b",
                "openai-compatible",
                "qwen2.5-0.5b-instruct-q4_k_m",
                18_000,
            ),
            (
                "1b",
                "openai-compatible",
                "qwen2.5-1.5b-instruct-q4_k_m",
                28_000,
            ),
            (
                "1b-8gb",
                "openai-compatible",
                "qwen2.5-1.5b-instruct-q4_k_m",
                24_000,
            ),
        ] {
            let config = load(&format!(
                r#"{{"profile":"{profile}","model":{{"adapter":{{"kind":"{kind}"}}}}}}"#
            ))
            .unwrap_or_else(|e| panic!("{profile}: {e}"))
            .config;
            assert_eq!(config.model.adapter.kind(), kind);
            let http = config.model.adapter.http().unwrap();
            assert_eq!(http.model_ref, model_ref, "{profile}");
            assert_eq!(http.timeout_ms, timeout_ms, "{profile}");
            assert_eq!(http.base_url, "http://127.0.0.1:8081", "{profile}");
        }
        // Fields only llama.cpp has are left unset, as in the existing Ray, and the file
        // still wins over what is inherited.
        let config =
            load(r#"{"profile":"vps","model":{"adapter":{"kind":"llama.cpp","timeoutMs":9000}}}"#)
                .unwrap()
                .config;
        let AdapterConfig::LlamaCpp(llama) = &config.model.adapter else {
            panic!("llama.cpp adapter expected");
        };
        assert_eq!(llama.timeout_ms, 9_000);
        assert_eq!(
            (
                llama.cache_prompt,
                llama.slot_state_ttl_ms,
                llama.launch_profile.is_some()
            ),
            (None, None, false)
        );
    }

    #[test]
    fn null_for_a_section_is_an_error() {
        let error = load(r#"{"scheduler":null}"#).unwrap_err();
        assert!(error_lines(&error)[0].starts_with("scheduler: must be an object, got null"));
    }

    #[test]
    fn reserved_keys_are_refused() {
        let error = load(r#"{"profile":"tiny","tags":{"__proto__":"x"}}"#).unwrap_err();
        assert!(error_lines(&error)[0].starts_with("tags.__proto__: reserved key"));
    }

    #[test]
    fn non_object_files_are_refused() {
        let error = load("[1,2]").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("must be a JSON object, got an array")
        );
        let error = load("{nope").unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }));
    }

    #[test]
    fn duplicate_keys_are_an_error_naming_the_key_and_both_places() {
        let error = load("{\"profile\":\"tiny\",\n\"scheduler\":{\"maxQueue\":8,\"maxQueue\":9},\n\"profile\":\"sub1b\"}")
            .unwrap_err();
        let lines = error_lines(&error);
        assert_eq!(
            lines,
            vec![
                "scheduler.maxQueue: the key appears twice in one object, at line 2 column 14 and \
                 line 2 column 27; keep one"
                    .to_string(),
                "profile: the key appears twice in one object, at line 1 column 2 and line 3 \
                 column 1; keep one"
                    .to_string(),
            ]
        );
    }

    #[test]
    fn a_byte_order_mark_is_accepted() {
        let loaded = load("\u{feff}{\"profile\":\"tiny\"}").unwrap();
        assert_eq!(loaded.config.profile.as_str(), "tiny");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ray.json");
        std::fs::write(&path, b"\xef\xbb\xbf{\"profile\":\"tiny\"}").unwrap();
        let loaded = ConfigLoader::new().with_file(&path).load().unwrap();
        assert_eq!(loaded.config.profile.as_str(), "tiny");
    }

    #[test]
    fn out_of_range_integers_name_the_range() {
        let error = load(r#"{"scheduler":{"maxQueue":18446744073709551615}}"#).unwrap_err();
        let lines = error_lines(&error);
        assert!(
            lines.iter().any(|l| l.starts_with("scheduler.maxQueue:")
                && l.contains("18446744073709551615")
                && l.contains("a whole number from 0 to 4294967295")),
            "{lines:?}"
        );
        let error = ConfigLoader::new()
            .with_env([("RAY_SCHEDULER_MAX_QUEUE", "18446744073709551615")])
            .load()
            .unwrap_err();
        let lines = error_lines(&error);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("a whole number from 0 to 4294967295")),
            "{lines:?}"
        );
    }

    #[test]
    fn ray_model_id_names_the_backend_model_too() {
        let loaded = ConfigLoader::new()
            .with_json("t", r#"{"profile":"sub1b"}"#)
            .with_env([("RAY_MODEL_ID", "local-1b-q4")])
            .load()
            .unwrap();
        let http = loaded.config.model.adapter.http().unwrap();
        assert_eq!(http.model_ref, "local-1b-q4");
        let launch = loaded.config.model.adapter.launch_profile().unwrap();
        assert_eq!(launch.alias.as_deref(), Some("local-1b-q4"));
    }

    #[test]
    fn moving_llama_server_moves_the_base_url() {
        let loaded = ConfigLoader::new()
            .with_env([("RAY_LLAMA_CPP_PORT", "8099")])
            .load()
            .unwrap();
        assert_eq!(
            loaded.config.model.adapter.http().unwrap().base_url,
            "http://127.0.0.1:8099"
        );
    }

    #[test]
    fn misspelled_variables_warn() {
        let loaded = ConfigLoader::new()
            .with_env([("RAY_SCHEDULER_MAX_QUEUES", "3")])
            .load()
            .unwrap();
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w.severity == Severity::Warning
                    && w.message.contains("RAY_SCHEDULER_MAX_QUEUES"))
        );
    }

    #[test]
    fn relative_storage_dir_is_resolved() {
        let loaded = ConfigLoader::new()
            .with_base_dir("/srv/ray")
            .load()
            .unwrap();
        assert_eq!(
            loaded.config.async_queue.storage_dir,
            "/srv/ray/.ray/async-queue"
        );
    }

    #[test]
    fn headers_are_redacted() {
        let loaded = load(
            r#"{"profile":"vps","model":{"adapter":{"kind":"openai-compatible","headers":{"X-Token":"secret"}}}}"#,
        )
        .unwrap();
        let json = redacted_json(&loaded.config);
        assert_eq!(json["model"]["adapter"]["headers"]["X-Token"], "[redacted]");
    }
}
