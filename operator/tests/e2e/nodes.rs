//! Bad-node avoidance on the two Nodes of the process-backed test node: after two
//! infrastructure failures of the job's pods on `test-node`, the next attempt runs on
//! `test-node-2`.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use pretrain_operator::crd::{Phase, PretrainJob};

use super::{losses, run_example, running_pods, wait_phase, wait_steps, SERIAL};
use crate::support::wait_for;

/// The nodes the pods of `attempt` of job `flaky` are bound to.
async fn nodes_of(pods: &Api<Pod>, attempt: u32) -> Vec<String> {
    let list = pods.list(&Default::default()).await.expect("pods").items;
    list.iter()
        .filter(|p| crate::label(p, "pretrain.io/job-name") == "flaky")
        .filter(|p| crate::label(p, "pretrain.io/attempt") == attempt.to_string())
        .map(|p| {
            let spec = p.spec.as_ref();
            spec.and_then(|s| s.node_name.clone()).unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn a_node_with_two_infrastructure_failures_is_avoided_by_the_next_attempt() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-nodes";
    let (client, _op) = crate::setup(ns).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let run = [
        "runner_config.train_iters=40",
        "callbacks.1.save_checkpoint_steps=1000",
    ];
    let (node, pvc) = run_example(&client, ns, dir.path(), "flaky", &run).await;
    let metrics = pvc.join("qwen3-tiny/metrics.jsonl");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let jobs: Api<PretrainJob> = Api::namespaced(client.clone(), ns);
    // Two attempts on test-node, each ended by deleting a pod (an infrastructure failure).
    for attempt in 1..=2 {
        wait_for(120, &format!("attempt {attempt} running"), || async {
            (running_pods(&client, ns, attempt).await == 2).then_some(())
        })
        .await;
        wait_steps(&metrics, losses(&metrics).0.len() + 2).await;
        assert_eq!(nodes_of(&pods, attempt).await, ["test-node", "test-node"]);
        pods.delete("flaky-0", &Default::default())
            .await
            .expect("kubectl delete pod");
    }
    // The second one excludes test-node: attempt 3 runs on test-node-2.
    let excluded = wait_for(120, "test-node excluded", || async {
        let st = jobs.get("flaky").await.ok()?.status?;
        (!st.excluded_nodes.is_empty()).then_some(st)
    })
    .await;
    assert_eq!(excluded.excluded_nodes, ["test-node"]);
    wait_for(120, "attempt 3 running", || async {
        (running_pods(&client, ns, 3).await == 2).then_some(())
    })
    .await;
    assert_eq!(nodes_of(&pods, 3).await, ["test-node-2", "test-node-2"]);
    let done = wait_phase(&client, ns, "flaky", Phase::Succeeded, 300).await;
    node.shutdown().await;

    let status = done.status.expect("status");
    assert_eq!(status.attempt, 3);
    assert_eq!((status.restarts, status.infra_restarts), (2, 2));
    assert!(
        status.excluded_nodes.is_empty() && status.node_failures.is_empty(),
        "a job that succeeded clears its bad nodes: {status:?}"
    );
    let excluded_events: Vec<_> = crate::events(&client, ns)
        .await
        .into_iter()
        .filter(|(reason, _)| reason == "NodeExcluded")
        .collect();
    assert_eq!(excluded_events.len(), 1, "{excluded_events:?}");
    assert!(
        excluded_events[0].1.contains("test-node"),
        "{excluded_events:?}"
    );
    let (got, repeats) = losses(&metrics);
    assert_eq!(
        (got.len(), repeats),
        (40, 0),
        "final states saved, no step lost"
    );
}
