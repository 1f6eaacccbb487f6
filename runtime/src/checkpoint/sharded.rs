//! The per-rank parts of a multi-process checkpoint. Every rank of data-parallel index 0 writes
//! its part of the weights and AdamW moments as `shards/tp<t>-pp<p>.safetensors` (local HF
//! names, the [`Shard`] in the metadata) into the iteration's staging directory, under a
//! temporary name, synced, then renamed; rank 0 commits the iteration only after a barrier
//! that every writer reaches after its rename. Resuming assembles the moments of the whole
//! model from the parts, so any layout can resume from any other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{invalid, io, Result};
use crate::model::params::{write_safetensors, F32View, Layout};
use crate::model::shard::Shard;
use crate::model::Qwen3Config;
use crate::optim::adamw::AdamWState;

/// The staging directory of a multi-rank checkpoint of `step`: the same name on every rank.
pub fn staging_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!(".iteration_{step:08}.staging"))
}

/// Rank 0, before the others write: a fresh staging directory with `shards/` (a stale one
/// from an interrupted save is removed; it was never committed).
pub fn begin(root: &Path, step: u64) -> Result<PathBuf> {
    let dir = staging_dir(root, step);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    let shards = dir.join("shards");
    std::fs::create_dir_all(&shards).map_err(io(&shards))?;
    Ok(dir)
}

/// Writes this rank's part into `staging/shards/` (temporary name, fsync, rename).
pub fn write_shard(
    staging: &Path,
    shard: &Shard,
    pp_rank: usize,
    layout: &Layout,
    params: &[f32],
    opt: &AdamWState,
) -> Result<PathBuf> {
    let path = staging
        .join("shards")
        .join(format!("tp{:02}-pp{pp_rank:02}.safetensors", shard.tp_rank));
    let mut tensors = Vec::new();
    for s in layout.specs.iter().filter(|s| s.len > 0) {
        for (prefix, buf) in [("", params), ("exp_avg.", &opt.m), ("exp_avg_sq.", &opt.v)] {
            let view = F32View {
                shape: s.shape.clone(),
                data: &buf[s.offset..s.offset + s.len],
            };
            tensors.push((format!("{prefix}{}", s.name), view));
        }
    }
    // One metadata entry (a JSON object with sorted keys): safetensors writes a map's entries
    // in hash order, and the file must be the same bytes on every run.
    let part = serde_json::json!({
        "tp_rank": shard.tp_rank,
        "tp_size": shard.tp_size,
        "layer_start": shard.layers.start,
        "layer_end": shard.layers.end,
        "first": shard.first,
        "last": shard.last,
        "step": opt.step,
    });
    let meta = HashMap::from([("part".to_string(), part.to_string())]);
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    write_safetensors(tensors, Some(meta), &tmp).map_err(|e| invalid(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// The AdamW moments of the whole model (laid out as `Layout::new(config)`), assembled from
/// the parts in `dir/shards/`; `None` when the checkpoint has no parts. An incomplete set of
/// parts is an error naming what is missing.
pub fn load_moments(dir: &Path, config: &Qwen3Config) -> Result<Option<AdamWState>> {
    let shards = dir.join("shards");
    if !shards.is_dir() {
        return Ok(None);
    }
    let global = Layout::new(config);
    let mut state = AdamWState::new(global.total);
    let mut covered = vec![false; global.total];
    let mut names: Vec<PathBuf> = std::fs::read_dir(&shards)
        .map_err(io(&shards))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    names.sort();
    for path in names {
        let bytes = super::map_file(&path)?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| invalid(&path, e.to_string()))?;
        let m: serde_json::Value = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("part"))
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        let get = |k: &str| -> Result<usize> {
            m[k].as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| invalid(&path, format!("no `{k}` in the part's metadata")))
        };
        let shard = Shard {
            tp_rank: get("tp_rank")?,
            tp_size: get("tp_size")?,
            layers: get("layer_start")?..get("layer_end")?,
            first: m["first"].as_bool() == Some(true),
            last: m["last"].as_bool() == Some(true),
        };
        state.step = get("step")? as u64;
        let local = shard
            .layout(config)
            .map_err(|e| invalid(&path, e.to_string()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| invalid(&path, e.to_string()))?;
        let (mut pm, mut pv) = (vec![0.0f32; local.total], vec![0.0f32; local.total]);
        super::read_moments(&st, &local, &mut pm, &mut pv, &path)?;
        shard.scatter_into(&local, &global, &pm, &mut state.m);
        shard.scatter_into(&local, &global, &pv, &mut state.v);
        let ones = vec![1.0f32; local.total];
        let mut mark = vec![0.0f32; global.total];
        shard.scatter_into(&local, &global, &ones, &mut mark);
        for (c, m) in covered.iter_mut().zip(mark) {
            *c |= m == 1.0;
        }
    }
    let missing = covered.iter().filter(|c| !**c).count();
    if missing > 0 {
        return Err(invalid(
            &shards,
            format!(
                "the parts cover all but {missing} of {} optimizer values: a part is missing",
                global.total
            ),
        ));
    }
    Ok(Some(state))
}
