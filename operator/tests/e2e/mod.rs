//! End to end on a process-backed test node (`support::kubelet`): a PretrainJob applied to the
//! real API server is reconciled by the operator into pods that the test node runs as local
//! `pretrain launch` processes, which train, checkpoint, fail and recover for real.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client};
use pretrain_operator::crd::{Phase, PretrainJob};

mod helm;
mod nodes;
mod queue;

use super::support::kubelet::Kubelet;
use super::{setup, wait_phase};

/// The scenarios train for real on the same cores: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory of the release `pretrain` binary (`scripts/test-apiserver.sh` builds it).
fn bin_dir() -> PathBuf {
    let dir = root().join("target/release");
    assert!(
        dir.join("pretrain").is_file(),
        "{}/pretrain is missing: cargo build --release -p pretrain-runtime",
        dir.display()
    );
    dir
}

/// A "PVC" directory holding the bundled corpus tokenized as the CPU example expects.
fn scratch_volume(dir: &Path) -> PathBuf {
    let pvc = dir.join("pretrain-scratch");
    std::fs::create_dir_all(pvc.join("data")).expect("mkdir");
    let tok = std::env::var_os("PRETRAIN_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache"))
        .join("tokenizers/qwen3");
    let out = std::process::Command::new(bin_dir().join("pretrain"))
        .args(["preprocess", "--input"])
        .arg(root().join("data/shakespeare.jsonl"))
        .arg("--output-prefix")
        .arg(pvc.join("data/shakespeare"))
        .arg("--tokenizer-dir")
        .arg(&tok)
        .args(["--append-eod", "--workers", "2"])
        .output()
        .expect("preprocess");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pvc
}

/// examples/pretrainjob-cpu.yaml with a shorter run and a 1 s restart backoff.
fn cpu_example(extra_overrides: &[&str]) -> PretrainJob {
    let text = std::fs::read_to_string(root().join("examples/pretrainjob-cpu.yaml")).expect("read");
    let mut job: PretrainJob = serde_saphyr::from_str(&text).expect("example parses");
    job.spec.config.overrides.extend(
        [
            "tokenizer_dir=",
            "runner_config.batch_size=2",
            "runner_config.train_iters=6",
            "lr_schedule.warmup_steps=1",
            "callbacks.1.save_checkpoint_steps=3",
        ]
        .iter()
        .chain(extra_overrides)
        .map(|s| s.to_string()),
    );
    let mut v = serde_json::to_value(&job).expect("json");
    v["spec"]["failurePolicy"]["backoff"] =
        serde_json::json!({"initialSeconds": 1, "maxSeconds": 2});
    // Every pod shares the host's ports: a port of its own per job.
    v["spec"]["masterPort"] = serde_json::json!(super::support::free_port());
    serde_json::from_value(v).expect("job")
}

async fn config_map(client: &Client, ns: &str) {
    let config =
        std::fs::read_to_string(root().join("configs/qwen3/qwen3_tiny.yaml")).expect("cfg");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "qwen3-tiny"},
        "data": {"config.yaml": config}
    }))
    .expect("cm");
    let made = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await;
    if let Err(e) = made {
        assert!(e.to_string().contains("already exists"), "configmap: {e}");
    }
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn cpu_example_trains_to_the_end_on_two_nodes() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-cpu";
    let (client, _op) = setup(ns).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, pvc) = start_node(&client, ns, dir.path()).await;
    let job = cpu_example(&[]);
    let nodes = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone());
    let capacity = super::support::wait_for(20, "Node test-node", || async {
        nodes
            .get("test-node")
            .await
            .ok()
            .and_then(|n| n.status?.allocatable)
    })
    .await;
    assert_eq!(capacity["huawei.com/Ascend910"].0, "16");
    assert_eq!(capacity["cpu"].0, "64");
    let applied = std::time::Instant::now();
    Api::<PretrainJob>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await
        .expect("apply");
    let running = super::support::wait_for(120, "2 pods running", || async {
        let p = super::pods(&client, ns).await;
        let n = p
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (n == 2).then_some(applied.elapsed())
    })
    .await;
    println!(
        "figure: apply -> all pods running in {:.2}s",
        running.as_secs_f64()
    );
    let done = wait_phase(&client, ns, "qwen3-tiny-cpu", Phase::Succeeded, 300).await;
    node.shutdown().await;
    let status = done.status.expect("status");
    assert_eq!(status.attempt, 1, "no restart needed");
    assert_trained_to_the_end(&pvc);
}

