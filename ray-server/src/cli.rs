//! The operator CLI: `serve` (the default), `check-config`, `schema`, `print-config`, and the
//! deploy subcommands (`render`, `doctor`, `stage-model`, `swap-plan`, `bench`, `provision`)
//! and `reload`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use ray_core::config::{ConfigError, ConfigLoader, LoadedConfig, json_schema, redacted_json};
use ray_runtime::Runtime;

use crate::gateway::app::App;
use crate::ops::fs::{diagnostic_line, report_error};

/// Ray: a small-model inference gateway for one cheap VPS.
#[derive(Debug, Parser)]
#[command(
    name = "ray-server",
    version,
    about = "Ray: a small-model inference gateway for one cheap VPS",
    long_about = "Ray sits in front of llama.cpp's llama-server (or any OpenAI-compatible backend) \
                  and gives a small box bounded queues, token-aware admission, a result cache, \
                  in-flight dedupe, honest health and readiness, auth, rate limits and metrics.\n\n\
                  With no subcommand it serves, exactly like `ray-server serve`.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; `serve` when left out.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (the default).
    Serve(ServeArgs),
    /// Validate config files: print `file: path: message` for each problem and exit non-zero
    /// on any error.
    CheckConfig(crate::ops::check::CheckConfigArgs),
    /// Print the JSON Schema of the config file.
    Schema,
    /// Print the effective config after layering (profile, file, RAY_* variables), with
    /// secrets redacted: in plain sentences with where each value came from on a terminal
    /// (or with --explain), as JSON otherwise (or with --json).
    PrintConfig(PrintConfigArgs),
    /// Generate the systemd units, the Caddyfile and an example env file for one VPS.
    Render(crate::ops::render::RenderArgs),
    /// Check the host and the config before and after deploying; exits 1 on any error.
    Doctor(crate::ops::doctor::DoctorArgs),
    /// Check and install a llama-server binary and a GGUF model where the launch profile says
    /// (prints the plan; --apply performs it).
    StageModel(crate::ops::stage::StageArgs),
    /// Print the commands that give the box a swap file and a low swappiness (--apply runs
    /// them).
    SwapPlan(crate::ops::swap::SwapArgs),
    /// Replay a workload against a running gateway (or the backend) and print a JSON report;
    /// with --baseline, exit 1 on a regression.
    Bench(crate::ops::bench::BenchArgs),
    /// Set the box up from a manifest, idempotently: fetch and verify the models (SHA-256),
    /// check the memory budget and the host policy, write the config and render the units,
    /// Caddyfile and env file; print what changed and what is left (--dry-run writes nothing).
    Provision(crate::ops::provision::ProvisionArgs),
    /// Ask the running gateway to read its config again (as SIGHUP does) and print what
    /// changed and what waits for a restart; exits 1 when it refused the config.
    Reload(crate::ops::reload::ReloadArgs),
}

/// Where the config comes from.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The config file (JSON). Without one, the profile named by RAY_PROFILE (default sub1b)
    /// is used with the RAY_* variables applied.
    #[arg(long, value_name = "FILE", env = "RAY_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Options of `print-config`.
#[derive(Debug, Clone, Args)]
pub struct PrintConfigArgs {
    /// Where the config comes from.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Explain the config in plain sentences, section by section, with where each value came
    /// from (the default when stdout is a terminal).
    #[arg(long, conflicts_with = "json")]
    pub explain: bool,
    /// Print the effective config as JSON (the default when stdout is not a terminal, so
    /// scripts keep working).
    #[arg(long)]
    pub json: bool,
}

/// Runs the CLI with the process arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::CheckConfig(args)) => crate::ops::check::run(&args),
        Some(Command::Schema) => {
            print_json(&json_schema());
            ExitCode::SUCCESS
        }
        Some(Command::PrintConfig(args)) => print_config(&args),
        Some(Command::Render(args)) => crate::ops::render::run(&args),
        Some(Command::Doctor(args)) => crate::ops::doctor::run(&args),
        Some(Command::StageModel(args)) => crate::ops::stage::run_stage(&args),
        Some(Command::SwapPlan(args)) => crate::ops::swap::run_swap(&args),
        Some(Command::Bench(args)) => crate::ops::bench::run(&args),
        Some(Command::Provision(args)) => crate::ops::provision::run(&args),
        Some(Command::Reload(args)) => crate::ops::reload::run(&args),
    }
}

fn print_json(value: &serde_json::Value) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(error) => eprintln!("cannot print JSON: {error}"),
    }
}

fn loader(config: Option<&Path>, with_env: bool) -> ConfigLoader {
    let mut loader = ConfigLoader::new();
    if with_env {
        loader = loader.with_process_env();
    }
    if let Some(path) = config {
        loader = loader.with_file(path);
    }
    loader
}

