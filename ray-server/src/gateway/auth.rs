//! Bearer API keys: loaded once from the variable `auth.apiKeyEnv` names, compared as SHA-256
//! digests in constant time against every key.

use hyper::header::{self, HeaderMap};
use ray_core::{ErrorCode, RayError};
use sha2::{Digest, Sha256};

/// Most keys the variable may hold.
pub const MAX_KEYS: usize = 128;
/// Longest key.
pub const MAX_KEY_CHARS: usize = 1_024;
/// Largest value of the variable.
pub const MAX_VARIABLE_BYTES: usize = 64 * 1024;

/// Why the keys could not be loaded (the gateway refuses to start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthSetupError {
    /// The variable is not set or holds no key.
    #[error(
        "auth.enabled is true but {variable} holds no API key; set it to one or more keys separated by commas or newlines"
    )]
    NoKeys {
        /// The variable name.
        variable: String,
    },
    /// A key or the variable breaks a limit.
    #[error("{variable}: {problem}")]
    Invalid {
        /// The variable name.
        variable: String,
        /// What is wrong (never the key itself).
        problem: String,
    },
}

/// The configured keys, kept only as digests.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.digests.len())
            .finish()
    }
}

impl ApiKeys {
    /// Parses the variable's value: keys separated by commas or newlines, trimmed, blanks
    /// dropped; 1 to 128 keys of at most 1024 chars with no whitespace or control characters.
    pub fn parse(variable: &str, value: Option<&str>) -> Result<ApiKeys, AuthSetupError> {
        let invalid = |problem: String| AuthSetupError::Invalid {
            variable: variable.to_string(),
            problem,
        };
        let value = value.unwrap_or("");
        if value.len() > MAX_VARIABLE_BYTES {
            return Err(invalid(format!(
                "is larger than {MAX_VARIABLE_BYTES} bytes"
            )));
        }
        let keys: Vec<&str> = value
            .split([',', '\n'])
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            return Err(AuthSetupError::NoKeys {
                variable: variable.to_string(),
            });
        }
        if keys.len() > MAX_KEYS {
            return Err(invalid(format!(
                "holds {} keys; at most {MAX_KEYS} are allowed",
                keys.len()
            )));
        }
        for (index, key) in keys.iter().enumerate() {
            if key.chars().count() > MAX_KEY_CHARS {
                return Err(invalid(format!(
                    "key #{} is longer than {MAX_KEY_CHARS} chars",
                    index + 1
                )));
            }
            if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid(format!(
                    "key #{} contains whitespace or control characters",
                    index + 1
                )));
            }
        }
        Ok(ApiKeys {
            digests: keys.iter().map(|k| digest(k)).collect(),
        })
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether no key is configured (never true for a parsed set).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Checks the `Authorization` header. Returns the presented token on success.
    pub fn check<'a>(&self, headers: &'a HeaderMap) -> Result<&'a str, RayError> {
        let token = bearer_token(headers).ok_or_else(unauthorized)?;
        let presented = digest(token);
        // Compare against every key, always, so timing says nothing about which key matched.
        let mut matched = false;
        for key in &self.digests {
            matched |= constant_time_eq(key, &presented);
        }
        if matched {
            Ok(token)
        } else {
            Err(unauthorized())
        }
    }
}

/// The token of a single `Authorization: Bearer <token>` header, if well-formed.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    let valid = !token.is_empty()
        && token.chars().count() <= MAX_KEY_CHARS
        && !token.chars().any(|c| c.is_whitespace() || c.is_control());
    valid.then_some(token)
}

fn unauthorized() -> RayError {
    RayError::new(
        ErrorCode::Unauthorized,
        "A valid API key is required: send Authorization: Bearer <key>",
    )
}

/// SHA-256 of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut difference = 0u8;
    for (x, y) in a.iter().zip(b) {
        difference |= x ^ y;
    }
    difference == 0
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn parses_keys_from_commas_and_newlines() {
        let keys = ApiKeys::parse("K", Some(" a1, b2\n\nc3 ,")).unwrap();
        assert_eq!(keys.len(), 3);
        assert!(matches!(
            ApiKeys::parse("K", Some(" , \n")),
            Err(AuthSetupError::NoKeys { .. })
        ));
        assert!(ApiKeys::parse("K", None).is_err());
        let error = ApiKeys::parse("K", Some("a\tb")).unwrap_err();
        assert!(!error.to_string().contains("a\tb"), "never echoes a key");
    }

    #[test]
    fn checks_bearer_tokens() {
        let keys = ApiKeys::parse("K", Some("secret-1,secret-2")).unwrap();
        assert_eq!(keys.check(&headers("Bearer secret-2")).unwrap(), "secret-2");
        assert_eq!(keys.check(&headers("bearer secret-1")).unwrap(), "secret-1");
        assert!(keys.check(&headers("Bearer wrong")).is_err());
        assert!(keys.check(&headers("Basic secret-1")).is_err());
        assert!(keys.check(&HeaderMap::new()).is_err());
        let mut twice = headers("Bearer secret-1");
        twice.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret-1"),
        );
        assert!(keys.check(&twice).is_err(), "a single header only");
    }
}
