//! Rank table version 2.0 (Atlas 350 cards, Atlas 850, Atlas 950 SuperPoD: the Ascend 910 A5
//! generation, device plugin resource `huawei.com/npu`), as ascend-operator builds it
//! (`pkg/ranktable/v2dot0`): a flat `rank_list` with one entry per NPU, each carrying the
//! network levels the device plugin reported in the NPU's `levelList`.
//!
//! Levels 0 and 1 (the super pod's own fabric) are always kept. Of the scale-out levels, one
//! port address type is chosen for the whole job: by default the first of `ROCE`, `UBOE`, `UBG`
//! that any NPU reports; with the job label `scaleout-type: ROCE` only `ROCE`, with `UBOE`
//! `UBOE` then `UBG`. Level 2 is kept for `UBOE`/`UBG`, level 3 for `ROCE`; an NPU that lacks
//! the chosen element gets a default one (`CLUSTER1`, `CLOS`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{rank_id, RankPod};

/// The job label choosing the scale-out network (ascend-operator's `scaleout-type`).
pub const SCALE_OUT_TYPE_LABEL: &str = "scaleout-type";

/// The scale-out network a job asks for with [`SCALE_OUT_TYPE_LABEL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleOutType {
    /// RoCE (level 3).
    Roce,
    /// UB over Ethernet, or UBG (level 2).
    Uboe,
}

impl ScaleOutType {
    /// The label's value, trimmed and case-insensitive as ascend-operator reads it; None when
    /// it is neither `ROCE` nor `UBOE`.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_uppercase().as_str() {
            "ROCE" => Some(Self::Roce),
            "UBOE" => Some(Self::Uboe),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Roce => "ROCE",
            Self::Uboe => "UBOE",
        }
    }

    /// Port address types that carry this scale-out network, in order of preference.
    fn port_types(self) -> &'static [&'static str] {
        match self {
            Self::Roce => &["ROCE"],
            Self::Uboe => &["UBOE", "UBG"],
        }
    }
}

/// One network level of an NPU as the device plugin reports it: the element per port address
/// type (`UB`, `UBG`, `UBOE`, `ROCE`, …).
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct RankLevel {
    /// 0 to 3.
    #[serde(default)]
    pub level: i64,
    /// Element per port address type.
    #[serde(default)]
    pub info: BTreeMap<String, LevelElement>,
}

/// One level of a rank, copied from the device plugin's report (or a default).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LevelElement {
    #[serde(default)]
    net_layer: i64,
    #[serde(default)]
    net_instance_id: String,
    #[serde(default)]
    net_type: String,
    #[serde(default)]
    net_attr: String,
    /// `null` when the report had none, as ascend-operator writes it.
    #[serde(default)]
    rank_addr_list: Option<Vec<RankAddr>>,
}

/// One address of an NPU on a level.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct RankAddr {
    #[serde(default)]
    addr_type: String,
    #[serde(default)]
    addr: String,
    #[serde(default)]
    ports: Option<Vec<String>>,
    #[serde(default)]
    plane_id: String,
}

#[derive(Serialize)]
struct Table {
    status: &'static str,
    version: &'static str,
    rank_count: usize,
    rank_list: Vec<Rank>,
}

#[derive(Serialize)]
struct Rank {
    rank_id: u64,
    local_id: i64,
    device_id: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    level_list: Vec<LevelElement>,
}

/// The completed table of `pods` (sorted by rank, each with its devices and IP), or None
/// while a device id is not a number (ascend-operator generates nothing then either).
pub(super) fn render(
    pods: &[&RankPod],
    devices_per_pod: u32,
    scale_out: Option<ScaleOutType>,
) -> Option<String> {
    let devices: Vec<(u64, &super::Device)> = pods
        .iter()
        .flat_map(|p| {
            p.devices
                .iter()
                .flat_map(|d| d.devices.iter())
                .enumerate()
                .map(move |(i, dev)| (rank_id(p.rank, devices_per_pod, i), dev))
        })
        .collect();
    let present: BTreeSet<&str> = devices
        .iter()
        .flat_map(|(_, d)| d.level_list.iter())
        .flat_map(|l| l.info.keys().map(String::as_str))
        .collect();
    let port = port_addr_type(&present, scale_out);
    let mut rank_list = Vec::with_capacity(devices.len());
    for (rank_id, dev) in devices {
        let id: i64 = dev.device_id.trim().parse().ok()?;
        rank_list.push(Rank {
            rank_id,
            local_id: id,
            device_id: id,
            level_list: levels(&dev.level_list, port, scale_out),
        });
    }
    let table = Table {
        status: "completed",
        version: "2.0",
        rank_count: rank_list.len(),
        rank_list,
    };
    serde_json::to_string_pretty(&table).ok()
}

