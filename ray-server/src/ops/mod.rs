//! The operator tools: each subcommand of `ray-server` that prepares or checks a host, in its
//! own module. They read the config through `ray-core` and never import the gateway.
//!
//! - [`check`]: `check-config`, every problem of a config file and the memory fit.
//! - [`render`]: systemd units, Caddyfile and env file for a config.
//! - [`doctor`]: host and config checks before and after a deploy.
//! - [`stage`]: `stage-model`, installing a `llama-server` binary and a GGUF model.
//! - [`swap`]: `swap-plan`, swap and `vm.swappiness` for a small box.
//! - [`bench`](mod@bench): replay a workload against a running gateway.
//! - [`provision`]: a box set up from a manifest (models, config, units), idempotently.
//! - [`reload`]: `reload`, asking the running gateway to read its config again.
//! - [`deploy`]: what the deploy tools share (paths, the `llama-server` command line, the
//!   memory split, the env file), [`host`] the machine read below a root directory, [`gguf`]
//!   the GGUF header reader, [`progress`] the progress line of long steps, and [`fs`] atomic
//!   writes and the one report of a config that would not load.

pub mod bench;
pub mod check;
pub mod deploy;
pub mod doctor;
pub mod fs;
pub mod gguf;
pub mod host;
pub mod progress;
pub mod provision;
pub mod reload;
pub mod render;
pub mod stage;
pub mod swap;
