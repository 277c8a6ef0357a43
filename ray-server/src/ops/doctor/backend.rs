//! The check of the running backend: does it serve the model the config names.

use std::time::Duration;

use super::Level;
use super::ctx::Ctx;

/// How long doctor waits for the backend to say which model it serves.
pub(super) const BACKEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks a running backend which model it serves (`llama-server` `/props`, an
/// OpenAI-compatible `/v1/models`) and compares it with `modelRef`. A backend that does not
/// answer (doctor usually runs before the services start) is not checked.
pub(super) fn backend_model(ctx: &mut Ctx<'_>) {
    const C: &str = "backend_model";
    let Some(config) = ctx.config() else {
        ctx.ok(
            C,
            "backend_model_ok",
            "no config: the backend's model is not checked",
        );
        return;
    };
    let adapter = &config.model.adapter;
    let Some(http) = adapter.http() else {
        ctx.ok(
            C,
            "backend_model_ok",
            "the mock adapter serves no backend model",
        );
        return;
    };
    if !ctx.host.is_real() {
        ctx.ok(
            C,
            "backend_model_ok",
            "the host is read below --root: its backend is not asked",
        );
        return;
    }
    let (model_ref, required, base_url) = (
        http.model_ref.to_string(),
        http.require_backend_model_match,
        http.base_url.to_string(),
    );
    let key = http
        .api_key_env
        .and_then(|name| std::env::var(name).ok())
        .filter(|k| !k.is_empty());
    let llama = adapter.kind() == "llama.cpp";
    let path = if llama { "/props" } else { "/v1/models" };
    let reported: Vec<String> = match http_get(&base_url, path, key.as_deref()) {
        Some(body) => match serde_json::from_str::<serde_json::Value>(&body) {
            // The alias, else the model the slots run, else the model file.
            Ok(json) if llama => [
                "/model_alias",
                "/default_generation_settings/model",
                "/model_path",
            ]
            .into_iter()
            .find_map(|pointer| json.pointer(pointer)?.as_str().filter(|s| !s.is_empty()))
            .map(String::from)
            .into_iter()
            .collect(),
            Ok(json) => json["data"]
                .as_array()
                .map(|models| {
                    models
                        .iter()
                        .filter_map(|m| m["id"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        },
        None => {
            ctx.ok(
                C,
                "backend_model_ok",
                format!(
                    "the backend at {base_url} does not answer {path} (not started yet?): the \
                     model it serves is checked once it does; /health shows it as \
                     provider.modelIdentity"
                ),
            );
            return;
        }
    };
    if reported.is_empty() {
        ctx.ok(
            C,
            "backend_model_ok",
            format!("the backend at {base_url} does not say which model it serves"),
        );
    } else if reported
        .iter()
        .any(|name| ray_core::wire::model_names_match(&model_ref, name))
    {
        ctx.ok(
            C,
            "backend_model_ok",
            format!("the backend serves the configured model {model_ref:?}"),
        );
    } else {
        let level = if required { Level::Error } else { Level::Warn };
        ctx.push(
            C,
            level,
            "backend_model_mismatch",
            format!(
                "the backend at {base_url} serves {}, not the configured modelRef {model_ref:?}: \
                 answers come from another model than the config says{}. Fix modelRef or the \
                 backend's --alias/model.",
                reported.join(", "),
                if required {
                    ", and with requireBackendModelMatch Ray will not become ready"
                } else {
                    ""
                }
            ),
        );
    }
}

/// `GET base_url + path` over plain HTTP/1.1 with a short timeout: the body of a 200, else
/// `None` (https, unreachable, another status).
pub(super) fn http_get(base_url: &str, path: &str, key: Option<&str>) -> Option<String> {
    use std::io::{Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    let rest = base_url.strip_prefix("http://")?;
    let (authority, prefix) = match rest.split_once('/') {
        Some((authority, prefix)) => (authority, format!("/{}", prefix.trim_end_matches('/'))),
        None => (rest, String::new()),
    };
    let address = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let socket = address.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&socket, BACKEND_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(BACKEND_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(BACKEND_TIMEOUT)).ok()?;
    let auth = key.map_or_else(String::new, |k| format!("Authorization: Bearer {k}\r\n"));
    let request = format!(
        "GET {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Accept: application/json\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.take(1 << 20).read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_ok = head
        .lines()
        .next()
        .is_some_and(|line| line.split_whitespace().nth(1) == Some("200"));
    if !status_ok {
        return None;
    }
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    Some(if chunked {
        dechunk(body)
    } else {
        body.to_string()
    })
}

/// A chunked body joined.
pub(super) fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
