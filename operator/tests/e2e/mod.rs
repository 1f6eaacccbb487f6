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
mod recovery;

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

async fn wait_steps(metrics: &Path, n: usize) {
    super::support::wait_for(240, &format!("{n} logged steps"), || async {
        (losses(metrics).0.len() >= n).then_some(())
    })
    .await;
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
