use super::*;

#[test]
fn tags_match_the_reference_profile_table() {
    let cx23 = [
        ("engine", "llama.cpp"),
        ("hardware", "hetzner-cx23-class"),
        ("hosting", "cheap-vps"),
    ];
    let expected: [(Profile, Vec<(&str, &str)>); 7] = [
        (
            Profile::Tiny,
            vec![("hosting", "cheap-vps"), ("target", "tiny")],
        ),
        (Profile::Sub1b, [&cx23[..], &[("target", "sub1b")]].concat()),
        (
            Profile::Sub1bCax11,
            vec![
                ("engine", "llama.cpp"),
                ("hardware", "hetzner-cax11-class"),
                ("hosting", "cheap-vps"),
                ("target", "sub1b"),
            ],
        ),
        (Profile::OneB, [&cx23[..], &[("target", "1b")]].concat()),
        (
            Profile::OneB8gb,
            vec![
                ("hardware", "8gb-vps-class"),
                ("hosting", "single-node-8gb"),
            ],
        ),
        (
            Profile::Vps,
            vec![("hosting", "single-node"), ("target", "vps")],
        ),
        (
            Profile::Balanced,
            vec![("hosting", "single-node"), ("target", "balanced")],
        ),
    ];
    for (profile, tags) in expected {
        let tags: BTreeMap<String, String> = tags
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(profile_defaults(profile).tags, tags, "{profile}");
    }
}
