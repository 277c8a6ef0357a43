//! What every check reads and writes: the host, the arguments, what earlier checks found
//! (the env file, the loaded config, the service user, the memory split, the model header),
//! and the findings.

use std::path::PathBuf;

use ray_core::config::{LaunchProfile, LoadedConfig, RayConfig};

use super::{DoctorArgs, Finding, Level};
use crate::ops::deploy::envfile::EnvFile;
use crate::ops::deploy::memory::MemorySplit;
use crate::ops::gguf::GgufInfo;
use crate::ops::host::{Host, User};

/// The state of one doctor run.
pub(super) struct Ctx<'a> {
    pub(super) host: &'a Host,
    pub(super) args: &'a DoctorArgs,
    pub(super) env_path: PathBuf,
    pub(super) env_file: Option<EnvFile>,
    pub(super) loaded: Option<LoadedConfig>,
    pub(super) user: Option<User>,
    pub(super) split: Option<MemorySplit>,
    pub(super) model: Option<Result<GgufInfo, String>>,
    pub(super) findings: Vec<Finding>,
}

impl Ctx<'_> {
    pub(super) fn push(
        &mut self,
        check: &'static str,
        level: Level,
        code: &'static str,
        message: String,
    ) {
        self.findings.push(Finding {
            check,
            level,
            code,
            message,
        });
    }

    pub(super) fn ok(
        &mut self,
        check: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) {
        self.push(check, Level::Ok, code, message.into());
    }

    pub(super) fn config(&self) -> Option<&RayConfig> {
        self.loaded.as_ref().map(|l| &*l.config)
    }

    pub(super) fn launch(&self) -> Option<LaunchProfile> {
        self.config()?.model.adapter.launch_profile().cloned()
    }

    pub(super) fn config_flag(&self) -> String {
        self.args.deploy.config.display().to_string()
    }
}
