use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A resolver with fixed answers.
#[derive(Debug)]
struct Fixed(Vec<(&'static str, IpAddr)>);

impl HostLookup for Fixed {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let found: Vec<IpAddr> = self
            .0
            .iter()
            .filter(|(h, _)| *h == host)
            .map(|(_, ip)| *ip)
            .collect();
        Box::pin(async move {
            if found.is_empty() {
                Err(std::io::Error::other("no such host"))
            } else {
                Ok(found)
            }
        })
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

/// A loopback HTTP receiver answering every request with `response`.
async fn receiver(response: &'static str) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buffer).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_string();
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().ok())?
                            })
                            .unwrap_or(0);
                        if buffer.len() >= end + 4 + length {
                            let body = buffer[end + 4..end + 4 + length].to_vec();
                            log.lock().push(Seen { head, body });
                            let _ = stream.write_all(response.as_bytes()).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, seen)
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

fn client(
    allow_private: bool,
    hosts: &[&str],
    lookup: Fixed,
    secret: Option<&[u8]>,
) -> CallbackClient {
    let mut config =
        ray_core::config::profile_defaults(ray_core::config::Profile::Tiny).async_queue;
    config.callback_allow_private_network = allow_private;
    config.callback_allowed_hosts = hosts.iter().map(|h| h.to_string()).collect();
    config.callback_timeout_ms = 2_000;
    CallbackClient::new(&config, secret.map(<[u8]>::to_vec), Arc::new(lookup)).unwrap()
}

/// HMAC-SHA256 written out from its definition, to check `sign` against.
fn reference_hmac(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = sha2::Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    let outer = sha2::Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
    let secret = b"0123456789abcdef-secret";
    let body = br#"{"job":{"id":"job_1"}}"#;
    let signature = sign(secret, 1_732_280_000, body);
    let expected = reference_hmac(secret, b"1732280000.{\"job\":{\"id\":\"job_1\"}}");
    assert_eq!(signature, format!("v1={expected}"));
    // RFC 4231, test case 2, through the same construction.
    assert_eq!(
        reference_hmac(b"Jefe", b"what do ya want for nothing?"),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[tokio::test]
async fn a_delivery_is_signed_and_names_the_job_and_attempt() {
    let (port, seen) = receiver(OK).await;
    let secret = b"a-secret-of-enough-bytes";
    let client = client(true, &[], Fixed(vec![]), Some(secret));
    let body = br#"{"job":{"id":"job_1"}}"#.to_vec();
    client
        .send(
            &format!("http://127.0.0.1:{port}/hook"),
            "job_1",
            2,
            body.clone(),
        )
        .await
        .unwrap();
    let seen = seen.lock()[0].clone();
    assert!(
        seen.head.starts_with("POST /hook HTTP/1.1"),
        "{}",
        seen.head
    );
    assert_eq!(seen.body, body);
    assert_eq!(seen.header("x-ray-job-id").as_deref(), Some("job_1"));
    assert_eq!(seen.header("x-ray-delivery-attempt").as_deref(), Some("2"));
    assert_eq!(
        seen.header("content-type").as_deref(),
        Some("application/json")
    );
    let timestamp: u64 = seen.header(TIMESTAMP_HEADER).unwrap().parse().unwrap();
    assert_eq!(
        seen.header(SIGNATURE_HEADER).unwrap(),
        sign(secret, timestamp, &body)
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (target_port, target_seen) = receiver(OK).await;
    let redirect: &'static str = Box::leak(
        format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{target_port}/x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .into_boxed_str(),
    );
    let (port, _) = receiver(redirect).await;
    let client = client(true, &[], Fixed(vec![]), None);
    let error = client
        .send(
            &format!("http://127.0.0.1:{port}/"),
            "job_1",
            1,
            b"{}".to_vec(),
        )
        .await
        .unwrap_err();
    assert!(error.contains("redirects are not followed"), "{error}");
    assert!(target_seen.lock().is_empty());
}

#[tokio::test]
async fn the_client_connects_to_the_address_its_resolver_checked() {
    // `hooks.test` exists only in this resolver: reaching the receiver proves the client uses
    // the addresses the resolver returned (allowed host, so no address check).
    let (port, seen) = receiver(OK).await;
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let client = client(
        false,
        &["hooks.test"],
        Fixed(vec![("hooks.test", loopback)]),
        None,
    );
    client
        .send(
            &format!("http://hooks.test:{port}/"),
            "job_1",
            1,
            b"{}".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(seen.lock().len(), 1);
}

#[tokio::test]
async fn a_name_that_now_resolves_privately_is_refused_at_delivery() {
    // At submission the name was public; now (DNS rebinding) it points at loopback.
    let (port, seen) = receiver(OK).await;
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let client = client(false, &[], Fixed(vec![("rebind.test", loopback)]), None);
    let error = client
        .send(
            &format!("http://rebind.test:{port}/"),
            "job_1",
            1,
            b"{}".to_vec(),
        )
        .await
        .unwrap_err();
    assert!(error.contains("not a public address"), "{error}");
    assert!(
        seen.lock().is_empty(),
        "no request reached the private address"
    );

    // A literal private address is refused without a connection too.
    let error = client
        .send(
            &format!("http://127.0.0.1:{port}/"),
            "job_1",
            1,
            b"{}".to_vec(),
        )
        .await
        .unwrap_err();
    assert!(error.contains("not a public address"), "{error}");
    assert!(seen.lock().is_empty());
}

#[tokio::test]
async fn a_failing_receiver_is_reported_with_its_status() {
    let (port, _) = receiver(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    )
    .await;
    let client = client(true, &[], Fixed(vec![]), None);
    let error = client
        .send(
            &format!("http://127.0.0.1:{port}/"),
            "job_1",
            1,
            b"{}".to_vec(),
        )
        .await
        .unwrap_err();
    assert!(error.contains("503"), "{error}");
}

/// The receiver-side check documented in docs/jobs.md, kept here so the snippet stays right.
fn documented_verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_secs: u64,
) -> bool {
    let Ok(sent) = timestamp.parse::<u64>() else {
        return false;
    };
    let Some(hex) = signature.strip_prefix("v1=") else {
        return false;
    };
    let Ok(expected) = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or(())
        })
        .collect::<Result<Vec<u8>, ()>>()
    else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    now_secs.abs_diff(sent) <= 300 && mac.verify_slice(&expected).is_ok()
}

#[test]
fn the_documented_receiver_check_accepts_real_signatures_only() {
    let secret = b"receiver-side-secret-value";
    let body = br#"{"job":{"id":"job_1","status":"succeeded"}}"#;
    let signature = sign(secret, 1_795_363_800, body);
    assert!(documented_verify(
        secret,
        "1795363800",
        &signature,
        body,
        1_795_363_900
    ));
    // Another body, another secret, another time, a stale delivery, a mangled header.
    assert!(!documented_verify(
        secret,
        "1795363800",
        &signature,
        b"{}",
        1_795_363_900
    ));
    assert!(!documented_verify(
        b"another-secret-value!",
        "1795363800",
        &signature,
        body,
        1_795_363_900
    ));
    assert!(!documented_verify(
        secret,
        "1795363801",
        &signature,
        body,
        1_795_363_900
    ));
    assert!(!documented_verify(
        secret,
        "1795363800",
        &signature,
        body,
        1_795_364_800
    ));
    assert!(!documented_verify(
        secret,
        "1795363800",
        &signature[3..],
        body,
        1_795_363_900
    ));
    assert!(!documented_verify(
        secret,
        "1795363800",
        "v1=zz",
        body,
        1_795_363_900
    ));
}
