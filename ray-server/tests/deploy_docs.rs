//! The deploy documentation stays true: every shell block of docs/deploy.md is valid shell and
//! every `ray-server` command in it parses; every doctor code is documented in
//! docs/operations.md and nothing documented is gone; every bench assertion is documented.
#![allow(clippy::unwrap_used)]

mod deploy_tools;

use std::collections::BTreeSet;

use clap::Parser;
use deploy_tools::repo_root;
use ray_server::cli::Cli;

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap()
}

/// The ```sh blocks of a markdown file.
fn shell_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Splits one shell command into words: quotes and backslashes, no expansion.
fn words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(next) = chars.next() {
                    word.push(next);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[test]
fn every_deploy_command_is_valid_shell_and_every_ray_server_command_parses() {
    let doc = read("docs/deploy.md");
    let blocks = shell_blocks(&doc);
    assert!(blocks.len() >= 10, "{} blocks", blocks.len());
    let mut parsed = 0;
    for block in &blocks {
        let check = std::process::Command::new("bash")
            .args(["-n", "-c", block])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "not valid shell:\n{block}\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        // One command per logical line (backslash-newline joins lines).
        for command in block.replace("\\\n", " ").lines() {
            let mut argv = words(command);
            if argv.first().map(String::as_str) == Some("sudo") {
                argv.remove(0);
            }
            if argv.first().map(String::as_str) != Some("ray-server") {
                continue;
            }
            Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{command}\n{e}"));
            parsed += 1;
        }
    }
    // check-config, swap-plan (twice), stage-model (twice), render, doctor, bench.
    assert!(parsed >= 8, "{parsed} ray-server commands");
}

#[test]
fn the_files_deploy_md_installs_are_the_ones_render_writes() {
    let doc = read("docs/deploy.md");
    let config = repo_root().join("examples/config/ray.sub1b.public.json");
    assert!(doc.contains("examples/config/ray.sub1b.public.json"));
    let args = deploy_tools::deploy_args(&config);
    let loaded = args.load(None).unwrap();
    let rendered = ray_server::render::render(&loaded.config, &args).unwrap();
    for file in &rendered.files {
        assert!(
            doc.contains(&format!("/tmp/ray-render/{}", file.name)),
            "deploy.md does not install {}",
            file.name
        );
    }
    // The sed in deploy.md fills in this exact line.
    let env = &rendered.file("ray.env.example").unwrap().contents;
    assert!(env.lines().any(|l| l == "RAY_API_KEYS="), "{env}");
    assert!(doc.contains(r#"sed -i "s/^RAY_API_KEYS=\$/RAY_API_KEYS=$key/" /etc/ray/ray.env"#));
    // The model the doc downloads is the one the config expects.
    let launch = loaded.config.model.adapter.launch_profile().unwrap();
    let file = launch.model_path.rsplit('/').next().unwrap();
    assert!(doc.contains(&format!("/tmp/{file}")), "{file}");
    // The workload the doc benchmarks with exists.
    assert!(
        repo_root()
            .join("examples/workloads/short-prompts.jsonl")
            .exists()
    );
}

/// Codes the doctor source emits: `"snake_case"` literals in the checks' files that are not
/// check names.
fn doctor_codes() -> BTreeSet<String> {
    let whole = ["checks.rs", "cluster.rs"]
        .iter()
        .map(|file| read(&format!("ray-server/src/doctor/{file}")))
        .map(|source| source.split("#[cfg(test)]").next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let source = whole.as_str();
    let checks: BTreeSet<&str> = ray_server::doctor::CHECKS.iter().copied().collect();
    source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.contains('_')
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .filter(|s| !checks.contains(s) && *s != "reverse_proxy")
        .map(String::from)
        .collect()
}

#[test]
fn every_doctor_code_is_documented_and_every_documented_code_exists() {
    let codes = doctor_codes();
    let problems: BTreeSet<String> = codes
        .iter()
        .filter(|c| !c.ends_with("_ok"))
        .cloned()
        .collect();
    let ok: BTreeSet<String> = codes
        .iter()
        .filter(|c| c.ends_with("_ok"))
        .cloned()
        .collect();
    // Each check has exactly its `<check>_ok`.
    let expected_ok: BTreeSet<String> = ray_server::doctor::CHECKS
        .iter()
        .map(|c| format!("{c}_ok"))
        .collect();
    assert_eq!(ok, expected_ok);
    let doc = read("docs/operations.md");
    let section = doc
        .split("## Doctor")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let documented: BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            let first = l.split('|').nth(1).unwrap_or("");
            first
                .split('`')
                .skip(1)
                .step_by(2)
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    let undocumented: Vec<_> = problems.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&problems).collect();
    assert!(
        undocumented.is_empty(),
        "not in operations.md: {undocumented:?}"
    );
    assert!(stale.is_empty(), "documented but not emitted: {stale:?}");
    assert!(problems.len() > 50, "{}", problems.len());
}

#[test]
fn every_bench_assertion_is_documented() {
    let doc = read("docs/operations.md");
    for (name, _, _) in ray_server::bench::report::ASSERTIONS {
        assert!(
            doc.contains(&format!("`{name}`")),
            "{name} is not in operations.md"
        );
    }
}
