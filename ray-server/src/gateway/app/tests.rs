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
