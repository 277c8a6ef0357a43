//! How a model's lifecycle settings combine with the `lifecycle` section.

use super::ModelConfig;
use crate::config::lifecycle::LifecycleConfig;

impl LifecycleConfig {
    /// The `minResidentMs` of `model`: its own, else this section's.
    pub fn min_resident_ms(&self, model: &ModelConfig) -> u64 {
        model.min_resident_ms.unwrap_or(self.min_resident_ms)
    }

    /// The `idleUnloadMs` of `model`: its own, else this section's.
    pub fn idle_unload_ms(&self, model: &ModelConfig) -> Option<u64> {
        model.idle_unload_ms.or(self.idle_unload_ms)
    }
}

impl ModelConfig {
    /// Whether the model is managed: a llama.cpp launch profile with `supervise: true`.
    pub fn is_managed(&self) -> bool {
        self.adapter.launch_profile().is_some_and(|l| l.supervise)
    }
}
