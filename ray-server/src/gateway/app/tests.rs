use super::*;

#[test]
fn the_protected_route_list_matches_the_router() {
    for route in Route::ALL {
        let listed = PROTECTED_ROUTES.iter().any(|(method, path)| {
            let path = path.replace("{id}", "job_0123456789abcdef");
            Route::parse(&method.parse().unwrap_or(Method::GET), &path) == route
        });
        assert_eq!(listed, route.protected(), "{}", route.label());
    }
    for (method, path) in PROTECTED_ROUTES {
        let path = path.replace("{id}", "job_0123456789abcdef");
        let method: Method = method.parse().unwrap_or(Method::GET);
        assert!(Route::parse(&method, &path).protected(), "{method} {path}");
    }
}

#[test]
fn an_address_is_written_as_display_writes_it() {
    let addresses = [
        "0.0.0.0",
        "127.0.0.1",
        "10.0.9.10",
        "192.168.100.99",
        "255.255.255.255",
        "1.20.199.200",
        "::1",
        "2001:db8::8a2e:370:7334",
        "::ffff:10.1.2.3",
    ];
    for text in addresses {
        let ip: IpAddr = text.parse().unwrap();
        assert_eq!(ip_text(ip), ip.to_string(), "{text}");
    }
    for octet in 0..=255u8 {
        let ip = IpAddr::from([octet, 0, 9, octet]);
        assert_eq!(ip_text(ip), ip.to_string());
    }
}

#[test]
fn an_api_key_id_is_the_first_eight_hex_digits_of_the_keys_sha256() {
    // `printf secret-key-a | sha256sum` starts with 98549b70.
    assert_eq!(api_key_id("secret-key-a"), "98549b70");
    assert!(
        api_key_id("")
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(api_key_id("").len(), 8);
}
