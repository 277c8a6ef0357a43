//! Reloading the config while the gateway serves: `SIGHUP`, `ray-server reload` and the admin
//! route `POST /v1/admin/reload` all end in [`App::reload`].
//!
//! The config is read again from where it was read at start (the file and the `RAY_*`
//! variables). A config that does not load, or whose API keys cannot be read, changes
//! nothing; otherwise the runtime applies what it can live (see [`ray_runtime::reload`]), the
//! API keys follow the new `auth` section, and the answer names what waits for a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::{Response, StatusCode};
use ray_core::config::ConfigError;
use ray_core::{ErrorCode, RayError};

use crate::gateway::app::{App, RequestLog, Route};
use crate::gateway::auth::ApiKeys;
use crate::gateway::http::{self, Body};
pub use crate::gateway::reload_source::ReloadSource;

/// The error of a config that does not load: each problem named with its field.
fn config_error(error: &ConfigError) -> RayError {
    let problems: Vec<String> = match error {
        ConfigError::Invalid { diagnostics, .. } => diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect(),
        _ => Vec::new(),
    };
    RayError::new(
        ErrorCode::InvalidRequest,
        format!("The config was not reloaded; nothing changed: {error}"),
    )
    .with_details(serde_json::json!({ "problems": problems }))
}

impl App {
    /// Reads the config again with `source` when asked to reload (`SIGHUP`, the admin route).
    pub fn with_reload_source(mut self, source: ReloadSource) -> App {
        self.reload_source = Some(source);
        self
    }

    /// Reads the config again and applies it: the answer says what changed, what was added,
    /// changed or removed, and what waits for a restart. A config that does not load, or whose
    /// API keys cannot be read, changes nothing and is the error.
    pub async fn reload(&self) -> Result<serde_json::Value, RayError> {
        let Some(source) = &self.reload_source else {
            // As `/v1/cluster/nodes` without a cluster: the route exists, this app has none.
            return Err(RayError::new(
                ErrorCode::NotFound,
                "This gateway was started without a config source to read again",
            ));
        };
        let loaded = match (source.0)() {
            Ok(loaded) => loaded,
            Err(error) => {
                let error = config_error(&error);
                tracing::warn!(
                    code = %error.code(),
                    error = error.message(),
                    "config reload refused"
                );
                return Err(error);
            }
        };
        for warning in &loaded.warnings {
            tracing::warn!(path = %warning.path, "config warning: {}", warning);
        }
        let auth = &loaded.config.auth;
        // The keys are read before anything changes: a new `auth` section without its keys
        // leaves the running one in place.
        let keys = if auth.enabled {
            let text = self.key_source.text(&auth.api_key_env);
            match ApiKeys::parse(&auth.api_key_env, text.as_deref()) {
                Ok(keys) => Some(Arc::new(keys)),
                Err(error) => {
                    let error = RayError::new(
                        ErrorCode::InvalidRequest,
                        format!("The config was not reloaded; nothing changed: {error}"),
                    );
                    tracing::warn!(error = error.message(), "config reload refused");
                    return Err(error);
                }
            }
        } else {
            None
        };
        let report = match self.runtime.reload(loaded.config).await {
            Ok(report) => report,
            Err(error) => {
                let error = match error {
                    ray_runtime::ReloadError::Invalid(error) => config_error(&error),
                    other => RayError::new(
                        ErrorCode::InvalidRequest,
                        format!("The config was not reloaded; nothing changed: {other}"),
                    ),
                };
                tracing::warn!(error = error.message(), "config reload refused");
                return Err(error);
            }
        };
        *self.keys.write() = keys;
        for kept in &report.not_applied {
            tracing::warn!(
                field = %kept.field,
                reason = %kept.reason,
                "config change not applied until restart"
            );
        }
        tracing::info!(
            changed = report.changed,
            applied = ?report.applied,
            models_added = ?report.models_added,
            models_changed = ?report.models_changed,
            models_removed = ?report.models_removed,
            not_applied = report.not_applied.len(),
            "config reloaded"
        );
        let mut answer = serde_json::to_value(&report).unwrap_or_default();
        answer["status"] = "reloaded".into();
        Ok(answer)
    }

    /// `POST /v1/admin/reload`. With `auth.enabled` the key was checked before; without it,
    /// only a client on this machine may reload.
    pub(crate) async fn reload_route(
        &self,
        route: Route,
        peer: SocketAddr,
        headers: &hyper::HeaderMap,
        log: &mut RequestLog,
    ) -> Response<Body> {
        // A proxy on this machine (Caddy) connects from loopback too, and says for whom.
        let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
            .iter()
            .any(|name| headers.contains_key(*name));
        if self.keys.read().is_none() && (proxied || !peer.ip().is_loopback()) {
            return self.reject(
                route,
                RayError::new(
                    ErrorCode::Unauthorized,
                    "Reloading the config needs an API key (auth.enabled) or a client on this \
                     machine",
                ),
                log,
                false,
            );
        }
        match self.reload().await {
            Ok(answer) => http::json(StatusCode::OK, &answer),
            Err(error) => self.reject(route, error, log, false),
        }
    }
}
