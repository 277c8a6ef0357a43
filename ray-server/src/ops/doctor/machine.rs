//! The checks of the machine: memory fit, swap, CPU, kernel tuning, cgroups, systemd and PSI.

use super::Level;
use super::ctx::Ctx;
use crate::ops::deploy::memory::{CacheRam, GatewayEstimate, LlamaEstimate};
use crate::ops::deploy::{GATEWAY_UNIT, LLAMA_UNIT};

/// Swap a small box should have, and keep free.
pub(super) const MIN_SWAP_MIB: u64 = 1024;

pub(super) const MIN_FREE_SWAP_MIB: u64 = 256;

/// Highest `vm.swappiness` that keeps model pages in RAM.
pub(super) const MAX_SWAPPINESS: u32 = 20;

pub(super) fn memory_fit(ctx: &mut Ctx<'_>) {
    const C: &str = "memory_fit";
    let (Some(launch), Some(split)) = (ctx.launch(), ctx.split) else {
        return;
    };
    let Some(limit) = split.llama.map(|l| l.max_mib) else {
        return;
    };
    let header = match &ctx.model {
        Some(Ok(info)) => Some(info.clone()),
        _ => None,
    };
    let model_bytes = header.as_ref().map_or(0, |h| h.file_bytes);
    let estimate = LlamaEstimate::new(&launch, model_bytes, header.as_ref());
    if header.is_none() {
        let partial = estimate.total_mib().map_or_else(
            || "an unbounded prompt cache".to_string(),
            |t| format!("{t:.0} MiB"),
        );
        ctx.push(
            C,
            Level::Warn,
            "memory_fit_unknown",
            format!(
                "the model cannot be read, so only part of llama-server's memory is known \
                 ({partial} without the weights, with a guessed KV cache, against \
                 MemoryMax={limit}M); stage the model and run doctor again."
            ),
        );
        return;
    }
    let unit = if launch.supervise {
        GATEWAY_UNIT
    } else {
        LLAMA_UNIT
    };
    let Some(total) = estimate.total_mib() else {
        ctx.push(
            C,
            Level::Error,
            "cache_ram_unbounded",
            format!(
                "launchProfile.cacheRamMiB is -1: llama-server's prompt cache may grow until \
                 {unit} hits MemoryMax={limit}M and is killed. Set a bound, e.g. 512."
            ),
        );
        return;
    };
    let breakdown = format!(
        "model {:.0} MiB + cache-ram {} MiB + KV cache {:.0} MiB ({:.1} MiB per slot, {} bytes \
         per token{}) + compute {:.0} MiB + overhead {:.0} MiB = {:.0} MiB against {unit} \
         MemoryMax={limit}M",
        estimate.model_mib,
        estimate.cache_ram.counted_mib().unwrap_or(0),
        estimate.kv_mib,
        estimate.kv_per_slot_mib,
        estimate.kv_bytes_per_token,
        if estimate.kv_from_header {
            ", from the GGUF header"
        } else {
            ", a guess: the model could not be read"
        },
        estimate.compute_mib,
        estimate.overhead_mib,
        total
    );
    let ratio = total / limit as f64;
    if ratio > 1.0 {
        ctx.push(
            C,
            Level::Error,
            "memory_fit_exceeded",
            format!(
                "llama-server needs about {breakdown}: it would be killed.{} Lower cacheRamMiB, \
                 ctxSize or parallel, use a smaller quantization, or raise --memory-mib on a \
                 bigger box.",
                if estimate.cache_ram == CacheRam::Implicit {
                    " launchProfile.cacheRamMiB is not set, so llama-server's default of 8192 \
                     MiB applies."
                } else {
                    ""
                }
            ),
        );
    } else if estimate.cache_ram == CacheRam::Implicit {
        ctx.push(
            C,
            Level::Warn,
            "cache_ram_implicit",
            format!(
                "launchProfile.cacheRamMiB is not set, so llama-server's default of 8192 MiB \
                 applies ({breakdown}); set it explicitly, e.g. 512."
            ),
        );
    } else if ratio >= 0.9 {
        ctx.push(
            C,
            Level::Warn,
            "memory_fit_tight",
            format!(
                "llama-server needs about {breakdown} ({:.0} %): little room for growth. Lower \
                 cacheRamMiB or ctxSize.",
                ratio * 100.0
            ),
        );
    } else {
        ctx.ok(
            C,
            "memory_fit_ok",
            format!("llama-server needs about {breakdown}"),
        );
    }
}

