//! The memory split between the gateway and `llama-server`, and what each is expected to use.
//!
//! The split follows the existing Ray so a box keeps its numbers: a budget (from
//! `--memory-mib`, else `model.operational.memoryClassMiB`, else 4096 MiB for the small-VPS
//! presets and 8192 MiB otherwise), a reserve for the kernel, Caddy and sshd of
//! `max(768, ceil(20 % × budget))`, the gateway's cgroup limits derived from its own RSS
//! threshold, and the rest for `llama-server`. What `llama-server` is expected to hold
//! ([`LlamaEstimate`]) is the runtime's, shared with the model lifecycle.

use ray_core::config::{LaunchPreset, RayConfig};

pub use ray_runtime::footprint::{CacheRam, LLAMA_OVERHEAD_MIB, LlamaEstimate};

const MIB: u64 = 1024 * 1024;

/// A unit's cgroup memory settings, in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitMemory {
    /// `MemoryHigh=`: above it the kernel reclaims and throttles.
    pub high_mib: u64,
    /// `MemoryMax=`: above it the OOM killer acts inside the unit.
    pub max_mib: u64,
    /// `MemorySwapMax=`.
    pub swap_max_mib: u64,
}

impl UnitMemory {
    /// Two units' limits added up (one unit running both, in supervised mode).
    pub fn plus(self, other: UnitMemory) -> UnitMemory {
        UnitMemory {
            high_mib: self.high_mib + other.high_mib,
            max_mib: self.max_mib + other.max_mib,
            swap_max_mib: self.swap_max_mib + other.swap_max_mib,
        }
    }
}

/// Where the memory budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSource {
    /// `--memory-mib`.
    Flag,
    /// `model.operational.memoryClassMiB`.
    MemoryClass,
    /// The launch preset's machine class.
    Preset,
}

impl BudgetSource {
    /// How the summary names it.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetSource::Flag => "--memory-mib",
            BudgetSource::MemoryClass => "model.operational.memoryClassMiB",
            BudgetSource::Preset => "the launch preset's machine class",
        }
    }
}

/// How the budget is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySplit {
    /// The whole budget in MiB.
    pub budget_mib: u64,
    /// Where it came from.
    pub source: BudgetSource,
    /// Left for the kernel, Caddy, sshd and the page cache.
    pub reserve_mib: u64,
    /// The gateway's unit.
    pub gateway: UnitMemory,
    /// `llama-server`'s unit, when the config has a launch profile.
    pub llama: Option<UnitMemory>,
}

/// Whether a launch preset is for a 4 GB box.
fn small_preset(preset: LaunchPreset) -> bool {
    matches!(
        preset,
        LaunchPreset::SingleVpsSub1b
            | LaunchPreset::SingleVpsSub1bCx23
            | LaunchPreset::SingleVpsSub1bCax11
            | LaunchPreset::SingleVps1bCx23
    )
}

/// The split for `config`, with `memory_mib` (from `--memory-mib`) taking precedence.
pub fn memory_split(config: &RayConfig, memory_mib: Option<u64>) -> MemorySplit {
    let launch = config.model.adapter.launch_profile();
    let memory_class = config
        .model
        .operational
        .as_ref()
        .and_then(|o| o.memory_class_mib);
    let (budget_mib, source) = match (memory_mib, memory_class) {
        (Some(flag), _) => (flag, BudgetSource::Flag),
        (None, Some(class)) => (u64::from(class), BudgetSource::MemoryClass),
        (None, None) => (
            if launch.is_some_and(|l| small_preset(l.preset)) {
                4096
            } else {
                8192
            },
            BudgetSource::Preset,
        ),
    };
    let reserve_mib = 768u64.max((budget_mib * 2).div_ceil(10));
    let rss = u64::from(config.graceful_degradation.memory_rss_threshold_mib);
    let gateway = UnitMemory {
        high_mib: rss + 128,
        max_mib: rss + 384,
        swap_max_mib: 128,
    };
    let llama = launch.map(|_| {
        let max_mib = 512u64.max(
            budget_mib
                .saturating_sub(reserve_mib)
                .saturating_sub(gateway.max_mib),
        );
        UnitMemory {
            high_mib: max_mib * 9 / 10,
            max_mib,
            swap_max_mib: (max_mib / 4).clamp(256, 1024),
        }
    });
    MemorySplit {
        budget_mib,
        source,
        reserve_mib,
        gateway,
        llama,
    }
}

/// What the gateway can hold at most from its own bounded state, in MiB.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayEstimate {
    /// The process with its threads, before any request.
    pub base_mib: f64,
    /// `cache.maxBytes` (when the cache is on).
    pub cache_mib: f64,
    /// The rate limiter's key table, about 2 KiB per key (when on).
    pub rate_limit_mib: f64,
    /// Prompts waiting and running: `maxQueuedTokens + maxInflightTokens`, about 768 bytes
    /// per token of text, copies and responses.
    pub tokens_mib: f64,
    /// Request bodies held while queued: `requestBodyLimitBytes × (maxQueue + concurrency)`.
    pub bodies_mib: f64,
}

impl GatewayEstimate {
    /// The estimate for `config`.
    pub fn new(config: &RayConfig) -> GatewayEstimate {
        let s = &config.scheduler;
        let tokens = u64::from(s.max_queued_tokens) + u64::from(s.max_inflight_tokens);
        let bodies = config.server.request_body_limit_bytes
            * (u64::from(s.max_queue) + u64::from(s.concurrency));
        GatewayEstimate {
            base_mib: 16.0,
            cache_mib: if config.cache.enabled {
                config.cache.max_bytes as f64 / MIB as f64
            } else {
                0.0
            },
            rate_limit_mib: if config.rate_limit.enabled {
                f64::from(config.rate_limit.max_keys) * 2048.0 / MIB as f64
            } else {
                0.0
            },
            tokens_mib: tokens as f64 * 768.0 / MIB as f64,
            bodies_mib: bodies as f64 / MIB as f64,
        }
    }

    /// The sum.
    pub fn total_mib(&self) -> f64 {
        self.base_mib + self.cache_mib + self.rate_limit_mib + self.tokens_mib + self.bodies_mib
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ray_core::config::{Profile, profile_defaults};

    #[test]
    fn sub1b_at_4096_splits_like_the_existing_units() {
        let split = memory_split(&profile_defaults(Profile::Sub1b), None);
        assert_eq!(split.budget_mib, 4096);
        assert_eq!(split.source, BudgetSource::MemoryClass);
        assert_eq!(split.reserve_mib, 820);
        assert_eq!(
            split.gateway,
            UnitMemory {
                high_mib: 640,
                max_mib: 896,
                swap_max_mib: 128
            }
        );
        assert_eq!(
            split.llama.unwrap(),
            UnitMemory {
                high_mib: 2142,
                max_mib: 2380,
                swap_max_mib: 595
            }
        );
    }

    #[test]
    fn the_flag_wins_and_llama_keeps_a_floor() {
        let split = memory_split(&profile_defaults(Profile::Sub1b), Some(1024));
        assert_eq!(split.source, BudgetSource::Flag);
        assert_eq!(split.reserve_mib, 768);
        assert_eq!(split.llama.unwrap().max_mib, 512);
        assert_eq!(split.llama.unwrap().swap_max_mib, 256);
        // No launch profile: no llama unit, the 8192 default budget.
        let split = memory_split(&profile_defaults(Profile::Vps), None);
        assert_eq!((split.budget_mib, split.llama), (8192, None));
    }
}
