//! Failures and their recovery on the test node: a worker killed with SIGKILL (gang
//! recreation, or in place with the pods unchanged), a deleted pod, a stopped worker found by
//! its launcher, a frozen pod found by the operator's hang backstop; each job ends with the
//! uninterrupted run's losses.

use std::path::{Path, PathBuf};

use kube::api::PostParams;
use kube::{Api, Client};
use pretrain_operator::crd::{Phase, PretrainJob};

use super::{
    cpu_example, losses, run_example, run_example_in_place, running_pods, start_node, wait_steps,
    SERIAL,
};
use crate::{setup, wait_phase};

/// The pid of worker `rank` from the newest log of pod `pod` under the node's directory.
fn worker_pid(pods_dir: &Path, pod: &str, rank: usize) -> Option<u32> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(pods_dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{pod}-")))
        })
        .collect();
    dirs.sort_by_key(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok());
    let log = std::fs::read_to_string(dirs.last()?.join("log")).ok()?;
    let needle = format!("worker started rank={rank} pid=");
    log.lines()
        .rev()
        .filter_map(|l| l.split(&needle).nth(1))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// What [`interrupted`] saw.
struct Interrupted {
    /// The interrupted job at its end.
    done: PretrainJob,
    /// From the signal to the second gang's pods running (or, in place, to the signal).
    regang: std::time::Duration,
    /// From the signal to the first step logged after it.
    next_step: std::time::Duration,
    /// The pod UIDs before the signal and at the end.
    uids: (Vec<String>, Vec<String>),
    /// The worker logs on the checkpoint volume at the end: (attempt dir/file, bytes).
    logs: Vec<(String, u64)>,
    /// (step, loss) of the uninterrupted run and of the interrupted one.
    want: Vec<(u64, f64)>,
    got: Vec<(u64, f64)>,
    /// Steps logged twice (recomputed after the restart).
    repeats: usize,
}

/// The sorted UIDs of the pods in `ns`.
async fn pod_uids(client: &Client, ns: &str) -> Vec<String> {
    let mut u: Vec<String> = crate::pods(client, ns)
        .await
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    u.sort();
    u
}

/// `kill -<signal> <pid>`, which must succeed.
fn send(signal: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}

/// Lines of a file (0 while it does not exist).
fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .count()
}

/// The `<attempt dir>/<file>.log` files under `root` with their sizes, sorted.
fn worker_logs(root: &Path) -> Vec<(String, u64)> {
    let files = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|attempt| {
            std::fs::read_dir(attempt.path())
                .into_iter()
                .flatten()
                .flatten()
        });
    let mut logs: Vec<(String, u64)> = files
        .filter(|f| f.file_name().to_string_lossy().ends_with(".log"))
        .map(|f| {
            let path = f.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            (rel, f.metadata().map(|m| m.len()).unwrap_or(0))
        })
        .collect();
    logs.sort();
    logs
}

