//! A job's life on the API server without a test node: failed pods and gang restarts, exit
//! codes that end the job, the restart budget, suspension, invalid specs and deletion. The tests
//! write pod status themselves, as a kubelet would.

use super::*;

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn failed_pod_restarts_gang_as_attempt_two_with_resume() {
    let ns = "t-restart";
    let (client, _op) = setup(ns).await;
    create(&client, ns, &job("run", json!({}))).await;
    wait_pods(&client, ns, 1, 2, 30).await;
    run_all(&client, ns).await;
    wait_phase(&client, ns, "run", Phase::Running, 20).await;

    let t0 = Instant::now();
    let msg = r#"{"reason":"PeerLost","message":"rank 5 lost its peer","lastCheckpointStep":100,"lastCheckpointPath":"/checkpoints/run/iteration_00000100"}"#;
    set_pod_status(&client, ns, "run-1", "Failed", Some((1, msg))).await;
    let ps = wait_pods(&client, ns, 2, 2, 30).await;
    println!(
        "timing: failure seen -> attempt 2 created (1 s backoff included): {} ms",
        t0.elapsed().as_millis()
    );
    for p in &ps {
        let env = env_of(p);
        assert_eq!(env["PRETRAIN_ATTEMPT"], "2");
        assert_eq!(env["PRETRAIN_RESUME"], "true");
        assert_eq!(env["PRETRAIN_CHECKPOINT_DIR"], "/checkpoints/run");
    }
    let st = get_job(&client, ns, "run").await.status.expect("status");
    assert_eq!((st.attempt, st.restarts), (2, 1));
    assert_eq!(st.phase, Phase::Starting);
    let f = st.last_failure.expect("failure");
    assert_eq!(
        (f.rank, f.exit_code, f.reason.as_str()),
        (Some(1), Some(1), "PeerLost")
    );
    assert_eq!(f.pod.as_deref(), Some("run-1"));
    assert_eq!(st.last_checkpoint.map(|c| c.step), Some(100));
    let ev = events(&client, ns).await;
    for reason in ["RankFailed", "GangRestart", "CheckpointCommitted"] {
        assert!(ev.iter().any(|(r, _)| r == reason), "{reason} in {ev:?}");
    }
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn non_retryable_exit_code_fails_the_job() {
    let ns = "t-nonretry";
    let (client, _op) = setup(ns).await;
    create(&client, ns, &job("run", json!({}))).await;
    wait_pods(&client, ns, 1, 2, 30).await;
    run_all(&client, ns).await;
    set_pod_status(
        &client,
        ns,
        "run-0",
        "Failed",
        Some((2, "error: config.yaml:3: unknown key `lr`")),
    )
    .await;
    let j = wait_phase(&client, ns, "run", Phase::Failed, 20).await;
    let st = j.status.expect("status");
    assert_eq!(st.restarts, 0);
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert_eq!(c.reason, "NonRetryableExitCode");
    assert!(c.message.contains("unknown key `lr`"), "{}", c.message);
    // The running pod is stopped; the failed one stays for its logs.
    let names = || async {
        pods(&client, ns)
            .await
            .iter()
            .map(|p| p.name_any())
            .collect::<Vec<_>>()
    };
    wait_for(20, "running pod deleted", || async {
        (names().await == ["run-0"]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(names().await, ["run-0"], "a failed job never gets new pods");
    assert_eq!(
        get_job(&client, ns, "run").await.status.map(|s| s.phase),
        Some(Phase::Failed)
    );
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn restart_budget_exhaustion_fails_the_job() {
    let ns = "t-budget";
    let (client, _op) = setup(ns).await;
    create(&client, ns, &job("run", json!({"failurePolicy": {"maxRestarts": 1, "backoff": {"initialSeconds": 1, "maxSeconds": 1}}}))).await;
    wait_pods(&client, ns, 1, 2, 30).await;
    set_pod_status(&client, ns, "run-0", "Failed", Some((1, "oom"))).await;
    wait_pods(&client, ns, 2, 2, 30).await;
    set_pod_status(&client, ns, "run-1", "Failed", Some((137, ""))).await;
    let j = wait_phase(&client, ns, "run", Phase::Failed, 20).await;
    let st = j.status.expect("status");
    assert_eq!((st.attempt, st.restarts), (2, 1));
    assert!(st
        .conditions
        .iter()
        .any(|c| c.reason == "RestartBudgetExhausted"));
    assert_eq!(st.last_failure.and_then(|f| f.exit_code), Some(137));
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn suspend_deletes_pods_and_resume_starts_next_attempt() {
    let ns = "t-suspend";
    let (client, _op) = setup(ns).await;
    create(&client, ns, &job("run", json!({}))).await;
    wait_pods(&client, ns, 1, 2, 30).await;
    let api = Api::<PretrainJob>::namespaced(client.clone(), ns);
    api.patch(
        "run",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": true}})),
    )
    .await
    .expect("suspend");
    wait_phase(&client, ns, "run", Phase::Suspended, 20).await;
    wait_for(20, "pods deleted", || async {
        pods(&client, ns).await.is_empty().then_some(())
    })
    .await;
    api.patch(
        "run",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await
    .expect("resume");
    let ps = wait_pods(&client, ns, 2, 2, 30).await;
    assert_eq!(env_of(&ps[0])["PRETRAIN_RESUME"], "true");
    let st = get_job(&client, ns, "run").await.status.expect("status");
    assert_eq!(st.restarts, 0, "suspension is not a restart");
    assert_eq!(st.observed_generation, Some(3));
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn invalid_spec_gets_condition_and_no_pods() {
    let ns = "t-invalid";
    let (client, _op) = setup(ns).await;
    create(&client, ns, &job("zero", json!({"nodes": 0}))).await;
    create(
        &client,
        ns,
        &job("nocm", json!({"config": {"configMap": {"name": "absent"}}})),
    )
    .await;
    let layout = "parallel_config:\n  data_parallel: 1\n  model_parallel: 4\n  pipeline_stage: 4\n";
    create(
        &client,
        ns,
        &job("layout", json!({"config": {"inline": layout}})),
    )
    .await;
    for (name, needle) in [
        ("zero", "nodes must be at least 1"),
        ("nocm", "config.configMap \"absent\" not found"),
        (
            "layout",
            "does not match the world size nodes x workersPerNode = 8",
        ),
    ] {
        let j = wait_phase(&client, ns, name, Phase::Invalid, 20).await;
        let c = j
            .status
            .expect("status")
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Invalid")
            .expect("condition");
        assert!(c.message.contains(needle), "{name}: {}", c.message);
    }
    let ev = wait_for(10, "InvalidSpec events", || async {
        let ev = events(&client, ns).await;
        (ev.iter().filter(|(r, _)| r == "InvalidSpec").count() >= 3).then_some(ev)
    })
    .await;
    assert!(!ev.is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pods(&client, ns).await.is_empty());
    // Fixing the spec starts it.
    Api::<PretrainJob>::namespaced(client.clone(), ns)
        .patch(
            "zero",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodes": 1}})),
        )
        .await
        .expect("fix");
    wait_pods(&client, ns, 1, 1, 30).await;
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver"]
async fn deleted_job_is_left_alone() {
    let ns = "t-delete";
    let (client, op) = setup(ns).await;
    create(&client, ns, &job("run", json!({}))).await;
    let ps = wait_pods(&client, ns, 1, 2, 30).await;
    Api::<PretrainJob>::namespaced(client.clone(), ns)
        .delete("run", &DeleteParams::default())
        .await
        .expect("delete");
    // No garbage collector runs here; deleting the children is its job, thanks to the owner
    // references checked above. The operator must not recreate anything or error.
    for p in &ps {
        Api::<Pod>::namespaced(client.clone(), ns)
            .delete(&p.name_any(), &DeleteParams::default())
            .await
            .expect("delete pod");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pods(&client, ns).await.is_empty());
    let m = op.get("/metrics");
    assert!(!m.contains("reconcile_errors_total{"), "{m}");
}