/// The job's scale-out port address type: the first of the preferred ones any NPU reports.
fn port_addr_type(
    present: &BTreeSet<&str>,
    scale_out: Option<ScaleOutType>,
) -> Option<&'static str> {
    let preferred: &[&str] = match scale_out {
        None => &["ROCE", "UBOE", "UBG"],
        Some(s) => s.port_types(),
    };
    preferred.iter().copied().find(|t| present.contains(t))
}

/// An NPU's levels: 0 and 1 as reported (skipped if absent), then level 2 or 3 for the port
/// type.
fn levels(
    reported: &[RankLevel],
    port: Option<&str>,
    scale_out: Option<ScaleOutType>,
) -> Vec<LevelElement> {
    let mut out: Vec<LevelElement> = [0, 1]
        .iter()
        .filter_map(|&l| element(reported, l, None))
        .collect();
    let scale_level = match port.or(scale_out.map(ScaleOutType::as_str)) {
        Some("UBOE" | "UBG") => Some(2),
        Some("ROCE") => Some(3),
        _ => None,
    };
    if let Some(level) = scale_level {
        out.push(
            port.and_then(|p| element(reported, level, Some(p)))
                .unwrap_or_else(|| default_element(level)),
        );
    }
    out
}

/// The element of the first reported entry of `level`: for `port`, or (levels 0 and 1) the
/// first one.
fn element(reported: &[RankLevel], level: i64, port: Option<&str>) -> Option<LevelElement> {
    let entry = reported.iter().find(|l| l.level == level)?;
    match port {
        Some(p) => entry.info.get(p).cloned(),
        None => entry.info.values().next().cloned(),
    }
}