/// With a `lifecycle` section: every managed model fits the budget on its own, and the pinned
/// ones (`resident: true`) fit it together, by the same estimate (or kept measurement) the
/// gateway decides with, on this host's memory.
pub(super) fn lifecycle_fit(ctx: &mut Ctx<'_>) {
    const C: &str = "lifecycle_fit";
    let Some(config) = ctx.config() else {
        return;
    };
    if config.lifecycle.is_none() {
        ctx.ok(
            C,
            "lifecycle_fit_ok",
            "no lifecycle section: no model is loaded on demand",
        );
        return;
    }
    let root = ctx.host.path("/");
    let Some((memory, _)) = crate::ops::check::check_fit(config, &root) else {
        ctx.ok(
            C,
            "lifecycle_fit_ok",
            "a lifecycle section but no managed model (supervise: true)",
        );
        return;
    };
    let budget = memory.budget_mib;
    let mut failed = false;
    for model in &memory.models {
        if model.problem.is_none() && model.footprint_mib > budget {
            failed = true;
            ctx.push(
                C,
                Level::Error,
                "model_does_not_fit",
                format!(
                    "the managed model {:?} needs about {} MiB ({}), more than the whole memory \
                     budget of {budget} MiB ({}): it would never load. Lower its ctxSize, \
                     parallel or cacheRamMiB, pick a smaller quantization, or raise \
                     lifecycle.memoryBudgetMiB.",
                    model.id,
                    model.footprint_mib,
                    if model.measured {
                        "measured"
                    } else {
                        "estimated"
                    },
                    memory.budget_source
                ),
            );
        }
    }
    let pinned: Vec<&crate::ops::check::ModelFitReport> =
        memory.models.iter().filter(|m| m.resident).collect();
    let pinned_mib: u64 = pinned.iter().map(|m| m.footprint_mib).sum();
    if pinned_mib > budget {
        failed = true;
        ctx.push(
            C,
            Level::Error,
            "pinned_models_do_not_fit",
            format!(
                "the pinned models ({}) need {pinned_mib} MiB together, more than the memory \
                 budget of {budget} MiB ({}): they cannot all stay loaded. Unpin one \
                 (resident: false) or raise lifecycle.memoryBudgetMiB.",
                pinned
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                memory.budget_source
            ),
        );
    }
    if !failed {
        let sentence = crate::ops::check::memory_sentence(&memory);
        ctx.ok(
            C,
            "lifecycle_fit_ok",
            format!("{sentence}; the pinned models take {pinned_mib} MiB of it"),
        );
    }
}

pub(super) fn gateway_memory(ctx: &mut Ctx<'_>) {
    const C: &str = "gateway_memory";
    let (Some(config), Some(split)) = (ctx.config().cloned(), ctx.split) else {
        return;
    };
    let estimate = GatewayEstimate::new(&config);
    let total = estimate.total_mib();
    let threshold = f64::from(config.graceful_degradation.memory_rss_threshold_mib);
    let breakdown = format!(
        "cache {:.1} + rate-limit keys {:.1} + queued and running tokens {:.1} + request bodies \
         {:.1} + base {:.0} = {:.0} MiB",
        estimate.cache_mib,
        estimate.rate_limit_mib,
        estimate.tokens_mib,
        estimate.bodies_mib,
        estimate.base_mib,
        total
    );
    if total > split.gateway.max_mib as f64 {
        ctx.push(
            C,
            Level::Error,
            "gateway_memory_exceeded",
            format!(
                "the gateway's bounded state can reach {breakdown}, above its MemoryMax={}M: \
                 lower cache.maxBytes, scheduler.maxQueue or the token budgets.",
                split.gateway.max_mib
            ),
        );
    } else if total > threshold {
        ctx.push(
            C,
            Level::Warn,
            "gateway_memory_tight",
            format!(
                "the gateway's bounded state can reach {breakdown}, above \
                 gracefulDegradation.memoryRssThresholdMiB ({threshold:.0}): it would degrade \
                 requests from its own caches alone. Lower the budgets or raise the threshold."
            ),
        );
    } else {
        ctx.ok(
            C,
            "gateway_memory_ok",
            format!(
                "the gateway's bounded state can reach {breakdown}, below its RSS threshold \
                 ({threshold:.0} MiB) and MemoryMax ({}M)",
                split.gateway.max_mib
            ),
        );
    }
}

