//! The Ascend HCCL rank table (`hccl.json`), built like ascend-operator does from the annotation
//! the Ascend device plugin writes on each pod once devices are assigned: version 1.0; for A3
//! super pods (`accelerator.superPodBlock`, ascend-operator's `sp-block`) version 1.2, which
//! adds each device's `super_device_id` and a `super_pod_list` grouping the pods in rank order,
//! `superPodBlock / devices per pod` to a logical super pod (ascend-operator's hard strategy);
//! for the A5 generation (resource `huawei.com/npu`) version 2.0 ([`v2`]).
//!
//! The table is written as `{"status": "initializing"}` first; the runtime waits until it reads
//! `"status": "completed"`. Global `rank_id` = node rank x devices per pod + local index. It is
//! regenerated for every attempt because pod IPs change.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde::{Deserialize, Deserializer, Serialize};

use super::{env, owned_meta, rank_table_name};
use crate::crd::PretrainJob;

pub mod v2;

pub use v2::{RankLevel, ScaleOutType, SCALE_OUT_TYPE_LABEL};

/// Annotation the Ascend device plugin writes with the devices of a pod.
pub const DEVICE_ANNOTATION: &str = "ascend.kubectl.kubernetes.io/ascend-910-configuration";
/// The same, as the A5 generation's device plugin may name it (read when the first is absent).
pub const NPU_DEVICE_ANNOTATION: &str = "ascend.kubectl.kubernetes.io/ascend-npu-configuration";
/// The device plugin resource of the A5 generation, whose jobs get rank table version 2.0.
pub const NPU_RESOURCE: &str = "huawei.com/npu";
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
    /// The NPU's id within its super pod (A3 only).
    #[serde(deserialize_with = "lenient_string", default)]
    pub super_device_id: String,
    /// The NPU's network levels (A5 only).
    #[serde(rename = "levelList", default)]
    pub level_list: Vec<RankLevel>,
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
    version: &'static str,
    server_count: String,
    server_list: Vec<Server>,
    #[serde(skip_serializing_if = "Option::is_none")]
    super_pod_list: Option<Vec<SuperPod>>,
}

/// A logical super pod of version 1.2: its id and its servers.
#[derive(Serialize)]
struct SuperPod {
    super_pod_id: String,
    server_list: Vec<ServerRef>,
}

#[derive(Serialize)]
struct ServerRef {
    server_id: String,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    super_device_id: Option<String>,
    rank_id: String,
}

/// Parses the device annotation of a pod (None when absent or malformed).
pub fn parse_annotation(value: Option<&String>) -> Option<PodDevices> {
    value.and_then(|v| serde_json::from_str(v).ok())
}

/// The device annotation among a pod's annotations, under either name.
pub fn device_annotation(
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<&String> {
    annotations
        .get(DEVICE_ANNOTATION)
        .or_else(|| annotations.get(NPU_DEVICE_ANNOTATION))
}

/// The table's format, chosen as ascend-operator chooses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Version {
    /// Servers and their devices.
    V1_0,
    /// A3 super pods: `super_pod_block` NPUs per logical super pod.
    V1_2 {
        /// `accelerator.superPodBlock`.
        super_pod_block: u32,
    },
    /// A5: a flat list of ranks with their network levels.
    V2_0 {
        /// The job's `scaleout-type` label.
        scale_out: Option<ScaleOutType>,
    },
}

/// The table's shape: pods, devices per pod and format.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Layout {
    /// Pods (servers) in the job.
    pub nodes: u32,
    /// NPUs per pod.
    pub devices_per_pod: u32,
    /// The format.
    pub version: Version,
}

impl Layout {
    /// The layout of `job`: version 2.0 when its pods request `huawei.com/npu` (it takes
    /// precedence, as in ascend-operator), 1.2 with `accelerator.superPodBlock`, else 1.0.
    pub fn of(job: &PretrainJob) -> Self {
        let version = if env::resource_name(job).as_deref() == Some(NPU_RESOURCE) {
            Version::V2_0 {
                scale_out: job
                    .labels()
                    .get(SCALE_OUT_TYPE_LABEL)
                    .and_then(|v| ScaleOutType::parse(v)),
            }
        } else if let Some(block) = job.spec.accelerator.super_pod_block {
            Version::V1_2 {
                super_pod_block: block,
            }
        } else {
            Version::V1_0
        };
        Layout {
            nodes: job.spec.nodes,
            devices_per_pod: job.spec.devices_per_pod(),
            version,
        }
    }

