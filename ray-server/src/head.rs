//! Checks on the request head, before routing: the header size and count limits.
//!
//! hyper's parser runs with higher ceilings than these limits so that the gateway, not the
//! parser, refuses an oversized head: the client gets Ray's JSON error and the request is
//! counted and logged like any other.

use hyper::header::HeaderMap;
use hyper::{Method, Uri};
use ray_core::{ErrorCode, RayError};

/// Refuses a head of more than `max_headers` fields or more than `max_bytes` bytes (the
/// request line and the header lines as sent, with their line ends) with
/// `request_headers_too_large`.
pub(crate) fn check_size(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    max_headers: u32,
    max_bytes: u32,
) -> Result<(), RayError> {
    if headers.len() > max_headers as usize {
        return Err(RayError::new(
            ErrorCode::RequestHeadersTooLarge,
            format!(
                "The request has {} header fields; at most {max_headers} are accepted",
                headers.len()
            ),
        ));
    }
    // "METHOD target HTTP/1.1\r\n", each "name: value\r\n", and the empty line.
    let request_line = method.as_str().len() + 1 + target_len(uri) + 1 + 8 + 2;
    let header_lines: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    let total = request_line + header_lines + 2;
    if total > max_bytes as usize {
        return Err(RayError::new(
            ErrorCode::RequestHeadersTooLarge,
            format!("The request head is {total} bytes; at most {max_bytes} are accepted"),
        ));
    }
    Ok(())
}

fn target_len(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |scheme| scheme.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    scheme + authority + path
}

#[cfg(test)]
mod tests {
    use hyper::header::{self, HeaderValue};

    use super::*;

    #[test]
    fn head_size_counts_the_request_line_and_every_header_line() {
        let uri: Uri = "/livez".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("x"));
        // "GET /livez HTTP/1.1\r\n" is 21 bytes, "host: x\r\n" 9, the empty line 2.
        assert!(check_size(&Method::GET, &uri, &headers, 64, 32).is_ok());
        let error = check_size(&Method::GET, &uri, &headers, 64, 31).unwrap_err();
        assert_eq!(error.code(), ErrorCode::RequestHeadersTooLarge);
        assert!(check_size(&Method::GET, &uri, &headers, 0, 1_000).is_err());
    }
}