/// The CPU example for 30 steps without interruption, then again as `name` (with `env` in
/// `spec.env`) with `kill -<signal>` sent to rank 1's worker after step 8, to its Succeeded end.
async fn interrupted(
    client: &Client,
    ns: &str,
    name: &str,
    env: &[(&str, &str)],
    signal: &str,
    in_place: u32,
) -> Interrupted {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = ["runner_config.train_iters=30"];
    let (node, pvc) = run_example(client, ns, dir.path(), "straight", &long).await;
    wait_phase(client, ns, "straight", Phase::Succeeded, 300).await;
    node.shutdown().await;
    let want = losses(&pvc.join("qwen3-tiny/metrics.jsonl")).0;
    assert_eq!(want.len(), 30);
    let dir2 = tempfile::tempdir().expect("tempdir");
    let (node, pvc) =
        run_example_in_place(client, ns, dir2.path(), name, &long, env, in_place).await;
    let metrics = pvc.join("qwen3-tiny/metrics.jsonl");
    wait_steps(&metrics, 8).await;
    let before = pod_uids(client, ns).await;
    let pods_dir = dir2.path().join("pods");
    let pod = format!("{name}-1");
    let pid = crate::support::wait_for(30, &format!("the worker pid of pod {pod}"), || async {
        worker_pid(&pods_dir, &pod, 1)
    })
    .await;
    let logged = line_count(&metrics);
    let signalled_at = std::time::Instant::now();
    send(signal, pid);
    let next_step = crate::support::wait_for(120, "a step after the signal", || async {
        (line_count(&metrics) > logged).then(|| signalled_at.elapsed())
    })
    .await;
    let regang = crate::support::wait_for(120, "attempt 2 running", || async {
        if in_place > 0 {
            return Some(std::time::Duration::ZERO);
        }
        (running_pods(client, ns, 2).await == 2).then_some(signalled_at.elapsed())
    })
    .await;
    let done = wait_phase(client, ns, name, Phase::Succeeded, 300).await;
    node.shutdown().await;
    let (got, repeats) = losses(&metrics);
    Interrupted {
        done,
        regang,
        next_step,
        uids: (before, pod_uids(client, ns).await),
        logs: worker_logs(&pvc.join("qwen3-tiny/checkpoint/logs")),
        want,
        got,
        repeats,
    }
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn a_killed_worker_restarts_the_gang_and_the_job_ends_as_if_uninterrupted() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-kill";
    let (client, _op) = setup(ns).await;
    let run = interrupted(&client, ns, "killed", &[], "KILL", 0).await;
    let status = run.done.status.expect("status");
    assert_eq!(status.attempt, 2);
    let failure = status.last_failure.expect("last failure");
    // The operator records whichever pod it sees fail first: the killed worker's (137) or
    // the other pod's, whose worker lost its peer (1). Both are retryable.
    assert!(
        matches!(failure.exit_code, Some(137) | Some(1)),
        "{failure:?}"
    );
    assert_eq!(
        status.infra_restarts, 0,
        "a killed worker is the job's failure"
    );
    // Attempt 1's worker logs outlive its pods, and the failure says where the failing
    // worker's log is.
    let names: Vec<&str> = run.logs.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "attempt-1/worker_0.log",
        "attempt-1/worker_1.log",
        "attempt-2/worker_0.log",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(
        run.logs.iter().all(|(_, bytes)| *bytes > 0),
        "{:?}",
        run.logs
    );
    let log = failure.log.as_deref().expect("the failing worker's log");
    assert!(
        log.starts_with("/checkpoints/qwen3-tiny/checkpoint/logs/attempt-1/worker_"),
        "{log}"
    );
    assert_eq!(
        run.got, run.want,
        "losses differ from the uninterrupted run"
    );
    println!(
        "figure: failure -> new gang running in {:.2}s, training again (next step logged) in \
         {:.2}s; steps lost (recomputed) per failure: {}",
        run.regang.as_secs_f64(),
        run.next_step.as_secs_f64(),
        run.repeats
    );
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn a_killed_worker_restarts_in_place_and_the_job_ends_as_if_uninterrupted() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-in-place";
    let (client, _op) = setup(ns).await;
    let run = interrupted(&client, ns, "inplace", &[], "KILL", 2).await;
    let status = run.done.status.expect("status");
    assert_eq!(
        (status.attempt, status.restarts),
        (1, 0),
        "no gang recreated"
    );
    assert_eq!(status.in_place_restarts, 1, "{status:?}");
    assert_eq!(run.uids.0, run.uids.1, "the same pods from start to end");
    assert_eq!(
        run.got, run.want,
        "losses differ from the uninterrupted run"
    );
    println!(
        "figure: kill -9 of a worker -> training again in place (next step logged) in {:.2}s; \
         steps recomputed: {}",
        run.next_step.as_secs_f64(),
        run.repeats
    );
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn a_deleted_pod_saves_the_final_state_and_the_restart_loses_no_step() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-delete";
    let (client, _op) = setup(ns).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, pvc) = run_example(
        &client,
        ns,
        dir.path(),
        "deleted",
        &[
            "runner_config.train_iters=30",
            "callbacks.1.save_checkpoint_steps=1000",
        ],
    )
    .await;
    let metrics = pvc.join("qwen3-tiny/metrics.jsonl");
    wait_steps(&metrics, 6).await;
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .delete("deleted-0", &Default::default())
        .await
        .expect("kubectl delete pod");
    let done = wait_phase(&client, ns, "deleted", Phase::Succeeded, 300).await;
    node.shutdown().await;
    let status = done.status.expect("status");
    assert_eq!(status.attempt, 2);
    // A deleted pod is the infrastructure's doing: its own budget, not maxRestarts'.
    assert_eq!((status.restarts, status.infra_restarts), (1, 1));
    let (got, repeats) = losses(&metrics);
    assert_eq!(got.len(), 30);
    assert_eq!(repeats, 0, "a step was recomputed after the restart");
}

/// A stopped worker (SIGSTOP) is found by its launcher's heartbeat watch (here with a 5 s
/// heartbeat timeout through `spec.env`): its pod's launcher and, through the store, the other
/// pod's kill their workers and exit 11 with reason `Hung`; the operator restarts the gang,
/// which resumes and ends with the uninterrupted run's losses.
#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn a_stopped_worker_is_hung_and_the_job_ends_as_if_uninterrupted() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-hang";
    let (client, _op) = setup(ns).await;
    let env = [("PRETRAIN_HEARTBEAT_TIMEOUT", "5")];
    let run = interrupted(&client, ns, "stopped", &env, "STOP", 0).await;
    let status = run.done.status.expect("status");
    assert_eq!(status.attempt, 2);
    let failure = status.last_failure.expect("last failure");
    assert_eq!(failure.reason, "Hung", "{failure:?}");
    assert_eq!(failure.exit_code, Some(11), "{failure:?}");
    assert_eq!(
        run.got, run.want,
        "losses differ from the uninterrupted run"
    );
    println!(
        "figure: SIGSTOP -> hang detected, gang killed and the new gang running in {:.2}s",
        run.regang.as_secs_f64()
    );
}

