//! The provisioning manifest: the models (where each goes, where it comes from, its SHA-256
//! and launch profile), the routing rules, the rest of the Ray config, and the deploy target.
//! Unknown fields are refused, so a misspelt field is an error rather than a silent default.

use std::path::{Path, PathBuf};

use ray_core::config::{Profile, profile_defaults};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ops::deploy::{CADDYFILE_PATH, CONFIG_PATH, DEFAULT_DOMAIN, DEFAULT_USER};
use crate::ops::deploy::{ENV_FILE_PATH, GATEWAY_BINARY_PATH, UNIT_DIR};

/// The largest manifest read.
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// A provisioning manifest (`docs/operations.md`, "Provisioning from a manifest").
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// The Ray profile (`sub1b`, `1b`, ...); the config's own `profile` otherwise.
    #[serde(default)]
    pub profile: Option<String>,
    /// The rest of the Ray config (server, auth, lifecycle, defaultModel, ...), under what the
    /// manifest sets itself (`models`, `routing`, `profile`).
    #[serde(default)]
    pub config: Option<Map<String, Value>>,
    /// The models, at least one.
    pub models: Vec<ManifestModel>,
    /// The Ray config's `routing` section (rules, cooldowns).
    #[serde(default)]
    pub routing: Option<Value>,
    /// Where everything is written.
    #[serde(default)]
    pub target: Target,
}

/// One model of the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestModel {
    /// The model's id in the Ray config.
    pub id: String,
    /// Where the GGUF file lives on the box (absolute; below `target.root`).
    pub path: String,
    /// Where to get it when it is missing: `http://`, `https://` or `file://`.
    #[serde(default)]
    pub url: Option<String>,
    /// Its SHA-256 (64 hex characters).
    pub sha256: String,
    /// Its llama.cpp launch profile (`modelPath` is set from `path`).
    #[serde(default)]
    pub launch_profile: Map<String, Value>,
    /// Other fields of its entry in the Ray config (aliases, scheduler, resident, ...).
    #[serde(default)]
    pub entry: Map<String, Value>,
}

/// Where provisioning writes: the paths `render` installs to, below a root.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// Every path below is written below this directory (`/` on the box; a relative root is
    /// taken from the manifest's directory).
    #[serde(default = "default_root")]
    pub root: String,
    /// The Ray config written.
    #[serde(default = "default_config_path")]
    pub config_path: String,
    /// The directory of the systemd units.
    #[serde(default = "default_unit_dir")]
    pub unit_dir: String,
    /// Caddy's config.
    #[serde(default = "default_caddyfile")]
    pub caddyfile_path: String,
    /// The environment file (written only when missing: it holds the keys).
    #[serde(default = "default_env_file")]
    pub env_file: String,
    /// The gateway binary the unit starts.
    #[serde(default = "default_gateway_binary")]
    pub gateway_binary: String,
    /// The public domain Caddy serves.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// The service user.
    #[serde(default = "default_user")]
    pub user: String,
    /// The memory budget split between the gateway and llama-server, as `render
    /// --memory-mib` (default: as render's).
    #[serde(default, rename = "memoryMiB")]
    pub memory_mib: Option<u64>,
    /// The host policy to check against (below `root`); default `RAY_POLICY_FILE`, else the
    /// config's `policyFile` (below `root`), else `/etc/ray/policy.json` when it exists.
    #[serde(default)]
    pub policy_file: Option<String>,
}

fn default_root() -> String {
    "/".into()
}
fn default_config_path() -> String {
    CONFIG_PATH.into()
}
fn default_unit_dir() -> String {
    UNIT_DIR.into()
}
fn default_caddyfile() -> String {
    CADDYFILE_PATH.into()
}
fn default_env_file() -> String {
    ENV_FILE_PATH.into()
}
fn default_gateway_binary() -> String {
    GATEWAY_BINARY_PATH.into()
}
fn default_domain() -> String {
    DEFAULT_DOMAIN.into()
}
fn default_user() -> String {
    DEFAULT_USER.into()
}

impl Default for Target {
    fn default() -> Self {
        Target {
            root: default_root(),
            config_path: default_config_path(),
            unit_dir: default_unit_dir(),
            caddyfile_path: default_caddyfile(),
            env_file: default_env_file(),
            gateway_binary: default_gateway_binary(),
            domain: default_domain(),
            user: default_user(),
            memory_mib: None,
            policy_file: None,
        }
    }
}

