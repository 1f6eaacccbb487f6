//! Ascend: the HCCL rank table ConfigMap, completed once the device plugin has annotated every
//! pod (versions 1.0 and, for A3 super pods, 1.2).

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::support::wait_for;
use super::{create, job, set_pod_status, setup, wait_pods};

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn ascend_job_gets_rank_table() {
    let t = rank_table_of("t-ascend", json!({"type": "Ascend"})).await;
    assert_eq!(t["version"], "1.0");
    assert_eq!(t["server_count"], "2");
    assert_eq!(t["server_list"][1]["device"][1]["rank_id"], "3");
    assert!(t.get("super_pod_list").is_none());
    // An A3 super-pod job (one pod per logical super pod): version 1.2.
    let t = rank_table_of("t-ascend-a3", json!({"type": "Ascend", "superPodBlock": 2})).await;
    assert_eq!(t["version"], "1.2");
    assert_eq!(t["server_list"][1]["device"][1]["super_device_id"], "9121");
    assert_eq!(
        t["super_pod_list"],
        json!([{"super_pod_id": "0", "server_list": [{"server_id": "192.168.0.0"}]},
               {"super_pod_id": "1", "server_list": [{"server_id": "192.168.0.1"}]}])
    );
}

/// Creates a 2-pod Ascend job with `accelerator` in `ns`, annotates its pods as the device
/// plugin would, reports them running and returns the completed `hccl.json`.
async fn rank_table_of(ns: &str, accelerator: serde_json::Value) -> serde_json::Value {
    let (client, _op) = setup(ns).await;
    let client = &client;
    let name = "npu";
    create(
        client,
        ns,
        &job(
            name,
            json!({"workersPerNode": 2, "accelerator": accelerator}),
        ),
    )
    .await;
    let ps = wait_pods(client, ns, 1, 2, 30).await;
    let limits = ps[0].spec.as_ref().expect("spec").containers[0]
        .resources
        .clone()
        .and_then(|r| r.limits)
        .expect("limits");
    assert_eq!(limits["huawei.com/Ascend910"].0, "2");
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
    for p in &ps {
        let rank = &p.annotations()["hccl/rankIndex"];
        let ann = format!(
            r#"{{"pod_name":"{}","server_id":"192.168.0.{rank}","host_ip":"192.168.0.{rank}","super_pod_id":3,"devices":[{{"device_id":"0","device_ip":"10.9.{rank}.1","super_device_id":"9{rank}20"}},{{"device_id":"1","device_ip":"10.9.{rank}.2","super_device_id":"9{rank}21"}}]}}"#,
            p.name_any()
        );
        let patch = json!({"metadata": {"annotations": {"ascend.kubectl.kubernetes.io/ascend-910-configuration": ann}}});
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
    wait_for(20, "completed rank table", || async {
        let t = table(cms.get(&cm_name).await.ok()?);
        (t["status"] == "completed").then_some(t)
    })
    .await
}
