//! The callback signing secret: its shortest length and what stops the gateway at start.

use super::RayConfig;

/// The shortest callback signing secret accepted, in bytes.
pub const MIN_CALLBACK_SECRET_BYTES: usize = 16;

impl RayConfig {
    /// Whether the gateway reads the callback signing secret at start
    /// (`asyncQueue.callbackSigningSecretEnv`): with the job queue on or any URL hook.
    pub fn reads_callback_secret(&self) -> bool {
        self.async_queue.enabled || self.hooks.iter().any(|hook| hook.url.is_some())
    }
}

/// Why the callback signing secret `value`, read from the variable `name`, would stop the
/// gateway at start: shorter than [`MIN_CALLBACK_SECRET_BYTES`] or not UTF-8. `None` when it is
/// unset or empty (callbacks go unsigned) or usable.
pub fn callback_secret_problem(name: &str, value: Option<&std::ffi::OsStr>) -> Option<String> {
    let value = value.filter(|v| !v.is_empty())?;
    match value.to_str() {
        None => Some(format!("{name} is not valid UTF-8")),
        Some(text) if text.len() < MIN_CALLBACK_SECRET_BYTES => Some(format!(
            "{name} must hold at least {MIN_CALLBACK_SECRET_BYTES} bytes, got {}",
            text.len()
        )),
        Some(_) => None,
    }
}
