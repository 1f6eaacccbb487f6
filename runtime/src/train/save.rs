//! Checkpoints of any layout. One process: the single-file layout. Several: every rank of
//! data-parallel index 0 writes its part of the weights and moments into the shared staging
//! directory (temporary name, fsync, rename); once every part is in place, rank 0 adds the
//! unified HF weights (assembled from the parts a tensor at a time, so no process holds the
//! whole model), config, trainer state and checksums of everything, renames the directory and
//! writes the commit marker.
//!
//! A save has two halves. The snapshot runs at the step boundary on every rank: the
//! collectives (ZeRO-1's moment gather) and copies of
//! what each rank writes. The write (files, fsync, verification, commit) then runs either at
//! once (`async_save: False`) or on a background thread while training goes on
//! (`async_save: True`, MindSpore Transformers' key). At most one save is in flight: the next
//! save, the end of training and a stop signal wait for it. The commit rules are the same
//! either way: rank 0 commits only after every part file has been renamed into place.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::checkpoint::{self, SaveRequest, TrainerState};
use crate::model::params::Layout;
use crate::model::shard::Shard;
use crate::model::Qwen3Config;
use crate::optim::adamw::AdamWState;

use super::{Error, Trainer};

/// A save being written in the background: its directory once committed.
pub(super) struct PendingSave {
    step: u64,
    started: Instant,
    handle: JoinHandle<(Result<PathBuf, Error>, Spare)>,
}

/// Snapshot buffers of the last background save, reused by the next: copying into memory
/// already mapped is a plain memcpy, without the page faults of a fresh allocation.
#[derive(Default)]
pub(super) struct Spare {
    buffers: Vec<Vec<f32>>,
}

impl Spare {
    /// A copy of `src`, in a kept buffer of the same length when there is one, copied by all
    /// threads.
    fn copy(&mut self, src: &[f32]) -> Vec<f32> {
        let mut dst = match self.buffers.iter().position(|b| b.len() == src.len()) {
            Some(i) => self.buffers.swap_remove(i),
            None => vec![0.0; src.len()],
        };
        dst.par_chunks_mut(1 << 18)
            .zip(src.par_chunks(1 << 18))
            .for_each(|(d, s)| d.copy_from_slice(s));
        dst
    }

    /// Keeps the buffers of a written snapshot whose length `keep` the next snapshot copies.
    fn keep(&mut self, snapshot: Snapshot<'static>, keep: usize) {
        let mut owned: Vec<Cow<'static, [f32]>> = Vec::new();
        let mut moments = Vec::new();
        if let Some(p) = snapshot.part {
            owned.push(p.params);
            moments.push(p.moments);
        }
        if let Some(c) = snapshot.commit {
            owned.extend(c.params);
            moments.extend(c.moments);
        }
        for m in moments {
            if let Cow::Owned(m) = m {
                owned.push(Cow::Owned(m.m));
                owned.push(Cow::Owned(m.v));
            }
        }
        for c in owned {
            if let Cow::Owned(v) = c {
                if v.len() == keep && self.buffers.len() < 3 {
                    self.buffers.push(v);
                }
            }
        }
    }
}

/// Everything a rank writes for one checkpoint: borrowed from the trainer for a save written
/// at once, owned (`'static`) for one written in the background.
struct Snapshot<'a> {
    root: PathBuf,
    step: u64,
    state: TrainerState,
    /// This rank's part to write into the staging directory (data-parallel index 0 ranks of
    /// a multi-process job).
    part: Option<Part<'a>>,
    /// Rank 0: the whole model and what the commit needs.
    commit: Option<Commit<'a>>,
}

struct Part<'a> {
    staging: PathBuf,
    shard: Shard,
    pp_rank: usize,
    layout: Layout,
    params: Cow<'a, [f32]>,
    moments: Cow<'a, AdamWState>,
}

struct Commit<'a> {
    config: Qwen3Config,
    /// The whole model (single process); `None`: assembled from the parts at the commit.
    params: Option<Cow<'a, [f32]>>,
    /// The whole model's moments (single process), else the parts hold them.
    moments: Option<Cow<'a, AdamWState>>,
    /// Multi-process: the staging directory and how many parts to wait for.
    staging: Option<(PathBuf, usize)>,
    resolved_config: String,
    tokenizer_dir: Option<PathBuf>,
    keep_max: usize,
    mindspore_ckpt: bool,
    /// How long to wait for the other parts.
    timeout: Duration,
}