/// The CPU example's last checkpoint (step 6) is committed on the volume with the HF export,
/// written by the runtime image's user.
fn assert_trained_to_the_end(pvc: &Path) {
    use std::os::unix::fs::MetadataExt;
    let ck = pvc.join("qwen3-tiny/checkpoint");
    let marker =
        std::fs::read_to_string(ck.join("latest_checkpointed_iteration.txt")).expect("marker");
    assert_eq!(marker.trim(), "6");
    let it = ck.join("iteration_00000006");
    for f in [
        "model.safetensors",
        "config.json",
        "shards/tp00-pp00.safetensors",
        "metadata.json",
    ] {
        assert!(it.join(f).is_file(), "{f} missing from {}", it.display());
    }
    let owner = std::fs::metadata(it.join("model.safetensors"))
        .expect("stat")
        .uid();
    assert_eq!(owner, 65532, "written as the image's USER, not root");
}

/// The test node serving `ns`, with the example's ConfigMap and its volume (returned) under
/// `dir`.
async fn start_node(client: &Client, ns: &str, dir: &Path) -> (Kubelet, PathBuf) {
    let pvc = scratch_volume(dir);
    config_map(client, ns).await;
    let node = Kubelet::start(
        client.clone(),
        ns,
        HashMap::from([("pretrain-scratch".to_string(), pvc.clone())]),
        bin_dir(),
        dir.join("pods"),
    );
    (node, pvc)
}

/// Starts the test node and applies the CPU example with `overrides` under `name`.
async fn run_example(
    client: &Client,
    ns: &str,
    dir: &Path,
    name: &str,
    overrides: &[&str],
) -> (Kubelet, PathBuf) {
    run_example_with(client, ns, dir, name, overrides, &[]).await
}

/// [`run_example`] with environment variables for the pods (`spec.env`).
async fn run_example_with(
    client: &Client,
    ns: &str,
    dir: &Path,
    name: &str,
    overrides: &[&str],
    env: &[(&str, &str)],
) -> (Kubelet, PathBuf) {
    run_example_in_place(client, ns, dir, name, overrides, env, 0).await
}

/// [`run_example_with`] with `failurePolicy.inPlaceRestarts` (0 in the other tests: a failure
/// recreates the gang at once).
async fn run_example_in_place(
    client: &Client,
    ns: &str,
    dir: &Path,
    name: &str,
    overrides: &[&str],
    env: &[(&str, &str)],
    in_place: u32,
) -> (Kubelet, PathBuf) {
    let (node, pvc) = start_node(client, ns, dir).await;
    let mut job = cpu_example(overrides);
    job.metadata.name = Some(name.into());
    job.spec.failure_policy.in_place_restarts = in_place;
    for (k, v) in env {
        job.spec.env.push(k8s_openapi::api::core::v1::EnvVar {
            name: k.to_string(),
            value: Some(v.to_string()),
            ..Default::default()
        });
    }
    Api::<PretrainJob>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await
        .expect("apply");
    (node, pvc)
}

/// (step, loss) per step of a metrics file, the last value of a step logged twice, and how
/// many lines repeated a step.
fn losses(path: &Path) -> (Vec<(u64, f64)>, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut by_step = std::collections::BTreeMap::new();
    let mut repeats = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let step = v["step"].as_u64().expect("step");
        if by_step
            .insert(step, v["loss"].as_f64().expect("loss"))
            .is_some()
        {
            repeats += 1;
        }
    }
    (by_step.into_iter().collect(), repeats)
}

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