pub(super) fn host_memory(ctx: &mut Ctx<'_>) {
    const C: &str = "host_memory";
    let Some(split) = ctx.split else { return };
    let Some(memory) = ctx.host.meminfo() else {
        ctx.push(
            C,
            Level::Warn,
            "host_memory_unknown",
            "/proc/meminfo cannot be read: the memory checks against the host were skipped.".into(),
        );
        return;
    };
    // A "4 GB" VPS reports a little less than 4096 MiB; allow 10 %.
    if (split.budget_mib as f64) > memory.total_mib as f64 * 1.1 {
        ctx.push(
            C,
            Level::Warn,
            "memory_budget_exceeds_host",
            format!(
                "the memory budget is {} MiB ({}) but the host has {} MiB: the units' limits are \
                 too high to protect anything. Render with --memory-mib {}.",
                split.budget_mib,
                split.source.as_str(),
                memory.total_mib,
                memory.total_mib
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "host_memory_ok",
        format!(
            "budget {} MiB on a host with {} MiB",
            split.budget_mib, memory.total_mib
        ),
    );
}

pub(super) fn swap(ctx: &mut Ctx<'_>) {
    const C: &str = "swap";
    let Some(memory) = ctx.host.meminfo() else {
        return;
    };
    if memory.swap_total_mib + 8 < MIN_SWAP_MIB {
        ctx.push(
            C,
            Level::Warn,
            "swap_missing",
            format!(
                "the host has {} MiB of swap: a memory spike kills llama-server instead of \
                 slowing it. Add {MIN_SWAP_MIB} MiB: `sudo ray-server swap-plan --apply`.",
                memory.swap_total_mib
            ),
        );
        return;
    }
    if memory.swap_free_mib < MIN_FREE_SWAP_MIB {
        ctx.push(
            C,
            Level::Warn,
            "swap_low_free",
            format!(
                "only {} MiB of {} MiB swap is free: the box is short of memory. Lower \
                 cacheRamMiB or ctxSize, or add swap.",
                memory.swap_free_mib, memory.swap_total_mib
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "swap_ok",
        format!(
            "{} MiB swap, {} MiB free",
            memory.swap_total_mib, memory.swap_free_mib
        ),
    );
}

pub(super) fn swappiness(ctx: &mut Ctx<'_>) {
    const C: &str = "swappiness";
    match ctx.host.swappiness() {
        None => ctx.push(
            C,
            Level::Warn,
            "swappiness_unknown",
            "/proc/sys/vm/swappiness cannot be read; check `sysctl vm.swappiness`.".into(),
        ),
        Some(value) if value > MAX_SWAPPINESS => ctx.push(
            C,
            Level::Warn,
            "swappiness_high",
            format!(
                "vm.swappiness is {value}: the kernel swaps model pages out early. Set 10 \
                 (`ray-server swap-plan` prints the commands)."
            ),
        ),
        Some(value) => ctx.ok(C, "swappiness_ok", format!("vm.swappiness is {value}")),
    }
}

pub(super) fn cpu(ctx: &mut Ctx<'_>) {
    const C: &str = "cpu";
    let Some(config) = ctx.config().cloned() else {
        return;
    };
    let Some(cpus) = ctx.host.cpu_count() else {
        ctx.push(
            C,
            Level::Warn,
            "cpu_count_unknown",
            "/proc/cpuinfo cannot be read: the CPU checks were skipped.".into(),
        );
        return;
    };
    if let Some(launch) = config.model.adapter.launch_profile() {
        let threads = launch.threads.max(launch.threads_batch.unwrap_or(0));
        if threads > cpus {
            ctx.push(
                C,
                Level::Warn,
                "llama_threads_exceed_host_cpu",
                format!(
                    "llama-server uses {threads} threads on {cpus} CPU(s): they fight over cores \
                     and generation slows. Set launchProfile.threads to {cpus}."
                ),
            );
            return;
        }
    }
    if config.scheduler.concurrency > cpus.max(1) * 2 {
        ctx.push(
            C,
            Level::Warn,
            "scheduler_concurrency_exceeds_host_cpu",
            format!(
                "scheduler.concurrency is {} on {cpus} CPU(s): requests share the cores and each \
                 gets slower without more throughput. Lower it.",
                config.scheduler.concurrency
            ),
        );
        return;
    }
    ctx.ok(C, "cpu_ok", format!("{cpus} CPU(s)"));
}

pub(super) fn tuning(ctx: &mut Ctx<'_>) {
    const C: &str = "tuning";
    let Some(config) = ctx.config().cloned() else {
        return;
    };
    let Some(launch) = config.model.adapter.launch_profile() else {
        ctx.ok(C, "tuning_ok", "no launch profile to compare with");
        return;
    };
    if config.scheduler.concurrency > launch.parallel {
        ctx.push(
            C,
            Level::Warn,
            "scheduler_exceeds_parallel",
            format!(
                "scheduler.concurrency ({}) is above launchProfile.parallel ({}): the extra \
                 requests wait inside llama-server, where Ray cannot see or bound them. Make \
                 them equal.",
                config.scheduler.concurrency, launch.parallel
            ),
        );
        return;
    }
    let per_slot = launch.ctx_size / launch.parallel.max(1);
    let needed = config.model.max_output_tokens + 256;
    if per_slot < needed {
        ctx.push(
            C,
            Level::Warn,
            "ctx_per_slot_tight",
            format!(
                "each slot has {per_slot} tokens of context (ctxSize {} / parallel {}), less than \
                 model.maxOutputTokens ({}) plus a 256-token prompt: long requests will be \
                 refused. Raise ctxSize or lower parallel.",
                launch.ctx_size, launch.parallel, config.model.max_output_tokens
            ),
        );
        return;
    }
    ctx.ok(
        C,
        "tuning_ok",
        format!(
            "concurrency {} ≤ parallel {}, {per_slot} tokens per slot",
            config.scheduler.concurrency, launch.parallel
        ),
    );
}

pub(super) fn cgroup(ctx: &mut Ctx<'_>) {
    const C: &str = "cgroup";
    let Ok(controllers) = ctx.host.read("/sys/fs/cgroup/cgroup.controllers") else {
        ctx.push(
            C,
            Level::Warn,
            "cgroup_v2_missing",
            "no cgroup v2 at /sys/fs/cgroup: the units' MemoryMax/MemoryHigh are not enforced \
             and Ray cannot read its cgroup pressure. Boot with the unified hierarchy \
             (the default on Debian 11 and later)."
                .into(),
        );
        return;
    };
    if !controllers.split_whitespace().any(|c| c == "memory") {
        ctx.push(
            C,
            Level::Warn,
            "cgroup_memory_controller_missing",
            "the cgroup memory controller is off: the units' memory limits are not enforced. \
             Enable it on the kernel command line (cgroup_enable=memory)."
                .into(),
        );
        return;
    }
    ctx.ok(C, "cgroup_ok", "cgroup v2 with the memory controller");
}

pub(super) fn systemd(ctx: &mut Ctx<'_>) {
    const C: &str = "systemd";
    if ctx.host.exists("/run/systemd/system") {
        ctx.ok(C, "systemd_ok", "the host runs systemd");
    } else {
        ctx.push(
            C,
            Level::Warn,
            "systemd_missing",
            "the host was not booted with systemd (no /run/systemd/system): the rendered \
             units will not run here. Use `ray-server serve` under your own supervisor, with \
             launchProfile.supervise to run llama-server."
                .into(),
        );
    }
}

pub(super) fn psi(ctx: &mut Ctx<'_>) {
    const C: &str = "psi";
    if ctx.host.exists("/proc/pressure/memory") {
        ctx.ok(C, "psi_ok", "pressure stall information is available");
    } else {
        ctx.push(
            C,
            Level::Info,
            "psi_unavailable",
            "/proc/pressure is missing: Ray's PSI pressure signals stay off and degradation \
             relies on RSS and cgroup usage. Boot with psi=1 to enable them."
                .into(),
        );
    }
}
