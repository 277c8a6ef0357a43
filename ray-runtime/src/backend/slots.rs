//! A managed model's prompt cache kept across a swap: before the lifecycle unloads a
//! `llama-server` child, each of its slots is saved to `launchProfile.slotSavePath`
//! (`POST /slots/{id}?action=save`); after the next load, the saved slots are restored
//! (`?action=restore`), so the first request after a swap finds its prompt in the cache rather
//! than processing it again, which on a 2-vCPU box can cost more than the load itself.
//!
//! The files are named `<model>.<fingerprint>.slot<N>.bin`. The fingerprint covers the model
//! file (path, size, modification time), the `llama-server` binary and the context layout
//! (`ctxSize`, `parallel`): a cache saved for another model file, another build or another
//! layout is never restored, and is removed at the next save. Saving and restoring are best
//! effort: a failure is logged and the swap goes on, only the cache is lost.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use ray_core::config::LaunchProfile;
use serde::Deserialize;

/// How long one slot's save or restore may take.
const SLOT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a save or a restore did, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotReport {
    /// Slots that held tokens and were saved, or that were restored.
    pub slots: u32,
    /// Tokens saved or restored, over every slot.
    pub tokens: u64,
    /// Bytes written or read.
    pub bytes: u64,
    /// Slots whose save or restore failed, with the first failure.
    pub failed: u32,
    /// The first failure's message.
    pub error: Option<String>,
}

impl SlotReport {
    fn fail(&mut self, message: String) {
        self.failed += 1;
        self.error.get_or_insert(message);
    }
}

/// The slot files of one model.
#[derive(Debug, Clone)]
pub struct SlotFiles {
    dir: PathBuf,
    id: String,
    base_url: String,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    n_saved: Option<u64>,
    #[serde(default)]
    n_restored: Option<u64>,
    #[serde(default)]
    n_written: Option<u64>,
    #[serde(default)]
    n_read: Option<u64>,
}

/// The model id as a file-name part: ASCII letters, digits, `-` and `_` only (no `.`, so
/// `<id>.` never prefixes another model's files).
fn safe_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn file_stamp(path: &str) -> String {
    std::fs::metadata(path).map_or_else(
        |_| "missing".to_string(),
        |m| {
            let modified = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .unwrap_or_default();
            format!("{}:{}", m.len(), modified.as_nanos())
        },
    )
}

/// What a saved cache is valid for: the model file, the binary and the context layout.
pub fn fingerprint(launch: &LaunchProfile) -> String {
    let model = file_stamp(&launch.model_path);
    let binary = file_stamp(&launch.binary_path);
    let layout = format!("{}:{}", launch.ctx_size, launch.parallel);
    format!(
        "{:016x}",
        crate::ids::fnv1a(&[
            launch.model_path.as_bytes(),
            model.as_bytes(),
            launch.binary_path.as_bytes(),
            binary.as_bytes(),
            layout.as_bytes(),
        ])
    )
}

/// Creates `launch.slotSavePath` when it is set and missing: `llama-server` refuses to start
/// with a directory that does not exist.
pub fn prepare_dir(launch: &LaunchProfile) -> Result<(), String> {
    match &launch.slot_save_path {
        Some(dir) => std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create launchProfile.slotSavePath {dir}: {e}")),
        None => Ok(()),
    }
}

impl SlotFiles {
    /// The slot files of model `id` run with `launch`, when it has a `slotSavePath`.
    pub fn of(id: &str, launch: &LaunchProfile) -> Option<SlotFiles> {
        let dir = launch.slot_save_path.as_ref()?;
        Some(SlotFiles {
            dir: PathBuf::from(dir),
            id: safe_id(id),
            base_url: super::run::base_url(launch),
        })
    }

    /// The directory the files go to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name of slot `slot` for a cache with `fingerprint`.
    pub fn file_name(&self, fingerprint: &str, slot: u32) -> String {
        format!("{}.{fingerprint}.slot{slot}.bin", self.id)
    }

