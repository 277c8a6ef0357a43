//! Shared helpers for the deploy tests: the example configs, the binary, external tools that
//! may be missing (reported as SKIPPED, never as passed), and a fabricated VPS for doctor.
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every example config, sorted.
pub fn example_configs() -> Vec<PathBuf> {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples/config"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    configs.sort();
    assert_eq!(configs.len(), 19, "{configs:?}");
    configs
}

/// The `ray-server` binary with no `RAY_*` variables from the developer's shell.
pub fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ray-server"));
    for (key, _) in std::env::vars() {
        if key.starts_with("RAY_") {
            command.env_remove(key);
        }
    }
    command
}

/// Where an external tool is, from PATH.
pub fn tool(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Says loudly that part of a test did not run (written past the test harness's capture so
/// it shows in a normal `cargo test`), and fails instead when `RAY_REQUIRE_DEPLOY_TOOLS=1`.
pub fn skipped(what: &str, reason: &str) {
    let mut stderr = std::io::stderr();
    let _ = writeln!(
        stderr,
        "\n!!! SKIPPED: {what} ({reason}); this check did not run and is not counted as passed."
    );
    assert!(
        std::env::var("RAY_REQUIRE_DEPLOY_TOOLS").as_deref() != Ok("1"),
        "RAY_REQUIRE_DEPLOY_TOOLS=1: {what} must run ({reason})"
    );
}

pub fn write_executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
