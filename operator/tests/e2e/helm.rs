//! Scenario 6: `helm install` of the chart, then the CPU example through the operator it
//! installed, the operator itself running as a pod of the test node: its image's user, the
//! chart's read-only root filesystem, in-cluster credentials of the chart's ServiceAccount
//! (hence exactly the chart's RBAC), its readiness probe and leader election.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use pretrain_operator::crd::{Phase, PretrainJob};

use super::super::get_job;
use super::super::support;
use super::{assert_trained_to_the_end, cpu_example, start_node, SERIAL};

/// What the Deployment controller would create from the chart's Deployment (the test cluster
/// runs no kube-controller-manager): one pod from its template.
async fn operator_pod(client: &kube::Client, ns: &str, deployment: &str) -> String {
    let dep = Api::<Deployment>::namespaced(client.clone(), ns)
        .get(deployment)
        .await
        .expect("the chart's Deployment");
    let template = dep.spec.expect("spec").template;
    let name = format!("{deployment}-5d8c7b9f4-x2k4q");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: template.metadata.and_then(|m| m.annotations),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect("operator pod");
    name
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, helm, root (mount namespaces) and the release binaries"]
async fn helm_installed_operator_runs_the_cpu_example_to_the_end() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-helm";
    let client = support::cluster().client().await;
    let started = std::time::Instant::now();
    // Jobs in the release's own namespace; watching only it keeps the other tests' namespaces
    // (each with its own operator) out of this operator's hands.
    // Cluster-scoped RBAC objects are named after the release: one of its own.
    support::helm_install(
        "e2e",
        ns,
        &[
            format!("watchNamespace={ns}"),
            format!("metrics.port={}", support::free_port()),
            "logFormat=text".into(),
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, pvc) = start_node(&client, ns, dir.path()).await;
    let op = operator_pod(&client, ns, "e2e-pretrain-operator").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let op_log = || {
        let prefix = format!("{op}-");
        std::fs::read_dir(dir.path().join("pods"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| std::fs::read_to_string(e.path().join("log")).unwrap_or_default())
            .collect::<String>()
    };
    let ready = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        loop {
            if pods.get(&op).await.is_ok_and(|p| is_ready(&p)) {
                return started.elapsed();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("operator pod not ready; its log:\n{}", op_log()));
    println!(
        "figure: helm install -> operator ready in {:.2}s",
        ready.as_secs_f64()
    );

    Api::<PretrainJob>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cpu_example(&[]))
        .await
        .expect("apply");
    let finished = tokio::time::timeout(std::time::Duration::from_secs(300), async {
        loop {
            let j = get_job(&client, ns, "qwen3-tiny-cpu").await;
            let phase = j.status.as_ref().map(|s| s.phase);
            if matches!(phase, Some(Phase::Succeeded | Phase::Failed)) {
                return j;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    // The operator in the pod led: the chart's Lease names it.
    let holder = Api::<Lease>::namespaced(client.clone(), ns)
        .get("pretrain-operator")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    let log = op_log();
    node.shutdown().await;
    let status = finished
        .unwrap_or_else(|_| panic!("job did not finish; operator log:\n{log}"))
        .status
        .expect("status");
    assert_eq!(status.phase, Phase::Succeeded, "{status:?}\n{log}");
    assert_eq!(status.attempt, 1, "no restart needed");
    assert_trained_to_the_end(&pvc);
    assert!(
        !log.contains("forbidden"),
        "the chart's RBAC denied something:\n{log}"
    );
    assert_eq!(holder.as_deref(), Some(op.as_str()), "the Lease's holder");
}
