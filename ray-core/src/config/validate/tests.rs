use super::*;
use crate::config::profiles::profile_defaults;
use crate::config::types::*;

fn errors(config: &RayConfig) -> Vec<String> {
    validate(config)
        .into_iter()
        .filter(Diagnostic::is_error)
        .map(|d| d.to_string())
        .collect()
}

#[test]
fn every_profile_default_is_valid() {
    for profile in Profile::ALL {
        let config = profile_defaults(profile);
        assert_eq!(errors(&config), Vec::<String>::new(), "{profile}");
    }
}

#[test]
fn reports_every_problem_with_its_path() {
    let mut config = profile_defaults(Profile::Tiny);
    config.scheduler.max_queue = 0;
    config.cache.max_entries = 5_000;
    config.rate_limit.max_keys = 0;
    let errors = errors(&config);
    assert!(errors.contains(&"scheduler.maxQueue: must be at least 1, got 0".to_string()));
    assert!(errors.contains(&"cache.maxEntries: must be at most 4096, got 5000".to_string()));
    assert!(errors.contains(&"rateLimit.maxKeys: must be at least 1, got 0".to_string()));
}

#[test]
fn an_invalid_bound_is_reported_once_not_as_a_made_up_bound_of_other_fields() {
    let mut config = profile_defaults(Profile::Sub1b);
    config.scheduler.max_queue = 0;
    assert_eq!(
        errors(&config),
        vec!["scheduler.maxQueue: must be at least 1, got 0".to_string()]
    );

    let mut config = profile_defaults(Profile::Sub1b);
    config.model.max_output_tokens = 0;
    let errors = errors(&config);
    assert!(
        errors.contains(&"model.maxOutputTokens: must be at least 1, got 0".to_string()),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .all(|e| !e.contains("model.maxOutputTokens (")),
        "{errors:?}"
    );

    // A bound the user gave is quoted as given.
    let mut config = profile_defaults(Profile::Sub1b);
    config.scheduler.max_queue = 8;
    assert!(errors_contain(
        &config,
        "gracefulDegradation.queueDepthThreshold: must be at most scheduler.maxQueue - 1 (7), \
         got 16"
    ));
    // One queue place leaves no depth below it: the fix is the queue or degradation, never a
    // threshold of 0. Without degradation, one place is a valid queue.
    config.scheduler.max_queue = 1;
    config.scheduler.affinity_lookahead = 1;
    assert_eq!(
        self::errors(&config),
        vec![
            "gracefulDegradation.queueDepthThreshold: must be below scheduler.maxQueue, which is \
             1: raise scheduler.maxQueue to at least 2, or set gracefulDegradation.enabled to \
             false"
                .to_string()
        ]
    );
    config.graceful_degradation.enabled = false;
    assert_eq!(self::errors(&config), Vec::<String>::new());
}

#[test]
fn critical_memory_thresholds_are_checked_and_a_refusal_before_the_clamp_warns() {
    let mut config = profile_defaults(Profile::Sub1b);
    config.graceful_degradation.critical_cgroup_memory_ratio = 1.5;
    config.graceful_degradation.critical_memory_psi_full_avg10 = 0.0;
    let errors = errors(&config);
    assert!(errors.contains(
        &"gracefulDegradation.criticalCgroupMemoryRatio: must be at most 1, got 1.5".to_string()
    ));
    assert!(
        errors.contains(
            &"gracefulDegradation.criticalMemoryPsiFullAvg10: must be greater than 0, got 0"
                .to_string()
        )
    );

    let mut config = profile_defaults(Profile::Sub1b);
    config.graceful_degradation.critical_memory_psi_full_avg10 = 0.5;
    let warnings: Vec<String> = validate(&config)
        .into_iter()
        .filter(|d| !d.is_error())
        .map(|d| d.to_string())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("gracefulDegradation.criticalMemoryPsiFullAvg10: is below")),
        "{warnings:?}"
    );
    // With the refusal off, the threshold does nothing and nothing is said.
    config.graceful_degradation.refuse_on_critical_memory = false;
    assert!(validate(&config).is_empty());
}

