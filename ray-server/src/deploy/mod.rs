//! What the deploy subcommands (`render`, `doctor`, `stage-model`, supervised mode) agree on:
//! the fixed paths of a VPS install, the `llama-server` command line generated from the launch
//! profile ([`launch`]), and the memory split between the gateway and `llama-server`
//! ([`memory`]).

pub mod envfile;
pub mod launch;
pub mod memory;
pub mod nats;
pub mod options;

/// Where the config lives on the VPS.
pub const CONFIG_PATH: &str = "/etc/ray/ray.json";
/// The systemd `EnvironmentFile` with `RAY_*` variables and secrets (API keys).
pub const ENV_FILE_PATH: &str = "/etc/ray/ray.env";
/// The gateway binary.
pub const GATEWAY_BINARY_PATH: &str = "/usr/local/bin/ray-server";
/// The state directory (systemd `StateDirectory=ray`): job records and the working directory.
pub const STATE_DIR: &str = "/var/lib/ray";
/// Where models are staged.
pub const MODEL_DIR: &str = "/var/lib/ray/models";
/// The directory systemd units are installed in.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// The gateway unit's file name.
pub const GATEWAY_UNIT: &str = "ray-gateway.service";
/// The `llama-server` unit's file name.
pub const LLAMA_UNIT: &str = "ray-llama-cpp.service";
/// Caddy's config file as installed by Debian's `caddy` package.
pub const CADDYFILE_PATH: &str = "/etc/caddy/Caddyfile";
/// The service user, unless `--user` says otherwise.
pub const DEFAULT_USER: &str = "ray";
/// The public domain, unless `--domain` says otherwise.
pub const DEFAULT_DOMAIN: &str = "ray.local";
/// Directories a unit with `ProtectHome=true` and `PrivateTmp=true` cannot use.
pub const HIDDEN_PREFIXES: &[&str] = &["/home", "/root", "/run/user", "/tmp", "/var/tmp"];
/// Directories a unit with `ProtectSystem=full` sees read-only.
pub const READ_ONLY_PREFIXES: &[&str] = &["/usr", "/boot", "/efi", "/etc"];

/// Whether `path` is `prefix` or below it.
pub fn is_under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}