fn print_config(args: &PrintConfigArgs) -> ExitCode {
    use std::io::IsTerminal;
    let config = args.serve.config.as_deref();
    let name = config.map_or_else(|| "config".to_string(), |p| p.display().to_string());
    let explain = args.explain || (!args.json && std::io::stdout().is_terminal());
    match loader(config, true).load() {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{}", diagnostic_line(&name, warning));
            }
            // The loader reports a configured budget it cut; a default one is computed here.
            if let Some((_, warning)) =
                crate::ops::check::policy_budget_cut(&loaded.config, Path::new("/"))
            {
                eprintln!("{}", diagnostic_line(&name, &warning));
            }
            let view = redacted_json(&loaded.config);
            if explain {
                let file = config.and_then(|path| {
                    let text = std::fs::read_to_string(path).ok()?;
                    Some((name.clone(), serde_json::from_str(&text).ok()?))
                });
                let env: Vec<(String, String)> = std::env::vars().collect();
                let provenance = crate::explain::Provenance::new(
                    loaded.config.profile.as_str(),
                    file,
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                )
                .with_policy_cuts(&loaded.warnings);
                print!("{}", crate::explain::explain(&view, &provenance));
                println!("\nmodels and routing");
                for sentence in ray_core::config::explain_models(&loaded.config) {
                    println!("  {sentence}");
                }
            } else {
                print_json(&view);
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            report_error(&name, &error);
            ExitCode::FAILURE
        }
    }
}

/// Writes the `gateway boot failed` line to stderr.
fn boot_failed(code: &str, message: &str, problems: &[String]) {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if !problems.is_empty() {
        error["details"] = serde_json::json!({ "problems": problems });
    }
    let line = serde_json::json!({
        "ts": ray_core::time::now_rfc3339(),
        "service": "ray-gateway",
        "level": "error",
        "message": "gateway boot failed",
        "error": error,
    });
    eprintln!("{line}");
}

fn load_for_serving(args: &ServeArgs) -> Option<LoadedConfig> {
    match loader(args.config.as_deref(), true).load() {
        Ok(loaded) => Some(loaded),
        Err(error) => {
            let (code, problems) = match &error {
                ConfigError::Invalid { diagnostics, .. } => (
                    "config_validation_error",
                    diagnostics
                        .iter()
                        .filter(|d| d.is_error())
                        .map(ToString::to_string)
                        .collect(),
                ),
                ConfigError::Parse { .. } => ("config_parse_error", Vec::new()),
                _ => ("config_read_error", Vec::new()),
            };
            boot_failed(code, &error.to_string(), &problems);
            None
        }
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let Some(loaded) = load_for_serving(args) else {
        return ExitCode::FAILURE;
    };
    let config = loaded.config.clone();
    let log_writer =
        crate::logging::init(&config.telemetry.service_name, config.telemetry.log_level);
    for warning in &loaded.warnings {
        tracing::warn!(path = %warning.path, "config warning: {}", warning);
    }
    let tokio_runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(8)
        .thread_name("ray-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            boot_failed(
                "gateway_error",
                &format!("cannot start the async runtime: {error}"),
                &[],
            );
            return ExitCode::FAILURE;
        }
    };
    let config_path = loaded.file.as_ref().map(|p| p.display().to_string());
    let code = tokio_runtime.block_on(async move {
        let runtime = match Runtime::new(config.clone()) {
            Ok(runtime) => runtime,
            Err(error) => {
                boot_failed("config_validation_error", &error.to_string(), &[]);
                return ExitCode::FAILURE;
            }
        };
        let source_path = args.config.clone();
        let source = crate::gateway::reload::ReloadSource::new(move || {
            loader(source_path.as_deref(), true).load()
        });
        let app = match App::new(runtime) {
            Ok(app) => Arc::new(app.with_reload_source(source)),
            Err(error) => {
                boot_failed("config_validation_error", &error.to_string(), &[]);
                return ExitCode::FAILURE;
            }
        };
        let address = format!("{}:{}", config.server.host, config.server.port);
        let listener = match tokio::net::TcpListener::bind(&address).await {
            Ok(listener) => listener,
            Err(error) => {
                boot_failed(
                    "gateway_error",
                    &format!("cannot listen on {address}: {error}"),
                    &[],
                );
                return ExitCode::FAILURE;
            }
        };
        let bound = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(config.server.port);
        tracing::info!(
            host = %config.server.host,
            port = bound,
            profile = config.profile.as_str(),
            model = %app.runtime().default_model_id(),
            models = app.runtime().model_ids().len(),
            adapter = app.runtime().provider().kind(),
            config_path = config_path.as_deref(),
            "gateway listening"
        );
        // Models whose launch profile sets `supervise` get their llama-server from the runtime.
        // With a lifecycle section, children's pid files and measured footprints live in its
        // stateDir, and children an earlier run left behind are ended first.
        let state_dir = config
            .lifecycle
            .as_ref()
            .map(|l| std::path::PathBuf::from(&l.state_dir));
        let backends = app.runtime().start_backends_in(state_dir.as_deref());
        // Warm-up starts only now, after the listener is bound, so /livez answers at once.
        let background = app.runtime().start();
        let reloader = tokio::spawn(reload_on_hangup(app.clone()));
        let result = crate::gateway::server::run(listener, app.clone(), shutdown_signal()).await;
        // Peers stop sending this node requests at once rather than when its record expires.
        app.leave_cluster().await;
        reloader.abort();
        background.shutdown().await;
        // After the drain: requests in progress needed the backend until now.
        backends.shutdown().await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(error = %error, "gateway shutdown failed");
                ExitCode::FAILURE
            }
        }
    });
    if let Some(writer) = log_writer {
        writer.flush();
    }
    code
}

/// Reads the config again at each SIGHUP (the outcome is logged by [`App::reload`]).
async fn reload_on_hangup(app: Arc<App>) {
    #[cfg(unix)]
    {
        let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP: reload with `ray-server reload` instead");
            return;
        };
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reading the config again");
            let _ = app.reload().await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = app;
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
