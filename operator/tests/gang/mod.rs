//! Gang scheduling with Volcano: the job's PodGroup (Volcano's CRD installed by the harness)
//! and its pods, across a gang restart; and the gang's PodDisruptionBudget.

use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use kube::{Api, ResourceExt};
use pretrain_operator::resources::{disruption, pod_group};
use serde_json::json;

use super::{create, job, set_pod_status, setup, wait_pods};

async fn pod_group_of(client: &kube::Client, ns: &str, name: &str) -> DynamicObject {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &pod_group::api_resource())
        .get(name)
        .await
        .expect("the job's PodGroup")
}

fn joins(p: &Pod, group: &str) -> bool {
    p.annotations()
        .get(pod_group::GROUP_ANNOTATION)
        .map(String::as_str)
        == Some(group)
        && p.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()) == Some("volcano")
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn volcano_job_gets_a_pod_group_that_every_attempt_joins() {
    let ns = "t-gang";
    let (client, _op) = setup(ns).await;
    let made = create(
        &client,
        ns,
        &job(
            "gang",
            json!({"scheduling": {"schedulerName": "volcano", "queue": "training",
                "resources": {"requests": {"cpu": "1500m", "memory": "3Gi"}}}}),
        ),
    )
    .await;
    let ps = wait_pods(&client, ns, 1, 2, 30).await;
    assert!(ps.iter().all(|p| joins(p, "gang")), "{ps:?}");
    let pg = pod_group_of(&client, ns, "gang").await;
    assert_eq!(pg.data["spec"]["minMember"], 2);
    assert_eq!(pg.data["spec"]["queue"], "training");
    // Volcano admits the group only when its queue can hold all of it.
    assert_eq!(
        pg.data["spec"]["minResources"],
        json!({"cpu": "3000m", "memory": "6Gi"})
    );
    let owner = &pg.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(Some(&owner.uid), made.metadata.uid.as_ref());
    assert_eq!(owner.controller, Some(true));

    // A gang restart: the new attempt's pods join the same PodGroup.
    set_pod_status(&client, ns, "gang-1", "Failed", Some((1, ""))).await;
    let ps = wait_pods(&client, ns, 2, 2, 40).await;
    assert!(ps.iter().all(|p| joins(p, "gang")), "{ps:?}");
    assert_eq!(pod_group_of(&client, ns, "gang").await.uid(), pg.uid());
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn a_protected_gang_gets_a_disruption_budget() {
    let ns = "t-pdb";
    let (client, _op) = setup(ns).await;
    let made = create(
        &client,
        ns,
        &job("held", json!({"scheduling": {"disruptionBudget": true}})),
    )
    .await;
    wait_pods(&client, ns, 1, 2, 30).await;
    // policy/v1 from Kubernetes 1.21, policy/v1beta1 before (the test server is 1.20).
    let mut found = None;
    for version in disruption::VERSIONS {
        let api = Api::<DynamicObject>::namespaced_with(
            client.clone(),
            ns,
            &disruption::api_resource(version),
        );
        if let Ok(pdb) = api.get("held").await {
            found = Some(pdb);
            break;
        }
    }
    let pdb = found.expect("the job's PodDisruptionBudget");
    assert_eq!(pdb.data["spec"]["minAvailable"], 2);
    assert_eq!(
        pdb.data["spec"]["selector"],
        json!({"matchLabels": {"pretrain.io/job-name": "held"}})
    );
    let owner = &pdb.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(Some(&owner.uid), made.metadata.uid.as_ref());
}
