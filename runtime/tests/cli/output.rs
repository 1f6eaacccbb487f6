//! The output directory: one run at a time, no fresh run over another run's checkpoints, no
//! leftovers of saves that never committed, and mistakes about it are configuration errors.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use super::signals::synthetic_dataset;
use crate::assert_fails;

/// The signal tests' small run, with its output captured.
fn small_run(out: &Path, prefix: &Path, extra: &[&str]) -> std::process::Command {
    let mut cmd = super::signals::small_run(out, prefix, extra);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

#[test]
fn a_file_as_output_dir_and_a_missing_load_checkpoint_are_config_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = synthetic_dataset(dir.path(), 20, 200);
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    let o = small_run(&file, &prefix, &["--runner_config.train_iters=2"])
        .output()
        .expect("run");
    assert_fails(&o, 2, &["output_dir", "a-file", "is a file"]);
    let out = dir.path().join("out");
    let o = small_run(&out, &prefix, &["--load_checkpoint", "/nonexistent/ckpt"])
        .output()
        .expect("run");
    assert_fails(
        &o,
        2,
        &["load_checkpoint", "/nonexistent/ckpt", "does not exist"],
    );
}

/// A second run into a directory that a live run holds is refused, naming the holder; once
/// the holder lets go (as the kernel does when a process dies), the run starts.
#[test]
fn a_second_run_into_a_held_output_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = synthetic_dataset(dir.path(), 20, 200);
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let mut held = std::fs::File::create(out.join(".pretrain.lock")).expect("lock file");
    held.try_lock().expect("lock");
    held.write_all(b"pid 4242 on the-other-host")
        .expect("write");
    let o = small_run(&out, &prefix, &["--runner_config.train_iters=2"])
        .output()
        .expect("run");
    assert_fails(
        &o,
        2,
        &["another run", "pid 4242 on the-other-host", "output_dir"],
    );
    drop(held);
    let o = small_run(&out, &prefix, &["--runner_config.train_iters=2"])
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A run from step 0 into a checkpoint directory with committed checkpoints is refused (they
/// would mix: pruning keeps the old run's newest, a resume may pick them), and the staging
/// directories of uncommitted saves are gone either way; `overwrite_output_dir: True` deletes
/// the old checkpoints instead, and resuming is what it always was.
#[test]
fn a_fresh_run_over_committed_checkpoints_is_refused_unless_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = synthetic_dataset(dir.path(), 20, 200);
    let out = dir.path().join("out");
    let ck = out.join("checkpoint");
    let fresh = ["--runner_config.train_iters=4", "--load_checkpoint="];
    let st = small_run(&out, &prefix, &fresh).status().expect("run");
    assert!(st.success());
    assert!(ck.join("iteration_00000004").is_dir());
    let stale = ck.join(".iteration_00000008.tmp-99999");
    std::fs::create_dir_all(stale.join("shards")).expect("stale dir");
    let o = small_run(&out, &prefix, &fresh).output().expect("run");
    assert_fails(
        &o,
        2,
        &[
            "committed checkpoint",
            "resume_training: True",
            "overwrite_output_dir: True",
        ],
    );
    assert!(!stale.exists(), "the stale staging directory is removed");
    assert!(ck.join("iteration_00000004").is_dir(), "refused, so kept");
    let over = [
        "--runner_config.train_iters=2",
        "--load_checkpoint=",
        "--overwrite_output_dir=True",
    ];
    let o = small_run(&out, &prefix, &over).output().expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !ck.join("iteration_00000004").exists(),
        "the old run's checkpoint is deleted"
    );
    assert!(ck.join("iteration_00000002").is_dir());
    let resume = [
        "--runner_config.train_iters=4",
        "--load_checkpoint=auto",
        "--resume_training=True",
    ];
    let o = small_run(&out, &prefix, &resume).output().expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(ck.join("iteration_00000004").is_dir());
}

/// Token ids the model's vocabulary does not have are found before step 1 (a scan of every
/// dataset), naming the dataset file and the sequence.
#[test]
fn token_ids_beyond_the_vocabulary_name_the_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Ids up to 255; the model below has 128.
    let prefix = synthetic_dataset(dir.path(), 20, 200);
    let out = dir.path().join("out");
    let o = small_run(&out, &prefix, &["--model.model_config.vocab_size=128"])
        .output()
        .expect("run");
    let bin = format!("{}.bin", prefix.display());
    assert_fails(&o, 3, &[&bin, "in sequence", "vocab_size 128"]);
    assert!(!out.join("checkpoint").join("iteration_00000001").exists());
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    assert!(metrics.is_empty(), "no step may run: {metrics}");
}

/// A dataset file truncated while training has it mapped: the next read of the lost pages is
/// a SIGBUS, which the binary turns into exit 3 and a line naming the file (not a silent "Bus
/// error").
#[test]
fn a_dataset_truncated_during_training_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = synthetic_dataset(dir.path(), 50, 300);
    let out = dir.path().join("out");
    let child = small_run(&out, &prefix, &["--runner_config.train_iters=1000000"])
        .spawn()
        .expect("start");
    let metrics = out.join("metrics.jsonl");
    let start = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 3 {
        assert!(start.elapsed().as_secs() < 60, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let bin = format!("{}.bin", prefix.display());
    std::fs::File::options()
        .write(true)
        .open(&bin)
        .and_then(|f| f.set_len(0))
        .expect("truncate");
    let o = child.wait_with_output().expect("wait");
    assert_fails(&o, 3, &[&bin, "shrank while this process had it mapped"]);
}