/// A problem with the manifest: the field's path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The field, e.g. `models[0].sha256` (empty for the whole file).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ManifestError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
        ManifestError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Manifest {
    /// Reads, parses and checks the manifest at `path`.
    pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| ManifestError::new("", format!("{}: {e}", path.display())))?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::new(
                "",
                format!("{}: larger than {MAX_MANIFEST_BYTES} bytes", path.display()),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ManifestError::new("", format!("{}: {e}", path.display())))?;
        let mut deserializer = serde_json::Deserializer::from_str(&text);
        let mut manifest: Manifest =
            serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." { String::new() } else { field };
                ManifestError::new(field, e.into_inner().to_string())
            })?;
        if !Path::new(&manifest.target.root).is_absolute() {
            let base = path.parent().unwrap_or_else(|| Path::new("."));
            let root = std::path::absolute(base.join(&manifest.target.root))
                .map_err(|e| ManifestError::new("target.root", e.to_string()))?;
            manifest.target.root = root.display().to_string();
        }
        manifest.check()?;
        Ok(manifest)
    }

    fn check(&mut self) -> Result<(), ManifestError> {
        if self.models.is_empty() {
            return Err(ManifestError::new("models", "lists no model"));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, model) in self.models.iter_mut().enumerate() {
            let field = |name: &str| format!("models[{i}].{name}");
            if model.id.trim().is_empty() {
                return Err(ManifestError::new(field("id"), "must not be empty"));
            }
            if !ids.insert(model.id.clone()) {
                return Err(ManifestError::new(
                    field("id"),
                    format!("{:?} is listed twice", model.id),
                ));
            }
            check_path(&field("path"), &model.path)?;
            model.sha256 = crate::ops::stage::normalise_sha(&field("sha256"), Some(&model.sha256))
                .map_err(|message| {
                    ManifestError::new(
                        field("sha256"),
                        message
                            .split_once(": ")
                            .map_or(message.clone(), |(_, m)| m.into()),
                    )
                })?
                .unwrap_or_default();
            if let Some(url) = &model.url
                && !["http://", "https://", "file://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
            {
                return Err(ManifestError::new(
                    field("url"),
                    format!("must start with http://, https:// or file://, got {url:?}"),
                ));
            }
            if model.launch_profile.contains_key("modelPath") {
                return Err(ManifestError::new(
                    field("launchProfile.modelPath"),
                    "is set from the model's path; leave it out",
                ));
            }
        }
        let t = &self.target;
        for (name, value) in [
            ("target.configPath", &t.config_path),
            ("target.unitDir", &t.unit_dir),
            ("target.caddyfilePath", &t.caddyfile_path),
            ("target.envFile", &t.env_file),
            ("target.gatewayBinary", &t.gateway_binary),
        ] {
            check_path(name, value)?;
        }
        if let Some(policy) = &t.policy_file {
            check_path("target.policyFile", policy)?;
        }
        Ok(())
    }

    /// The root directory everything is written below.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(&self.target.root)
    }

    /// `path` (absolute on the box) below the root.
    pub fn below_root(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    /// The Ray config the manifest describes, as JSON: `config`, then `profile`, `models`
    /// (each with a llama.cpp adapter whose launch profile is the profile's, with the alias set
    /// to the id, under the manifest's `launchProfile`, pointing at the model's path) and
    /// `routing`.
    pub fn ray_config(&self) -> Value {
        let mut config = self.config.clone().unwrap_or_default();
        if let Some(profile) = &self.profile {
            config.insert("profile".into(), Value::String(profile.clone()));
        }
        let profile = config
            .get("profile")
            .and_then(Value::as_str)
            .and_then(Profile::parse)
            .unwrap_or(Profile::Sub1b);
        let defaults = serde_json::to_value(profile_defaults(profile))
            .ok()
            .and_then(
                |config| match config.pointer("/model/adapter/launchProfile") {
                    Some(Value::Object(launch)) => Some(launch.clone()),
                    _ => None,
                },
            )
            .unwrap_or_default();
        let models: Vec<Value> = self
            .models
            .iter()
            .map(|model| {
                // The profile's launch profile, under what the manifest sets.
                let mut launch = defaults.clone();
                launch.insert("alias".into(), Value::String(model.id.clone()));
                launch.extend(model.launch_profile.clone());
                launch.insert("modelPath".into(), Value::String(model.path.clone()));
                let mut adapter = Map::new();
                adapter.insert("kind".into(), Value::String("llama.cpp".into()));
                if let Some(port) = launch.get("port").and_then(Value::as_u64) {
                    let host = launch
                        .get("host")
                        .and_then(Value::as_str)
                        .unwrap_or("127.0.0.1");
                    adapter.insert(
                        "baseUrl".into(),
                        Value::String(format!("http://{host}:{port}")),
                    );
                }
                adapter.insert("launchProfile".into(), Value::Object(launch));
                let mut entry = Map::new();
                entry.insert("id".into(), Value::String(model.id.clone()));
                entry.insert("adapter".into(), Value::Object(adapter));
                let mut entry = Value::Object(entry);
                merge(&mut entry, &Value::Object(model.entry.clone()));
                entry
            })
            .collect();
        config.insert("models".into(), Value::Array(models));
        if let Some(routing) = &self.routing {
            config.insert("routing".into(), routing.clone());
        }
        Value::Object(config)
    }
}

