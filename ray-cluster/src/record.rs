//! What a node says about itself on every heartbeat: the record other nodes place requests by.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One node's record in the registry bucket, written on every heartbeat under its `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The node's id (`cluster.nodeId`).
    pub id: String,
    /// The base URL peers use to reach it (`cluster.advertiseUrl`).
    pub base_url: String,
    /// Its region (`cluster.region`), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Its labels (`cluster.labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its models and their state.
    #[serde(default)]
    pub models: Vec<ModelRecord>,
    /// Memory left for models under the node's budget, in MiB, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory_mib: Option<u64>,
    /// Requests waiting in all of its queues.
    #[serde(default)]
    pub queue_depth: u32,
    /// The longest estimated wait of its models, in milliseconds.
    #[serde(default)]
    pub estimated_wait_ms: u64,
    /// The Ray version it runs.
    #[serde(default)]
    pub version: String,
    /// When the node wrote this record (its clock, Unix milliseconds).
    #[serde(default)]
    pub heartbeat_at_ms: u64,
    /// How often the node writes its record (its `cluster.heartbeatMs`); absent in the records
    /// of nodes that do not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// The fingerprint of the node's cluster key ([`crate::auth::key_check`]); absent in the
    /// records of nodes that do not send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_check: Option<String>,
}

/// One model of a node, as its record shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelRecord {
    /// The model's id.
    pub id: String,
    /// Its aliases.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Its state on that node (`ready`, `warming`, `cooldown`, `unavailable`, ...).
    pub state: String,
    /// Whether it serves requests now.
    pub ready: bool,
    /// Requests waiting for it.
    #[serde(default)]
    pub queue_depth: u32,
    /// How long a new request would wait for it, in milliseconds (an estimate).
    #[serde(default)]
    pub estimated_wait_ms: u64,
}

impl NodeRecord {
    /// The node's entry for the model `name` (its id or one of its aliases).
    pub fn model(&self, name: &str) -> Option<&ModelRecord> {
        self.models
            .iter()
            .find(|m| m.id == name || m.aliases.iter().any(|a| a == name))
    }

    /// Whether every label of `wanted` is among the node's labels with the same value.
    pub fn has_labels(&self, wanted: &BTreeMap<String, String>) -> bool {
        wanted
            .iter()
            .all(|(key, value)| self.labels.get(key) == Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_in_camel_case() {
        let record = NodeRecord {
            id: "a".into(),
            base_url: "http://10.0.0.1:8080".into(),
            region: Some("fsn".into()),
            labels: BTreeMap::from([("disk".into(), "ssd".into())]),
            models: vec![ModelRecord {
                id: "qwen".into(),
                aliases: vec!["small".into()],
                state: "ready".into(),
                ready: true,
                queue_depth: 2,
                estimated_wait_ms: 300,
            }],
            free_memory_mib: Some(900),
            queue_depth: 2,
            estimated_wait_ms: 300,
            version: "0.1.0".into(),
            heartbeat_at_ms: 1,
            heartbeat_ms: Some(2000),
            key_check: Some("00112233aabbccdd".into()),
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["baseUrl"], "http://10.0.0.1:8080");
        assert_eq!(json["models"][0]["estimatedWaitMs"], 300);
        let back: NodeRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
        assert_eq!(back.model("small").map(|m| m.id.as_str()), Some("qwen"));
        assert!(back.model("other").is_none());
        assert!(back.has_labels(&BTreeMap::from([("disk".into(), "ssd".into())])));
        assert!(!back.has_labels(&BTreeMap::from([("disk".into(), "hdd".into())])));
    }
}
