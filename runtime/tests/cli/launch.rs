//! Multi-process training through `pretrain launch` on loopback, with a tiny model on the
//! bundled corpus as byte tokens: every (dp, mp, pp) layout gives the (1,1,1) losses; two
//! launchers act as two nodes; a worker killed with SIGKILL brings every process down within
//! the timeout (or, with `--max-restarts`, the gang resumes bit-identically); and each bad
//! input (port in use, absent master, another job's peer, a layout that does not fit) is a
//! one-line error.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pretrain::data::builder::IndexedDatasetBuilder;
use pretrain::data::DType;

use crate::assert_fails;

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

/// A layout of [`every_layout_gives_the_single_process_losses`]: (name, workers, overrides),
/// global batch 4. Every "1-1-1…" entry is the one-process reference of those after it.
type Layout = (&'static str, usize, &'static [&'static str]);

/// Every layout, in order.
fn layouts() -> Vec<Layout> {
    [basic_layouts(), memory_layouts(), model_layouts()].concat()
}

/// Layouts of [`every_layout_gives_the_single_process_losses`]: each parallelism alone and in pairs.
fn basic_layouts() -> Vec<Layout> {
    vec![
        (
            "1-1-1",
            1,
            &["--runner_config.gradient_accumulation_steps=4"],
        ),
        (
            "2-1-1",
            2,
            &[
                "--parallel_config.data_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
            ],
        ),
        (
            "1-2-1",
            2,
            &[
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=4",
            ],
        ),
        (
            "1-1-2",
            2,
            &[
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
            ],
        ),
        (
            "2-2-1",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
            ],
        ),
        (
            "1-2-2",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
            ],
        ),
        (
            "2-1-2",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=2",
            ],
        ),
    ]
}

/// Layouts of [`every_layout_gives_the_single_process_losses`]: background saves, recompute and ZeRO-1 under parallelism.
fn memory_layouts() -> Vec<Layout> {
    vec![
        // Checkpoints written in the background: the same parts and unified export.
        (
            "1-2-2-async-save",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--callbacks.1.async_save=True",
            ],
        ),
        // Recomputation: every layer, then the first layer of each stage.
        (
            "2-2-1-recompute",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
                "--recompute_config.recompute=True",
            ],
        ),
        (
            "1-2-2-recompute",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--recompute_config.recompute=[1, 1]",
            ],
        ),
        // ZeRO-1: optimizer state sharded over the replicas.
        (
            "2-1-1-zero1",
            2,
            &[
                "--parallel_config.data_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
                "--parallel.enable_parallel_optimizer=True",
            ],
        ),
        (
            "2-2-1-zero1",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
                "--parallel.enable_parallel_optimizer=True",
            ],
        ),
    ]
}

/// Layouts of [`every_layout_gives_the_single_process_losses`]: tied embeddings, bf16 compute and uneven stages under parallelism.
fn model_layouts() -> Vec<Layout> {
    vec![
        // Tied embeddings: the first and last stage each hold a copy.
        (
            "1-1-1-tied",
            1,
            &[
                "--runner_config.gradient_accumulation_steps=4",
                "--model.model_config.tie_word_embeddings=True",
            ],
        ),
        (
            "1-2-2-tied",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--model.model_config.tie_word_embeddings=True",
            ],
        ),
        // bf16 compute: tensor parallelism splits the row-parallel sums, so the f32 partial
        // sums differ in their last bits, and a later rounding to bf16 can turn that into one
        // bf16 step (2^-8) of an element; the losses agree to 2e-4 relative (4e-5 measured over
        // 10 steps), not bit for bit.
        (
            "1-1-1-bf16",
            1,
            &[
                "--runner_config.gradient_accumulation_steps=4",
                "--model.model_config.compute_dtype=bfloat16",
            ],
        ),
        (
            "2-2-1-bf16",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
                "--model.model_config.compute_dtype=bfloat16",
            ],
        ),
        (
            "1-2-2-bf16-recompute",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--recompute_config.recompute=True",
                "--model.model_config.compute_dtype=bfloat16",
            ],
        ),
        // Three layers split 2 + 1 by MindSpore Transformers' offset list.
        (
            "1-1-1-3-layers",
            1,
            &[
                "--runner_config.gradient_accumulation_steps=4",
                "--model.model_config.num_hidden_layers=3",
            ],
        ),
        (
            "1-1-2-offset",
            2,
            &[
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--model.model_config.num_hidden_layers=3",
                "--model.model_config.offset=[1, 0]",
            ],
        ),
    ]
}

