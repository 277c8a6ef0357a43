//! `ray-server reload`: asks the running gateway to read its config again, through its admin
//! route `POST /v1/admin/reload`, and prints the answer (what changed, what waits for a
//! restart). The gateway's address and API key come from the same config and variables the
//! gateway reads; `--url` names another.
//!
//! The same as sending the gateway `SIGHUP`, with an answer: exits 0 when the config was
//! applied, 1 when the gateway refused it (nothing changed) or could not be reached.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use ray_core::config::ConfigLoader;

/// Options of `reload`.
#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// The config file the gateway was started with (for its address and API key variable).
    #[arg(long, value_name = "FILE", env = "RAY_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// The gateway's base URL (default: from the config's `server.host` and `server.port`,
    /// with a wildcard host read as loopback).
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// How long to wait for the answer, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
}

/// The base URL of a gateway listening on `host:port`, reached from this machine.
fn local_url(host: &str, port: u16) -> String {
    match host {
        "0.0.0.0" | "" => format!("http://127.0.0.1:{port}"),
        "::" | "[::]" => format!("http://[::1]:{port}"),
        h if h.contains(':') && !h.starts_with('[') => format!("http://[{h}]:{port}"),
        h => format!("http://{h}:{port}"),
    }
}

/// Runs `reload`.
pub fn run(args: &ReloadArgs) -> ExitCode {
    let mut loader = ConfigLoader::new().with_process_env();
    if let Some(path) = &args.config {
        loader = loader.with_file(path);
    }
    let config = match loader.load() {
        Ok(loaded) => loaded.config,
        Err(error) => {
            eprintln!(
                "reload: the config does not load, so the gateway was not asked; nothing \
                 changed: {error}"
            );
            return ExitCode::FAILURE;
        }
    };
    let base = args
        .url
        .clone()
        .unwrap_or_else(|| local_url(&config.server.host, config.server.port));
    let key = config.auth.enabled.then(|| {
        std::env::var(&config.auth.api_key_env)
            .ok()
            .and_then(|keys| {
                keys.split([',', '\n'])
                    .map(str::trim)
                    .find(|k| !k.is_empty())
                    .map(String::from)
            })
    });
    if let Some(None) = key {
        eprintln!(
            "reload: auth is enabled but {} holds no key to send",
            config.auth.api_key_env
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("reload: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    let url = format!("{}/v1/admin/reload", base.trim_end_matches('/'));
    let answer = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout_secs))
            .build()
            .map_err(|e| e.to_string())?;
        let mut request = client.post(&url);
        if let Some(Some(key)) = &key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, text))
    });
    match answer {
        Ok((status, text)) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(text);
            if status.is_success() {
                println!("{pretty}");
                ExitCode::SUCCESS
            } else {
                eprintln!("reload: the gateway refused the config ({status}); nothing changed");
                eprintln!("{pretty}");
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("reload: cannot reach the gateway at {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::local_url;

    #[test]
    fn a_wildcard_host_is_reached_on_loopback() {
        assert_eq!(local_url("0.0.0.0", 8080), "http://127.0.0.1:8080");
        assert_eq!(local_url("::", 8080), "http://[::1]:8080");
        assert_eq!(local_url("127.0.0.1", 1), "http://127.0.0.1:1");
        assert_eq!(local_url("fd00::1", 2), "http://[fd00::1]:2");
    }
}
