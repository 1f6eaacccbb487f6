//! The run's output directories (`output_dir`, and the checkpoint root when it lies elsewhere):
//! one run at a time, never a fresh run over another run's checkpoints, and no leftovers of
//! saves that never committed. World rank 0 does all of this for the job.
//!
//! The lock is `flock` on `<dir>/.pretrain.lock` (held for the life of the process and
//! released by the kernel however it ends, kill -9 included); the file names the holder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::checkpoint;
use crate::config::TrainPlan;

use super::Error;

/// The lock file in each output directory.
pub const LOCK_FILE: &str = ".pretrain.lock";

/// The locks this run holds (released when dropped or when the process ends).
#[derive(Debug)]
pub struct OutputLock {
    _files: Vec<File>,
}

fn config_error(msg: String) -> Error {
    Error::Unsupported(msg)
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Data(crate::data::Error::io(path, e))
}

/// The directories to lock: `output_dir`, and the checkpoint root unless it lies inside it.
fn dirs(plan: &TrainPlan) -> Vec<PathBuf> {
    let mut out = vec![plan.output_dir.clone()];
    if !plan.checkpoint_root.starts_with(&plan.output_dir) {
        out.push(plan.checkpoint_root.clone());
    }
    out
}

/// Creates and locks the run's output directories, then removes the staging directories of
/// saves that never committed. A path that is a file, or a directory another live run holds,
/// is a configuration error naming it.
pub fn lock(plan: &TrainPlan) -> Result<OutputLock, Error> {
    let mut files = Vec::new();
    for dir in dirs(plan) {
        if dir.exists() && !dir.is_dir() {
            return Err(config_error(format!(
                "output_dir: {} is a file, not a directory; name a directory (it is created if \
                 missing)",
                dir.display()
            )));
        }
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        files.push(lock_dir(&dir)?);
    }
    remove_stale_staging(&plan.checkpoint_root)?;
    Ok(OutputLock { _files: files })
}

/// Takes the lock of `dir`, writing this process's pid and host into the lock file.
fn lock_dir(dir: &Path) -> Result<File, Error> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(config_error(format!(
                "output_dir: another run ({}) is writing into {}; wait for it to end, stop it, \
                 or give this run another output_dir",
                holder.trim(),
                dir.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path, e)),
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let me = format!("pid {} on {}", std::process::id(), host.trim());
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(me.as_bytes()))
        .map_err(|e| io_error(&path, e))?;
    Ok(file)
}

/// Removes `.iteration_*.tmp-<pid>` and `.iteration_*.staging` directories under `root`:
/// saves that were interrupted (disk full, kill -9) before their commit. Under the lock, no
/// save of another run is in progress.
fn remove_stale_staging(root: &Path) -> Result<(), Error> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = name.starts_with(".iteration_")
            && (name.ends_with(".staging") || name.contains(".tmp-"));
        if stale && entry.path().is_dir() {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(|e| io_error(&path, e))?;
            tracing::warn!(dir = %path.display(), "removed the staging directory of an uncommitted save");
        }
    }
    Ok(())
}

/// A run that starts at step 0 must not write into a checkpoint root that holds committed
/// checkpoints: pruning would keep the old run's newest ones and delete the new run's, and a
/// later resume could pick the old run's state. With `overwrite`, the old checkpoints are
/// deleted instead of refused.
pub fn check_fresh_start(plan: &TrainPlan, start_step: u64) -> Result<(), Error> {
    let root = &plan.checkpoint_root;
    let committed = checkpoint::iterations(root);
    if start_step != 0 || committed.is_empty() {
        return Ok(());
    }
    if !plan.overwrite_output_dir {
        let (newest, _) = committed[0];
        return Err(config_error(format!(
            "output_dir: {} holds {} committed checkpoint(s) of another run (newest: step \
             {newest}) and this run starts at step 0; to continue that run set \
             load_checkpoint: auto and resume_training: True, to start over and delete them set \
             overwrite_output_dir: True, or give this run another output_dir",
            root.display(),
            committed.len()
        )));
    }
    for (step, dir) in &committed {
        std::fs::remove_dir_all(dir).map_err(|e| io_error(dir, e))?;
        tracing::warn!(step, dir = %dir.display(), "overwrite_output_dir: removed an old checkpoint");
    }
    let marker = root.join(checkpoint::MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).map_err(|e| io_error(&marker, e))?;
    }
    Ok(())
}
