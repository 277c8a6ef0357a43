//! Where a reload reads the config and the API keys from: a leaf that names nothing of the
//! gateway, so the app can hold them and `reload` can use them without a module circle.

use std::sync::Arc;

use ray_core::config::{ConfigError, LoadedConfig};

/// Where a reload reads the config: the loader the gateway started with.
#[derive(Clone)]
pub struct ReloadSource(
    pub(crate) Arc<dyn Fn() -> Result<LoadedConfig, ConfigError> + Send + Sync>,
);

impl ReloadSource {
    /// A source that calls `load` at each reload.
    pub fn new(
        load: impl Fn() -> Result<LoadedConfig, ConfigError> + Send + Sync + 'static,
    ) -> ReloadSource {
        ReloadSource(Arc::new(load))
    }
}

impl std::fmt::Debug for ReloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadSource")
    }
}

/// Where the API keys come from at a reload.
#[derive(Debug, Clone)]
pub(crate) enum KeySource {
    /// The process environment, read again (the variable `auth.apiKeyEnv` names may change).
    Env,
    /// The text given to [`App::with_keys`].
    Given(Option<String>),
}

impl KeySource {
    pub(crate) fn text(&self, variable: &str) -> Option<String> {
        match self {
            KeySource::Env => std::env::var(variable).ok(),
            KeySource::Given(text) => text.clone(),
        }
    }
}