    fn super_pod_block(&self) -> Option<u32> {
        match self.version {
            Version::V1_2 { super_pod_block } => Some(super_pod_block),
            _ => None,
        }
    }
}

/// Renders `hccl.json`: `completed` when every one of `nodes` pods has its devices and IP,
/// `initializing` otherwise.
pub fn render(layout: Layout, pods: &[RankPod]) -> String {
    let mut sorted: Vec<&RankPod> = pods.iter().collect();
    sorted.sort_by_key(|p| p.rank);
    let complete = sorted.len() == layout.nodes as usize
        && sorted.iter().enumerate().all(|(i, p)| {
            p.rank as usize == i
                && p.pod_ip.is_some()
                && p.devices
                    .as_ref()
                    .is_some_and(|d| d.devices.len() == layout.devices_per_pod as usize)
        });
    let table = match (complete, layout.version) {
        (false, _) => None,
        (true, Version::V2_0 { scale_out }) => {
            v2::render(&sorted, layout.devices_per_pod, scale_out)
        }
        (true, _) => v1_table(layout, &sorted),
    };
    table.unwrap_or_else(|| "{\n  \"status\": \"initializing\"\n}".into())
}

/// A completed table of version 1.0 or 1.2.
fn v1_table(layout: Layout, sorted: &[&RankPod]) -> Option<String> {
    let server_list: Vec<Server> = sorted.iter().filter_map(|p| server(layout, p)).collect();
    let table = Table {
        status: "completed",
        version: if layout.super_pod_block().is_some() {
            "1.2"
        } else {
            "1.0"
        },
        server_count: layout.nodes.to_string(),
        super_pod_list: layout
            .super_pod_block()
            .map(|block| super_pods(&server_list, block, layout.devices_per_pod)),
        server_list,
    };
    serde_json::to_string_pretty(&table).ok()
}

/// The global rank of device `local` of the pod of node `rank`.
fn rank_id(rank: u32, devices_per_pod: u32, local: usize) -> u64 {
    u64::from(rank) * u64::from(devices_per_pod) + local as u64
}

/// One pod's entry; global `rank_id` = node rank x devices per pod + local index.
fn server(layout: Layout, p: &RankPod) -> Option<Server> {
    let d = p.devices.as_ref()?;
    let device = d
        .devices
        .iter()
        .enumerate()
        .map(|(i, dev)| TableDevice {
            device_id: dev.device_id.clone(),
            device_ip: dev.device_ip.clone(),
            super_device_id: layout
                .super_pod_block()
                .map(|_| dev.super_device_id.clone()),
            rank_id: rank_id(p.rank, layout.devices_per_pod, i).to_string(),
        })
        .collect();
    Some(Server {
        server_id: d.server_id.clone(),
        host_ip: d.host_ip.clone(),
        container_ip: p.pod_ip.clone().unwrap_or_default(),
        device,
    })
}

/// Pods per logical super pod of `block` NPUs with `devices` per pod: at least one
/// (ascend-operator's `getLogicSuperPodNodes`).
pub fn pods_per_super_pod(block: u32, devices: u32) -> u32 {
    (block / devices.max(1)).max(1)
}