impl Trainer<'_> {
    /// Saves a checkpoint of the current step (every rank calls it): waits for the save in
    /// flight, snapshots, then writes now or in the background (`async_save`). Returns the
    /// directory the checkpoint will have once committed.
    pub fn save(&mut self) -> Result<PathBuf, Error> {
        // The step loop is blocked from here: waiting for the previous save, then the snapshot.
        let blocked = Instant::now();
        self.wait_for_save()?;
        let background = self.plan.checkpoint.as_ref().is_some_and(|c| c.async_save);
        let step = self.state.step;
        let dir = checkpoint::iteration_dir(&self.plan.checkpoint_root, step);
        if background {
            let mut spare = std::mem::take(&mut self.spare);
            let keep = self.model.params.len();
            let snapshot = self.snapshot()?.into_owned(&mut spare);
            let handle = std::thread::Builder::new()
                .name(format!("checkpoint-{step}"))
                .spawn(move || {
                    let result = write(&snapshot);
                    spare.keep(snapshot, keep);
                    (result, spare)
                })
                .map_err(|e| crate::data::Error::io(&dir, e))?;
            self.pending = Some(PendingSave {
                step,
                started: Instant::now(),
                handle,
            });
        } else {
            write(&self.snapshot()?)?;
            // Every rank waits for rank 0's commit, as it would for a background save.
            self.cluster.groups.world.barrier()?;
        }
        tracing::info!(
            step,
            blocked_ms = blocked.elapsed().as_millis() as u64,
            background,
            "checkpoint saved{}",
            if background {
                " (writing in the background)"
            } else {
                ""
            }
        );
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    /// Waits until the last save is committed on every rank (before a stop or the end).
    pub fn settle(&mut self) -> Result<(), Error> {
        if self.pending.is_some() {
            self.wait_for_save()?;
            self.cluster.groups.world.barrier()?;
        }
        Ok(())
    }

    /// Waits for this rank's save in flight, if any, and reports its error.
    pub fn wait_for_save(&mut self) -> Result<(), Error> {
        let Some(p) = self.pending.take() else {
            return Ok(());
        };
        let waited = Instant::now();
        let result = match p.handle.join() {
            Ok((result, spare)) => {
                self.spare = spare;
                result
            }
            Err(_) => Err(Error::Unsupported(format!(
                "the background save of step {} panicked",
                p.step
            ))),
        };
        tracing::info!(
            step = p.step,
            written_ms = p.started.elapsed().as_millis() as u64,
            waited_ms = waited.elapsed().as_millis() as u64,
            "background checkpoint done"
        );
        result.map(|_| ())
    }

    /// The snapshot half, on every rank: the collectives, and what each rank writes (borrowed
    /// where the trainer holds it).
    fn snapshot(&mut self) -> Result<Snapshot<'_>, Error> {
        let plan = self.plan;
        let topo = self.cluster.topo;
        let groups = &mut self.cluster.groups;
        let root = plan.checkpoint_root.clone();
        let step = self.state.step;
        let moments = self.optimizer.full_state(&mut *groups.dp)?;
        let multi = topo.world() > 1;
        let staging = checkpoint::sharded::staging_dir(&root, step);
        if multi {
            if topo.rank == 0 {
                std::fs::create_dir_all(&root).map_err(|e| crate::data::Error::io(&root, e))?;
                checkpoint::sharded::begin(&root, step)?;
            }
            // The staging directory exists before any part is written into it.
            groups.world.barrier()?;
        }
        let m = &self.model;
        let part = (multi && topo.dp_rank == 0).then(|| Part {
            staging: staging.clone(),
            shard: m.shard.clone(),
            pp_rank: topo.pp_rank,
            layout: m.layout.clone(),
            params: Cow::Borrowed(&m.params),
            moments: moments.clone(),
        });
        let ck = plan.checkpoint.as_ref();
        let commit = (topo.rank == 0).then(|| Commit {
            config: plan.model.clone(),
            params: (!multi).then_some(Cow::Borrowed(&m.params[..])),
            moments: (!multi).then_some(moments),
            staging: multi.then(|| (staging.clone(), topo.tp * topo.pp)),
            resolved_config: self.resolved_config.to_string(),
            tokenizer_dir: plan.tokenizer_dir.clone(),
            keep_max: ck.map_or(1, |c| c.keep_max),
            mindspore_ckpt: ck.is_some_and(|c| c.mindspore_ckpt),
            timeout: crate::dist::comm_timeout(),
        });
        Ok(Snapshot {
            root,
            step,
            state: self.state.clone(),
            part,
            commit,
        })
    }
}