async fn wait_steps(metrics: &Path, n: usize) {
    super::support::wait_for(240, &format!("{n} logged steps"), || async {
        (losses(metrics).0.len() >= n).then_some(())
    })
    .await;
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
    let mut u: Vec<String> = super::pods(client, ns)
        .await
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    u.sort();
    u
}

/// How many pods of `attempt` run.
async fn running_pods(client: &Client, ns: &str, attempt: u32) -> usize {
    let attempt = attempt.to_string();
    super::pods(client, ns)
        .await
        .iter()
        .filter(|p| {
            super::label(p, "pretrain.io/attempt") == attempt
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .count()
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
    let pid = super::support::wait_for(30, &format!("the worker pid of pod {pod}"), || async {
        worker_pid(&pods_dir, &pod, 1)
    })
    .await;
    let logged = line_count(&metrics);
    let signalled_at = std::time::Instant::now();
    send(signal, pid);
    let next_step = super::support::wait_for(120, "a step after the signal", || async {
        (line_count(&metrics) > logged).then(|| signalled_at.elapsed())
    })
    .await;
    let regang = super::support::wait_for(120, "attempt 2 running", || async {
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

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn a_config_error_fails_the_job_once_with_the_message() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-config";
    let (client, _op) = setup(ns).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, _) = run_example(
        &client,
        ns,
        dir.path(),
        "bad",
        &["model.model_config.num_key_value_heads=3"],
    )
    .await;
    let done = wait_phase(&client, ns, "bad", Phase::Failed, 120).await;
    // No restart storm: still attempt 1 a while later.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let again = super::get_job(&client, ns, "bad").await;
    node.shutdown().await;
    let status = again.status.expect("status");
    assert_eq!(status.attempt, 1);
    assert_eq!(done.status.expect("status").attempt, 1);
    let failure = status.last_failure.expect("last failure");
    assert_eq!(failure.exit_code, Some(2), "{failure:?}");
    let message = failure.message.unwrap_or_default();
    assert!(message.contains("num_key_value_heads"), "{message}");
}

#[tokio::test]
#[ignore = "needs etcd + kube-apiserver, root (mount namespaces) and the release binaries"]
async fn the_operator_restarted_mid_job_converges_without_duplicate_pods() {
    let _serial = SERIAL.lock().await;
    let ns = "e2e-operator";
    let (client, op) = setup(ns).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (node, pvc) = run_example(
        &client,
        ns,
        dir.path(),
        "steady",
        &["runner_config.train_iters=30"],
    )
    .await;
    wait_steps(&pvc.join("qwen3-tiny/metrics.jsonl"), 4).await;
    op.kill();
    let _op2 = super::support::Operator::start(ns, "op-b");
    let mut most = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let done = loop {
        most = most.max(super::pods(&client, ns).await.len());
        let j = super::get_job(&client, ns, "steady").await;
        if j.status.as_ref().map(|s| s.phase) == Some(Phase::Succeeded) {
            break j;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "steady did not succeed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    node.shutdown().await;
    assert_eq!(done.status.expect("status").attempt, 1, "no restart");
    assert!(most <= 2, "{most} pods at once");
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
    let worker = super::support::wait_for(30, "the worker pid", || async {
        worker_pid(&pods_dir, "frozen-0", 0)
    })
    .await;
    let launcher = parent_of(worker).expect("the launcher");
    let frozen_at = std::time::Instant::now();
    for pid in [launcher, worker] {
        send("STOP", pid);
    }
    let hung = super::support::wait_for(120, "the operator's Hung restart", || async {
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
    let regang = super::support::wait_for(120, "attempt 2 running", || async {
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
