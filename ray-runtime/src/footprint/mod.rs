//! What a `llama-server` child costs in memory: one estimate, shared by `stage-model`,
//! `doctor`, `render` and the model lifecycle, and the measured figures that replace it.
//!
//! The estimate ([`LlamaEstimate`]) is the GGUF file (mapped, and charged to the process once
//! the warm-up touched every weight), the KV cache for `--ctx-size` (all slots together, f16,
//! sized from the header's layers and heads: [`gguf`]), the logits and compute buffers, and a
//! fixed overhead. The host prompt cache (`--cache-ram`) is a bound on later growth, not a
//! cost of loading: [`LlamaEstimate::load_mib`] leaves it out (that is what is compared with
//! the child's RSS after warm-up), [`LlamaEstimate::total_mib`] adds it (what a unit's
//! `MemoryMax` must allow).
//!
//! After a load, the child's RSS after warm-up and the load time are kept in the state
//! directory ([`MeasuredFootprints`]); a later start uses them instead of the estimate, as
//! long as the model file and the launch settings that size it are unchanged.

pub mod gguf;
mod measured;

pub use measured::{Measured, MeasuredFootprints, footprint_key};

use ray_core::config::{LaunchPreset, LaunchProfile};

use self::gguf::GgufInfo;

const MIB: u64 = 1024 * 1024;

/// How `llama-server`'s prompt cache in host memory (`--cache-ram`) is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheRam {
    /// `cacheRamMiB` is set to this many MiB (0 turns the cache off).
    Set(u64),
    /// `cacheRamMiB` is not set: llama-server's own default of 8192 MiB applies.
    Implicit,
    /// `cacheRamMiB` is -1: no bound at all.
    Unbounded,
}

impl CacheRam {
    /// The setting of `launch`.
    pub fn of(launch: &LaunchProfile) -> CacheRam {
        match launch.cache_ram_mib {
            None => CacheRam::Implicit,
            Some(value) if value < 0 => CacheRam::Unbounded,
            Some(value) => CacheRam::Set(value as u64),
        }
    }

    /// The MiB counted against the unit: llama.cpp's default when implicit; none when
    /// unbounded (there is no number to count).
    pub fn counted_mib(self) -> Option<u64> {
        match self {
            CacheRam::Set(mib) => Some(mib),
            CacheRam::Implicit => Some(8192),
            CacheRam::Unbounded => None,
        }
    }
}

/// What `llama-server` is expected to hold, in MiB.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaEstimate {
    /// The GGUF file (mapped into memory and charged to the unit).
    pub model_mib: f64,
    /// The host prompt cache bound.
    pub cache_ram: CacheRam,
    /// Bytes of KV cache per token (f16).
    pub kv_bytes_per_token: u64,
    /// Whether that figure came from the GGUF header (else a per-preset guess).
    pub kv_from_header: bool,
    /// The KV cache for the whole `--ctx-size` (all slots).
    pub kv_mib: f64,
    /// The KV cache of one slot.
    pub kv_per_slot_mib: f64,
    /// Logits and compute buffers.
    pub compute_mib: f64,
    /// The process itself, threads and allocator slack.
    pub overhead_mib: f64,
}

/// The fixed part of `llama-server`'s use counted against its unit's `MemoryMax`: code,
/// threads, allocator, and room for compute buffers the estimate does not model.
pub const LLAMA_OVERHEAD_MIB: f64 = 160.0;

/// The process itself right after warm-up (code, threads, allocator), as the load estimate
/// counts it: measured at 17 to 19 MiB on the CPU build the end-to-end fixture uses, whatever
/// the model. A model whose compute buffers are larger than [`LlamaEstimate::compute_mib`]
/// shows it in its first measurement, which replaces the estimate.
pub const LLAMA_PROCESS_BASE_MIB: f64 = 20.0;

impl LlamaEstimate {
    /// The estimate for `launch` with a model of `model_bytes` and, when it could be read, its
    /// header. llama.cpp rounds the context up to a multiple of 256 cells.
    pub fn new(launch: &LaunchProfile, model_bytes: u64, header: Option<&GgufInfo>) -> Self {
        let header_kv = header.and_then(GgufInfo::kv_bytes_per_token);
        let kv_bytes_per_token = header_kv.unwrap_or(match launch.preset {
            LaunchPreset::SingleVpsSub1b
            | LaunchPreset::SingleVpsSub1bCx23
            | LaunchPreset::SingleVpsSub1bCax11 => 128 * 1024,
            LaunchPreset::SingleVps1bCx23 | LaunchPreset::SingleVps1b8gb => 192 * 1024,
            LaunchPreset::SingleVpsBalanced => 320 * 1024,
        });
        let cells = u64::from(launch.ctx_size).div_ceil(256) * 256;
        let kv_bytes = kv_bytes_per_token * cells;
        let vocab = header.and_then(|h| h.vocab_size).unwrap_or(0);
        let compute_bytes = vocab * u64::from(launch.ubatch_size) * 4;
        LlamaEstimate {
            model_mib: model_bytes as f64 / MIB as f64,
            cache_ram: CacheRam::of(launch),
            kv_bytes_per_token,
            kv_from_header: header_kv.is_some(),
            kv_mib: kv_bytes as f64 / MIB as f64,
            kv_per_slot_mib: kv_bytes as f64 / MIB as f64 / f64::from(launch.parallel.max(1)),
            compute_mib: compute_bytes as f64 / MIB as f64,
            overhead_mib: LLAMA_OVERHEAD_MIB,
        }
    }

