//! Measured footprints, kept in the state directory so a restart starts from what the box
//! actually saw rather than the estimate.
//!
//! One small JSON file (`footprints.json`), written whole through a temporary file and a
//! rename. Each model's entry carries a key made of what sizes the process (the model file's
//! path, size and modification time, and the context, slots and batch settings): a changed
//! model or launch profile makes the entry stale, and the estimate applies again until the
//! next load is measured. A missing or unreadable file is an empty store.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ray_core::config::LaunchProfile;
use serde::{Deserialize, Serialize};

/// The file name in the state directory.
const FILE: &str = "footprints.json";

/// What one load of a model measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measured {
    /// [`footprint_key`] of the launch profile it was measured with.
    pub key: String,
    /// The child's RSS after warm-up, in MiB.
    #[serde(rename = "loadMiB")]
    pub load_mib: u64,
    /// How long the load took (process start to the first answer after warm-up), in ms.
    pub load_ms: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    #[serde(default)]
    models: BTreeMap<String, Measured>,
}

/// The measured footprints of the managed models.
#[derive(Debug)]
pub struct MeasuredFootprints {
    path: Option<PathBuf>,
    file: File,
}

/// What sizes a `llama-server` process for `launch`: the model file (path, size, modification
/// time) and the settings that size its buffers.
pub fn footprint_key(launch: &LaunchProfile) -> String {
    let (size, modified) = std::fs::metadata(&launch.model_path)
        .map(|meta| {
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            (meta.len(), modified)
        })
        .unwrap_or((0, 0));
    format!(
        "{}|{size}|{modified}|ctx={}|parallel={}|batch={}|ubatch={}|cacheRam={:?}",
        launch.model_path,
        launch.ctx_size,
        launch.parallel,
        launch.batch_size,
        launch.ubatch_size,
        launch.cache_ram_mib,
    )
}

impl MeasuredFootprints {
    /// A store that keeps nothing on disk.
    pub fn in_memory() -> MeasuredFootprints {
        MeasuredFootprints {
            path: None,
            file: File::default(),
        }
    }

    /// The store in `dir` (created on the first write). A file that cannot be read or parsed
    /// is logged and treated as empty: the estimates apply until the next loads.
    pub fn open(dir: &Path) -> MeasuredFootprints {
        let path = dir.join(FILE);
        let file = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                tracing::warn!(
                    path = %path.display(),
                    error = %error,
                    "the measured footprints cannot be read; estimating again"
                );
                File::default()
            }),
            Err(_) => File::default(),
        };
        MeasuredFootprints {
            path: Some(path),
            file,
        }
    }

    /// What was measured for `model` with the launch profile whose key is `key`.
    pub fn get(&self, model: &str, key: &str) -> Option<&Measured> {
        self.file.models.get(model).filter(|m| m.key == key)
    }

    /// Records a measurement and writes the file (temporary file, fsync, rename).
    pub fn record(&mut self, model: &str, measured: Measured) -> std::io::Result<()> {
        self.file.models.insert(model.to_string(), measured);
        let Some(path) = &self.path else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = path.with_extension(format!("json.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(&self.file).map_err(std::io::Error::other)?;
        let result = (|| {
            let mut out = std::fs::File::create(&temp)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_measurement_survives_a_restart_until_the_model_changes() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MeasuredFootprints::open(dir.path());
        assert_eq!(store.get("a", "k1"), None);
        let measured = Measured {
            key: "k1".into(),
            load_mib: 812,
            load_ms: 1_450,
        };
        store.record("a", measured.clone()).unwrap();
        let reopened = MeasuredFootprints::open(dir.path());
        assert_eq!(reopened.get("a", "k1"), Some(&measured));
        assert_eq!(reopened.get("a", "k2"), None, "another launch profile");

        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert_eq!(MeasuredFootprints::open(dir.path()).get("a", "k1"), None);
    }

    #[test]
    fn the_key_follows_the_model_file_and_the_sizing_settings() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"GGUF").unwrap();
        let config = ray_core::config::profile_defaults(ray_core::config::Profile::Sub1b);
        let mut launch = config.model.adapter.launch_profile().unwrap().clone();
        launch.model_path = model.display().to_string();
        let before = footprint_key(&launch);
        assert_eq!(before, footprint_key(&launch));
        launch.ctx_size *= 2;
        assert_ne!(before, footprint_key(&launch));
        launch.ctx_size /= 2;
        std::fs::write(&model, b"GGUF and more").unwrap();
        assert_ne!(before, footprint_key(&launch));
    }
}
