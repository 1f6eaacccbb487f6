use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pretrain::data::builder::IndexedDatasetBuilder;
use pretrain::data::DType;

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/qwen3/qwen3_tiny.yaml"
);

/// `docs` synthetic documents of `len` byte-range tokens under `dir`; returns the prefix.
pub(super) fn synthetic_dataset(dir: &std::path::Path, docs: i64, len: i64) -> std::path::PathBuf {
    let prefix = dir.join("d_text_document");
    let mut b = IndexedDatasetBuilder::create(&prefix, DType::U16).expect("builder");
    for d in 0..docs {
        let doc: Vec<i64> = (0..len).map(|j| (d * 7 + j * 13) % 255 + 1).collect();
        b.add_item(&doc).expect("add");
        b.end_document();
    }
    b.finalize().expect("finalize");
    prefix
}

#[test]
fn sigterm_saves_the_last_completed_step_and_exits_10() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = synthetic_dataset(dir.path(), 50, 300);
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pretrain"))
        .args([
            "train",
            "--config",
            CONFIG,
            "--tokenizer_dir=",
            "--output_dir",
        ])
        .arg(&out)
        .arg(format!(
            "--tensorboard.tensorboard_dir={}",
            out.join("tb").display()
        ))
        .args([
            "--model.model_config.vocab_size=256",
            "--train_dataset.data_loader.sizes=[80000, 0, 0]",
            "--callbacks.1.save_checkpoint_steps=100000",
            "--train_dataset.data_loader.config.eod=0",
            "--model.model_config.eos_token_id=0",
            "--model.model_config.bos_token_id=0",
        ])
        .arg(format!(
            "--train_dataset.data_loader.config.data_path=['1', '{}']",
            prefix.display()
        ))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let metrics = out.join("metrics.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 3 {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("pretrain exited early ({status}): {err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(status.expect("kill").success());
    let output = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(10), "{err}");
    assert!(err.contains("stopped by a signal after step"), "{err}");
    let steps = std::fs::read_to_string(&metrics)
        .expect("metrics")
        .lines()
        .count();
    let marker = std::fs::read_to_string(out.join("checkpoint/latest_checkpointed_iteration.txt"))
        .expect("marker");
    // Zero lost steps: the final-state checkpoint is the last step that was logged.
    assert_eq!(marker.trim(), steps.to_string());
}

