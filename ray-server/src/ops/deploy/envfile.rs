//! Reads a systemd `EnvironmentFile` (`/etc/ray/ray.env`): `NAME=value` lines, `#` and `;`
//! comments, blank lines, an optional `export `, and values in single or double quotes.
//!
//! The deploy subcommands read it to see the config the service will see (the `RAY_*`
//! overrides in it), never to print it: [`EnvFile::config_overrides`] keeps only the
//! variables that set config fields, so secrets such as API keys stay out of the config.

use std::path::Path;

use ray_core::config::ENV_VARS;

/// The variables of an environment file, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    /// `(name, value)` pairs; a later duplicate wins when looked up.
    pub vars: Vec<(String, String)>,
}

/// A line that is not `NAME=value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct EnvFileError {
    /// The file.
    pub file: String,
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl EnvFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<EnvFile, EnvFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| EnvFileError {
            file: path.display().to_string(),
            line: 0,
            message: format!("cannot read: {error}"),
        })?;
        EnvFile::parse(&path.display().to_string(), &text)
    }

    /// Parses the text of an environment file named `file` (for messages).
    pub fn parse(file: &str, text: &str) -> Result<EnvFile, EnvFileError> {
        let mut vars = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let error = |message: String| EnvFileError {
                file: file.to_string(),
                line: index + 1,
                message,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
            let Some((name, value)) = line.split_once('=') else {
                return Err(error("expected NAME=value".into()));
            };
            let name = name.trim();
            let valid_name = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid_name {
                return Err(error(format!("{name:?} is not a variable name")));
            }
            vars.push((name.to_string(), unquote(value.trim()).map_err(error)?));
        }
        Ok(EnvFile { vars })
    }

    /// The value of `name` (the last one, as systemd does).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The variables that set config fields (`RAY_*` names from the config's environment
    /// table, and `RAY_PROFILE`), for `ConfigLoader::with_env`.
    pub fn config_overrides(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .filter(|(name, _)| name == "RAY_PROFILE" || ENV_VARS.iter().any(|v| v.name == name))
            .cloned()
            .collect()
    }
}

fn unquote(value: &str) -> Result<String, String> {
    let Some(first) = value.chars().next() else {
        return Ok(String::new());
    };
    if first != '"' && first != '\'' {
        return Ok(value.to_string());
    }
    if value.len() < 2 || !value.ends_with(first) {
        return Err(format!("unterminated {first} quote"));
    }
    let inner = &value[1..value.len() - 1];
    if first == '\'' {
        return Ok(inner.to_string());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_comments_exports_and_quotes() {
        let file = EnvFile::parse(
            "ray.env",
            "# keys\nRAY_API_KEYS=abc,def\n\nexport RAY_LOG_LEVEL=\"debug\"\n; old\nX='a b'\nRAY_LOG_LEVEL=warn\nEMPTY=\n",
        )
        .unwrap();
        assert_eq!(file.get("RAY_API_KEYS"), Some("abc,def"));
        assert_eq!(file.get("RAY_LOG_LEVEL"), Some("warn"));
        assert_eq!(file.get("X"), Some("a b"));
        assert_eq!(file.get("EMPTY"), Some(""));
        let overrides = file.config_overrides();
        assert!(
            overrides.iter().all(|(n, _)| n == "RAY_LOG_LEVEL"),
            "{overrides:?}"
        );
        assert_eq!(overrides.len(), 2);
    }

    #[test]
    fn bad_lines_name_the_line() {
        let error = EnvFile::parse("ray.env", "A=1\nnot a line\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert_eq!(error.to_string(), "ray.env:2: expected NAME=value");
        assert!(EnvFile::parse("e", "1A=x").is_err());
        assert!(EnvFile::parse("e", "A=\"open").is_err());
    }
}
