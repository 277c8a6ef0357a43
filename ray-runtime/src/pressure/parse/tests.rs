//! The parsers on captured files, on malformed ones, and on anything at all.

use proptest::prelude::*;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../fixtures/", $name))
    };
}

#[test]
fn reads_vm_rss_from_a_captured_status() {
    let rss = parse_vm_rss(fixture!("proc_self_status.txt")).unwrap();
    assert!(rss > 0 && rss.is_multiple_of(1024), "{rss}");
    let status = "Name:\tray-server\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
    assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
    for malformed in [
        "Name: x\n",
        "VmRSS: lots kB\n",
        "VmRSS:\n",
        "VmRSS: 12 parsecs\n",
        "VmRSS: -5 kB\n",
    ] {
        assert_eq!(parse_vm_rss(malformed), None, "{malformed:?}");
    }
    assert_eq!(parse_vm_rss(&format!("VmRSS: {} kB\n", u64::MAX)), None);
}

#[test]
fn reads_the_cgroup_of_a_hybrid_and_a_unified_host() {
    let hybrid = parse_proc_cgroup(fixture!("proc_self_cgroup.hybrid.txt"));
    assert_eq!(hybrid.unified.as_deref(), Some("/"));
    assert_eq!(
        hybrid.memory.as_deref(),
        Some("/process_api/1c3a4bd33933fff8da23b52fbca1655d")
    );
    assert_eq!(hybrid.cpu, Some(("cpu".to_string(), "/".to_string())));

    let unified = parse_proc_cgroup(fixture!("proc_self_cgroup.v2.txt"));
    assert_eq!(
        unified.unified.as_deref(),
        Some("/system.slice/ray-gateway.service")
    );
    assert_eq!((unified.memory, unified.cpu), (None, None));

    let v1 = parse_proc_cgroup("4:cpu,cpuacct:/user.slice\n3:memory:/user.slice\n");
    assert_eq!(
        v1.cpu,
        Some(("cpu,cpuacct".to_string(), "/user.slice".to_string()))
    );
    assert_eq!(v1.unified, None);
}

#[test]
fn ignores_malformed_and_escaping_cgroup_lines() {
    let paths = parse_proc_cgroup(
        "garbage\n0::relative/path\n0::/../../etc\n4:memory:/a/../../b\n\n0:x:/not-unified\n",
    );
    assert_eq!(paths, CgroupPaths::default());
}

#[test]
fn reads_captured_psi_files() {
    let host = parse_psi(fixture!("proc_pressure_cpu.txt")).unwrap();
    let some = host.some.unwrap();
    assert!((0.0..=100.0).contains(&some.avg10));
    assert!(some.total_usec > 0);
    assert_eq!(host.full.unwrap().total_usec, 0);
    for text in [
        fixture!("proc_pressure_memory.txt"),
        fixture!("v2_cpu.pressure.txt"),
        fixture!("v2_memory.pressure.txt"),
    ] {
        let psi = parse_psi(text).unwrap();
        assert!(psi.some.is_some() && psi.full.is_some(), "{text}");
    }
    let psi = parse_psi(
        "some avg10=1.50 avg60=0.25 avg300=0.05 total=1234\nfull avg10=0.75 avg60=0.10 avg300=0.00 total=99\n",
    )
    .unwrap();
    assert_eq!(
        psi.full,
        Some(PsiLine {
            avg10: 0.75,
            avg60: 0.10,
            avg300: 0.0,
            total_usec: 99
        })
    );
    assert_eq!(psi.some.unwrap().avg10, 1.5);
}

#[test]
fn malformed_psi_lines_are_skipped() {
    // Older kernels have no `full` line for CPU at the host level.
    let only_some = parse_psi("some avg10=2.00 avg60=1.00 avg300=0.50 total=7\n").unwrap();
    assert!(only_some.full.is_none());
    for malformed in [
        "",
        "some\n",
        "some avg10=NaN avg60=0 avg300=0 total=1\n",
        "some avg10=101 avg60=0 avg300=0 total=1\n",
        "some avg10=-1 avg60=0 avg300=0 total=1\n",
        "some avg10=1 avg60=1 total=1\n",
        "some avg10=1 avg60=1 avg300=1 total=-3\n",
        "some avg10:1 avg60=1 avg300=1 total=3\n",
        "partial avg10=1 avg60=1 avg300=1 total=3\n",
    ] {
        assert_eq!(parse_psi(malformed), None, "{malformed:?}");
    }
    // A bad line does not hide a good one.
    let psi = parse_psi("some avg10=x\nfull avg10=3.00 avg60=2.00 avg300=1.00 total=5\n").unwrap();
    assert_eq!((psi.some, psi.full.unwrap().avg10), (None, 3.0));
}

