use super::*;
use crate::crd::CheckpointRecord;
use crate::observe::TerminationMessage;

fn spec(extra: serde_json::Value) -> PretrainJobSpec {
    let mut v = serde_json::json!({
        "nodes": 2, "workersPerNode": 1, "image": "i", "config": {"inline": "a: 1"},
        "failurePolicy": {"maxRestarts": 3, "maxRestartsWithoutProgress": 1,
                          "backoff": {"initialSeconds": 10, "maxSeconds": 25}}
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    serde_json::from_value(v).expect("spec parses")
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).expect("valid time")
}

fn pod(rank: u32, attempt: u32, phase: &str) -> PodView {
    PodView {
        name: format!("run1-{rank}"),
        uid: Some(format!("uid-{attempt}-{rank}")),
        rank,
        attempt,
        phase: phase.into(),
        ..Default::default()
    }
}

fn failed(rank: u32, attempt: u32, code: i32, step: Option<u64>) -> PodView {
    PodView {
        exit_code: Some(code),
        node: Some("n1".into()),
        termination: Some(TerminationMessage {
            reason: Some("PeerLost".into()),
            message: Some("boom".into()),
            last_checkpoint_step: step,
            last_checkpoint_path: step.map(|s| format!("/ckpt/iteration_{s:08}")),
            restarts: None,
            log: Some(format!("/ckpt/logs/attempt-{attempt}/worker_{rank}.log")),
        }),
        ..pod(rank, attempt, "Failed")
    }
}

fn running(attempt: u32) -> PretrainJobStatus {
    PretrainJobStatus {
        phase: Phase::Running,
        attempt,
        start_time: Some(Time(t(0))),
        ..Default::default()
    }
}

fn decide_at(
    spec: &PretrainJobSpec,
    st: &PretrainJobStatus,
    pods: &[PodView],
    now: i64,
) -> Outcome {
    decide("run1", spec, Some(1), st, pods, None, t(now))
}

#[test]
fn new_job_creates_attempt_one_without_resume() {
    let o = decide_at(
        &spec(serde_json::json!({})),
        &PretrainJobStatus::default(),
        &[],
        0,
    );
    assert_eq!(
        o.action,
        Action::CreatePods {
            attempt: 1,
            resume: false,
            ranks: vec![0, 1]
        }
    );
    assert_eq!(o.status.phase, Phase::Starting);
    assert_eq!(o.status.attempt, 1);
    assert_eq!(o.status.observed_generation, Some(1));
    assert!(o.status.start_time.is_some());
    assert_eq!(o.events[0].reason, "Started");
}

#[test]
fn all_running_is_running_and_missing_pods_are_created_while_starting() {
    let s = spec(serde_json::json!({}));
    let mut st = running(1);
    st.phase = Phase::Starting;
    let o = decide_at(&s, &st, &[pod(0, 1, "Running")], 5);
    assert_eq!(
        o.action,
        Action::CreatePods {
            attempt: 1,
            resume: false,
            ranks: vec![1]
        }
    );
    let o = decide_at(&s, &st, &[pod(0, 1, "Running"), pod(1, 1, "Running")], 5);
    assert_eq!(o.status.phase, Phase::Running);
    assert_eq!(o.action, Action::None);
    assert!(o
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Running" && c.status == "True"));
}

#[test]
fn retryable_failure_deletes_gang_then_recreates_with_resume_after_backoff() {
    let s = spec(serde_json::json!({}));
    let pods = [failed(1, 1, 1, Some(100)), pod(0, 1, "Running")];
    let o = decide_at(&s, &running(1), &pods, 50);
    assert_eq!(o.status.phase, Phase::Restarting);
    assert_eq!(o.status.restarts, 1);
    assert_eq!(o.status.restarts_without_progress, 0);
    assert_eq!(o.status.last_checkpoint.as_ref().map(|c| c.step), Some(100));
    let f = o.status.last_failure.clone().expect("failure recorded");
    assert_eq!(
        (f.rank, f.exit_code, f.reason.as_str()),
        (Some(1), Some(1), "PeerLost")
    );
    assert_eq!(f.node.as_deref(), Some("n1"));
    match &o.action {
        Action::DeletePods { graceful, force } => {
            assert_eq!(graceful.len(), 2);
            assert!(force.is_empty());
        }
        a => panic!("expected delete, got {a:?}"),
    }
    let reasons: Vec<_> = o.events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["CheckpointCommitted", "RankFailed", "GangRestart"]
    );

    // Pods still terminating: wait, never create.
    let mut gone = pods.clone();
    gone.iter_mut().for_each(|p| p.deleting_since = Some(t(51)));
    let o2 = decide_at(&s, &o.status, &gone, 52);
    assert_eq!(o2.action, Action::None);
    // Gone but backoff (10 s) not elapsed.
    let o3 = decide_at(&s, &o.status, &[], 55);
    assert_eq!(o3.action, Action::None);
    assert_eq!(o3.requeue_after, Some(Duration::from_secs(5)));
    // Backoff elapsed: attempt 2, resuming.
    let o4 = decide_at(&s, &o.status, &[], 60);
    assert_eq!(
        o4.action,
        Action::CreatePods {
            attempt: 2,
            resume: true,
            ranks: vec![0, 1]
        }
    );
    assert_eq!(o4.status.phase, Phase::Starting);
    assert_eq!(o4.events[0].reason, "GangRestart");
}

#[test]
fn non_retryable_exit_fails_at_once_and_stays_failed() {
    let s = spec(serde_json::json!({}));
    // Rank 0 exits 1 (lost peer) later than rank 1's config error: the config error decides.
    let mut p0 = failed(0, 1, 1, None);
    p0.finished_at = Some(t(30));
    let mut p1 = failed(1, 1, 2, None);
    p1.finished_at = Some(t(31));
    let o = decide_at(&s, &running(1), &[p0, p1], 40);
    assert_eq!(o.status.phase, Phase::Failed);
    assert_eq!(o.status.restarts, 0);
    assert_eq!(
        o.status.last_failure.as_ref().and_then(|f| f.exit_code),
        Some(2)
    );
    let c = o
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("condition");
    assert_eq!(c.reason, "NonRetryableExitCode");
    // Terminal is sticky: nothing to do even when the spec changes.
    let o2 = decide_at(&s, &o.status, &[], 100);
    assert_eq!(o2.status.phase, Phase::Failed);
    assert_eq!(o2.action, Action::None);
}

#[test]
fn restart_budget_and_no_progress_limits_fail_the_job() {
    let s = spec(serde_json::json!({}));
    let mut st = running(4);
    st.restarts = 3;
    let o = decide_at(
        &s,
        &st,
        &[failed(0, 4, 1, Some(500)), pod(1, 4, "Running")],
        10,
    );
    assert_eq!(o.status.phase, Phase::Failed);
    assert!(o
        .status
        .conditions
        .iter()
        .any(|c| c.reason == "RestartBudgetExhausted"));
    // The running pod is stopped; the failed one is kept for its logs.
    assert_eq!(
        o.action,
        Action::DeletePods {
            graceful: vec![("run1-1".into(), Some("uid-4-1".into()))],
            force: vec![]
        }
    );

    let mut st = running(2);
    st.restarts = 1;
    st.restarts_without_progress = 1;
    st.last_checkpoint = Some(CheckpointRecord {
        step: 100,
        path: None,
    });
    let o = decide_at(
        &s,
        &st,
        &[failed(0, 2, 1, Some(100)), pod(1, 2, "Running")],
        10,
    );
    assert_eq!(o.status.phase, Phase::Failed);
    assert!(o.status.conditions.iter().any(|c| c.reason == "NoProgress"));
}

/// A pod whose runtime stopped on SIGTERM (deleted, evicted, drained): exit 10, `Stopped`.
fn stopped(rank: u32, attempt: u32) -> PodView {
    let mut p = failed(rank, attempt, 10, None);
    if let Some(t) = p.termination.as_mut() {
        t.reason = Some("Stopped".into());
    }
    p
}

#[test]
fn infrastructure_failures_have_their_own_budget() {
    let s = spec(serde_json::json!({"failurePolicy": {
        "maxRestarts": 3, "maxInfraRestarts": 2, "maxRestartsWithoutProgress": 1}}));
    // The job's own budget is spent, and the last attempt made no progress: an eviction still
    // restarts it, and counts as neither.
    let mut st = running(5);
    (st.restarts, st.infra_restarts, st.restarts_without_progress) = (4, 1, 1);
    let o = decide_at(&s, &st, &[stopped(0, 5), pod(1, 5, "Running")], 10);
    assert_eq!(
        o.status.phase,
        Phase::Restarting,
        "{:?}",
        o.status.conditions
    );
    assert_eq!(
        (
            o.status.restarts,
            o.status.infra_restarts,
            o.status.restarts_without_progress
        ),
        (5, 2, 1)
    );
    // Now the infrastructure budget is spent too.
    let mut st = running(6);
    (st.restarts, st.infra_restarts) = (5, 2);
    let o = decide_at(&s, &st, &[stopped(0, 6), pod(1, 6, "Running")], 10);
    assert_eq!(o.status.phase, Phase::Failed);
    let c = o.status.conditions.iter().find(|c| c.type_ == "Failed");
    assert!(c
        .expect("Failed")
        .message
        .starts_with("infrastructure restart budget exhausted (2 of 2)"));
    // The job's own failures count only their own restarts: 5 - 3 = 2 of 3 used.
    let mut st = running(6);
    (st.restarts, st.infra_restarts) = (5, 3);
    let o = decide_at(&s, &st, &[failed(0, 6, 1, None), pod(1, 6, "Running")], 10);
    assert_eq!(o.status.phase, Phase::Restarting);
    assert_eq!((o.status.restarts, o.status.infra_restarts), (6, 3));
}

#[test]
fn an_evicted_pod_is_the_root_failure_before_the_peers_it_took_down() {
    let s = spec(serde_json::json!({}));
    // Rank 1 lost its peer and exited first; rank 0 was evicted.
    let peer = PodView {
        finished_at: Some(t(5)),
        ..failed(1, 2, 1, None)
    };
    let evicted = PodView {
        reason: Some("Evicted".into()),
        termination: None,
        exit_code: None,
        finished_at: Some(t(8)),
        ..pod(0, 2, "Failed")
    };
    let o = decide_at(&s, &running(2), &[evicted, peer], 10);
    let f = o.status.last_failure.expect("failure");
    assert_eq!((f.rank, f.reason.as_str()), (Some(0), "Evicted"));
    assert_eq!((o.status.restarts, o.status.infra_restarts), (1, 1));
}

/// Status times have whole seconds; a failure seen at x.9 s must still wait the whole backoff.
#[test]
fn the_backoff_is_never_cut_short_by_second_rounding() {
    let s = spec(serde_json::json!({}));
    let seen = Timestamp::new(1_800_000_010, 900_000_000).expect("t");
    let o = decide(
        "run1",
        &s,
        Some(1),
        &running(2),
        &[failed(0, 2, 1, None)],
        None,
        seen,
    );
    let next = o.status.next_attempt_time.expect("next attempt").0;
    assert!(
        next.as_second() as f64 >= 1_800_000_010.9 + 10.0,
        "next attempt at {next}, backoff 10 s from {seen}"
    );
}

#[test]
fn backoff_doubles_and_caps() {
    let s = spec(serde_json::json!({}));
    let secs: Vec<u64> = (1..=4).map(|n| backoff(&s, n).as_secs()).collect();
    assert_eq!(secs, [10, 20, 25, 25]);
}

#[test]
fn vanished_pod_while_running_is_a_failure_and_stale_pods_are_deleted() {
    let s = spec(serde_json::json!({}));
    let o = decide_at(&s, &running(1), &[pod(0, 1, "Running")], 10);
    assert_eq!(o.status.phase, Phase::Restarting);
    assert_eq!(
        o.status.last_failure.as_ref().map(|f| f.reason.as_str()),
        Some("PodMissing")
    );
    assert_eq!(
        o.status
            .last_failure
            .as_ref()
            .and_then(|f| f.pod.clone())
            .as_deref(),
        Some("run1-1")
    );

    let mut st = running(2);
    st.phase = Phase::Starting;
    let o = decide_at(&s, &st, &[pod(0, 1, "Running")], 10);
    assert_eq!(
        o.action,
        Action::DeletePods {
            graceful: vec![("run1-0".into(), Some("uid-1-0".into()))],
            force: vec![]
        }
    );
}

/// The decision creates both pods of attempt 2, resuming.
fn assert_resumes_attempt_2(o: &Outcome) {
    assert_eq!(
        o.action,
        Action::CreatePods {
            attempt: 2,
            resume: true,
            ranks: vec![0, 1]
        }
    );
}

#[test]
fn suspend_deletes_pods_and_resume_starts_next_attempt_without_counting() {
    let s = spec(serde_json::json!({"suspend": true}));
    let o = decide_at(
        &s,
        &running(1),
        &[pod(0, 1, "Running"), pod(1, 1, "Running")],
        10,
    );
    assert_eq!(o.status.phase, Phase::Suspended);
    assert!(matches!(o.action, Action::DeletePods { .. }));
    let unsuspended = spec(serde_json::json!({}));
    let o2 = decide_at(&unsuspended, &o.status, &[], 20);
    assert_resumes_attempt_2(&o2);
    assert_eq!(o2.status.restarts, 0);
    let reasons: Vec<_> = o2.events.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(reasons, ["Resumed", "GangRestart"]);
}

#[test]
fn a_gated_attempt_is_queued_and_its_clocks_start_at_admission() {
    let s = spec(serde_json::json!({"timeouts": {"startupSeconds": 60}}));
    let mut st = running(1);
    st.phase = Phase::Starting;
    st.attempt_start_time = Some(Time(t(0)));
    let gated = |rank| PodView {
        queued: true,
        ..pod(rank, 1, "Pending")
    };
    let queued_condition = |o: &Outcome| {
        let c = o.status.conditions.iter().find(|c| c.type_ == "Queued");
        c.map(|c| c.status.clone())
    };
    let o = decide_at(&s, &st, &[gated(0), gated(1)], 10);
    assert_eq!(o.status.phase, Phase::Queued);
    assert_eq!(o.action, Action::None);
    assert_eq!(queued_condition(&o).as_deref(), Some("True"));
    // Queued for longer than startupSeconds: no startup failure, and nothing to write while
    // it waits.
    let waiting = decide_at(&s, &o.status, &[gated(0), gated(1)], 500);
    assert_eq!(waiting.status, o.status);
    assert_eq!(waiting.action, Action::None);
    // Admitted at 530 (pods ungated, still Pending): the startup clock runs from there.
    let o = decide_at(
        &s,
        &o.status,
        &[pod(0, 1, "Pending"), pod(1, 1, "Pending")],
        530,
    );
    assert_eq!(o.status.phase, Phase::Starting);
    assert_eq!(o.status.attempt_start_time, Some(Time(t(530))));
    assert_eq!(o.requeue_after, Some(Duration::from_secs(60)));
    assert_eq!(o.events[0].reason, "Admitted");
    assert_eq!(queued_condition(&o).as_deref(), Some("False"));
    let o = decide_at(
        &s,
        &o.status,
        &[pod(0, 1, "Running"), pod(1, 1, "Running")],
        531,
    );
    assert_eq!(o.status.phase, Phase::Running);
    // Admitted and running before the operator saw the pods ungated: the same start.
    let mut queued = st.clone();
    queued.phase = Phase::Queued;
    let o = decide_at(
        &s,
        &queued,
        &[pod(0, 1, "Running"), pod(1, 1, "Running")],
        900,
    );
    assert_eq!(o.status.phase, Phase::Running);
    assert_eq!(o.status.attempt_start_time, Some(Time(t(900))));
}

#[test]
fn a_pod_group_kueue_stops_is_requeued_without_counting() {
    let s = spec(serde_json::json!({}));
    let mut st = running(1);
    st.restarts = 1;
    let stopped = PodView {
        kueue_stop: Some("WorkloadEvicted".into()),
        deleting_since: Some(t(10)),
        node: Some("n1".into()),
        ..pod(0, 1, "Running")
    };
    let o = decide_at(&s, &st, &[stopped, pod(1, 1, "Running")], 10);
    assert_eq!(o.status.phase, Phase::Restarting);
    assert_eq!((o.status.restarts, o.status.infra_restarts), (1, 0));
    assert!(o.status.node_failures.is_empty(), "not the node's fault");
    assert_eq!(o.status.last_failure, None);
    assert_eq!(
        o.action,
        Action::DeletePods {
            graceful: vec![("run1-1".into(), Some("uid-1-1".into()))],
            force: vec![]
        }
    );
    assert_eq!(o.events[0].reason, "Requeued");
    // Once the gang is gone the next attempt starts at once, resumed.
    let o2 = decide_at(&s, &o.status, &[], 11);
    assert_resumes_attempt_2(&o2);
    assert_eq!(o2.status.restarts, 1);
}

#[test]
fn success_and_ttl() {
    let s = spec(serde_json::json!({"ttlSecondsAfterFinished": 60}));
    let o = decide_at(
        &s,
        &running(1),
        &[pod(0, 1, "Succeeded"), pod(1, 1, "Succeeded")],
        10,
    );
    assert_eq!(o.status.phase, Phase::Succeeded);
    assert_eq!(o.requeue_after, Some(Duration::from_secs(60)));
    assert_eq!(decide_at(&s, &o.status, &[], 69).action, Action::None);
    assert_eq!(decide_at(&s, &o.status, &[], 70).action, Action::DeleteJob);
}

#[test]
fn startup_and_active_deadlines() {
    let s = spec(
        serde_json::json!({"timeouts": {"startupSeconds": 30, "activeDeadlineSeconds": 1000}}),
    );
    let mut st = running(1);
    st.phase = Phase::Starting;
    st.attempt_start_time = Some(Time(t(0)));
    let pods = [pod(0, 1, "Running"), pod(1, 1, "Pending")];
    let o = decide_at(&s, &st, &pods, 10);
    assert_eq!(o.requeue_after, Some(Duration::from_secs(20)));
    let o = decide_at(&s, &st, &pods, 30);
    assert_eq!(o.status.phase, Phase::Failed);
    assert!(o
        .status
        .conditions
        .iter()
        .any(|c| c.reason == "StartupTimeout"));
    let o = decide_at(
        &s,
        &running(1),
        &[pod(0, 1, "Running"), pod(1, 1, "Running")],
        1000,
    );
    assert!(o
        .status
        .conditions
        .iter()
        .any(|c| c.reason == "DeadlineExceeded"));
}

#[test]
fn stuck_terminating_pods_are_force_deleted() {
    let s = spec(serde_json::json!({"timeouts": {"forceDeleteAfterSeconds": 60}}));
    let mut st = running(1);
    st.phase = Phase::Restarting;
    let mut p = pod(0, 1, "Running");
    p.deleting_since = Some(t(0));
    assert_eq!(
        decide_at(&s, &st, std::slice::from_ref(&p), 30).action,
        Action::None
    );
    assert_eq!(
        decide_at(&s, &st, &[p], 60).action,
        Action::DeletePods {
            graceful: vec![],
            force: vec![("run1-0".into(), Some("uid-1-0".into()))]
        }
    );
}

#[test]
fn invalid_spec_sets_condition_once_and_recovers() {
    let o = invalid(
        &PretrainJobStatus::default(),
        Some(1),
        "nodes must be at least 1",
        t(0),
    );
    assert_eq!(o.status.phase, Phase::Invalid);
    assert_eq!(o.events.len(), 1);
    let again = invalid(&o.status, Some(1), "nodes must be at least 1", t(5));
    assert!(again.events.is_empty());
    let fixed = decide_at(&spec(serde_json::json!({})), &o.status, &[], 10);
    assert_eq!(fixed.status.phase, Phase::Starting);
    let c = fixed
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Invalid")
        .expect("kept");
    assert_eq!(c.status, "False");
}

#[test]
fn progress_is_shown_and_a_job_without_a_new_step_is_hung() {
    let s = spec(serde_json::json!({"failurePolicy": {"maxRestarts": 3,
        "maxRestartsWithoutProgress": 1, "hangTimeoutSeconds": 100}}));
    let mut st = running(1);
    st.attempt_start_time = Some(Time(t(0)));
    let pods = [pod(0, 1, "Running"), pod(1, 1, "Running")];
    let report = |step| ProgressReport {
        step,
        total_steps: Some(50),
        seconds_per_step: Some(2.0),
        ..ProgressReport::default()
    };
    let at = |st: &PretrainJobStatus, r: Option<&ProgressReport>, now| {
        decide("run1", &s, Some(1), st, &pods, r, t(now))
    };
    // Step 5 at 30 s: shown, with the time it advanced, the ETA and a poll in 10 s.
    let o = at(&st, Some(&report(5)), 30);
    let p = o.status.progress.clone().expect("progress");
    assert_eq!((p.step, p.total_steps), (5, Some(50)));
    assert_eq!(p.estimated_completion_time.expect("eta").0, t(30 + 90));
    assert_eq!(o.requeue_after, Some(PROGRESS_POLL));
    assert!(o
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Progressing" && c.status == "True" && c.message == "step 5 of 50"));
    // The same step, or no report at all, until 115 s (100 s + 15 s of slack): still running.
    let o = at(&o.status, Some(&report(5)), 130);
    assert_eq!(o.action, Action::None);
    let o = at(&o.status, None, 144);
    assert_eq!(o.action, Action::None);
    // At 145 s the step is 115 s old: the gang restarts with reason Hung.
    let o = at(&o.status, None, 145);
    let f = o.status.last_failure.clone().expect("failure");
    assert_eq!((f.reason.as_str(), f.rank), ("Hung", Some(0)));
    assert!(f
        .message
        .expect("message")
        .contains("no training step completed for 115 s"));
    assert_eq!(o.status.phase, Phase::Restarting);
    assert!(matches!(o.action, Action::DeletePods { .. }));
    assert_eq!(o.status.restarts, 1);
    // Never a report (an endpoint the cluster's policies hide): no judgement.
    assert_eq!(at(&st, None, 100_000).action, Action::None);
    // A new attempt with no step yet: the clock runs from the attempt's start.
    st.progress = o.status.progress.clone();
    st.attempt_start_time = Some(Time(t(1000)));
    assert_eq!(at(&st, None, 1114).action, Action::None);
    let o = at(&st, None, 1115);
    assert_eq!(o.status.last_failure.expect("hung").reason, "Hung");
}

#[test]
fn in_place_restarts_the_launchers_report_are_counted_once() {
    let s = spec(serde_json::json!({}));
    let mut st = running(1);
    st.attempt_start_time = Some(Time(t(0)));
    let pods = [pod(0, 1, "Running"), pod(1, 1, "Running")];
    let report = |step, restarts| ProgressReport {
        step,
        restarts,
        ..ProgressReport::default()
    };
    let at = |st: &PretrainJobStatus, r: &ProgressReport, now| {
        decide("run1", &s, Some(1), st, &pods, Some(r), t(now))
    };
    let o = at(&st, &report(5, None), 10);
    assert_eq!(o.status.in_place_restarts, 0);
    let o = at(&o.status, &report(3, Some(1)), 20);
    assert_eq!(o.status.in_place_restarts, 1);
    assert!(o.events.iter().any(|e| e.reason == "InPlaceRestart"));
    // Read again: not counted twice; a second restart adds one.
    let o = at(&o.status, &report(6, Some(1)), 30);
    assert_eq!((o.status.in_place_restarts, o.events.len()), (1, 0));
    let o = at(&o.status, &report(4, Some(2)), 40);
    assert_eq!(o.status.in_place_restarts, 2);
    // A new attempt starts its own count.
    let mut next = o.status.clone();
    next.attempt = 2;
    let pods2 = [pod(0, 2, "Running"), pod(1, 2, "Running")];
    let o = decide(
        "run1",
        &s,
        Some(1),
        &next,
        &pods2,
        Some(&report(1, Some(1))),
        t(50),
    );
    assert_eq!(o.status.in_place_restarts, 3);
}

#[test]
fn the_failure_names_the_failing_worker_s_log() {
    let s = spec(serde_json::json!({}));
    let o = decide_at(
        &s,
        &running(2),
        &[failed(1, 2, 137, None), pod(0, 2, "Running")],
        10,
    );
    let f = o.status.last_failure.expect("failure");
    assert_eq!(f.log.as_deref(), Some("/ckpt/logs/attempt-2/worker_1.log"));
    assert!(o.events.iter().any(|e| e
        .message
        .contains("(log: /ckpt/logs/attempt-2/worker_1.log)")));
}

#[test]
fn a_node_with_two_infrastructure_failures_is_avoided_until_success() {
    let s = spec(serde_json::json!({"failurePolicy": {"maxRestarts": 3,
        "maxRestartsWithoutProgress": 1, "backoff": {"initialSeconds": 1, "maxSeconds": 1}}}));
    let evicted = |attempt| PodView {
        reason: Some("Evicted".into()),
        node: Some("bad-node".into()),
        ..pod(0, attempt, "Failed")
    };
    // Attempt 1: evicted from bad-node, counted, not excluded yet.
    let o = decide_at(&s, &running(1), &[evicted(1)], 10);
    assert_eq!(o.status.node_failures[0].failures, 1);
    assert!(o.status.excluded_nodes.is_empty());
    // Attempt 2: again: excluded, with an Event.
    let mut st = o.status.clone();
    st.phase = Phase::Running;
    st.attempt = 2;
    let o = decide_at(&s, &st, &[evicted(2)], 20);
    assert_eq!(o.status.excluded_nodes, ["bad-node"]);
    assert!(o.events.iter().any(|e| e.reason == "NodeExcluded"));
    // A failure of the job itself on another node does not count.
    let mut st = o.status.clone();
    st.phase = Phase::Running;
    st.attempt = 3;
    let o = decide_at(&s, &st, &[failed(0, 3, 1, None)], 30);
    assert_eq!(o.status.excluded_nodes, ["bad-node"]);
    assert_eq!(o.status.node_failures.len(), 1);
    // Success clears the list.
    let mut st = o.status.clone();
    st.phase = Phase::Running;
    st.attempt = 4;
    let done = [pod(0, 4, "Succeeded"), pod(1, 4, "Succeeded")];
    let o = decide_at(&s, &st, &done, 40);
    assert_eq!(o.status.phase, Phase::Succeeded);
    assert!(o.status.excluded_nodes.is_empty() && o.status.node_failures.is_empty());
}
