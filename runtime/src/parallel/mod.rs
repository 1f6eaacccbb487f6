//! The parallel layout: where a rank sits in the (pipeline, data, tensor) grid, its groups, and
//! the pipeline schedule.
//!
//! Ranks are numbered as Megatron's default order (tensor fastest, then data, then pipeline):
//! `rank = tp_rank + tp · (dp_rank + dp · pp_rank)`, so a tensor-parallel group is a run of
//! consecutive ranks (one node, where bandwidth is highest) and pipeline stages are furthest
//! apart.

pub mod schedule;
pub mod zero;

use crate::dist::tcp::Mesh;
use crate::dist::{Communicator, Result, SoloComm};

/// Where one rank sits in the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Global rank.
    pub rank: usize,
    /// Data-parallel size.
    pub dp: usize,
    /// Tensor-parallel size.
    pub tp: usize,
    /// Pipeline stages.
    pub pp: usize,
    /// Position in the data-parallel group.
    pub dp_rank: usize,
    /// Position in the tensor-parallel group.
    pub tp_rank: usize,
    /// Pipeline stage.
    pub pp_rank: usize,
}

impl Topology {
    /// The position of `rank` in a dp × tp × pp grid (`rank < dp·tp·pp`).
    pub fn new(rank: usize, dp: usize, tp: usize, pp: usize) -> Topology {
        Topology {
            rank,
            dp,
            tp,
            pp,
            tp_rank: rank % tp,
            dp_rank: (rank / tp) % dp,
            pp_rank: rank / (tp * dp),
        }
    }

    /// dp · tp · pp.
    pub fn world(&self) -> usize {
        self.dp * self.tp * self.pp
    }

    fn rank_of(&self, tp_rank: usize, dp_rank: usize, pp_rank: usize) -> usize {
        tp_rank + self.tp * (dp_rank + self.dp * pp_rank)
    }

    /// Ranks of this rank's tensor-parallel group.
    pub fn tp_group(&self) -> Vec<usize> {
        (0..self.tp)
            .map(|t| self.rank_of(t, self.dp_rank, self.pp_rank))
            .collect()
    }

    /// Ranks of this rank's data-parallel group (replicas of the same parameters).
    pub fn dp_group(&self) -> Vec<usize> {
        (0..self.dp)
            .map(|d| self.rank_of(self.tp_rank, d, self.pp_rank))
            .collect()
    }

    /// Ranks of this rank's pipeline (one per stage).
    pub fn pp_group(&self) -> Vec<usize> {
        (0..self.pp)
            .map(|p| self.rank_of(self.tp_rank, self.dp_rank, p))
            .collect()
    }

    /// Ranks holding one whole replica of the model (this rank's data-parallel index).
    pub fn model_group(&self) -> Vec<usize> {
        (0..self.pp)
            .flat_map(|p| (0..self.tp).map(move |t| (t, p)))
            .map(|(t, p)| self.rank_of(t, self.dp_rank, p))
            .collect()
    }

    /// First and last stage of this rank's pipeline: the two copies of a tied embedding.
    pub fn embed_group(&self) -> Vec<usize> {
        let group = self.pp_group();
        vec![group[0], group[self.pp - 1]]
    }

    /// Ranks that hold a distinct part of the model and write it at a checkpoint: data-parallel
    /// index 0.
    pub fn writers(&self) -> Vec<usize> {
        (0..self.world())
            .filter(|&r| Topology::new(r, self.dp, self.tp, self.pp).dp_rank == 0)
            .collect()
    }
}

/// The communicators of one rank.
pub struct Groups {
    /// Every rank.
    pub world: Box<dyn Communicator>,
    /// Tensor-parallel group.
    pub tp: Box<dyn Communicator>,
    /// Data-parallel group.
    pub dp: Box<dyn Communicator>,
    /// This rank's pipeline.
    pub pp: Box<dyn Communicator>,
    /// One model replica (tensor × pipeline).
    pub model: Box<dyn Communicator>,
    /// First and last stage, when both hold a tied embedding (pp > 1, tied); else `None`.
    pub embed: Option<Box<dyn Communicator>>,
}

impl Groups {
    /// Groups of one process.
    pub fn solo() -> Groups {
        Groups {
            world: Box::new(SoloComm),
            tp: Box::new(SoloComm),
            dp: Box::new(SoloComm),
            pp: Box::new(SoloComm),
            model: Box::new(SoloComm),
            embed: None,
        }
    }

    /// The groups of `topo` over a connected mesh; `tied` says whether the embedding is tied.
    pub fn over(mesh: &Mesh, topo: &Topology, tied: bool) -> Result<Groups> {
        let group = |ranks: Vec<usize>| -> Result<Box<dyn Communicator>> {
            Ok(Box::new(mesh.group(&ranks)?))
        };
        let embed_ranks = topo.embed_group();
        let embed = if tied && topo.pp > 1 && embed_ranks.contains(&topo.rank) {
            Some(group(embed_ranks)?)
        } else {
            None
        };
        Ok(Groups {
            world: group((0..topo.world()).collect())?,
            tp: group(topo.tp_group())?,
            dp: group(topo.dp_group())?,
            pp: group(topo.pp_group())?,
            model: group(topo.model_group())?,
            embed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn megatron_rank_order() {
        // dp 2, tp 2, pp 2: ranks 0..8.
        let t = Topology::new(5, 2, 2, 2);
        assert_eq!((t.tp_rank, t.dp_rank, t.pp_rank), (1, 0, 1));
        assert_eq!(t.tp_group(), vec![4, 5]);
        assert_eq!(t.dp_group(), vec![5, 7]);
        assert_eq!(t.pp_group(), vec![1, 5]);
        assert_eq!(t.model_group(), vec![0, 1, 4, 5]);
        assert_eq!(t.embed_group(), vec![1, 5]);
        assert_eq!(t.writers(), vec![0, 1, 4, 5]);
        for r in 0..8 {
            let t = Topology::new(r, 2, 2, 2);
            assert_eq!(t.rank_of(t.tp_rank, t.dp_rank, t.pp_rank), r);
        }
    }
}