/// A small run of `pretrain train` on a synthetic byte-level dataset under `dir`.
pub(super) fn small_run(
    dir: &std::path::Path,
    prefix: &std::path::Path,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pretrain"));
    cmd.args([
        "train",
        "--config",
        CONFIG,
        "--tokenizer_dir=",
        "--output_dir",
    ])
    .arg(dir)
    .arg(format!(
        "--tensorboard.tensorboard_dir={}",
        dir.join("tb").display()
    ))
    .args([
        "--model.model_config.vocab_size=256",
        "--train_dataset.data_loader.config.eod=0",
        "--model.model_config.eos_token_id=0",
        "--model.model_config.bos_token_id=0",
        "--train_dataset.data_loader.config.seq_length=32",
        "--model.model_config.seq_length=32",
        "--runner_config.batch_size=2",
        "--runner_config.train_iters=30",
        "--lr_schedule.warmup_steps=2",
        "--callbacks.1.save_checkpoint_steps=4",
    ])
    .arg(format!(
        "--train_dataset.data_loader.config.data_path=['1', '{}']",
        prefix.display()
    ))
    .args(extra)
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

#[test]
fn sigkill_at_any_point_then_resume_gives_identical_weights() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = synthetic_dataset(dir.path(), 20, 200);
    let straight = dir.path().join("straight");
    assert!(small_run(&straight, &prefix, &[])
        .status()
        .expect("run")
        .success());
    let last = "checkpoint/iteration_00000030/model.safetensors";
    let want = std::fs::read(straight.join(last)).expect("straight weights");
    for (trial, kill_after_lines) in [(1, 5usize), (2, 13)] {
        let out = dir.path().join(format!("trial{trial}"));
        let mut child = small_run(&out, &prefix, &[]).spawn().expect("spawn");
        let metrics = out.join("metrics.jsonl");
        let started = Instant::now();
        while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < kill_after_lines
        {
            if child.try_wait().expect("poll").is_some()
                || started.elapsed() > Duration::from_secs(60)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL: no chance to save anything
        let _ = child.wait();
        let resume = ["--resume_training=True", "--load_checkpoint=auto"];
        for _ in 0..3 {
            if out.join(last).is_file() {
                break;
            }
            assert!(small_run(&out, &prefix, &resume)
                .status()
                .expect("resume")
                .success());
        }
        let got = std::fs::read(out.join(last)).expect("resumed weights");
        assert!(
            got == want,
            "trial {trial}: weights differ from the uninterrupted run"
        );
    }
}

#[test]
fn a_stop_that_misses_its_deadline_exits_without_a_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = synthetic_dataset(dir.path(), 50, 300);
    let out = dir.path().join("out");
    // The full Qwen3 vocabulary makes a step (and a save) take far longer than the deadline.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pretrain"))
        .args([
            "train",
            "--config",
            CONFIG,
            "--tokenizer_dir=",
            "--output_dir",
        ])
        .arg(&out)
        .args([
            "--train_dataset.data_loader.sizes=[80000, 0, 0]",
            "--callbacks.1.save_checkpoint_steps=100000",
            "--train_dataset.data_loader.config.eod=0",
        ])
        .arg(format!(
            "--train_dataset.data_loader.config.data_path=['1', '{}']",
            prefix.display()
        ))
        .env("RUST_LOG", "warn")
        .env("PRETRAIN_STOP_DEADLINE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let metrics = out.join("metrics.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 1 {
        assert!(child.try_wait().expect("wait").is_none(), "exited early");
        assert!(started.elapsed() < Duration::from_secs(120), "no step");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(status.expect("kill").success());
    let output = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("PRETRAIN_STOP_DEADLINE=0s"), "{err}");
    let root = out.join("checkpoint");
    assert!(!root.join("latest_checkpointed_iteration.txt").exists());
    assert!(pretrain::checkpoint::iterations(&root).is_empty());
}

/// The launch contract's `PRETRAIN_CHECKPOINT_DIR` is where checkpoints go and where a resume
/// (`PRETRAIN_RESUME=true`) finds them, whatever the config says.
#[test]
fn the_checkpoint_dir_of_the_environment_is_used_to_save_and_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = synthetic_dataset(dir.path(), 20, 200);
    let out = dir.path().join("out");
    let ck = dir.path().join("volume/ck");
    let steps = |n: &str| format!("--runner_config.train_iters={n}");
    let first = small_run(&out, &prefix, &[&steps("8")])
        .env("PRETRAIN_CHECKPOINT_DIR", &ck)
        .status()
        .expect("run");
    assert!(first.success());
    let marker = std::fs::read_to_string(ck.join("latest_checkpointed_iteration.txt"));
    assert_eq!(marker.expect("marker").trim(), "8");
    assert!(!out.join("checkpoint").exists(), "nothing under output_dir");
    let second = small_run(&out, &prefix, &[&steps("12")])
        .env("PRETRAIN_CHECKPOINT_DIR", &ck)
        .env("PRETRAIN_RESUME", "true")
        .status()
        .expect("resume");
    assert!(second.success());
    let marker = std::fs::read_to_string(ck.join("latest_checkpointed_iteration.txt"));
    assert_eq!(marker.expect("marker").trim(), "12");
    // Resumed at step 9: every step was logged once.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).expect("metrics");
    let logged: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["step"]
                .as_u64()
                .expect("step")
        })
        .collect();
    assert_eq!(logged, (1..=12).collect::<Vec<u64>>());
}