#[test]
fn every_layout_gives_the_single_process_losses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    // Global batch 4 in every layout; 10 steps.
    let layouts = layouts();
    let mut reference: Option<Vec<f32>> = None;
    for (name, workers, extra) in layouts {
        let out = dir.path().join(name);
        let port = free_port();
        let c = launch_cmd(
            &opts(workers, workers, 0, port, &out.join("log")),
            &train_args(&data, &out, 40, extra),
        );
        run_ok(c);
        let got = losses(&out);
        assert_eq!(got.len(), 10, "{name}: steps");
        // Each "1-1-1…" run is the one-process reference of the layouts after it.
        if name.starts_with("1-1-1") {
            reference = Some(got);
            continue;
        }
        let want = reference.as_ref().expect("reference first");
        let bound = if name.contains("bf16") { 2e-4 } else { 1e-5 };
        for (step, (a, b)) in got.iter().zip(want).enumerate() {
            let rel = ((a - b) / b).abs();
            assert!(
                rel < bound,
                "{name} step {}: loss {a} vs {b} (rel {rel:e})",
                step + 1
            );
        }
        // One HF-format checkpoint of the whole model, whatever the layout, and one part per
        // (tensor, pipeline) rank.
        let it = out.join("checkpoint/iteration_00000010");
        assert!(
            it.join("model.safetensors").is_file(),
            "{name}: no unified checkpoint"
        );
        let parts = std::fs::read_dir(it.join("shards")).map_or(0, |d| d.count());
        let dp = if name.starts_with('2') { 2 } else { 1 };
        assert_eq!(parts, workers / dp, "{name}: parts");
    }
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

/// Starts a launcher whose stderr is scanned for "worker started rank=R pid=P" lines.
fn spawn_watched(mut c: Command) -> (Child, mpsc::Receiver<(usize, u32)>) {
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("launcher");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if !line.contains("worker started") {
                continue;
            }
            let field = |k: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            if let (Some(r), Some(p)) = (field("rank="), field("pid=")) {
                let _ = tx.send((r as usize, p as u32));
            }
        }
    });
    (child, rx)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// `kill -<signal> <pid>`.
fn send(signal: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn kill9(pid: u32) {
    send("KILL", pid);
}

/// Waits until `out/metrics.jsonl` has at least `steps` lines.
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
fn killing_one_worker_stops_every_process_of_both_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    let out = dir.path().join("run");
    let port = free_port();
    // 2 nodes x 2 workers, data_parallel 2 x pipeline_stage 2, long enough to be killed.
    let args = train_args(
        &data,
        &out,
        40_000,
        &[
            "--parallel_config.data_parallel=2",
            "--parallel_config.pipeline_stage=2",
            "--parallel_config.micro_batch_num=2",
        ],
    );
    let (mut n0, rx0) = spawn_watched(launch_cmd(&opts(4, 2, 0, port, &out.join("log0")), &args));
    let (mut n1, rx1) = spawn_watched(launch_cmd(&opts(4, 2, 1, port, &out.join("log1")), &args));
    let pids: Vec<(usize, u32)> = rx0.iter().take(2).chain(rx1.iter().take(2)).collect();
    wait_for_steps(&out, 3);
    let victim = pids.iter().find(|(r, _)| *r == 3).expect("rank 3").1;
    kill9(victim);
    let killed_at = Instant::now();
    let c1 = wait_exit(&mut n1, Duration::from_secs(30));
    let c0 = wait_exit(&mut n0, Duration::from_secs(30));
    assert_eq!(c1, 137, "node 1 reports the killed worker");
    assert_ne!(c0, 0, "node 0 must fail too");
    assert!(
        pretrain::exit::is_retryable(c0),
        "node 0 exit {c0} must be retryable"
    );
    for (r, p) in pids {
        assert!(!alive(p), "rank {r} (pid {p}) still running");
    }
    assert!(killed_at.elapsed() < Duration::from_secs(30));
}