#[test]
fn reads_v2_memory_files() {
    assert_eq!(
        parse_u64(fixture!("v2_memory.current.txt")),
        Some(734_003_200)
    );
    assert_eq!(
        parse_limit(fixture!("v2_memory.max.txt")),
        Some(Limit::Value(1 << 30))
    );
    assert_eq!(
        parse_limit(fixture!("v2_memory.high.txt")),
        Some(Limit::Unlimited)
    );
    assert_eq!(parse_u64(fixture!("v2_memory.swap.current.txt")), Some(0));
    assert_eq!(
        parse_limit(fixture!("v2_memory.swap.max.txt")),
        Some(Limit::Unlimited)
    );
    let events = fixture!("v2_memory.events.txt");
    assert_eq!(keyed_value(events, "max"), Some(12));
    assert_eq!(keyed_value(events, "oom_kill"), Some(1));
    assert_eq!(keyed_value(events, "oom_group_kill"), Some(0));
    assert_eq!(keyed_value(events, "missing"), None);
    assert_eq!(
        keyed_value(fixture!("v2_memory.stat.txt"), "inactive_file"),
        Some(157_286_400)
    );
    for malformed in ["", "lots", "-1", "max max", "12 34"] {
        assert_eq!(parse_limit(malformed), None, "{malformed:?}");
    }
}

#[test]
fn reads_v2_cpu_files() {
    let stat = fixture!("v2_cpu.stat.txt");
    assert_eq!(keyed_value(stat, "nr_periods"), Some(40_000));
    assert_eq!(keyed_value(stat, "nr_throttled"), Some(9_000));
    assert_eq!(keyed_value(stat, "throttled_usec"), Some(180_000_000));
    let unified = fixture!("v2_unified_cpu.stat.txt");
    assert!(keyed_value(unified, "usage_usec").is_some());
    assert_eq!(
        keyed_value(unified, "nr_periods"),
        None,
        "no cpu controller, no throttling lines"
    );
    assert_eq!(
        parse_cpu_max(fixture!("v2_cpu.max.txt")),
        Some((Limit::Value(200_000), 100_000))
    );
    assert_eq!(
        parse_cpu_max("max 100000\n"),
        Some((Limit::Unlimited, 100_000))
    );
    for malformed in ["", "max", "100 0", "a b", "100 200 300"] {
        assert_eq!(parse_cpu_max(malformed), None, "{malformed:?}");
    }
}

#[test]
fn reads_captured_v1_files() {
    assert_eq!(
        parse_v1_limit(fixture!("v1_memory.limit_in_bytes.txt")),
        Some(Limit::Unlimited),
        "the v1 no-limit value"
    );
    assert_eq!(parse_v1_limit("-1\n"), Some(Limit::Unlimited));
    assert_eq!(parse_v1_limit("536870912\n"), Some(Limit::Value(512 << 20)));
    assert!(parse_u64(fixture!("v1_memory.usage_in_bytes.txt")).is_some());
    assert!(keyed_value(fixture!("v1_memory.stat.txt"), "total_inactive_file").is_some());
    assert_eq!(
        keyed_value(fixture!("v1_memory.oom_control.txt"), "oom_kill"),
        Some(0)
    );
    let stat = fixture!("v1_cpu.stat.txt");
    assert_eq!(keyed_value(stat, "nr_periods"), Some(0));
    assert_eq!(keyed_value(stat, "throttled_time"), Some(0));
    assert_eq!(parse_v1_limit("-2"), None);
}

proptest! {
    #![proptest_config(crate::fuzz_config(2_048))]

    #[test]
    fn parsers_never_panic_on_any_text(text in any::<String>()) {
        let _ = parse_vm_rss(&text);
        let _ = parse_u64(&text);
        let _ = parse_limit(&text);
        let _ = parse_v1_limit(&text);
        let _ = keyed_value(&text, "nr_periods");
        let _ = parse_cpu_max(&text);
        let _ = parse_proc_cgroup(&text);
        if let Some(psi) = parse_psi(&text) {
            for line in [psi.some, psi.full].into_iter().flatten() {
                prop_assert!((0.0..=100.0).contains(&line.avg10));
            }
        }
    }

    #[test]
    fn parsers_never_panic_on_file_like_text(
        lines in prop::collection::vec(
            "(some|full|nr_periods|max|oom_kill|VmRSS:|0:|[0-9]{1,2}:memory|inactive_file)[ :=]{0,2}(avg10=|total=|max|-1|/|[0-9]{0,22}|[0-9.]{0,8}| ){0,6}",
            0..8,
        ),
    ) {
        let text = lines.join("\n");
        let _ = parse_vm_rss(&text);
        let _ = parse_limit(&text);
        let _ = parse_v1_limit(&text);
        let _ = keyed_value(&text, "max");
        let _ = parse_cpu_max(&text);
        let paths = parse_proc_cgroup(&text);
        for path in [paths.unified, paths.memory].into_iter().flatten() {
            prop_assert!(path.starts_with('/') && !path.split('/').any(|p| p == ".."));
        }
        let _ = parse_psi(&text);
    }
}