/// Deep-merges `patch` into `base` (objects key by key, anything else replaced).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

fn check_path(field: &str, path: &str) -> Result<(), ManifestError> {
    if !path.starts_with('/')
        || path.split('/').any(|part| part == "..")
        || path.chars().any(|c| c.is_control() || c == ' ')
    {
        return Err(ManifestError::new(
            field,
            format!(
                "must be an absolute path without `..`, spaces or control characters, got {path:?}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(json: &str) -> Result<Manifest, ManifestError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        std::fs::write(&path, json).unwrap();
        Manifest::read(&path)
    }

    #[test]
    fn every_problem_names_its_field() {
        let sha = "a".repeat(64);
        let error = parse(&format!(
            r#"{{"models":[{{"id":"m","path":"/m.gguf","sha256":"{sha}","sha":"x"}}]}}"#
        ))
        .unwrap_err();
        assert_eq!(error.field, "models[0].sha");
        assert!(error.message.contains("unknown field `sha`"), "{error:?}");
        let error =
            parse(r#"{"models":[{"id":"m","path":"/m.gguf","sha256":"abc"}]}"#).unwrap_err();
        assert_eq!(error.field, "models[0].sha256");
        let error = parse(&format!(
            r#"{{"models":[{{"id":"m","path":"m.gguf","sha256":"{sha}"}}]}}"#
        ))
        .unwrap_err();
        assert_eq!(error.field, "models[0].path");
        let error = parse(&format!(
            r#"{{"models":[{{"id":"m","path":"/m.gguf","sha256":"{sha}","url":"ftp://x"}}]}}"#
        ))
        .unwrap_err();
        assert_eq!(error.field, "models[0].url");
        let error = parse(r#"{"models":[],"target":{"unitDir":"x"}}"#).unwrap_err();
        assert_eq!(error.field, "models");
    }

    #[test]
    fn the_ray_config_points_each_launch_profile_at_the_model() {
        let sha = "A".repeat(64);
        let manifest = parse(&format!(
            r#"{{"profile":"sub1b","config":{{"server":{{"port":9000}}}},
                "models":[{{"id":"m","path":"/var/lib/ray/models/m.gguf","sha256":"{sha}",
                  "launchProfile":{{"port":8081,"supervise":true}},"entry":{{"aliases":["x"]}}}}],
                "routing":{{"rules":[]}}}}"#
        ))
        .unwrap();
        assert_eq!(manifest.models[0].sha256, "a".repeat(64));
        let config = manifest.ray_config();
        assert_eq!(config["profile"], "sub1b");
        assert_eq!(config["server"]["port"], 9000);
        let model = &config["models"][0];
        assert_eq!(model["aliases"][0], "x");
        assert_eq!(model["adapter"]["baseUrl"], "http://127.0.0.1:8081");
        assert_eq!(
            model["adapter"]["launchProfile"]["modelPath"],
            "/var/lib/ray/models/m.gguf"
        );
        assert_eq!(manifest.target.unit_dir, "/etc/systemd/system");
    }
}