/// The 500-step data-parallel run (2000 samples) of the restart tests, uninterrupted, in
/// `dir/straight`.
fn uninterrupted(dir: &Path, data: &Path, extra: &[&str]) -> PathBuf {
    let straight = dir.join("straight");
    run_ok(launch_cmd(
        &opts(2, 2, 0, free_port(), &straight.join("log")),
        &train_args(data, &straight, 2000, extra),
    ));
    straight
}

/// The run `name` of the restart tests (directory, data, `train` overrides, and the
/// uninterrupted run's directory) with `--max-restarts=1` and `launcher_extra`: rank 1 gets
/// `signal` at step ~70, and the restarted gang must finish with the uninterrupted losses,
/// bitwise. Returns the run's directory and the signalled worker's pid.
fn restart_after(
    (dir, data, extra, straight): (&Path, &Path, &[&str], &Path),
    name: &str,
    launcher_extra: &[&str],
    signal: &str,
) -> (PathBuf, u32) {
    let out = dir.join(name);
    let mut o = opts(2, 2, 0, free_port(), &out.join("log"));
    o.push("--max-restarts=1".into());
    o.extend(launcher_extra.iter().map(|s| s.to_string()));
    let (mut launcher, rx) = spawn_watched(launch_cmd(&o, &train_args(data, &out, 2000, extra)));
    let pids: Vec<(usize, u32)> = rx.iter().take(2).collect();
    wait_for_steps(&out, 70);
    let victim = pids.iter().find(|(r, _)| *r == 1).expect("rank 1").1;
    send(signal, victim);
    let code = wait_exit(&mut launcher, Duration::from_secs(120));
    assert_eq!(code, 0, "the restarted gang should finish");
    assert_eq!(rx.try_iter().count(), 2, "one restart of both workers");
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(losses(&out)), bits(losses(straight)));
    (out, victim)
}

#[test]
fn max_restarts_resumes_bit_identically_after_a_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    let extra = [
        "--parallel_config.data_parallel=2",
        "--runner_config.gradient_accumulation_steps=2",
        "--callbacks.1.save_checkpoint_steps=50",
        // ZeRO-1, so the checkpoint gathers sharded moments and the resume re-shards them.
        "--parallel.enable_parallel_optimizer=True",
    ];
    let straight = uninterrupted(dir.path(), &data, &extra);
    let run = (dir.path(), data.as_path(), &extra[..], straight.as_path());
    let (out, _) = restart_after(run, "killed", &[], "KILL");
    for file in ["model.safetensors", "shards/tp00-pp00.safetensors"] {
        let a = std::fs::read(straight.join("checkpoint/iteration_00000500").join(file));
        let b = std::fs::read(out.join("checkpoint/iteration_00000500").join(file));
        assert!(
            a.expect("straight") == b.expect("resumed"),
            "{file} differs"
        );
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

#[test]
fn sigterm_to_the_launcher_saves_one_final_state_and_exits_10() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    let out = dir.path().join("run");
    let args = train_args(
        &data,
        &out,
        400_000,
        &[
            "--parallel_config.data_parallel=2",
            "--parallel_config.pipeline_stage=2",
            "--parallel_config.micro_batch_num=2",
            "--callbacks.1.save_checkpoint_steps=1000000",
        ],
    );
    let (mut launcher, rx) = spawn_watched(launch_cmd(
        &opts(4, 4, 0, free_port(), &out.join("log")),
        &args,
    ));
    let pids: Vec<(usize, u32)> = rx.iter().take(4).collect();
    wait_for_steps(&out, 5);
    let term = Command::new("kill")
        .args(["-TERM", &launcher.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let code = wait_exit(&mut launcher, Duration::from_secs(60));
    assert_eq!(code, 10, "stopped cleanly after a final checkpoint");
    for (r, p) in pids {
        assert!(!alive(p), "rank {r} still running");
    }
    // Zero lost steps: the committed final state is the last step that was logged.
    let steps = losses(&out).len();
    let marker = std::fs::read_to_string(out.join("checkpoint/latest_checkpointed_iteration.txt"))
        .expect("marker");
    assert_eq!(marker.trim(), steps.to_string());
    pretrain::checkpoint::verify(&out.join(format!("checkpoint/iteration_{steps:08}")))
        .expect("complete, checksummed checkpoint");
}

#[test]
fn both_nodes_restart_together_and_resume_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    let extra = [
        "--parallel_config.data_parallel=2",
        "--runner_config.gradient_accumulation_steps=2",
        "--callbacks.1.save_checkpoint_steps=50",
    ];
    let straight = uninterrupted(dir.path(), &data, &extra);
    // Two launchers of one worker each; the worker of node 1 is killed.
    let out = dir.path().join("killed");
    let port = free_port();
    let args = train_args(&data, &out, 2000, &extra);
    let node = |n: usize| {
        let mut o = opts(2, 1, n, port, &out.join(format!("log{n}")));
        o.push("--max-restarts=1".into());
        spawn_watched(launch_cmd(&o, &args))
    };
    let (mut n0, rx0) = node(0);
    let (mut n1, rx1) = node(1);
    let victim = rx1.recv().expect("rank 1 started").1;
    let _ = rx0.recv().expect("rank 0 started");
    wait_for_steps(&out, 70);
    kill9(victim);
    assert_eq!(wait_exit(&mut n1, Duration::from_secs(120)), 0, "node 1");
    assert_eq!(wait_exit(&mut n0, Duration::from_secs(120)), 0, "node 0");
    assert_eq!(
        rx0.try_iter().count(),
        1,
        "node 0 restarted its worker once"
    );
    assert_eq!(
        rx1.try_iter().count(),
        1,
        "node 1 restarted its worker once"
    );
    let bits = |v: Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(losses(&out)), bits(losses(&straight)));
    let it = "checkpoint/iteration_00000500/model.safetensors";
    let (a, b) = (
        std::fs::read(straight.join(it)),
        std::fs::read(out.join(it)),
    );
    assert!(
        a.expect("straight") == b.expect("resumed"),
        "final weights differ"
    );
}