    /// The estimate for `launch`, reading the model's size and header from
    /// `launch.modelPath` (a header that cannot be read falls back to the preset's KV guess).
    pub fn of_launch(launch: &LaunchProfile) -> Result<Self, String> {
        let path = std::path::Path::new(&launch.model_path);
        let size = std::fs::metadata(path)
            .map_err(|error| format!("cannot read the model {}: {error}", path.display()))?
            .len();
        let header = gguf::read_header(path).ok();
        Ok(LlamaEstimate::new(launch, size, header.as_ref()))
    }

    /// What loading costs: weights, KV cache, compute buffers and the process base, without the prompt
    /// cache (it fills later). This is what the child's RSS after warm-up is compared with.
    pub fn load_mib(&self) -> f64 {
        self.model_mib + self.kv_mib + self.compute_mib + LLAMA_PROCESS_BASE_MIB
    }

    /// What the prompt cache may add later, as the lifecycle counts it: `cacheRamMiB` when
    /// set, else nothing (an implicit or unbounded cache has no number to count; set
    /// `cacheRamMiB` on a managed model).
    pub fn cache_bound_mib(&self) -> u64 {
        match self.cache_ram {
            CacheRam::Set(mib) => mib,
            CacheRam::Implicit | CacheRam::Unbounded => 0,
        }
    }

    /// The footprint the lifecycle counts for this model: the load cost (`measured_load_mib`
    /// when one was measured, else the estimate) plus the prompt cache bound.
    pub fn lifecycle_mib(&self, measured_load_mib: Option<u64>) -> u64 {
        measured_load_mib.unwrap_or(self.load_mib().ceil() as u64) + self.cache_bound_mib()
    }

    /// The total, or `None` when the prompt cache is unbounded.
    pub fn total_mib(&self) -> Option<f64> {
        let cache = self.cache_ram.counted_mib()? as f64;
        Some(self.model_mib + cache + self.kv_mib + self.compute_mib + self.overhead_mib)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ray_core::config::{Profile, profile_defaults};

    #[test]
    fn the_llama_estimate_uses_the_header_when_it_has_one() {
        let config = profile_defaults(Profile::Sub1b);
        let launch = config.model.adapter.launch_profile().unwrap();
        let header = GgufInfo {
            version: 3,
            tensor_count: 1,
            metadata_count: 1,
            architecture: Some("qwen2".into()),
            name: None,
            block_count: Some(24),
            embedding_length: Some(896),
            head_count: Some(14),
            head_count_kv: Some(2),
            key_length: None,
            value_length: None,
            context_length: Some(32768),
            vocab_size: Some(151_936),
            file_bytes: 400 * MIB,
            data_offset: 0,
            tensor_data_bytes: None,
        };
        let estimate = LlamaEstimate::new(launch, 400 * MIB, Some(&header));
        assert!(estimate.kv_from_header);
        assert_eq!(estimate.kv_bytes_per_token, 12 * 1024);
        assert_eq!(estimate.kv_mib, 36.0);
        assert_eq!(estimate.kv_per_slot_mib, 18.0);
        let total = estimate.total_mib().unwrap();
        assert!(
            (total - (400.0 + 512.0 + 36.0 + 74.1875 + 160.0)).abs() < 0.01,
            "{total}"
        );
        assert!((estimate.load_mib() - (400.0 + 36.0 + 74.1875 + 20.0)).abs() < 0.01);
        assert_eq!(estimate.cache_bound_mib(), 512);
        assert_eq!(estimate.lifecycle_mib(None), 531 + 512);
        assert_eq!(estimate.lifecycle_mib(Some(600)), 600 + 512);
        let guessed = LlamaEstimate::new(launch, 400 * MIB, None);
        assert!(!guessed.kv_from_header);
        assert_eq!(guessed.kv_mib, 384.0);
    }
}
