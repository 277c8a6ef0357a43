//! The prompt compiler: whitespace and repeated-line normalisation, and the prompt family key
//! that drives slot affinity, scheduler affinity and learned output caps.

use std::collections::{BTreeMap, HashSet};

use ray_core::config::PromptCompilerConfig;
use sha2::{Digest, Sha256};

/// The result of compiling one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// The normalised input.
    pub input: String,
    /// The normalised system prompt (dropped when it became empty).
    pub system: Option<String>,
    /// Chars of input plus system before.
    pub chars_before: u64,
    /// Chars after.
    pub chars_after: u64,
}

/// Normalises input and system prompt as configured. Returns them unchanged when the compiler
/// is disabled.
pub fn compile(config: &PromptCompilerConfig, input: &str, system: Option<&str>) -> Compiled {
    let chars_before = count(input) + system.map_or(0, count);
    if !config.enabled {
        return Compiled {
            input: input.to_string(),
            system: system.map(String::from),
            chars_before,
            chars_after: chars_before,
        };
    }
    let (mut input, mut system) = if config.collapse_whitespace {
        (collapse_whitespace(input), system.map(collapse_whitespace))
    } else {
        (input.to_string(), system.map(String::from))
    };
    if config.dedupe_repeated_lines {
        if let Some(system) = &system {
            let system_lines: HashSet<String> =
                system.lines().map(|l| l.trim().to_lowercase()).collect();
            let kept: Vec<&str> = input
                .lines()
                .filter(|line| {
                    let key = line.trim().to_lowercase();
                    key.chars().count() < 20 || !system_lines.contains(&key)
                })
                .collect();
            if kept.iter().any(|l| !l.trim().is_empty()) {
                input = kept.join("\n");
            }
        }
        input = dedupe_and_tidy(input);
        system = system.map(dedupe_and_tidy);
    }
    let system = system.filter(|s| !s.is_empty());
    let chars_after = count(&input) + system.as_deref().map_or(0, count);
    Compiled {
        input,
        system,
        chars_before,
        chars_after,
    }
}

fn count(text: &str) -> u64 {
    text.chars().count() as u64
}

/// CRLF to LF; each line trimmed with runs of spaces and tabs collapsed; 3+ newlines to 2;
/// the whole text trimmed. One pass, one allocation.
pub fn collapse_whitespace(text: &str) -> String {
    // Most prompts have nothing to collapse: no tab, CR or LF, no two spaces in a row, no
    // space at either end. Those are copied whole.
    let bytes = text.as_bytes();
    let plain = bytes.first() != Some(&b' ')
        && bytes.last() != Some(&b' ')
        && !bytes
            .iter()
            .any(|&byte| matches!(byte, b'\t' | b'\r' | b'\n'))
        && !bytes.windows(2).any(|pair| pair == b"  ");
    if plain {
        return text.to_string();
    }
    collapse_runs(text)
}

/// [`collapse_whitespace`]'s pass over every char.
fn collapse_runs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Pending separators, written only when more text follows on the line / in the text.
    let mut pending_space = false;
    let mut pending_newlines = 0usize;
    let mut chars = text.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            ' ' | '\t' => pending_space = true,
            '\r' | '\n' => {
                if ch == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                pending_space = false;
                if !out.is_empty() {
                    pending_newlines += 1;
                }
            }
            _ => {
                if pending_newlines > 0 {
                    for _ in 0..pending_newlines.min(2) {
                        out.push('\n');
                    }
                    pending_newlines = 0;
                } else if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                out.push(ch);
            }
        }
    }
    out
}

/// Collapses 3+ newlines to 2 and trims.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut newlines = 0;
    for ch in text.trim().chars() {
        if ch == '\n' {
            newlines += 1;
            if newlines <= 2 {
                out.push(ch);
            }
        } else {
            newlines = 0;
            out.push(ch);
        }
    }
    out
}

/// [`dedupe_lines`] then [`tidy`]. One line has nothing to dedupe and no newlines to tidy:
/// it is only trimmed (no copy when there is nothing to trim).
fn dedupe_and_tidy(text: String) -> String {
    if !text.contains('\n') {
        let trimmed = text.trim();
        return if trimmed.len() == text.len() {
            text
        } else {
            trimmed.to_string()
        };
    }
    tidy(&dedupe_lines(&text))
}

