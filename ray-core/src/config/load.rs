//! Config layering: profile defaults, then the file, then `RAY_*` variables, then explicit
//! overrides; typed, path-resolved and validated, with every problem reported at once.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::env::{apply_env, pointer, set_pointer};
use super::profiles::{adapter_defaults, profile_defaults};
use super::types::*;
use super::validate::{Diagnostic, validate};

mod tree;

use tree::{expand_models, has_path, json_type, merge, type_config};

/// Largest config file accepted, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 256 * 1024;

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
    policy_root: Option<PathBuf>,
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

    /// Reads the host policy file (`policyFile` or `RAY_POLICY_FILE`) below `root`, as on a
    /// host seen from another machine or a test (`/etc/ray/policy.json` is read as
    /// `<root>/etc/ray/policy.json`); messages still name the path as written.
    pub fn with_policy_root(mut self, root: impl Into<PathBuf>) -> ConfigLoader {
        self.policy_root = Some(root.into());
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

        // 7. Paths, the host policy (`policyFile`, which `RAY_POLICY_FILE` sets over the
        //    file), and validation.
        let config = config.map(|mut config| {
            self.resolve_paths(&mut config);
            if let Some(path) = config.policy_file.clone() {
                match self.read_policy(&path) {
                    Ok(policy) => diagnostics.extend(super::validate::policy::apply_policy(
                        &mut config,
                        &policy,
                        &path,
                    )),
                    Err(why) => diagnostics.push(Diagnostic::error("policyFile", why)),
                }
            }
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

    /// Reads the host policy file `path` names (below the policy root, when one is set); the
    /// error says what is wrong with it.
    fn read_policy(&self, path: &str) -> Result<super::policy::HostPolicy, String> {
        if path.trim().is_empty() {
            return Err(
                "names no file; leave it out (and RAY_POLICY_FILE unset) for no host policy".into(),
            );
        }
        let on_host = match &self.policy_root {
            Some(root) => match Path::new(path).strip_prefix("/") {
                Ok(relative) => root.join(relative),
                Err(_) => PathBuf::from(path),
            },
            None => PathBuf::from(path),
        };
        super::policy::HostPolicy::read(&on_host)
            .map_err(|why| format!("the host policy file cannot be used: {why}"))
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
        if let Some(policy_file) = &mut config.policy_file {
            *policy_file = absolutise(policy_file);
        }
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
    } else if diagnostic.source.is_some() {
        // Set by an environment variable (or an override): say what to set it to, as for a
        // value from the profile.
        diagnostic.message = format!(
            "{}; set it to {}, or {}",
            diagnostic.message, cross.requirement, cross.alternative
        );
    }
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
mod tests;
