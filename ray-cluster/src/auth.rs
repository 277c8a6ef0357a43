//! Requests between nodes: the headers a forwarded request carries, and its signature with the
//! shared cluster key (`cluster.clusterKeyEnv`).
//!
//! A forwarded request carries [`HOP_HEADER`] (a node never forwards a request that has it, so
//! forwarding is one hop at most) and [`AUTH_HEADER`]: `t=<unix ms>,node=<id>,v1=<hex>`, an
//! HMAC-SHA256 with the cluster key over the time, the sending node, the method, the path and
//! the SHA-256 of the body. The receiving node accepts it within [`MAX_SKEW`] of its own clock.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Present on a forwarded request: its value is the id of the node that forwarded it.
pub const HOP_HEADER: &str = "x-ray-hop";
/// The signature of a forwarded request.
pub const AUTH_HEADER: &str = "x-ray-cluster-auth";
/// On every response of a node in a cluster: the id of the node that served it.
pub const NODE_HEADER: &str = "x-ray-node";
/// How far a forwarded request's time may be from the receiver's clock.
pub const MAX_SKEW: Duration = Duration::from_secs(60);

/// Why a forwarded request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The header is missing or not `t=..,node=..,v1=..`.
    #[error("the {AUTH_HEADER} header is missing or malformed")]
    Malformed,
    /// The time is too far from this node's clock.
    #[error("the forwarded request's time is more than 60 s from this node's clock")]
    Stale,
    /// The signature does not match (a different cluster key, or a changed request).
    #[error("the forwarded request's signature does not match this node's cluster key")]
    BadSignature,
}

/// The [`AUTH_HEADER`] value for a request from `node` at `now_ms`.
pub fn sign(key: &[u8], node: &str, now_ms: u64, method: &str, path: &str, body: &[u8]) -> String {
    format!(
        "t={now_ms},node={node},v1={}",
        hex(&mac(key, node, now_ms, method, path, body))
    )
}

/// Checks an [`AUTH_HEADER`] value; answers the id of the node that sent it.
pub fn verify(
    key: &[u8],
    header: &str,
    now_ms: u64,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<String, AuthError> {
    let mut time = None;
    let mut node = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => time = value.parse::<u64>().ok(),
            Some(("node", value)) => node = Some(value),
            Some(("v1", value)) => signature = Some(value),
            _ => return Err(AuthError::Malformed),
        }
    }
    let (Some(time), Some(node), Some(signature)) = (time, node, signature) else {
        return Err(AuthError::Malformed);
    };
    if now_ms.abs_diff(time) > MAX_SKEW.as_millis() as u64 {
        return Err(AuthError::Stale);
    }
    let expected = hex(&mac(key, node, time, method, path, body));
    // Constant time over the hex text.
    let same = expected.len() == signature.len()
        && expected
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(node.to_string())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// A short fingerprint of the cluster key (16 hex digits of an HMAC with the key over a fixed
/// text), which nodes put in their registry records: a node started with another key is seen
/// at once, not only when a forwarded request is refused. It does not reveal the key.
pub fn key_check(key: &[u8]) -> String {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(b"ray cluster key check v1");
    hex(&mac.finalize().into_bytes()[..8])
}

fn mac(key: &[u8], node: &str, time: u64, method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return Vec::new();
    };
    let body_hash = Sha256::digest(body);
    for part in [
        time.to_string().as_bytes(),
        node.as_bytes(),
        method.as_bytes(),
        path.as_bytes(),
        &body_hash[..],
    ] {
        mac.update(part);
        mac.update(b"\n");
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let header = sign(b"k", "a", 1_000_000, "POST", "/v1/infer", b"{}");
        assert_eq!(
            verify(b"k", &header, 1_000_500, "POST", "/v1/infer", b"{}"),
            Ok("a".to_string())
        );
        assert_eq!(
            verify(b"other", &header, 1_000_500, "POST", "/v1/infer", b"{}"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(b"k", &header, 1_000_500, "POST", "/v1/infer", b"{\"x\":1}"),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(
                b"k",
                &header,
                1_000_500,
                "POST",
                "/v1/chat/completions",
                b"{}"
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(
                b"k",
                &header,
                1_000_000 + 61_000,
                "POST",
                "/v1/infer",
                b"{}"
            ),
            Err(AuthError::Stale)
        );
        assert_eq!(
            verify(b"k", "garbage", 0, "POST", "/", b""),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify(b"k", "t=1,node=a", 1, "POST", "/", b""),
            Err(AuthError::Malformed)
        );
        assert_eq!(key_check(b"k"), key_check(b"k"));
        assert_eq!(key_check(b"k").len(), 16);
        assert_ne!(key_check(b"k"), key_check(b"other"));
    }
}
