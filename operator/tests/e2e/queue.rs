//! Admission by a queue (Kueue) on the process-backed test node: a job created suspended waits
//! without pods, runs when unsuspended, saves its final state and loses its pods when
//! suspended, and is stopped by Kueue's preemption as Kueue does it; each time it resumes
//! exactly, and it ends with the losses of an uninterrupted run.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pretrain_operator::crd::{Phase, PretrainJob};
use serde_json::json;

use super::{
    cpu_example, losses, run_example, running_pods, start_node, wait_phase, wait_steps, SERIAL,
};
use crate::support::wait_for;

/// Steps of both runs; no periodic checkpoint, so every resume is from a final-state save.
const RUN: [&str; 2] = [
    "runner_config.train_iters=40",
    "callbacks.1.save_checkpoint_steps=1000",
];

async fn set_suspend(jobs: &Api<PretrainJob>, name: &str, suspend: bool) {
    jobs.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": suspend}})),
    )
    .await
    .expect("patch spec.suspend");
}

/// The step of the newest committed checkpoint on the volume.
fn committed_step(pvc: &std::path::Path) -> u64 {
    let marker = pvc.join("qwen3-tiny/checkpoint/latest_checkpointed_iteration.txt");
    std::fs::read_to_string(&marker)
        .expect("checkpoint marker")
        .trim()
        .parse()
        .expect("marker is a step")
}

/// What Kueue does to each pod of a pod group it preempts (`pod.Stop` in Kueue's
/// `pkg/controller/jobs/pod`): the `TerminationTarget` condition, then a delete.
async fn preempt_as_kueue(pods: &Api<Pod>, name: &str) {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = json!({"status": {"conditions": [{"type": "TerminationTarget",
        "status": "True", "reason": "WorkloadEvicted", "lastTransitionTime": now,
        "message": "Preempted to accommodate a higher priority Workload"}]}});
    // As Kueue, a pod already gone is no error (the operator may have deleted it meanwhile).
    let gone = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    let patched = pods
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&condition))
        .await;
    if let Some(e) = patched.as_ref().err().filter(|e| !gone(e)) {
        panic!("condition on {name}: {e}");
    }
    if let Err(e) = pods.delete(name, &Default::default()).await {
        assert!(gone(&e), "delete {name}: {e}");
    }
}

/// The pods of job `queued` (those of the first job stay, finished).
async fn queued_pods(client: &Client, ns: &str) -> Vec<Pod> {
    let mut pods = crate::pods(client, ns).await;
    pods.retain(|p| crate::label(p, "pretrain.io/job-name") == "queued");
    pods
}

async fn no_pods(client: &Client, ns: &str) {
    wait_for(120, "no pods", || async {
        queued_pods(client, ns).await.is_empty().then_some(())
    })
    .await;
}

/// Creates job `queued`, suspended, in the Kueue queue `team-a`.
async fn create_queued(client: &Client, ns: &str) -> Api<PretrainJob> {
    let mut job = cpu_example(&RUN);
    job.metadata.name = Some("queued".into());
    job.metadata.labels = Some(
        [(
            "kueue.x-k8s.io/queue-name".to_string(),
            "team-a".to_string(),
        )]
        .into(),
    );
    job.spec.suspend = true;
    let jobs = Api::<PretrainJob>::namespaced(client.clone(), ns);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("apply");
    jobs
}

/// The pod carries what Kueue's pod integration needs to treat the gang as pod group `group`.
fn assert_in_kueue_pod_group(p: &Pod, group: &str) {
    assert_eq!(crate::label(p, "kueue.x-k8s.io/queue-name"), "team-a");
    assert_eq!(crate::label(p, "kueue.x-k8s.io/pod-group-name"), group);
    let a = p.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(a["kueue.x-k8s.io/pod-group-total-count"], "2");
    assert_eq!(a["kueue.x-k8s.io/retriable-in-group"], "false");
    assert_eq!(a["kueue.x-k8s.io/role-hash"], "pretrain");
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn a_queued_job_suspended_resumed_and_preempted_ends_as_if_uninterrupted() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-queue";
    let (client, _op) = crate::setup(ns).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, pvc) = run_example(&client, ns, dir.path(), "straight", &RUN).await;
    wait_phase(&client, ns, "straight", Phase::Succeeded, 300).await;
    node.shutdown().await;
    let want = losses(&pvc.join("qwen3-tiny/metrics.jsonl")).0;
    assert_eq!(want.len(), 40);

    // Created suspended, in a Kueue queue: no pods.
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, pvc) = start_node(&client, ns, dir.path()).await;
    let jobs = create_queued(&client, ns).await;
    wait_phase(&client, ns, "queued", Phase::Suspended, 30).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(queued_pods(&client, ns).await.is_empty());

    // Admitted (unsuspended): it runs, its pods one Kueue pod group.
    set_suspend(&jobs, "queued", false).await;
    let metrics = pvc.join("qwen3-tiny/metrics.jsonl");
    wait_steps(&metrics, 8).await;
    let pods = queued_pods(&client, ns).await;
    assert_eq!(pods.len(), 2);
    for p in &pods {
        assert_in_kueue_pod_group(p, "queued-a1");
    }

    // Suspended while running: the final state is saved, then no pods.
    let suspended_at = std::time::Instant::now();
    set_suspend(&jobs, "queued", true).await;
    no_pods(&client, ns).await;
    let saved_in = suspended_at.elapsed();
    let suspended = wait_phase(&client, ns, "queued", Phase::Suspended, 30).await;
    let logged = losses(&metrics).0.len() as u64;
    assert_eq!(
        committed_step(&pvc),
        logged,
        "the final state is the last step"
    );
    assert!(logged < 40, "suspended before the end");

    // Unsuspended: resumes; then Kueue preempts the pod group.
    let resumed_at = std::time::Instant::now();
    set_suspend(&jobs, "queued", false).await;
    wait_steps(&metrics, logged as usize + 1).await;
    let resumed_in = resumed_at.elapsed();
    wait_steps(&metrics, logged as usize + 5).await;
    let resumed_pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for rank in 0..2 {
        preempt_as_kueue(&resumed_pods, &format!("queued-{rank}")).await;
    }
    wait_for(120, "attempt 3 running", || async {
        (running_pods(&client, ns, 3).await == 2).then_some(())
    })
    .await;
    let done = wait_phase(&client, ns, "queued", Phase::Succeeded, 300).await;
    node.shutdown().await;

    let status = done.status.expect("status");
    assert_eq!(
        status.attempt, 3,
        "suspension and preemption each end an attempt"
    );
    assert_eq!(
        (status.restarts, status.infra_restarts),
        (0, 0),
        "neither suspension nor preemption is a failure"
    );
    assert!(suspended.status.expect("status").last_failure.is_none());
    let requeued: Vec<_> = crate::events(&client, ns)
        .await
        .into_iter()
        .filter(|(reason, _)| reason == "Requeued")
        .collect();
    assert!(
        requeued.len() == 1 && requeued[0].1.contains("WorkloadEvicted"),
        "{requeued:?}"
    );
    println!(
        "figure: suspend -> final state saved and no pods in {:.2}s; unsuspend -> next step \
         logged in {:.2}s",
        saved_in.as_secs_f64(),
        resumed_in.as_secs_f64()
    );
    let (got, repeats) = losses(&metrics);
    assert_eq!(
        repeats, 0,
        "a step was recomputed: the final state was not saved"
    );
    assert_eq!(got, want, "losses differ from the uninterrupted run");
}