fn errors_contain(config: &RayConfig, message: &str) -> bool {
    errors(config).iter().any(|e| e == message)
}

#[test]
fn an_api_key_strategy_without_auth_warns_that_the_ip_decides() {
    let mut config = profile_defaults(Profile::Sub1b);
    config.rate_limit.key_strategy = RateLimitKeyStrategy::IpApiKey;
    let warnings: Vec<String> = validate(&config)
        .into_iter()
        .filter(|d| !d.is_error() && d.path == "rateLimit.keyStrategy")
        .map(|d| d.message)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("limited by its IP"), "{warnings:?}");
    config.auth.enabled = true;
    assert!(
        validate(&config)
            .iter()
            .all(|d| d.path != "rateLimit.keyStrategy")
    );
}

#[test]
fn base_url_may_not_point_at_the_gateway() {
    let mut config = profile_defaults(Profile::Vps);
    if let AdapterConfig::OpenAiCompatible(a) = &mut config.model.adapter {
        a.base_url = "http://localhost:3000".into();
    }
    assert!(
        errors(&config)
            .iter()
            .any(|e| e.contains("points at the gateway itself"))
    );
}

#[test]
fn launch_profile_ties_base_url_to_its_port() {
    let mut config = profile_defaults(Profile::Sub1b);
    if let AdapterConfig::LlamaCpp(a) = &mut config.model.adapter {
        a.base_url = "http://127.0.0.1:9000".into();
    }
    assert!(
        errors(&config)
            .iter()
            .any(|e| e.contains("differs from launchProfile.port"))
    );
}

