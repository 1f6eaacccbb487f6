//! The launcher's half of the termination message (the types are the contract crate's): each
//! worker leaves a status file (`PRETRAIN_STATUS_FILE`), and the launcher writes one JSON object
//! to `PRETRAIN_TERMINATION_LOG` for the operator.

use std::path::Path;

pub use pretrain_contract::exit::reason;
pub use pretrain_contract::termination::{TerminationMessage, WorkerStatus};

use super::Outcome;

/// Writes `status` to `path` (temporary file + rename, so a reader never sees half of it).
pub fn write_status(path: &Path, status: &WorkerStatus) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(status).unwrap_or_default())?;
    std::fs::rename(&tmp, path)
}

/// The message for `outcome`, with the newest checkpoint any local worker reported.
pub fn message(outcome: &Outcome, log_dir: &Path) -> TerminationMessage {
    let newest = std::fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".status.json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice::<WorkerStatus>(&b).ok())
        .filter(|s| s.last_checkpoint_step.is_some())
        .max_by_key(|s| s.last_checkpoint_step);
    TerminationMessage {
        reason: Some(reason(outcome.code).into()),
        message: Some(outcome.message.clone()),
        last_checkpoint_step: newest.as_ref().and_then(|s| s.last_checkpoint_step),
        last_checkpoint_path: newest.and_then(|s| s.last_checkpoint_path),
        restarts: (outcome.restarts > 0).then_some(outcome.restarts),
        log: outcome.rank.filter(|_| outcome.code != 0).map(|r| {
            log_dir
                .join(format!("worker_{r}.log"))
                .display()
                .to_string()
        }),
    }
}

/// Writes the message for `outcome` to `path`.
pub fn write(path: &Path, outcome: &Outcome, log_dir: &Path) -> std::io::Result<()> {
    std::fs::write(path, message(outcome, log_dir).to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_carries_the_newest_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (r, step) in [(0, Some(20)), (1, Some(30)), (2, None)] {
            let s = WorkerStatus {
                code: 1,
                message: "x".into(),
                last_checkpoint_step: step,
                last_checkpoint_path: step.map(|s| format!("/ck/iteration_{s:08}")),
            };
            write_status(&dir.path().join(format!("worker_{r}.status.json")), &s).expect("write");
        }
        let outcome = Outcome {
            code: 137,
            rank: Some(1),
            message: "rank 1 exited with code 137".into(),
            restarts: 0,
        };
        let path = dir.path().join("termination-log");
        write(&path, &outcome, dir.path()).expect("write");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(v["reason"], "WorkerKilled");
        assert_eq!(v["lastCheckpointStep"], 30);
        assert_eq!(v["lastCheckpointPath"], "/ck/iteration_00000030");
        let log = dir.path().join("worker_1.log");
        assert_eq!(v["log"], log.display().to_string());
        assert!(v.get("restarts").is_none());
    }
}
