//! Where a request goes when this node cannot serve it well: a pure ranking of the live peers.
//!
//! A peer is a candidate for a model when it has the model ready, carries the labels the
//! model is pinned to, and its circuit breaker lets a request through. Candidates are ranked,
//! in order: the same region as this node or labels in common with it, then the lowest
//! estimated wait, then the id (so the choice is stable). This node itself is never a
//! candidate: the caller serves locally first and asks for a peer only when it cannot.

use std::collections::BTreeMap;

use crate::record::NodeRecord;

/// What the ranking needs to know about this node and the request.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// This node's id (never a candidate).
    pub local_id: &'a str,
    /// This node's region.
    pub region: Option<&'a str>,
    /// This node's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// The model the request is for (an id or an alias).
    pub model: &'a str,
    /// Labels a peer must carry to serve this model (`cluster.modelLabels`).
    pub pinned: Option<&'a BTreeMap<String, String>>,
}

/// The peers that can serve `wanted.model`, best first; `allowed` says whether a peer's
/// circuit breaker lets a request through now.
pub fn rank<'p>(
    peers: &'p [NodeRecord],
    wanted: &Wanted<'_>,
    allowed: impl Fn(&str) -> bool,
) -> Vec<&'p NodeRecord> {
    let mut candidates: Vec<(u8, u64, &NodeRecord)> = peers
        .iter()
        .filter(|peer| peer.id != wanted.local_id)
        .filter(|peer| wanted.pinned.is_none_or(|labels| peer.has_labels(labels)))
        .filter_map(|peer| {
            let model = peer.model(wanted.model)?;
            model.ready.then_some((peer, model.estimated_wait_ms))
        })
        .filter(|(peer, _)| allowed(&peer.id))
        .map(|(peer, wait)| (u8::from(!near(peer, wanted)), wait, peer))
        .collect();
    candidates.sort_by(|a, b| (a.0, a.1, &a.2.id).cmp(&(b.0, b.1, &b.2.id)));
    candidates.into_iter().map(|(_, _, peer)| peer).collect()
}

/// Same region, or at least one label in common.
fn near(peer: &NodeRecord, wanted: &Wanted<'_>) -> bool {
    let same_region = wanted.region.is_some() && peer.region.as_deref() == wanted.region;
    same_region
        || wanted
            .labels
            .iter()
            .any(|(key, value)| peer.labels.get(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::record::ModelRecord;

    fn node(id: &str, region: &str, model: &str, ready: bool, wait: u64) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            base_url: format!("http://{id}"),
            region: Some(region.into()),
            labels: BTreeMap::new(),
            models: vec![ModelRecord {
                id: model.into(),
                aliases: vec![format!("{model}-alias")],
                state: if ready { "ready" } else { "unavailable" }.into(),
                ready,
                queue_depth: 0,
                estimated_wait_ms: wait,
            }],
            free_memory_mib: None,
            queue_depth: 0,
            estimated_wait_ms: wait,
            version: String::new(),
            heartbeat_at_ms: 0,
            heartbeat_ms: None,
            key_check: None,
        }
    }

    fn wanted<'a>(labels: &'a BTreeMap<String, String>, model: &'a str) -> Wanted<'a> {
        Wanted {
            local_id: "me",
            region: Some("fsn"),
            labels,
            model,
            pinned: None,
        }
    }

    #[test]
    fn the_same_region_first_then_the_shortest_wait() {
        let peers = vec![
            node("far-fast", "hel", "m", true, 0),
            node("near-slow", "fsn", "m", true, 900),
            node("near-fast", "fsn", "m", true, 100),
            node("down", "fsn", "m", false, 0),
            node("me", "fsn", "m", true, 0),
            node("other-model", "fsn", "x", true, 0),
        ];
        let labels = BTreeMap::new();
        let ids: Vec<&str> = rank(&peers, &wanted(&labels, "m"), |_| true)
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(ids, ["near-fast", "near-slow", "far-fast"]);
        // By alias too; a breaker that is open takes a peer out.
        let ids: Vec<&str> = rank(&peers, &wanted(&labels, "m-alias"), |id| id != "near-fast")
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(ids, ["near-slow", "far-fast"]);
    }

    #[test]
    fn a_pinned_model_goes_only_to_nodes_with_its_labels() {
        let mut gpu = node("gpu", "hel", "m", true, 500);
        gpu.labels.insert("accel".into(), "yes".into());
        let peers = vec![node("plain", "fsn", "m", true, 0), gpu];
        let labels = BTreeMap::new();
        let pinned = BTreeMap::from([("accel".to_string(), "yes".to_string())]);
        let mut w = wanted(&labels, "m");
        w.pinned = Some(&pinned);
        let ids: Vec<&str> = rank(&peers, &w, |_| true)
            .iter()
            .map(|p| p.id.as_str())
            .collect();
        assert_eq!(ids, ["gpu"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Every candidate can serve the model, is not this node, is allowed by its breaker,
        /// and the order never puts a far node before a near one, or a longer wait before a
        /// shorter one among equally near nodes.
        #[test]
        fn ranking_is_sound(
            specs in proptest::collection::vec(
                (0u8..4, prop::bool::ANY, prop::bool::ANY, 0u64..2000, prop::bool::ANY), 0..12),
        ) {
            let peers: Vec<NodeRecord> = specs
                .iter()
                .enumerate()
                .map(|(i, (region, same_model, ready, wait, _))| {
                    let id = if i == 0 { "me".to_string() } else { format!("n{i}") };
                    let region = ["fsn", "hel", "nbg", "ash"][*region as usize];
                    node(&id, region, if *same_model { "m" } else { "x" }, *ready, *wait)
                })
                .collect();
            let blocked: Vec<String> = specs
                .iter()
                .enumerate()
                .filter(|(_, s)| s.4)
                .map(|(i, _)| format!("n{i}"))
                .collect();
            let labels = BTreeMap::new();
            let w = wanted(&labels, "m");
            let ranked = rank(&peers, &w, |id| !blocked.iter().any(|b| b == id));
            for peer in &ranked {
                prop_assert!(peer.id != "me");
                prop_assert!(!blocked.contains(&peer.id));
                let model = peer.model("m");
                prop_assert!(model.is_some_and(|m| m.ready));
            }
            for pair in ranked.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let (na, nb) = (near(a, &w), near(b, &w));
                prop_assert!(na || !nb, "a far node ranked before a near one");
                if na == nb {
                    prop_assert!(a.estimated_wait_ms <= b.estimated_wait_ms);
                }
            }
            let expected = peers
                .iter()
                .filter(|p| p.id != "me" && !blocked.contains(&p.id))
                .filter(|p| p.model("m").is_some_and(|m| m.ready))
                .count();
            prop_assert_eq!(ranked.len(), expected);
        }
    }
}