#[test]
fn generated_flags_are_refused_in_extra_args() {
    let mut config = profile_defaults(Profile::Sub1b);
    if let AdapterConfig::LlamaCpp(a) = &mut config.model.adapter {
        a.launch_profile.as_mut().unwrap().extra_args =
            Some(vec!["--ctx-size=9".into(), "--mlock".into(), "-np".into()]);
    }
    let errors = errors(&config);
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn a_slot_save_path_is_absolute_and_set_in_one_place() {
    let mut config = profile_defaults(Profile::Sub1b);
    if let AdapterConfig::LlamaCpp(a) = &mut config.model.adapter {
        let launch = a.launch_profile.as_mut().unwrap();
        launch.slot_save_path = Some("/var/lib/ray/slots".into());
    }
    assert_eq!(errors(&config), Vec::<String>::new());
    if let AdapterConfig::LlamaCpp(a) = &mut config.model.adapter {
        let launch = a.launch_profile.as_mut().unwrap();
        launch.slot_save_path = Some("slots".into());
        launch.extra_args = Some(vec!["--jinja".into(), "--slot-save-path=/tmp".into()]);
    }
    assert_eq!(
        errors(&config),
        [
            "model.adapter.launchProfile.slotSavePath: must be an absolute directory path, \
             got \"slots\"",
            "model.adapter.launchProfile.extraArgs[1]: --slot-save-path is generated from \
             slotSavePath; set only one of them"
        ]
    );
}

#[test]
fn public_bind_without_auth_warns() {
    let mut config = profile_defaults(Profile::Tiny);
    config.server.host = "0.0.0.0".into();
    let diagnostics = validate(&config);
    assert!(
        diagnostics
            .iter()
            .any(|d| !d.is_error() && d.path == "auth.enabled")
    );
}

#[test]
fn parses_urls() {
    let url = ParsedUrl::parse("http://[::1]:8081/").unwrap();
    assert_eq!((url.host.as_str(), url.port), ("::1", 8081));
    assert!(ParsedUrl::parse("http://user:pw@host").is_err());
    assert!(ParsedUrl::parse("ftp://host").is_err());
    assert!(ParsedUrl::parse("http://host?x=1").is_err());
    assert!(ParsedUrl::parse("http://host:0").is_err());
    assert_eq!(ParsedUrl::parse("https://h").unwrap().port, 443);
    // The port is 1 to 65535 in digits, as the schema's pattern says.
    for bad in [
        "http://host:65536",
        "http://host:+80",
        "http://host:",
        "http://host:8o",
        "http://a:b:80",
        "http://::1:80",
        "http://[zz]:80",
        "http://[::1]x",
    ] {
        assert!(ParsedUrl::parse(bad).is_err(), "{bad}");
    }
    assert_eq!(ParsedUrl::parse("http://host:65535").unwrap().port, 65535);
    assert_eq!(ParsedUrl::parse("http://host:0080").unwrap().port, 80);
}

#[test]
fn every_spelling_of_the_ipv6_loopback_is_loopback() {
    use super::address::{same_host, url_host};
    for host in [
        "::1",
        "[::1]",
        "0:0:0:0:0:0:0:1",
        "[0:0:0:0:0:0:0:1]",
        "0000:0000:0000:0000:0000:0000:0000:0001",
        "0::0:1",
        "localhost",
        "127.1.2.3",
    ] {
        assert!(is_loopback_host(host), "{host}");
    }
    for host in [
        "[::1",
        "::1]",
        "[[::1]]",
        "::2",
        "::0.0.0.1",
        "0.0.0.0",
        "::",
    ] {
        assert!(!is_loopback_host(host), "{host}");
    }
    assert!(same_host("[0:0:0:0:0:0:0:1]", "::1"));
    assert!(!same_host("::1", "127.0.0.1"));
    assert_eq!(url_host("0:0:0:0:0:0:0:1"), "[0:0:0:0:0:0:0:1]");
    assert_eq!(url_host("[::1]"), "[::1]");
    assert_eq!(url_host("127.0.0.1"), "127.0.0.1");
}

#[test]
fn a_launch_host_in_the_long_ipv6_form_matches_a_base_url_on_the_short_one() {
    let mut config = profile_defaults(Profile::Sub1b);
    if let AdapterConfig::LlamaCpp(a) = &mut config.model.adapter {
        let launch = a.launch_profile.as_mut().unwrap();
        launch.host = "[0:0:0:0:0:0:0:1]".into();
        a.base_url = format!("http://[::1]:{}", launch.port);
    }
    assert_eq!(errors(&config), Vec::<String>::new());
    // Another address is still refused.
    if let AdapterConfig::LlamaCpp(a) = &mut config.model.adapter {
        a.base_url = format!(
            "http://127.0.0.1:{}",
            a.launch_profile.as_ref().unwrap().port
        );
    }
    let errors = errors(&config);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("differs from launchProfile.host")),
        "{errors:?}"
    );
}

#[test]
fn host_patterns() {
    assert!(is_allowed_host_pattern("hooks.example.com"));
    assert!(is_allowed_host_pattern("*.example.com"));
    assert!(!is_allowed_host_pattern("*."));
    assert!(!is_allowed_host_pattern("bad host"));
}

#[test]
fn a_port_ray_picks_needs_a_managed_model_under_the_lifecycle() {
    let mut config = profile_defaults(Profile::Sub1b);
    fn launch(config: &mut RayConfig) -> &mut LaunchProfile {
        match &mut config.model.adapter {
            AdapterConfig::LlamaCpp(llama) => llama.launch_profile.as_mut().unwrap(),
            other => panic!("sub1b runs llama.cpp: {other:?}"),
        }
    }
    launch(&mut config).port = 0;
    launch(&mut config).supervise = false;
    let found = errors(&config);
    assert!(
        found
            .iter()
            .any(|e| e.starts_with("model.adapter.launchProfile.port: is 0 (Ray picks")),
        "{found:?}"
    );
    // Managed under a lifecycle: valid, and baseUrl's port is not compared with it.
    launch(&mut config).supervise = true;
    config.lifecycle = Some(crate::config::lifecycle::LifecycleConfig::default());
    assert_eq!(errors(&config), Vec::<String>::new());
}
