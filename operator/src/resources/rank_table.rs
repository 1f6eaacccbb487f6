//! The Ascend HCCL rank table (`hccl.json`, version 1.0), built like ascend-operator does from
//! the annotation the Ascend device plugin writes on each pod once devices are assigned.
//!
//! The table is written as `{"status": "initializing"}` first; the runtime waits until it reads
//! `"status": "completed"`. Global `rank_id` = node rank x devices per pod + local index. It is
//! regenerated for every attempt because pod IPs change.

use k8s_openapi::api::core::v1::ConfigMap;
use serde::{Deserialize, Deserializer, Serialize};

use super::{owned_meta, rank_table_name};
use crate::crd::PretrainJob;

/// Annotation the Ascend device plugin writes with the devices of a pod.
pub const DEVICE_ANNOTATION: &str = "ascend.kubectl.kubernetes.io/ascend-910-configuration";
/// Annotation carrying the node rank, read by Volcano's Ascend plugin.
pub const RANK_INDEX_ANNOTATION: &str = "hccl/rankIndex";
/// Where the rank-table ConfigMap is mounted (ascend-operator's path).
pub const RANK_TABLE_DIR: &str = "/user/serverid/devindex/config";
/// Key of the table in the ConfigMap.
pub const RANK_TABLE_KEY: &str = "hccl.json";

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        v => v.to_string(),
    })
}

/// The device plugin's per-pod annotation.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct PodDevices {
    /// Node identifier (usually the node IP).
    #[serde(deserialize_with = "lenient_string", default)]
    pub server_id: String,
    /// Host IP.
    #[serde(deserialize_with = "lenient_string", default)]
    pub host_ip: String,
    /// Assigned devices.
    #[serde(default)]
    pub devices: Vec<Device>,
}

/// One NPU.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Device {
    /// Physical device id on the node.
    #[serde(deserialize_with = "lenient_string")]
    pub device_id: String,
    /// NPU network IP.
    #[serde(deserialize_with = "lenient_string", default)]
    pub device_ip: String,
}

/// What the table needs from one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct RankPod {
    /// Node rank.
    pub rank: u32,
    /// The parsed device annotation, if the device plugin has written it yet.
    pub devices: Option<PodDevices>,
    /// Pod IP, if assigned.
    pub pod_ip: Option<String>,
}

#[derive(Serialize)]
struct Table {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_count: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    server_list: Vec<Server>,
}

#[derive(Serialize)]
struct Server {
    server_id: String,
    host_ip: String,
    container_ip: String,
    device: Vec<TableDevice>,
}

#[derive(Serialize)]
struct TableDevice {
    device_id: String,
    device_ip: String,
    rank_id: String,
}

/// Parses the device annotation of a pod (None when absent or malformed).
pub fn parse_annotation(value: Option<&String>) -> Option<PodDevices> {
    value.and_then(|v| serde_json::from_str(v).ok())
}

/// Renders `hccl.json`: `completed` when every one of `nodes` pods has its devices and IP,
/// `initializing` otherwise.
pub fn render(nodes: u32, devices_per_pod: u32, pods: &[RankPod]) -> String {
    let mut sorted: Vec<&RankPod> = pods.iter().collect();
    sorted.sort_by_key(|p| p.rank);
    let complete = sorted.len() == nodes as usize
        && sorted.iter().enumerate().all(|(i, p)| {
            p.rank as usize == i
                && p.pod_ip.is_some()
                && p.devices
                    .as_ref()
                    .is_some_and(|d| d.devices.len() == devices_per_pod as usize)
        });
    let table = if complete {
        let server_list = sorted
            .iter()
            .filter_map(|p| {
                let d = p.devices.as_ref()?;
                Some(Server {
                    server_id: d.server_id.clone(),
                    host_ip: d.host_ip.clone(),
                    container_ip: p.pod_ip.clone().unwrap_or_default(),
                    device: d
                        .devices
                        .iter()
                        .enumerate()
                        .map(|(i, dev)| TableDevice {
                            device_id: dev.device_id.clone(),
                            device_ip: dev.device_ip.clone(),
                            rank_id: (u64::from(p.rank) * u64::from(devices_per_pod) + i as u64)
                                .to_string(),
                        })
                        .collect(),
                })
            })
            .collect();
        Table {
            status: "completed",
            version: Some("1.0"),
            server_count: Some(nodes.to_string()),
            server_list,
        }
    } else {
        Table {
            status: "initializing",
            version: None,
            server_count: None,
            server_list: vec![],
        }
    };
    serde_json::to_string_pretty(&table).unwrap_or_else(|_| r#"{"status":"initializing"}"#.into())
}

/// The `rings-config-<job>` ConfigMap holding the table.
pub fn build(job: &PretrainJob, table_json: &str) -> ConfigMap {
    ConfigMap {
        metadata: owned_meta(job, rank_table_name(job)),
        data: Some([(RANK_TABLE_KEY.to_string(), table_json.to_string())].into()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(rank: u32, server: &str) -> RankPod {
        let ann = format!(
            r#"{{"pod_name":"run1-{rank}","server_id":"{server}","host_ip":"{server}",
               "devices":[{{"device_id":"0","device_ip":"192.168.{rank}.10"}},
                          {{"device_id":1,"device_ip":"192.168.{rank}.11"}}]}}"#
        );
        RankPod {
            rank,
            devices: parse_annotation(Some(&ann)),
            pod_ip: Some(format!("10.0.0.{rank}")),
        }
    }

    #[test]
    fn complete_table_numbers_ranks_globally() {
        let json = render(2, 2, &[pod(1, "10.1.0.2"), pod(0, "10.1.0.1")]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["version"], "1.0");
        assert_eq!(v["server_count"], "2");
        assert_eq!(v["server_list"][0]["server_id"], "10.1.0.1");
        assert_eq!(v["server_list"][1]["container_ip"], "10.0.0.1");
        assert_eq!(v["server_list"][1]["device"][1]["rank_id"], "3");
        assert_eq!(v["server_list"][1]["device"][1]["device_id"], "1");
    }

    #[test]
    fn missing_annotation_keeps_it_initializing() {
        let mut p1 = pod(1, "10.1.0.2");
        p1.devices = None;
        let json = render(2, 2, &[pod(0, "10.1.0.1"), p1]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v, serde_json::json!({"status": "initializing"}));
        // Too few pods is also incomplete.
        let v: serde_json::Value =
            serde_json::from_str(&render(2, 2, &[pod(0, "a")])).expect("json");
        assert_eq!(v["status"], "initializing");
    }
}