/// The parent process of `pid`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid …: comm may hold spaces, so split after its closing parenthesis.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The distinct `status.progress` values of job `name` until two steps apart were seen, the
/// later one with a measured pace (its ETA and tokens/s); panics with the status and the pod
/// logs under `pods_dir` after 120 s.
async fn paced_progress(
    jobs: &Api<PretrainJob>,
    name: &str,
    pods_dir: &Path,
) -> Vec<pretrain_operator::crd::ProgressStatus> {
    let mut seen: Vec<pretrain_operator::crd::ProgressStatus> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let paced = |seen: &[pretrain_operator::crd::ProgressStatus]| {
        seen.len() >= 2
            && seen
                .last()
                .is_some_and(|p| p.estimated_completion_time.is_some())
    };
    while !paced(&seen) {
        if std::time::Instant::now() > deadline {
            let st = jobs.get(name).await.ok().and_then(|j| j.status);
            let logs: Vec<String> = std::fs::read_dir(pods_dir)
                .into_iter()
                .flatten()
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("log")).ok())
                .collect();
            panic!("progress: {seen:?}\nstatus: {st:?}\nlogs: {logs:?}");
        }
        let progress = jobs.get(name).await.ok().and_then(|j| j.status?.progress);
        if let Some(p) = progress.filter(|p| seen.last().is_none_or(|l| l.step != p.step)) {
            seen.push(p);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    seen
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn progress_shows_in_status_and_a_frozen_pod_is_hung_by_the_operator() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-progress";
    let (client, _op) = setup(ns).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, pvc) = start_node(&client, ns, dir.path()).await;
    // One pod of one worker, so that nothing but the operator can notice it freeze.
    let mut job = cpu_example(&[
        "runner_config.train_iters=3000",
        "parallel_config.data_parallel=1",
        "callbacks.1.save_checkpoint_steps=1000",
    ]);
    job.metadata.name = Some("frozen".into());
    job.spec.nodes = 1;
    job.spec.failure_policy.hang_timeout_seconds = Some(5);
    let jobs = Api::<PretrainJob>::namespaced(client.clone(), ns);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("apply");
    // STEP and ETA advance in status while it trains.
    let metrics = pvc.join("qwen3-tiny/metrics.jsonl");
    let seen = paced_progress(&jobs, "frozen", &dir.path().join("pods")).await;
    let (a, b) = (&seen[0], &seen[seen.len() - 1]);
    assert!(b.step > a.step, "{a:?} then {b:?}");
    assert_eq!(b.total_steps, Some(3000));
    assert!(b.estimated_completion_time.is_some(), "{b:?}");
    assert!(b.tokens_per_second.is_some_and(|t| t > 0), "{b:?}");
    assert!(b.loss.is_some(), "{b:?}");
    let logged = losses(&metrics).0.len() as u64;
    assert!(
        b.step <= logged,
        "status step {} beyond the {logged} logged",
        b.step
    );
    // Freeze the whole pod: its worker and its launcher.
    let pods_dir = dir.path().join("pods");
    let worker = crate::support::wait_for(30, "the worker pid", || async {
        worker_pid(&pods_dir, "frozen-0", 0)
    })
    .await;
    let launcher = parent_of(worker).expect("the launcher");
    let frozen_at = std::time::Instant::now();
    for pid in [launcher, worker] {
        send("STOP", pid);
    }
    let hung = crate::support::wait_for(120, "the operator's Hung restart", || async {
        let st = jobs.get("frozen").await.ok()?.status?;
        let f = st.last_failure?;
        (f.reason == "Hung").then_some((f, frozen_at.elapsed()))
    })
    .await;
    assert!(
        hung.0
            .message
            .as_deref()
            .is_some_and(|m| m.contains("no training step completed")),
        "{:?}",
        hung.0
    );
    assert!(
        hung.0.exit_code.is_none(),
        "the operator, not the launcher: {:?}",
        hung.0
    );
    let regang = crate::support::wait_for(120, "attempt 2 running", || async {
        (running_pods(&client, ns, 2).await > 0).then(|| frozen_at.elapsed())
    })
    .await;
    println!(
        "figure: whole pod frozen -> operator restarts it as Hung in {:.1}s (hangTimeoutSeconds 5 \
         + 15 s slack), attempt 2 running after {:.1}s",
        hung.1.as_secs_f64(),
        regang.as_secs_f64()
    );
    jobs.delete("frozen", &Default::default())
        .await
        .expect("delete");
    node.shutdown().await;
}