impl Snapshot<'_> {
    /// The snapshot with copies of everything it borrowed (into `spare`'s buffers where they
    /// fit), for a background write.
    fn into_owned(self, spare: &mut Spare) -> Snapshot<'static> {
        let own_f32 = |c: Cow<'_, [f32]>, spare: &mut Spare| -> Cow<'static, [f32]> {
            match c {
                Cow::Borrowed(b) => Cow::Owned(spare.copy(b)),
                Cow::Owned(v) => Cow::Owned(v),
            }
        };
        let own_moments = |c: Cow<'_, AdamWState>, spare: &mut Spare| -> Cow<'static, AdamWState> {
            match c {
                Cow::Borrowed(s) => Cow::Owned(AdamWState {
                    m: spare.copy(&s.m),
                    v: spare.copy(&s.v),
                    step: s.step,
                }),
                Cow::Owned(s) => Cow::Owned(s),
            }
        };
        Snapshot {
            root: self.root,
            step: self.step,
            state: self.state,
            part: self.part.map(|p| Part {
                staging: p.staging,
                shard: p.shard,
                pp_rank: p.pp_rank,
                layout: p.layout,
                moments: own_moments(p.moments, spare),
                params: own_f32(p.params, spare),
            }),
            commit: self.commit.map(|c| Commit {
                config: c.config,
                moments: c.moments.map(|m| own_moments(m, spare)),
                params: c.params.map(|p| own_f32(p, spare)),
                staging: c.staging,
                resolved_config: c.resolved_config,
                tokenizer_dir: c.tokenizer_dir,
                keep_max: c.keep_max,
                mindspore_ckpt: c.mindspore_ckpt,
                timeout: c.timeout,
            }),
        }
    }
}

/// The write half: this rank's part, then (rank 0) the commit once every part is in place.
fn write(s: &Snapshot<'_>) -> Result<PathBuf, Error> {
    if let Some(p) = &s.part {
        checkpoint::sharded::write_shard(
            &p.staging, &p.shard, p.pp_rank, &p.layout, &p.params, &p.moments,
        )?;
    }
    let dir = checkpoint::iteration_dir(&s.root, s.step);
    let Some(c) = &s.commit else {
        return Ok(dir);
    };
    if let Some((staging, parts)) = &c.staging {
        wait_for_parts(staging, *parts, c.timeout)?;
    }
    let layout = Layout::new(&c.config);
    let dir = checkpoint::save(&SaveRequest {
        root: &s.root,
        config: &c.config,
        layout: &layout,
        params: c.params.as_deref(),
        optimizer: c.moments.as_deref(),
        staging: c.staging.as_ref().map(|(d, _)| d.as_path()),
        state: &s.state,
        resolved_config: &c.resolved_config,
        tokenizer_dir: c.tokenizer_dir.as_deref(),
        keep_max: c.keep_max,
        mindspore_ckpt: c.mindspore_ckpt,
    })?;
    tracing::info!(dir = %dir.display(), "checkpoint committed");
    Ok(dir)
}

/// Rank 0 before the commit: waits until `parts` part files have been renamed into
/// `staging/shards/` (each writer renames only after its fsync).
fn wait_for_parts(staging: &Path, parts: usize, timeout: Duration) -> Result<(), Error> {
    let shards = staging.join("shards");
    let deadline = Instant::now() + timeout;
    loop {
        let done = std::fs::read_dir(&shards)
            .map_err(|e| crate::data::Error::io(&shards, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
            .count();
        if done >= parts {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Unsupported(format!(
                "{}: {done} of {parts} checkpoint parts written after {:.0}s; a rank failed to \
                 write its part (see its log) or the directory is not shared by every node",
                shards.display(),
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