    /// Removes this model's files whose fingerprint is not `keep`.
    fn remove_stale(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!("{}.", self.id);
        let current = format!("{}.{keep}.", self.id);
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&prefix) && name.ends_with(".bin") && !name.starts_with(&current) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    async fn action(
        &self,
        client: &reqwest::Client,
        slot: u32,
        action: &str,
        file: &str,
    ) -> Result<Answer, String> {
        let url = format!("{}/slots/{slot}?action={action}", self.base_url);
        let response = client
            .post(url)
            .timeout(SLOT_TIMEOUT)
            .json(&serde_json::json!({ "filename": file }))
            .send()
            .await
            .map_err(|e| format!("slot {slot}: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!(
                "slot {slot}: {action} answered {status}: {}",
                text.chars().take(200).collect::<String>()
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("slot {slot}: {action} answer: {e}"))
    }

    /// Saves each of `launch.parallel` slots of the running child. A slot with no tokens
    /// leaves no file. Files of another fingerprint are removed first.
    pub async fn save(&self, launch: &LaunchProfile) -> SlotReport {
        let mut report = SlotReport::default();
        if let Err(error) = std::fs::create_dir_all(&self.dir) {
            report.fail(format!("cannot create {}: {error}", self.dir.display()));
            return report;
        }
        let print = fingerprint(launch);
        self.remove_stale(&print);
        let client = reqwest::Client::new();
        for slot in 0..launch.parallel {
            let file = self.file_name(&print, slot);
            match self.action(&client, slot, "save", &file).await {
                Ok(answer) if answer.n_saved.unwrap_or(0) > 0 => {
                    report.slots += 1;
                    report.tokens += answer.n_saved.unwrap_or(0);
                    report.bytes += answer.n_written.unwrap_or(0);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(self.dir.join(&file));
                }
                Err(error) => {
                    let _ = std::fs::remove_file(self.dir.join(&file));
                    report.fail(error);
                }
            }
        }
        report
    }

    /// Restores the slots saved for this fingerprint into the freshly loaded child.
    pub async fn restore(&self, launch: &LaunchProfile) -> SlotReport {
        let mut report = SlotReport::default();
        let print = fingerprint(launch);
        let client = reqwest::Client::new();
        for slot in 0..launch.parallel {
            let file = self.file_name(&print, slot);
            if !self.dir.join(&file).is_file() {
                continue;
            }
            match self.action(&client, slot, "restore", &file).await {
                Ok(answer) => {
                    report.slots += 1;
                    report.tokens += answer.n_restored.unwrap_or(0);
                    report.bytes += answer.n_read.unwrap_or(0);
                }
                Err(error) => report.fail(error),
            }
        }
        report
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The `sub1b` profile's launch profile.
    pub(crate) fn sub1b_launch() -> LaunchProfile {
        ray_core::config::profile_defaults(ray_core::config::Profile::Sub1b)
            .model
            .adapter
            .launch_profile()
            .unwrap()
            .clone()
    }

    fn launch(dir: &Path, model: &Path) -> LaunchProfile {
        let mut launch = sub1b_launch();
        launch.model_path = model.display().to_string();
        launch.slot_save_path = Some(dir.display().to_string());
        launch
    }

    #[test]
    fn names_are_per_model_and_change_with_the_model_file_and_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"one").unwrap();
        let mut one = launch(dir.path(), &model);
        let files = SlotFiles::of("org/model.v1", &one).unwrap();
        let print = fingerprint(&one);
        assert_eq!(print.len(), 16);
        assert_eq!(
            files.file_name(&print, 1),
            format!("org_model_v1.{print}.slot1.bin")
        );
        assert_eq!(fingerprint(&one), print, "stable");
        one.parallel += 1;
        assert_ne!(fingerprint(&one), print, "another layout");
        one.parallel -= 1;
        std::fs::write(&model, b"another model").unwrap();
        assert_ne!(fingerprint(&one), print, "another model file");
        one.slot_save_path = None;
        assert!(SlotFiles::of("m", &one).is_none());
    }

    #[test]
    fn stale_files_of_the_model_go_and_other_models_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"one").unwrap();
        let launch = launch(dir.path(), &model);
        let files = SlotFiles::of("a", &launch).unwrap();
        for name in [
            "a.0000000000000001.slot0.bin",
            "a.keep.slot0.bin",
            "a_b.0000000000000001.slot0.bin",
            "ab.0000000000000001.slot0.bin",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        files.remove_stale("keep");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".bin"))
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "a.keep.slot0.bin",
                "a_b.0000000000000001.slot0.bin",
                "ab.0000000000000001.slot0.bin"
            ]
        );
    }

    #[tokio::test]
    async fn a_child_that_does_not_answer_is_a_failure_and_no_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"one").unwrap();
        let mut launch = launch(&dir.path().join("slots"), &model);
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        launch.port = listener.local_addr().unwrap().port();
        drop(listener);
        let files = SlotFiles::of("m", &launch).unwrap();
        let saved = files.save(&launch).await;
        assert_eq!(saved.slots, 0);
        assert_eq!(saved.failed, launch.parallel);
        assert!(saved.error.unwrap().starts_with("slot 0:"));
        assert_eq!(std::fs::read_dir(files.dir()).unwrap().count(), 0);
        // Nothing saved: nothing to restore, and no request is made.
        let restored = files.restore(&launch).await;
        assert_eq!(restored, SlotReport::default());
    }
}
