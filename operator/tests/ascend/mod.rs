//! Ascend: the HCCL rank table ConfigMap, completed once the device plugin has annotated every
//! pod (versions 1.0, 1.2 for A3 super pods, 2.0 for the A5 generation's `huawei.com/npu`).

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use pretrain_operator::resources::rank_table::{
    DEVICE_ANNOTATION, NPU_DEVICE_ANNOTATION, NPU_RESOURCE,
};
use serde_json::json;

use super::support::wait_for;
use super::{create, job, set_pod_status, setup, wait_pods};

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn ascend_job_gets_rank_table() {
    let t = rank_table_of("t-ascend", json!({"type": "Ascend"}), None).await;
    assert_eq!(t["version"], "1.0");
    assert_eq!(t["server_count"], "2");
    assert_eq!(t["server_list"][1]["device"][1]["rank_id"], "3");
    assert!(t.get("super_pod_list").is_none());
    // An A3 super-pod job (one pod per logical super pod): version 1.2.
    let t = rank_table_of(
        "t-ascend-a3",
        json!({"type": "Ascend", "superPodBlock": 2}),
        None,
    )
    .await;
    assert_eq!(t["version"], "1.2");
    assert_eq!(t["server_list"][1]["device"][1]["super_device_id"], "9121");
    assert_eq!(
        t["super_pod_list"],
        json!([{"super_pod_id": "0", "server_list": [{"server_id": "192.168.0.0"}]},
               {"super_pod_id": "1", "server_list": [{"server_id": "192.168.0.1"}]}])
    );
    // A5 (`huawei.com/npu`, its plugin's annotation name): version 2.0, one rank per NPU with
    // its levels; the `scaleout-type: UBOE` label keeps level 2.
    let a5 = json!({"type": "Ascend", "resourceName": NPU_RESOURCE});
    let t = rank_table_of("t-ascend-a5", a5, Some("UBOE")).await;
    assert_eq!(t["version"], "2.0");
    assert_eq!(t["rank_count"], 4);
    assert!(t.get("server_list").is_none());
    let rank3 = &t["rank_list"][3];
    assert_eq!(
        (&rank3["rank_id"], &rank3["device_id"]),
        (&json!(3), &json!(1))
    );
    let layers: Vec<_> = rank3["level_list"]
        .as_array()
        .expect("levels")
        .iter()
        .map(|l| (l["net_layer"].clone(), l["net_instance_id"].clone()))
        .collect();
    assert_eq!(
        layers,
        [(0, "sp3"), (1, "rack1"), (2, "uboe-1")].map(|(l, id)| (json!(l), json!(id)))
    );
}

/// Creates a 2-pod Ascend job with `accelerator` (and the `scaleout-type` label) in `ns`,
/// annotates its pods as the device plugin would, reports them running and returns the
/// completed `hccl.json`.
async fn rank_table_of(
    ns: &str,
    accelerator: serde_json::Value,
    scale_out: Option<&str>,
) -> serde_json::Value {
    let (client, _op) = setup(ns).await;
    let client = &client;
    let name = "npu";
    let resource = accelerator["resourceName"]
        .as_str()
        .unwrap_or("huawei.com/Ascend910")
        .to_string();
    let mut j = job(
        name,
        json!({"workersPerNode": 2, "accelerator": accelerator}),
    );
    if let Some(s) = scale_out {
        j.metadata.labels = Some([("scaleout-type".to_string(), s.to_string())].into());
    }
    create(client, ns, &j).await;
    let ps = wait_pods(client, ns, 1, 2, 30).await;
    let limits = ps[0].spec.as_ref().expect("spec").containers[0]
        .resources
        .clone()
        .and_then(|r| r.limits)
        .expect("limits");
    assert_eq!(limits[&resource].0, "2");
    assert_eq!(ps[1].annotations()["hccl/rankIndex"], "1");
    let cms = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let cm_name = format!("rings-config-{name}");
    let table = |cm: ConfigMap| -> serde_json::Value {
        serde_json::from_str(&cm.data.expect("data")["hccl.json"]).expect("json")
    };
    assert_eq!(
        table(cms.get(&cm_name).await.expect("cm"))["status"],
        "initializing"
    );
    // The device plugin annotates the pods; the kubelet reports IPs.
    let pods_api = Api::<Pod>::namespaced(client.clone(), ns);
    let key = if resource == NPU_RESOURCE {
        NPU_DEVICE_ANNOTATION
    } else {
        DEVICE_ANNOTATION
    };
    for p in &ps {
        let rank = &p.annotations()["hccl/rankIndex"];
        let ann = device_annotation(&p.name_any(), rank);
        let patch = json!({"metadata": {"annotations": {key: ann}}});
        pods_api
            .patch(
                &p.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .expect("annotate");
        set_pod_status(client, ns, &p.name_any(), "Running", None).await;
    }
    let t = wait_for(20, "completed rank table", || async {
        let t = table(cms.get(&cm_name).await.ok()?);
        (t["status"] == "completed").then_some(t)
    })
    .await;
    // HCCL's logical super pod of each pod is the one the table puts its server in.
    for p in &ps {
        let server = format!("192.168.0.{}", p.annotations()["hccl/rankIndex"]);
        let want = t["super_pod_list"]
            .as_array()
            .and_then(|sps| {
                sps.iter().find(|sp| {
                    sp["server_list"]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|s| s["server_id"] == server))
                })
            })
            .map_or("0".to_string(), |sp| {
                sp["super_pod_id"].as_str().expect("id").to_string()
            });
        let env = p.spec.as_ref().expect("spec").containers[0]
            .env
            .clone()
            .unwrap_or_default();
        let got = env.iter().find(|e| e.name == "HCCL_LOGIC_SUPERPOD_ID");
        assert_eq!(
            got.and_then(|e| e.value.clone()),
            Some(want),
            "{}",
            p.name_any()
        );
    }
    t
}

/// The device plugin's annotation of the pod of node `rank`: two NPUs; the A5 plugin's
/// `levelList` (levels 0 and 1 on `UB`, 2 on `UBOE`, 3 on `ROCE`) is ignored by versions 1.x.
fn device_annotation(pod: &str, rank: &str) -> String {
    let level = |l: u32, kind: &str, id: String| {
        json!({"level": l, "info": {kind: {"net_layer": l, "net_instance_id": id,
               "net_type": "CLOS", "net_attr": "", "rank_addr_list": []}}})
    };
    let device = |d: u32| {
        json!({"device_id": d.to_string(), "device_ip": format!("10.9.{rank}.{}", d + 1),
               "super_device_id": format!("9{rank}2{d}"),
               "levelList": [level(0, "UB", "sp3".into()), level(1, "UB", format!("rack{rank}")),
                             level(2, "UBOE", format!("uboe-{rank}")),
                             level(3, "ROCE", format!("roce-{rank}"))]})
    };
    json!({"pod_name": pod, "server_id": format!("192.168.0.{rank}"),
           "host_ip": format!("192.168.0.{rank}"), "super_pod_id": 3,
           "devices": [device(0), device(1)]})
    .to_string()
}
