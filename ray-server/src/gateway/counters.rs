//! The gateway's own counters: requests by route and status, and what the listener counts.

use std::sync::atomic::{AtomicU64, Ordering};

use ray_runtime::Sample;

use super::route::Route;

/// Counters kept by the HTTP front.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    pub(crate) connections: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) active_requests: AtomicU64,
    pub(crate) auth_rejected: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) requests: RequestCounters,
}

/// Statuses counted per route; anything else is counted as `other`.
const COUNTED_STATUSES: [u16; 17] = [
    200, 202, 400, 401, 404, 409, 411, 413, 414, 415, 417, 429, 431, 500, 502, 503, 504,
];

/// Requests by route and status, counted without a lock.
#[derive(Debug)]
pub(crate) struct RequestCounters {
    counts: Vec<AtomicU64>,
}

impl Default for RequestCounters {
    fn default() -> RequestCounters {
        let cells = Route::ALL.len() * (COUNTED_STATUSES.len() + 1);
        RequestCounters {
            counts: (0..cells).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl RequestCounters {
    /// Where a route's row starts.
    pub(crate) fn row(route: Route) -> usize {
        let route = Route::ALL.iter().position(|r| *r == route).unwrap_or(0);
        route * (COUNTED_STATUSES.len() + 1)
    }

    pub(crate) fn index(route: Route, status: u16) -> usize {
        let column = COUNTED_STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(COUNTED_STATUSES.len());
        RequestCounters::row(route) + column
    }

    pub(crate) fn add(&self, route: Route, status: u16) {
        self.counts[RequestCounters::index(route, status)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn samples(&self) -> Vec<Sample> {
        let mut samples = Vec::new();
        for route in Route::ALL {
            for (column, status) in COUNTED_STATUSES
                .iter()
                .map(|s| s.to_string())
                .chain(std::iter::once("other".to_string()))
                .enumerate()
            {
                let value =
                    self.counts[RequestCounters::row(route) + column].load(Ordering::Relaxed);
                if value > 0 {
                    samples.push(Sample {
                        suffix: "",
                        labels: vec![("route", route.label().to_string()), ("status", status)],
                        value: value as f64,
                    });
                }
            }
        }
        samples
    }
}