/// A stopped worker (SIGSTOP: it neither exits nor fails a collective soon) is found by its
/// missing heartbeat. With `--max-restarts 1` the gang restarts from the newest checkpoint
/// and ends with the uninterrupted run's losses; without restarts the launcher exits 11 with
/// reason `Hung` in the termination message, every worker gone within the heartbeat timeout
/// plus 10 s.
#[test]
fn a_stopped_worker_is_hung_and_the_gang_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    let extra = [
        "--parallel_config.data_parallel=2",
        "--runner_config.gradient_accumulation_steps=2",
        "--callbacks.1.save_checkpoint_steps=50",
    ];
    let straight = uninterrupted(dir.path(), &data, &extra);
    let run = (dir.path(), data.as_path(), &extra[..], straight.as_path());
    let (_, victim) = restart_after(run, "stopped", &["--heartbeat-timeout=5"], "STOP");
    assert!(!alive(victim), "the stopped worker is killed");

    let out = dir.path().join("hung");
    let mut o = opts(2, 2, 0, free_port(), &out.join("log"));
    o.push("--heartbeat-timeout=5".into());
    let term = dir.path().join("termination-log");
    let mut cmd = launch_cmd(&o, &train_args(&data, &out, 2000, &extra));
    cmd.env("PRETRAIN_TERMINATION_LOG", &term);
    let (mut launcher, rx) = spawn_watched(cmd);
    let pids: Vec<(usize, u32)> = rx.iter().take(2).collect();
    wait_for_steps(&out, 5);
    let victim = pids.iter().find(|(r, _)| *r == 1).expect("rank 1").1;
    send("STOP", victim);
    let stopped_at = Instant::now();
    let code = wait_exit(&mut launcher, Duration::from_secs(60));
    let took = stopped_at.elapsed();
    assert_eq!(code, pretrain::exit::HUNG);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    for (r, p) in pids {
        assert!(!alive(p), "rank {r} (pid {p}) still running");
    }
    let msg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).expect("termination log"))
            .expect("json");
    assert_eq!(msg["reason"], "Hung");
    let text = msg["message"].as_str().unwrap_or_default();
    assert!(text.contains("rank 1 hung: no heartbeat"), "{text}");
    eprintln!("hang detected and the gang stopped {took:?} after SIGSTOP");
}
