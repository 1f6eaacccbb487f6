//! Recovery through `pretrain launch`: a worker killed with SIGKILL brings every process of
//! both nodes down within the timeout, or, with `--max-restarts`, the gang resumes
//! bit-identically (on one node and on two); SIGTERM to the launcher saves one final state;
//! a stopped worker is found by its missing heartbeat.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{
    byte_dataset, free_port, launch_cmd, losses, opts, run_ok, train_args, wait_exit,
    wait_for_steps,
};

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

/// Whether `rel` has the same bytes under the uninterrupted run `straight` and the resumed
/// run `resumed`.
fn same_file(straight: &Path, resumed: &Path, rel: &str) -> bool {
    let a = std::fs::read(straight.join(rel)).expect("straight");
    a == std::fs::read(resumed.join(rel)).expect("resumed")
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
        let it = format!("checkpoint/iteration_00000500/{file}");
        assert!(same_file(&straight, &out, &it), "{file} differs");
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
    assert!(same_file(&straight, &out, it), "final weights differ");
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