fn default_element(level: i64) -> LevelElement {
    LevelElement {
        net_layer: level,
        net_instance_id: "CLUSTER1".into(),
        net_type: "CLOS".into(),
        net_attr: String::new(),
        rank_addr_list: Some(vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse_annotation, render as render_table, Layout, Version};
    use super::*;
    use serde_json::{json, Value};

    /// An A5 pod as the device plugin annotates it: two NPUs, levels 0 and 1 on `UB`, level 2
    /// on `UBOE` and `UBG`, level 3 on `ROCE` (the second NPU reports no `ROCE`).
    fn pod(rank: u32) -> RankPod {
        let level = |l: u32, kinds: &[&str]| {
            let info: serde_json::Map<String, Value> = kinds
                .iter()
                .map(|k| {
                    let addr = json!([{"addr_type": "EID", "addr": format!("{k}-{rank}-{l}"),
                                       "ports": ["0/1"], "plane_id": "1"}]);
                    (k.to_string(), json!({"net_layer": l, "net_instance_id": format!("{k}{l}"),
                                           "net_type": if l == 0 { "TOPO_FILE_DESC" } else { "CLOS" },
                                           "net_attr": "", "rank_addr_list": addr}))
                })
                .collect();
            json!({"level": l, "info": info})
        };
        let dev = |id: u32, roce: bool| {
            let mut levels = vec![
                level(0, &["UB"]),
                level(1, &["UB"]),
                level(2, &["UBG", "UBOE"]),
            ];
            if roce {
                levels.push(level(3, &["ROCE"]));
            }
            json!({"device_id": id.to_string(), "device_ip": "", "levelList": levels})
        };
        let ann = json!({"pod_name": format!("p{rank}"), "server_id": "", "super_pod_id": 0,
                         "devices": [dev(4, true), dev(5, false)]})
        .to_string();
        RankPod {
            rank,
            devices: parse_annotation(Some(&ann)),
            pod_ip: Some(format!("10.0.0.{rank}")),
        }
    }

    fn table(scale_out: Option<ScaleOutType>) -> Value {
        let layout = Layout {
            nodes: 2,
            devices_per_pod: 2,
            version: Version::V2_0 { scale_out },
        };
        serde_json::from_str(&render_table(layout, &[pod(1), pod(0)])).expect("json")
    }

    /// (net_layer, net_instance_id) of each level of rank `r`.
    fn levels_of(t: &Value, r: usize) -> Vec<(i64, String)> {
        t["rank_list"][r]["level_list"]
            .as_array()
            .expect("level_list")
            .iter()
            .map(|l| {
                let id = l["net_instance_id"].as_str().expect("id").to_string();
                (l["net_layer"].as_i64().expect("layer"), id)
            })
            .collect()
    }

    #[test]
    fn ranks_are_numbered_globally_with_local_and_device_ids() {
        let t = table(None);
        assert_eq!(t["status"], "completed");
        assert_eq!(t["version"], "2.0");
        assert_eq!(t["rank_count"], 4);
        let ids: Vec<_> = t["rank_list"]
            .as_array()
            .expect("ranks")
            .iter()
            .map(|r| {
                (
                    r["rank_id"].clone(),
                    r["local_id"].clone(),
                    r["device_id"].clone(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [(0, 4, 4), (1, 5, 5), (2, 4, 4), (3, 5, 5)].map(|(a, b, c)| (
                json!(a),
                json!(b),
                json!(c)
            ))
        );
        assert!(t.get("server_list").is_none() && t.get("server_count").is_none());
    }

    #[test]
    fn roce_is_preferred_and_an_npu_without_it_gets_the_default_element() {
        let t = table(None);
        let want = |l3: &str| {
            vec![
                (0, "UB0".to_string()),
                (1, "UB1".into()),
                (3, l3.to_string()),
            ]
        };
        assert_eq!(levels_of(&t, 2), want("ROCE3"));
        assert_eq!(levels_of(&t, 3), want("CLUSTER1"));
        assert_eq!(
            t["rank_list"][3]["level_list"][2],
            json!({"net_layer": 3, "net_instance_id": "CLUSTER1", "net_type": "CLOS",
                   "net_attr": "", "rank_addr_list": []})
        );
        // Reported elements are copied whole.
        assert_eq!(
            t["rank_list"][2]["level_list"][2]["rank_addr_list"],
            json!([{"addr_type": "EID", "addr": "ROCE-1-3", "ports": ["0/1"], "plane_id": "1"}])
        );
        assert_eq!(
            t["rank_list"][0]["level_list"][0]["net_type"],
            "TOPO_FILE_DESC"
        );
    }

    #[test]
    fn the_scale_out_label_picks_level_2() {
        let t = table(Some(ScaleOutType::Uboe));
        assert_eq!(
            levels_of(&t, 1),
            [
                (0, "UB0".to_string()),
                (1, "UB1".into()),
                (2, "UBOE2".into())
            ]
        );
        assert_eq!(
            levels_of(&table(Some(ScaleOutType::Roce)), 0)[2],
            (3, "ROCE3".into())
        );
    }

    #[test]
    fn port_type_follows_ascend_operator() {
        let set = |v: &[&'static str]| v.iter().copied().collect::<BTreeSet<&str>>();
        assert_eq!(port_addr_type(&set(&[]), None), None);
        assert_eq!(port_addr_type(&set(&["UBG", "ROCE"]), None), Some("ROCE"));
        assert_eq!(port_addr_type(&set(&["UBG", "UBOE"]), None), Some("UBOE"));
        assert_eq!(port_addr_type(&set(&["UBG"]), None), Some("UBG"));
        let uboe = Some(ScaleOutType::Uboe);
        assert_eq!(port_addr_type(&set(&["UBG", "ROCE"]), uboe), Some("UBG"));
        assert_eq!(port_addr_type(&set(&["ROCE"]), uboe), None);
        // No matching port: the label alone decides the level, with default elements.
        let l = levels(&[], None, uboe);
        assert_eq!(l, vec![default_element(2)]);
        assert!(levels(&[], None, None).is_empty());
        assert_eq!(ScaleOutType::parse(" roce "), Some(ScaleOutType::Roce));
        assert_eq!(ScaleOutType::parse("UBG"), None);
    }

    #[test]
    fn a_device_id_that_is_no_number_keeps_it_initializing() {
        let mut p = pod(0);
        if let Some(d) = p.devices.as_mut() {
            d.devices[0].device_id = "npu0".into();
        }
        let layout = Layout {
            nodes: 1,
            devices_per_pod: 2,
            version: Version::V2_0 { scale_out: None },
        };
        let t: Value = serde_json::from_str(&render_table(layout, &[p])).expect("json");
        assert_eq!(t, json!({"status": "initializing"}));
    }
}