/// Servers (in rank order) grouped into logical super pods of [`pods_per_super_pod`] servers
/// each, numbered from 0 as ascend-operator's `GetLogicSuperPodId` does.
fn super_pods(servers: &[Server], block: u32, devices: u32) -> Vec<SuperPod> {
    servers
        .chunks(pods_per_super_pod(block, devices) as usize)
        .enumerate()
        .map(|(id, chunk)| SuperPod {
            super_pod_id: id.to_string(),
            server_list: chunk
                .iter()
                .map(|s| ServerRef {
                    server_id: s.server_id.clone(),
                })
                .collect(),
        })
        .collect()
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

    const V1: Layout = Layout {
        nodes: 2,
        devices_per_pod: 2,
        version: Version::V1_0,
    };

    /// A pod as the device plugin annotates it (A3's plugin adds `super_device_id` and
    /// `super_pod_id`, which the table ignores: its super pods are logical).
    fn pod(rank: u32, server: &str) -> RankPod {
        let ann = format!(
            r#"{{"pod_name":"run1-{rank}","server_id":"{server}","host_ip":"{server}",
               "super_pod_id":7,
               "devices":[{{"device_id":"0","device_ip":"192.168.{rank}.10",
                            "super_device_id":"1132{rank}0"}},
                          {{"device_id":1,"device_ip":"192.168.{rank}.11",
                            "super_device_id":"1132{rank}1"}}]}}"#
        );
        RankPod {
            rank,
            devices: parse_annotation(Some(&ann)),
            pod_ip: Some(format!("10.0.0.{rank}")),
        }
    }

    #[test]
    fn complete_table_numbers_ranks_globally() {
        let json = render(V1, &[pod(1, "10.1.0.2"), pod(0, "10.1.0.1")]);
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
    fn version_1_0_has_no_super_pod_fields() {
        let v: serde_json::Value =
            serde_json::from_str(&render(V1, &[pod(0, "a"), pod(1, "b")])).expect("json");
        assert!(v.get("super_pod_list").is_none(), "{v}");
        assert!(v["server_list"][0]["device"][0]
            .get("super_device_id")
            .is_none());
    }

    #[test]
    fn version_1_2_groups_pods_into_logical_super_pods() {
        let layout = Layout {
            nodes: 3,
            devices_per_pod: 2,
            version: Version::V1_2 { super_pod_block: 4 },
        };
        let pods = [pod(2, "10.1.0.3"), pod(0, "10.1.0.1"), pod(1, "10.1.0.2")];
        let v: serde_json::Value = serde_json::from_str(&render(layout, &pods)).expect("json");
        assert_eq!(v["version"], "1.2");
        assert_eq!(v["status"], "completed");
        assert_eq!(
            v["server_list"][1]["device"][1],
            serde_json::json!({"device_id": "1", "device_ip": "192.168.1.11",
                               "super_device_id": "113211", "rank_id": "3"})
        );
        assert_eq!(
            v["super_pod_list"],
            serde_json::json!([
                {"super_pod_id": "0", "server_list": [{"server_id": "10.1.0.1"}, {"server_id": "10.1.0.2"}]},
                {"super_pod_id": "1", "server_list": [{"server_id": "10.1.0.3"}]}
            ])
        );
    }

    #[test]
    fn the_version_is_chosen_as_ascend_operator_chooses_it() {
        let mut job = crate::resources::fixtures::ascend_job();
        assert_eq!(Layout::of(&job).version, Version::V1_0);
        assert_eq!(Layout::of(&job).devices_per_pod, 8);
        job.spec.accelerator.super_pod_block = Some(16);
        assert_eq!(
            Layout::of(&job).version,
            Version::V1_2 {
                super_pod_block: 16
            }
        );
        // huawei.com/npu (A5) takes precedence; the label picks the scale-out network.
        job.spec.accelerator.resource_name = Some(NPU_RESOURCE.into());
        assert_eq!(Layout::of(&job).version, Version::V2_0 { scale_out: None });
        job.metadata.labels = Some([(SCALE_OUT_TYPE_LABEL.into(), "uboe".into())].into());
        assert_eq!(
            Layout::of(&job).version,
            Version::V2_0 {
                scale_out: Some(ScaleOutType::Uboe)
            }
        );
    }

    #[test]
    fn either_device_annotation_is_read() {
        let mut a = std::collections::BTreeMap::new();
        a.insert(NPU_DEVICE_ANNOTATION.to_string(), "npu".to_string());
        assert_eq!(device_annotation(&a).map(String::as_str), Some("npu"));
        a.insert(DEVICE_ANNOTATION.to_string(), "910".to_string());
        assert_eq!(device_annotation(&a).map(String::as_str), Some("910"));
    }

    #[test]
    fn missing_annotation_keeps_it_initializing() {
        let mut p1 = pod(1, "10.1.0.2");
        p1.devices = None;
        let json = render(V1, &[pod(0, "10.1.0.1"), p1]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(v, serde_json::json!({"status": "initializing"}));
        // Too few pods is also incomplete.
        let v: serde_json::Value = serde_json::from_str(&render(V1, &[pod(0, "a")])).expect("json");
        assert_eq!(v["status"], "initializing");
    }
}
