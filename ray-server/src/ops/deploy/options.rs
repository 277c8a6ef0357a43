//! The options `render` and `doctor` share: which config, which host identity (domain, user),
//! which memory budget, and the paths written into the units.

use std::path::{Path, PathBuf};

use clap::Args;
use ray_core::config::{ConfigError, ConfigLoader, LoadedConfig};

use super::envfile::EnvFile;
use super::{CONFIG_PATH, DEFAULT_DOMAIN, DEFAULT_USER, ENV_FILE_PATH, GATEWAY_BINARY_PATH};

/// How the deployment looks: the config and what the units and the Caddyfile say.
#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// The config file to deploy (JSON).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// An environment file whose RAY_* config variables override the config, as the service
    /// will see them, and whose RAY_POLICY_FILE names the host policy the config is clamped
    /// to (over the config's policyFile). render reads nothing else from it (no keys); doctor also checks its keys and
    /// permissions, and reads the installed --systemd-env-file when this is not given.
    #[arg(long, visible_alias = "env-file", value_name = "FILE")]
    pub ray_env_file: Option<PathBuf>,
    /// The public domain Caddy serves (and gets a certificate for).
    #[arg(long, env = "RAY_DEPLOY_DOMAIN", default_value = DEFAULT_DOMAIN)]
    pub domain: String,
    /// The user the services run as (a name or a uid; not root).
    #[arg(long, env = "RAY_DEPLOY_SERVICE_USER", default_value = DEFAULT_USER)]
    pub user: String,
    /// The memory budget in MiB split between the gateway and llama-server [default:
    /// model.operational.memoryClassMiB, else 4096 for the small-VPS presets, else 8192].
    #[arg(long, env = "RAY_DEPLOY_MEMORY_MIB", value_name = "MIB",
          value_parser = clap::value_parser!(u64).range(512..=1_048_576))]
    pub memory_mib: Option<u64>,
    /// The config path written into the gateway unit.
    #[arg(long, value_name = "PATH", default_value = CONFIG_PATH)]
    pub config_path: String,
    /// The EnvironmentFile path written into the units.
    #[arg(long, value_name = "PATH", default_value = ENV_FILE_PATH)]
    pub systemd_env_file: String,
    /// The gateway binary written into the gateway unit.
    #[arg(long, value_name = "PATH", default_value = GATEWAY_BINARY_PATH)]
    pub gateway_binary: String,
}

/// Why the inputs of a deploy command are unusable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// A flag has a bad value.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, e.g. `--domain`.
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The environment file cannot be read or parsed.
    #[error(transparent)]
    EnvFile(#[from] super::envfile::EnvFileError),
    /// The config does not load.
    #[error("{0}")]
    Config(#[from] ConfigError),
}

impl DeployArgs {
    /// Checks the flags that end up in generated files.
    pub fn check(&self) -> Result<(), DeployError> {
        check_domain(&self.domain)?;
        check_user(&self.user)?;
        for (flag, path) in [
            ("--config-path", &self.config_path),
            ("--systemd-env-file", &self.systemd_env_file),
            ("--gateway-binary", &self.gateway_binary),
        ] {
            if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
                return Err(DeployError::Flag {
                    flag,
                    message: format!(
                        "must be an absolute path without spaces or control characters, got {path:?}"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Loads the config as the service will: the file, then the env file's config variables
    /// (not this shell's), with relative paths resolved against the service's working
    /// directory, under the host policy the env file names (`RAY_POLICY_FILE`), else the one
    /// the config names (`policyFile`).
    pub fn load(&self, env_file: Option<&Path>) -> Result<LoadedConfig, DeployError> {
        self.load_below(env_file, Path::new("/"))
    }

    /// [`DeployArgs::load`] for a host seen below `root`: the policy file is read below `root`
    /// too.
    pub fn load_below(
        &self,
        env_file: Option<&Path>,
        root: &Path,
    ) -> Result<LoadedConfig, DeployError> {
        let mut loader = ConfigLoader::new()
            .with_file(&self.config)
            .with_base_dir(super::STATE_DIR)
            .with_policy_root(root);
        if let Some(path) = env_file {
            // RAY_POLICY_FILE is among the config variables: it sets `policyFile`.
            loader = loader.with_env(EnvFile::read(path)?.config_overrides());
        }
        Ok(loader.load()?)
    }
}

/// A Caddy site address: a host name or IP address, optionally with a port.
pub fn check_domain(domain: &str) -> Result<(), DeployError> {
    let host = domain.rsplit_once(':').map_or(domain, |(host, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) && !port.is_empty() {
            host
        } else {
            domain
        }
    });
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(())
    } else {
        Err(DeployError::Flag {
            flag: "--domain",
            message: format!("must be a host name such as ray.example.com, got {domain:?}"),
        })
    }
}

/// A service user: a POSIX user name or a numeric uid, not root.
pub fn check_user(user: &str) -> Result<(), DeployError> {
    if user == "root" || user == "0" {
        return Err(DeployError::Flag {
            flag: "--user",
            message: "the services must not run as root: their hardening assumes an \
                      unprivileged user (create one with useradd --system ray)"
                .into(),
        });
    }
    let numeric = !user.is_empty() && user.chars().all(|c| c.is_ascii_digit());
    let name = !user.is_empty()
        && user.len() <= 32
        && user.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if numeric || name {
        Ok(())
    } else {
        Err(DeployError::Flag {
            flag: "--user",
            message: format!("must be a user name such as ray, or a uid, got {user:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_users() {
        for good in ["ray.example.com", "localhost", "10.0.0.1", "ray.local:8443"] {
            assert!(check_domain(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "ray example.com",
            "ray.example.com {",
            "-x.com",
            "a..b",
            "x:y",
        ] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
        for good in ["ray", "_svc", "ray-gw", "1001"] {
            assert!(check_user(good).is_ok(), "{good}");
        }
        for bad in ["root", "0", "", "Ray", "ray user", "9abc!"] {
            assert!(check_user(bad).is_err(), "{bad}");
        }
    }
}