/// Drops later duplicates of non-blank lines (case-insensitive, trimmed compare).
fn dedupe_lines(text: &str) -> String {
    let mut seen = HashSet::new();
    text.lines()
        .filter(|line| {
            let key = line.trim().to_lowercase();
            key.is_empty() || seen.insert(key)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The prompt family of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// 16 hex chars.
    pub key: String,
    /// The same as a number (scheduler affinity).
    pub affinity: u64,
    /// The human-readable seed: the template family, a metadata value, or the input's shape.
    pub label: String,
}

/// The family of a prompt: a hash of the system prompt and a seed, where the seed is the
/// template family, else the first non-empty value among the configured metadata keys, else the
/// input's shape (numbers, URLs, e-mail addresses, quoted strings and hex runs replaced by
/// placeholders), so that prompts built from one template land in one family.
pub fn family(
    config: &PromptCompilerConfig,
    template_family: Option<&str>,
    metadata: &BTreeMap<String, String>,
    system: Option<&str>,
    input: &str,
) -> Family {
    let label = template_family
        .map(String::from)
        .or_else(|| {
            config
                .family_metadata_keys
                .iter()
                .filter_map(|key| metadata.get(key))
                .find(|value| !value.trim().is_empty())
                .cloned()
        })
        .unwrap_or_else(|| input_shape(input));
    let mut hasher = Sha256::new();
    hasher.update(system.unwrap_or("").as_bytes());
    hasher.update([0]);
    hasher.update(label.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    let affinity = u64::from_be_bytes(bytes);
    let mut key = String::with_capacity(16);
    crate::ids::push_hex16(&mut key, affinity);
    Family {
        key,
        affinity,
        label,
    }
}

/// Longest shape, in bytes.
const SHAPE_LIMIT: usize = 240;

/// Longest quoted string replaced by `"<value>"`, in chars.
const QUOTED_LIMIT: usize = 120;

/// The shape of an input: lower-cased, whitespace collapsed, variable parts replaced, at most
/// 240 bytes. URLs become `<url>`, e-mail addresses `<email>`, runs of 8+ hex digits with a
/// digit among them `<hex>`, other digit runs `<number>`, and quoted strings of at most 120
/// chars `"<value>"`.
///
/// The work is linear in the input and stops once the shape is full, so a hostile prompt (one
/// long word of hex letters, say) costs no more than reading it once.
pub fn input_shape(input: &str) -> String {
    let mut out = String::with_capacity(input.len().min(SHAPE_LIMIT + 16));
    let mut rest = input;
    while out.len() < SHAPE_LIMIT {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        // A quoted string of at most 120 chars, possibly spanning words. Only the first 121
        // chars after the quote are searched, so many quotes cannot make this quadratic.
        if let Some(after) = rest.strip_prefix('"')
            && let Some((close, _)) = after
                .char_indices()
                .take(QUOTED_LIMIT + 1)
                .find(|&(_, ch)| ch == '"')
        {
            out.push_str("\"<value>\"");
            rest = &after[close + 1..];
            continue;
        }
        let end = word_end(rest);
        shape_word(&rest[..end], &mut out);
        rest = &rest[end..];
    }
    truncate_at_char(&mut out, SHAPE_LIMIT);
    out
}

/// Where the first word of `text` ends: at its first whitespace (as `char::is_whitespace`
/// says), or at its end. ASCII is looked at byte by byte; only from the first non-ASCII byte
/// on are chars decoded.
fn word_end(text: &str) -> usize {
    match text
        .bytes()
        .position(|byte| matches!(byte, b' ' | b'\t'..=b'\r') || !byte.is_ascii())
    {
        Some(at) if !text.as_bytes()[at].is_ascii() => text[at..]
            .find(char::is_whitespace)
            .map_or(text.len(), |end| at + end),
        Some(at) => at,
        None => text.len(),
    }
}

/// Whether `word` holds `://` (a URL's scheme separator).
fn has_scheme_separator(word: &str) -> bool {
    let bytes = word.as_bytes();
    bytes
        .iter()
        .enumerate()
        .any(|(at, &byte)| byte == b':' && bytes[at + 1..].starts_with(b"//"))
}

/// Appends the shape of one word to `out`, stopping once `out` holds [`SHAPE_LIMIT`] bytes.
///
/// The word is read as alternating runs: a maximal run of ASCII hex digits, then a run of
/// anything else. A hex run of 8+ with a digit is `<hex>`; any other hex run is copied with its
/// digit runs as `<number>` (no part of a run can qualify as `<hex>` when the whole run does
/// not). Every byte is looked at a bounded number of times.
fn shape_word(word: &str, out: &mut String) {
    // Most words of a prompt are plain: ASCII with no digit, `@` or `:`. Nothing in them is
    // replaced, so their shape is the word lower-cased.
    if word
        .bytes()
        .all(|byte| byte.is_ascii() && !byte.is_ascii_digit() && byte != b'@' && byte != b':')
    {
        let from = out.len();
        let take = word.len().min(SHAPE_LIMIT.saturating_sub(from));
        out.push_str(&word[..take]);
        out[from..].make_ascii_lowercase();
        return;
    }
    if has_scheme_separator(word) {
        out.push_str("<url>");
        return;
    }
    if let Some((local, domain)) = word.split_once('@')
        && !local.is_empty()
        && domain.contains('.')
    {
        out.push_str("<email>");
        return;
    }
    let bytes = word.as_bytes();
    let mut i = 0;
    while i < bytes.len() && out.len() < SHAPE_LIMIT {
        let start = i;
        if bytes[i].is_ascii_hexdigit() {
            while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                i += 1;
            }
            let run = &bytes[start..i];
            if run.len() >= 8 && run.iter().any(u8::is_ascii_digit) {
                out.push_str("<hex>");
            } else {
                push_short_hex_run(run, out);
            }
            continue;
        }
        // Up to the next hex digit (ASCII, so always a char boundary), lower-cased.
        while i < bytes.len() && !bytes[i].is_ascii_hexdigit() {
            i += 1;
        }
        let run = &word[start..i];
        if run.is_ascii() {
            // One byte a char: copied whole up to the limit, then lower-cased in place.
            let from = out.len();
            let take = run.len().min(SHAPE_LIMIT.saturating_sub(from));
            out.push_str(&run[..take]);
            out[from..].make_ascii_lowercase();
            continue;
        }
        for ch in run.chars() {
            if out.len() >= SHAPE_LIMIT {
                break;
            }
            out.extend(ch.to_lowercase());
        }
    }
}

/// A hex run that is not a `<hex>` token: letters lower-cased, digit runs as `<number>`.
fn push_short_hex_run(run: &[u8], out: &mut String) {
    let mut in_number = false;
    for &byte in run {
        if out.len() >= SHAPE_LIMIT {
            return;
        }
        if byte.is_ascii_digit() {
            if !in_number {
                out.push_str("<number>");
                in_number = true;
            }
        } else {
            out.push(char::from(byte.to_ascii_lowercase()));
            in_number = false;
        }
    }
}

/// Cuts `text` to at most `limit` bytes, at a char boundary.
fn truncate_at_char(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The copy of a prompt with nothing to collapse gives what the full pass gives.
        #[test]
        fn plain_text_shortcut_is_the_full_pass(text in "[a-c \t\r\n\u{a0}\x0bé]{0,24}") {
            proptest::prop_assert_eq!(collapse_whitespace(&text), collapse_runs(&text));
        }

        /// The one-line shortcut gives what the two passes give.
        #[test]
        fn dedupe_and_tidy_is_the_two_passes(text in "[a-c \t\r\n\u{3000}A]{0,24}") {
            proptest::prop_assert_eq!(dedupe_and_tidy(text.clone()), tidy(&dedupe_lines(&text)));
        }
    }

    fn config() -> PromptCompilerConfig {
        PromptCompilerConfig {
            enabled: true,
            collapse_whitespace: true,
            dedupe_repeated_lines: true,
            family_metadata_keys: vec!["promptFamily".into(), "useCase".into()],
        }
    }

    #[test]
    fn collapses_whitespace() {
        assert_eq!(
            collapse_whitespace("  a \t  b  \r\n\r\n\r\n\n  c  "),
            "a b\n\nc"
        );
        assert_eq!(collapse_whitespace("a\r\nb\rc\n d"), "a\nb\nc\nd");
        assert_eq!(collapse_whitespace("\n\n  x\n\n"), "x");
        assert_eq!(collapse_whitespace(""), "");
    }

    #[test]
    fn drops_repeated_lines_and_lines_already_in_the_system_prompt() {
        let compiled = compile(
            &config(),
            "Always answer in English please.\nhello\nHELLO\nworld",
            Some("always answer in english please."),
        );
        assert_eq!(compiled.input, "hello\nworld");
        assert!(compiled.chars_after < compiled.chars_before);
    }

    #[test]
    fn does_not_empty_the_input() {
        let compiled = compile(
            &config(),
            "Always answer in English please.",
            Some("Always answer in English please."),
        );
        assert_eq!(compiled.input, "Always answer in English please.");
    }

    #[test]
    fn only_lines_of_twenty_chars_or_more_are_dropped_for_the_system_prompt() {
        let compiled = compile(
            &config(),
            "Be brief.\nAnswer in English, always.\nWhat is Ray?",
            Some("Be brief.\nAnswer in English, always."),
        );
        // "Be brief." is 9 chars: kept; the 26-char line is already in the system prompt.
        assert_eq!(compiled.input, "Be brief.\nWhat is Ray?");
    }

    #[test]
    fn the_system_prompt_is_deduplicated_and_newlines_collapse_after_dedupe() {
        let compiled = compile(
            &config(),
            "a\n\nb\n\nA\n\nB\n\nc",
            Some("Rule one.\nrule ONE.\nRule two."),
        );
        assert_eq!(compiled.system.as_deref(), Some("Rule one.\nRule two."));
        // The dropped lines leave four newlines in a row, collapsed back to two.
        assert_eq!(compiled.input, "a\n\nb\n\nc");
        let only_whitespace = compile(&config(), "x", Some("   \n\t "));
        assert_eq!(
            only_whitespace.system, None,
            "a blank system prompt is dropped"
        );
    }

    #[test]
    fn each_step_can_be_turned_off() {
        let mut config = config();
        config.collapse_whitespace = false;
        let compiled = compile(&config, "a  b\na  b", None);
        assert_eq!(compiled.input, "a  b", "deduped but not collapsed");
        config.collapse_whitespace = true;
        config.dedupe_repeated_lines = false;
        let compiled = compile(&config, "a  b\na  b", None);
        assert_eq!(compiled.input, "a b\na b", "collapsed but not deduped");
    }

    #[test]
    fn the_family_is_computed_even_with_the_compiler_off_and_skips_blank_metadata() {
        let mut config = config();
        config.enabled = false;
        let metadata = BTreeMap::from([
            ("promptFamily".to_string(), "  ".to_string()),
            ("useCase".to_string(), "billing".to_string()),
        ]);
        let f = family(&config, None, &metadata, None, "anything");
        assert_eq!(f.label, "billing", "the blank first key is skipped");
        let with_system = family(&config, None, &metadata, Some("Be terse."), "anything");
        assert_ne!(
            f.key, with_system.key,
            "the system prompt is part of the family"
        );
        assert_eq!(f.key, format!("{:016x}", f.affinity));
    }

    #[test]
    fn disabled_compiler_changes_nothing() {
        let mut config = config();
        config.enabled = false;
        let compiled = compile(&config, "  a  ", None);
        assert_eq!(compiled.input, "  a  ");
        assert_eq!(compiled.chars_before, compiled.chars_after);
    }

    #[test]
    fn prompts_of_one_shape_share_a_family() {
        let empty = BTreeMap::new();
        let a = family(
            &config(),
            None,
            &empty,
            None,
            "Order 12345 from bob@x.io at https://a.b/c",
        );
        let b = family(
            &config(),
            None,
            &empty,
            None,
            "order 999 from amy@y.org at http://z",
        );
        let c = family(&config(), None, &empty, None, "something else entirely");
        assert_eq!(a.key, b.key);
        assert_ne!(a.key, c.key);
        assert_eq!(a.key.len(), 16);
        assert_eq!(a.label, "order <number> from <email> at <url>");
    }

    #[test]
    fn metadata_and_templates_name_the_family() {
        let metadata = BTreeMap::from([("useCase".to_string(), "support".to_string())]);
        let f = family(&config(), None, &metadata, None, "anything");
        assert_eq!(f.label, "support");
        let t = family(
            &config(),
            Some("email.follow_up"),
            &metadata,
            None,
            "anything",
        );
        assert_eq!(t.label, "email.follow_up");
    }

    #[test]
    fn shapes_are_bounded_and_lower_cased() {
        let shape = input_shape(&"Word ".repeat(200));
        assert_eq!(shape.len(), 240);
        assert!(shape.starts_with("word word"));
        assert_eq!(input_shape("ÉTÉ 2024"), "été <number>");
        assert_eq!(input_shape("abc12 cafe"), "abc<number> cafe");
    }

    #[test]
    fn short_hex_runs_keep_their_letters_and_number_their_digits() {
        assert_eq!(input_shape("1a2b3c"), "<number>a<number>b<number>c");
        assert_eq!(input_shape("Cafe12 BEEF"), "cafe<number> beef");
        assert_eq!(input_shape("x12345678y"), "x<hex>y");
        assert_eq!(
            input_shape("deadbeefcafe"),
            "deadbeefcafe",
            "no digit, no <hex>"
        );
    }

    #[test]
    fn hostile_long_inputs_are_shaped_in_one_pass_and_bounded() {
        const MIB: usize = 1 << 20;
        assert_eq!(input_shape(&"a".repeat(MIB)), "a".repeat(240));
        assert_eq!(input_shape(&"abcdef".repeat(MIB / 6)), "abcdef".repeat(40));
        assert_eq!(input_shape(&"a1".repeat(MIB / 2)), "<hex>");
        for input in [
            "1ag".repeat(MIB / 3),
            "\"a ".repeat(MIB / 3),
            format!("\"{}", "x".repeat(MIB)),
            "ab ".repeat(MIB / 3),
            format!("{} {}", "a".repeat(MIB), "b".repeat(MIB)),
        ] {
            let shape = input_shape(&input);
            assert!(shape.len() <= 240, "{shape}");
            assert_eq!(shape, reference_shape(&input));
        }
    }

    #[test]
    fn shapes_hex_and_quotes() {
        assert_eq!(
            input_shape(r#"commit deadbeef42 says "fix it""#),
            r#"commit <hex> says "<value>""#
        );
    }

    /// A direct transcription of the rules over a `Vec<char>`, with no early exits: slow, but
    /// easy to check by eye.
    fn reference_shape(input: &str) -> String {
        let chars: Vec<char> = input.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        loop {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i == chars.len() || out.len() >= 240 {
                break;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            if chars[i] == '"'
                && let Some(close) = chars[i + 1..].iter().position(|&ch| ch == '"')
                && close <= 120
            {
                out.push_str("\"<value>\"");
                i += close + 2;
                continue;
            }
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() {
                i += 1;
            }
            out.push_str(&reference_word(&chars[start..i].iter().collect::<String>()));
        }
        let mut cut = out.len().min(240);
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out
    }

    fn reference_word(word: &str) -> String {
        if word.contains("://") {
            return "<url>".into();
        }
        if let Some((local, domain)) = word.split_once('@')
            && !local.is_empty()
            && domain.contains('.')
        {
            return "<email>".into();
        }
        let chars: Vec<char> = word.chars().collect();
        let mut out = String::new();
        let mut i = 0;
        while i < chars.len() {
            let start = i;
            let hex = chars[i].is_ascii_hexdigit();
            while i < chars.len() && chars[i].is_ascii_hexdigit() == hex {
                i += 1;
            }
            let run = &chars[start..i];
            if hex && run.len() >= 8 && run.iter().any(char::is_ascii_digit) {
                out.push_str("<hex>");
                continue;
            }
            for (k, ch) in run.iter().enumerate() {
                if ch.is_ascii_digit() {
                    if k == 0 || !run[k - 1].is_ascii_digit() {
                        out.push_str("<number>");
                    }
                } else {
                    out.extend(ch.to_lowercase());
                }
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn shapes_match_the_reference_on_prompt_like_text(
            input in "[a-fA-F0-9g-zG-Z \"@:/._\t\n\x0b\u{85}\u{a0}é€İ-]{0,400}"
        ) {
            proptest::prop_assert_eq!(input_shape(&input), reference_shape(&input));
        }

        #[test]
        fn shapes_match_the_reference_on_any_text(input in proptest::arbitrary::any::<String>()) {
            proptest::prop_assert_eq!(input_shape(&input), reference_shape(&input));
        }

        #[test]
        fn shapes_match_the_reference_on_long_words(
            word in "[a-f0-9g]{200,3000}", tail in "[ a-z0-9\"]{0,40}"
        ) {
            let input = format!("{word}{tail}");
            proptest::prop_assert_eq!(input_shape(&input), reference_shape(&input));
        }
    }
}
