//! Validation of a merged [`RayConfig`]: every problem at once, each with its JSON path.
//!
//! One short function per section checks the rules of one field each ([`sections`], and
//! [`model`] for a model), reading the bounds from the field-limits table; every rule between
//! two fields is in [`cross`] with its message; the rules of several models and routing are in
//! [`models`].

mod address;
mod checker;
mod cluster;
mod cross;
mod diagnostic;
mod hooks;
mod lifecycle;
mod model;
mod models;
pub(crate) mod policy;
mod priority;
mod sections;

pub use address::{ParsedUrl, is_allowed_host_pattern, is_env_var_name, is_loopback_host};
pub use diagnostic::{Diagnostic, Severity};
pub use models::AUTO_MODEL;

use crate::config::types::RayConfig;
use checker::Checker;

/// Validates a merged config. Returns every error and warning; the config is usable when no
/// diagnostic is an error.
pub fn validate(config: &RayConfig) -> Vec<Diagnostic> {
    let mut c = Checker {
        diagnostics: Vec::new(),
    };
    sections::server(&mut c, &config.server);
    model::model(&mut c, &config.model, &config.server);
    sections::scheduler(&mut c, &config.scheduler);
    sections::streaming(&mut c, &config.streaming);
    sections::async_queue(&mut c, &config.async_queue);
    sections::cache(&mut c, &config.cache);
    sections::telemetry(&mut c, &config.telemetry);
    sections::graceful_degradation(&mut c, &config.graceful_degradation);
    sections::prompt_compiler(&mut c, &config.prompt_compiler);
    sections::adaptive_tuning(&mut c, &config.adaptive_tuning);
    sections::auth(&mut c, &config.auth);
    sections::rate_limit(&mut c, &config.rate_limit);
    sections::tags(&mut c, &config.tags);
    cross::config(&mut c, config);
    models::validate_models(&mut c, config);
    let mut diagnostics = c.diagnostics;
    diagnostics.extend(lifecycle::validate_lifecycle(config));
    diagnostics.extend(hooks::validate_hooks(&config.hooks));
    if let Some(cluster) = &config.cluster {
        let names = config.model_names();
        diagnostics.extend(cluster::validate_cluster(cluster, &names));
    }
    diagnostics.extend(priority::validate_priority(config));
    diagnostics
}

#[cfg(test)]
mod tests;
