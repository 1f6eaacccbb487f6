//! Checkpoints of any layout. One process: the single-file layout. Several: every rank of
//! data-parallel index 0 writes its part of the weights and moments into the shared staging
//! directory (temporary name, fsync, rename); after a barrier rank 0 adds the unified HF
//! weights (gathered over the network), config, trainer state and checksums of everything,
//! renames the directory and writes the commit marker; a last barrier holds every rank until
//! the commit.

use std::path::PathBuf;

use crate::checkpoint::{self, SaveRequest};
use crate::model::params::Layout;

use super::cluster;
use super::{Error, Trainer};

impl Trainer<'_> {
    /// Saves a checkpoint of the current step (every rank calls it); returns its directory.
    pub fn save(&mut self) -> Result<PathBuf, Error> {
        let plan = self.plan;
        let topo = self.cluster.topo;
        let groups = &mut self.cluster.groups;
        let root = &plan.checkpoint_root;
        let step = self.state.step;
        let local = self.optimizer.full_state(&mut *groups.dp)?;
        let multi = topo.world() > 1;
        let staging = checkpoint::sharded::staging_dir(root, step);
        if multi {
            if topo.rank == 0 {
                std::fs::create_dir_all(root).map_err(|e| crate::data::Error::io(root, e))?;
                checkpoint::sharded::begin(root, step)?;
            }
            groups.world.barrier()?;
            if topo.dp_rank == 0 {
                let m = &self.model;
                checkpoint::sharded::write_shard(
                    &staging,
                    &m.shard,
                    topo.pp_rank,
                    &m.layout,
                    &m.params,
                    &local,
                )?;
            }
        }
        let gathered = cluster::gather_params(&self.model, plan, &topo, &mut *groups.world)?;
        // Every part is on disk (renamed) before rank 0 commits.
        groups.world.barrier()?;
        if let Some(params) = gathered {
            let ck = plan.checkpoint.as_ref();
            let dir = checkpoint::save(&SaveRequest {
                root,
                config: &plan.model,
                layout: &Layout::new(&plan.model),
                params: &params,
                optimizer: (!multi).then_some(&local),
                staging: multi.then_some(staging.as_path()),
                state: &self.state,
                resolved_config: self.resolved_config,
                tokenizer_dir: plan.tokenizer_dir.as_deref(),
                keep_max: ck.map_or(1, |c| c.keep_max),
                mindspore_ckpt: ck.is_some_and(|c| c.mindspore_ckpt),
            })?;
            tracing::info!(dir = %dir.display(), "checkpoint committed");
        }
        groups.world.barrier()?;
        let dir = checkpoint::iteration_dir(root, step);
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }
}
