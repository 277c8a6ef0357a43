//! Reading fabricated and real machines.

use std::path::Path;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../fixtures/", $name))
    };
}

fn write(root: &Path, relative: &str, contents: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// A pure cgroup v2 host: the gateway in `ray-gateway.service` under a 1 GiB limit.
fn v2_host(root: &Path) {
    write(
        root,
        "proc/self/cgroup",
        fixture!("proc_self_cgroup.v2.txt"),
    );
    write(root, "proc/self/status", "Name:\tray\nVmRSS:\t  8192 kB\n");
    write(
        root,
        "proc/pressure/memory",
        fixture!("proc_pressure_memory.txt"),
    );
    write(root, "proc/pressure/cpu", fixture!("proc_pressure_cpu.txt"));
    write(
        root,
        "sys/fs/cgroup/cgroup.controllers",
        "cpu memory pids\n",
    );
    let dir = "sys/fs/cgroup/system.slice/ray-gateway.service";
    for (file, contents) in [
        ("memory.current", fixture!("v2_memory.current.txt")),
        ("memory.max", fixture!("v2_memory.max.txt")),
        ("memory.high", fixture!("v2_memory.high.txt")),
        ("memory.events", fixture!("v2_memory.events.txt")),
        ("memory.stat", fixture!("v2_memory.stat.txt")),
        (
            "memory.swap.current",
            fixture!("v2_memory.swap.current.txt"),
        ),
        ("memory.swap.max", fixture!("v2_memory.swap.max.txt")),
        ("memory.pressure", fixture!("v2_memory.pressure.txt")),
        ("cpu.stat", fixture!("v2_cpu.stat.txt")),
        ("cpu.max", fixture!("v2_cpu.max.txt")),
        ("cpu.pressure", fixture!("v2_cpu.pressure.txt")),
    ] {
        write(root, &format!("{dir}/{file}"), contents);
    }
}

#[test]
fn reads_a_cgroup_v2_host() {
    let root = tempfile::tempdir().unwrap();
    v2_host(root.path());
    let sources = PressureSources::under(root.path());
    let location = sources.locate();
    assert_eq!(
        location.v2_dir.as_deref(),
        Some(
            root.path()
                .join("sys/fs/cgroup/system.slice/ray-gateway.service")
                .as_path()
        )
    );
    let reading = sources.read_all(&location);
    assert_eq!(reading.rss_bytes, Some(8 << 20));
    assert!(reading.host_memory_psi.is_some() && reading.host_cpu_psi.is_some());
    let cg = reading.cgroup.unwrap();
    assert_eq!(cg.version, 2);
    assert_eq!(cg.path, "/system.slice/ray-gateway.service");
    assert_eq!(cg.memory_current, Some(734_003_200));
    assert_eq!(cg.memory_max, Some(Limit::Value(1 << 30)));
    assert_eq!(cg.memory_high, Some(Limit::Unlimited));
    assert_eq!(cg.inactive_file, Some(157_286_400));
    assert_eq!(cg.events.oom_kill, Some(1));
    assert_eq!(cg.cpu.nr_throttled, Some(9_000));
    assert_eq!(cg.cpu_max, Some((Limit::Value(200_000), 100_000)));
    assert!(cg.memory_psi.is_some() && cg.cpu_psi.is_some());
}

#[test]
fn reads_the_unified_hierarchy_of_a_hybrid_host_and_v1_controllers() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write(
        r,
        "proc/self/cgroup",
        fixture!("proc_self_cgroup.hybrid.txt"),
    );
    write(r, "sys/fs/cgroup/unified/cgroup.controllers", "");
    write(
        r,
        "sys/fs/cgroup/unified/cpu.stat",
        fixture!("v2_unified_cpu.stat.txt"),
    );
    write(
        r,
        "sys/fs/cgroup/unified/cpu.pressure",
        fixture!("v2_cpu.pressure.txt"),
    );
    write(
        r,
        "sys/fs/cgroup/unified/memory.pressure",
        fixture!("v2_memory.pressure.txt"),
    );
    let memory = "sys/fs/cgroup/memory/process_api/1c3a4bd33933fff8da23b52fbca1655d";
    write(r, &format!("{memory}/memory.usage_in_bytes"), "600000000\n");
    write(
        r,
        &format!("{memory}/memory.limit_in_bytes"),
        "1000000000\n",
    );
    write(
        r,
        &format!("{memory}/memory.memsw.usage_in_bytes"),
        "650000000\n",
    );
    write(
        r,
        &format!("{memory}/memory.memsw.limit_in_bytes"),
        "1100000000\n",
    );
    write(
        r,
        &format!("{memory}/memory.stat"),
        fixture!("v1_memory.stat.txt"),
    );
    write(r, &format!("{memory}/memory.failcnt"), "4\n");
    write(
        r,
        &format!("{memory}/memory.oom_control"),
        fixture!("v1_memory.oom_control.txt"),
    );
    write(r, "sys/fs/cgroup/cpu/cpu.stat", fixture!("v1_cpu.stat.txt"));
    write(r, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
    write(r, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
    let sources = PressureSources::under(r);
    let reading = sources.read_all(&sources.locate());
    let cg = reading.cgroup.unwrap();
    assert_eq!(cg.version, 1, "the memory figures come from v1");
    assert_eq!(cg.path, "/process_api/1c3a4bd33933fff8da23b52fbca1655d");
    assert_eq!(cg.memory_current, Some(600_000_000));
    assert_eq!(cg.memory_max, Some(Limit::Value(1_000_000_000)));
    assert_eq!(cg.swap_current, Some(50_000_000));
    assert_eq!(cg.swap_max, Some(Limit::Value(100_000_000)));
    assert_eq!(cg.events.max, Some(4));
    assert_eq!(cg.events.oom_kill, Some(0));
    assert!(
        cg.cpu.usage_usec.is_some(),
        "usage from the unified cpu.stat"
    );
    assert_eq!(
        cg.cpu.nr_periods,
        Some(0),
        "throttling from the v1 cpu.stat"
    );
    assert_eq!(cg.cpu_max, Some((Limit::Unlimited, 100_000)));
    assert!(cg.memory_psi.is_some() && cg.cpu_psi.is_some());
    assert!(reading.rss_bytes.is_none() && reading.host_cpu_psi.is_none());
}

#[test]
fn a_missing_or_empty_tree_is_unavailable_not_an_error() {
    let root = tempfile::tempdir().unwrap();
    let sources = PressureSources::under(root.path().join("does-not-exist"));
    assert_eq!(sources.locate(), Location::default());
    assert_eq!(sources.read_all(&sources.locate()), Reading::default());

    // A cgroup file that names a cgroup whose directory is gone.
    write(root.path(), "proc/self/cgroup", "0::/gone\n");
    write(root.path(), "sys/fs/cgroup/cgroup.controllers", "");
    let sources = PressureSources::under(root.path());
    assert_eq!(sources.read_all(&sources.locate()).cgroup, None);

    // Garbage in every file.
    v2_host(root.path());
    let dir = root
        .path()
        .join("sys/fs/cgroup/system.slice/ray-gateway.service");
    for entry in std::fs::read_dir(&dir).unwrap() {
        std::fs::write(entry.unwrap().path(), "\u{0}garbage\n").unwrap();
    }
    for file in [
        "proc/pressure/memory",
        "proc/pressure/cpu",
        "proc/self/status",
    ] {
        write(root.path(), file, "not what you expect");
    }
    let reading = sources.read_all(&sources.locate());
    assert_eq!(reading.rss_bytes, None);
    assert_eq!(reading.host_memory_psi, None);
    assert_eq!(reading.cgroup, None, "nothing usable");
}

#[test]
fn reads_this_machine_without_failing() {
    let sources = PressureSources::system();
    let location = sources.locate();
    let reading = sources.read_all(&location);
    if cfg!(target_os = "linux") {
        assert!(reading.rss_bytes.is_some_and(|rss| rss > 0));
    }
    eprintln!("this machine: {location:?}\n{reading:?}");
}
