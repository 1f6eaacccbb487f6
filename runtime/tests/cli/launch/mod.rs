//! Multi-process training through `pretrain launch` on loopback, with a tiny model on the
//! bundled corpus as byte tokens: every (dp, mp, pp) layout gives the (1,1,1) losses
//! ([`layouts`]); two launchers act as two nodes; a checkpoint resumes under another layout;
//! and each bad input (port in use, absent master, another job's peer, a layout that does not
//! fit) is a one-line error. Failures and restarts are in [`recovery`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pretrain::data::builder::IndexedDatasetBuilder;
use pretrain::data::DType;

use crate::assert_fails;

mod layouts;
mod recovery;

/// A port nobody listens on right now.
pub(super) fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// The first `docs` documents of data/shakespeare.jsonl, one token per UTF-8 byte, EOD = 0.
pub(super) fn byte_dataset(dir: &Path, docs: usize) -> PathBuf {
    let prefix = dir.join("bytes_text_document");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/shakespeare.jsonl");
    let text = std::fs::read_to_string(corpus).expect("corpus");
    let mut b = IndexedDatasetBuilder::create(&prefix, DType::U16).expect("builder");
    for line in text.lines().take(docs) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let mut ids: Vec<i64> = v["text"]
            .as_str()
            .expect("text")
            .bytes()
            .map(|c| c as i64)
            .collect();
        ids.push(0);
        b.add_item(&ids).expect("add");
        b.end_document();
    }
    b.finalize().expect("finalize");
    prefix
}

/// `train` arguments of a tiny model on `data`, writing to `out`, with `samples` samples of
/// global batch 4 (micro-batches of 1).
pub(super) fn train_args(data: &Path, out: &Path, samples: usize, extra: &[&str]) -> Vec<String> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/qwen3/qwen3_tiny.yaml");
    let mut v: Vec<String> = vec![
        "train".into(),
        "--config".into(),
        config.to_string_lossy().into_owned(),
        "--output_dir".into(),
        out.to_string_lossy().into_owned(),
        format!(
            "--train_dataset.data_loader.config.data_path=['1', '{}']",
            data.display()
        ),
        format!("--train_dataset.data_loader.sizes=[{samples}, 0, 0]"),
    ];
    for s in [
        "--tokenizer_dir=",
        "--model.model_config.vocab_size=256",
        "--model.model_config.hidden_size=32",
        "--model.model_config.intermediate_size=64",
        "--model.model_config.num_attention_heads=4",
        "--model.model_config.num_key_value_heads=2",
        "--model.model_config.head_dim=8",
        "--model.model_config.seq_length=32",
        "--model.model_config.tie_word_embeddings=False",
        "--train_dataset.data_loader.config.seq_length=32",
        "--train_dataset.data_loader.config.eod=0",
        "--runner_config.batch_size=1",
        "--lr_schedule.warmup_steps=2",
        "--lr_schedule.learning_rate=1e-2",
    ] {
        v.push(s.into());
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// The store token every launcher of these tests shares.
const TEST_TOKEN: &str = "cli-test-token-0123456789";

/// `pretrain launch` with `launch` options, then `-- <train args>`.
pub(super) fn launch_cmd(launch: &[String], train: &[String]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pretrain"));
    c.arg("launch")
        .args(launch)
        .arg("--")
        .args(train)
        .env("RUST_LOG", "info")
        .env("PRETRAIN_COMM_TIMEOUT", "60")
        // Several nodes need one token; a single node would generate its own.
        .env("PRETRAIN_STORE_TOKEN", TEST_TOKEN)
        // One thread per worker: up to 4 workers share 2 cores here, and more threads would only
        // oversubscribe them (the bits do not depend on it).
        .env("RAYON_NUM_THREADS", "1");
    c
}

pub(super) fn opts(
    workers: usize,
    local: usize,
    node: usize,
    port: u16,
    logs: &Path,
) -> Vec<String> {
    vec![
        format!("--worker-num={workers}"),
        format!("--local-worker-num={local}"),
        format!("--node-rank={node}"),
        "--master-addr=127.0.0.1".into(),
        format!("--master-port={port}"),
        format!("--log-dir={}", logs.display()),
        "--cluster-time-out=60".into(),
        "--grace-period=5".into(),
    ]
}

/// (step, loss) of every line of a metrics file; a step logged twice (before and after a
/// restart) keeps its last value.
pub(super) fn losses(out: &Path) -> Vec<f32> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics.jsonl");
    let mut by_step = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let step = v["step"].as_u64().expect("step");
        by_step.insert(step, v["loss"].as_f64().expect("loss") as f32);
    }
    by_step.into_values().collect()
}

