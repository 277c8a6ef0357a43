//! Where a request came from: what routing, priority and fair share read of its HTTP side.
//! A leaf: it names no step of the path.

use ray_core::config::RouteKind;

/// Where a request came from, for routing: the route, the task header, the API key, and
/// whether it asks for tools. [`Runtime::infer`](crate::Runtime::infer) uses the default (the `infer` route).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The route the request arrived on; `None` counts as `infer`.
    pub route: Option<RouteKind>,
    /// The `X-Ray-Task` header, used when the request has no `task` field.
    pub task: Option<String>,
    /// The first 8 hex digits of the SHA-256 of the API key the request authenticated with.
    pub api_key_id: Option<String>,
    /// Whether the request asks for tools.
    pub tools: bool,
    /// The `X-Ray-Priority` header, parsed; the body's `priority` field wins over it.
    pub priority: Option<ray_core::wire::Priority>,
    /// The client's address, which tells clients apart for fair share when there is no API
    /// key.
    pub client: Option<String>,
}