pub(super) fn run_ok(mut c: Command) -> Output {
    let o = c.output().expect("run launcher");
    assert!(
        o.status.success(),
        "launcher failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn two_launchers_act_as_two_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    let single = dir.path().join("single");
    run_ok(launch_cmd(
        &opts(1, 1, 0, free_port(), &single.join("log")),
        &train_args(
            &data,
            &single,
            24,
            &["--runner_config.gradient_accumulation_steps=4"],
        ),
    ));
    let out = dir.path().join("two");
    let port = free_port();
    let args = train_args(
        &data,
        &out,
        24,
        &[
            "--parallel_config.data_parallel=2",
            "--runner_config.gradient_accumulation_steps=2",
        ],
    );
    let mut node1 = launch_cmd(&opts(2, 1, 1, port, &out.join("log1")), &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node 1");
    let o0 = launch_cmd(&opts(2, 1, 0, port, &out.join("log0")), &args)
        .output()
        .expect("node 0");
    let s1 = node1.wait().expect("node 1 exit");
    assert!(
        o0.status.success(),
        "node 0: {}",
        String::from_utf8_lossy(&o0.stderr)
    );
    assert!(s1.success(), "node 1 failed");
    assert!(out.join("log0/worker_0.log").is_file() && out.join("log1/worker_1.log").is_file());
    let (a, b) = (losses(&out), losses(&single));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        assert!(((x - y) / y).abs() < 1e-5, "{x} vs {y}");
    }
}

pub(super) fn wait_for_steps(out: &Path, steps: usize) {
    let start = Instant::now();
    while std::fs::read_to_string(out.join("metrics.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < steps
    {
        assert!(start.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) fn wait_exit(child: &mut Child, within: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s.code().unwrap_or(-1);
        }
        if start.elapsed() > within {
            let _ = child.kill();
            panic!("launcher still running {within:?} after the kill");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_single_node_hands_its_workers_a_generated_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = launch_cmd(&opts(2, 2, 0, free_port(), &dir.path().join("log")), &[])
        .env_remove("PRETRAIN_STORE_TOKEN")
        .args(["sh", "-c", r#"test "${#PRETRAIN_STORE_TOKEN}" -eq 64"#])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_launches_are_one_line_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 5);
    let out = dir.path().join("o");
    let args = train_args(&data, &out, 8, &[]);
    let logs = out.join("log");
    // Port in use.
    let held = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = held.local_addr().expect("addr").port();
    let o = launch_cmd(&opts(1, 1, 0, port, &logs), &args)
        .output()
        .expect("run");
    assert_fails(
        &o,
        1,
        &["cannot listen on", &port.to_string(), "--master-port"],
    );
    drop(held);
    // A master that never comes up.
    let mut short = opts(2, 1, 1, free_port(), &logs);
    short.retain(|o| !o.starts_with("--cluster-time-out"));
    short.push("--cluster-time-out=1".into());
    let o = launch_cmd(&short, &args).output().expect("run");
    assert_fails(&o, 1, &["timed out", "master"]);
    // A launcher of another job.
    let port = free_port();
    let mut first = launch_cmd(&opts(2, 1, 0, port, &logs), &args)
        .stderr(Stdio::null())
        .spawn()
        .expect("node 0");
    let mut other = opts(2, 1, 1, port, &logs);
    other.push("--job-id=another".into());
    let o = launch_cmd(&other, &args).output().expect("run");
    let _ = first.kill();
    let _ = first.wait();
    assert_fails(&o, 2, &["job"]);
    // A launcher with another token, or none.
    let mut first = launch_cmd(&opts(2, 1, 0, port, &logs), &args)
        .stderr(Stdio::null())
        .spawn()
        .expect("node 0");
    let o = launch_cmd(&opts(2, 1, 1, port, &logs), &args)
        .env("PRETRAIN_STORE_TOKEN", "another-token-0123456789")
        .output()
        .expect("run");
    let _ = first.kill();
    let _ = first.wait();
    assert_fails(&o, 2, &["cannot prove it holds this job's token"]);
    assert!(!String::from_utf8_lossy(&o.stderr).contains(TEST_TOKEN));
    let o = launch_cmd(&opts(2, 1, 1, free_port(), &logs), &args)
        .env_remove("PRETRAIN_STORE_TOKEN")
        .output()
        .expect("run");
    assert_fails(
        &o,
        2,
        &["2 nodes needs a secret store token", "--store-token-file"],
    );
    let short_token = dir.path().join("token");
    std::fs::write(&short_token, "abc\n").expect("token file");
    let mut with_file = opts(2, 1, 1, free_port(), &logs);
    with_file.push(format!("--store-token-file={}", short_token.display()));
    let o = launch_cmd(&with_file, &args).output().expect("run");
    assert_fails(
        &o,
        2,
        &[&short_token.display().to_string(), "fewer than 16"],
    );
    // Layouts that do not fit the world size or the model.
    let o = launch_cmd(&opts(2, 2, 0, free_port(), &logs), &args)
        .output()
        .expect("run");
    assert_fails(&o, 2, &["WORLD_SIZE is 2", "= 1 processes"]);
    let mp3 = train_args(&data, &out, 8, &["--parallel_config.model_parallel=3"]);
    let o = launch_cmd(&opts(3, 3, 0, free_port(), &logs), &mp3)
        .output()
        .expect("run");
    assert_fails(&o, 2, &["model_parallel"]);
    // Inconsistent launcher options.
    let o = launch_cmd(&opts(3, 2, 0, free_port(), &logs), &args)
        .output()
        .expect("run");
    assert_fails(
        &o,
        2,
        &["--worker-num 3 is not a multiple of --local-worker-num 2"],
    );
}

#[test]
fn msrun_launcher_script_takes_the_positional_forms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 5);
    let out = dir.path().join("o");
    let train = train_args(&data, &out, 8, &["--parallel_config.data_parallel=2"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/msrun_launcher.sh");
    let logs = out.join("msrun_log");
    let port = free_port().to_string();
    let o = Command::new("bash")
        .arg(&script)
        // One string split on whitespace, as msrun takes it: no spaces inside an argument.
        .arg(
            train
                .join(" ")
                .replace("', '", "','")
                .replace(", 0, 0]", ",0,0]"),
        )
        .args(["2", "2", "127.0.0.1", &port, "0"])
        .arg(&logs)
        .args(["False", "60"])
        .env("PRETRAIN_BIN", env!("CARGO_BIN_EXE_pretrain"))
        .output()
        .expect("script");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(logs.join("worker_0.log").is_file() && logs.join("worker_1.log").is_file());
    assert_eq!(losses(&out).len(), 4);
    let o = Command::new("bash")
        .arg(&script)
        .args(["train", "2", "3"])
        .output()
        .expect("script");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("takes 1, 2, 6 or 9 arguments, got 3"));
}

#[test]
fn a_checkpoint_resumes_under_another_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    let save5 = ["--callbacks.1.save_checkpoint_steps=5"];
    // (1,2,2) for 10 steps, committing iterations 5 and 10.
    let a = dir.path().join("a");
    let mut extra = vec![
        "--parallel_config.model_parallel=2",
        "--parallel_config.pipeline_stage=2",
        "--parallel_config.micro_batch_num=4",
    ];
    extra.extend(save5);
    run_ok(launch_cmd(
        &opts(4, 4, 0, free_port(), &a.join("log")),
        &train_args(&data, &a, 40, &extra),
    ));
    // Iteration 5 alone, resumed by (2,1,1) with ZeRO-1.
    let b = dir.path().join("b");
    let root = b.join("ckpt");
    std::fs::create_dir_all(&root).expect("mkdir");
    let copy = Command::new("cp")
        .arg("-r")
        .arg(a.join("checkpoint/iteration_00000005"))
        .arg(&root)
        .status()
        .expect("cp");
    assert!(copy.success());
    std::fs::write(root.join("latest_checkpointed_iteration.txt"), "5").expect("marker");
    let load = format!("--load_checkpoint={}", root.display());
    let mut extra = vec![
        "--parallel_config.data_parallel=2",
        "--runner_config.gradient_accumulation_steps=2",
        "--parallel.enable_parallel_optimizer=True",
        "--resume_training=True",
        load.as_str(),
    ];
    extra.extend(save5);
    run_ok(launch_cmd(
        &opts(2, 2, 0, free_port(), &b.join("log")),
        &train_args(&data, &b, 40, &extra),
    ));
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(lb.len(), 5, "steps 6..10 only");
    for (x, y) in lb.iter().zip(&la[5..]) {
        assert!(((x - y) / y).abs() < 1e-5, "{x} vs {y}");
    }
}
