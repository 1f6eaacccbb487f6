//! The per-rank parts of a multi-process checkpoint. Every rank of data-parallel index 0 writes
//! its part of the weights and AdamW moments as `shards/tp<t>-pp<p>.safetensors` (local HF
//! names, the [`Shard`] in the metadata) into the iteration's staging directory, under a
//! temporary name, synced, then renamed; rank 0 commits the iteration only after a barrier
//! that every writer reaches after its rename. Resuming assembles each rank's moments from the
//! parts, one whole tensor at a time, so any layout can resume from any other.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{invalid, io, Result};
use crate::model::params::{write_safetensors, F32View, Layout, ParamSpec};
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

/// A saved part: its file, which part of the model it holds, and that part's layout.
struct Part {
    path: PathBuf,
    bytes: memmap2::Mmap,
    shard: Shard,
    layout: Layout,
}

/// The parts in `dir/shards/` (empty when the checkpoint has none), with the optimizer step.
fn parts(dir: &Path, config: &Qwen3Config) -> Result<(Vec<Part>, u64)> {
    let shards = dir.join("shards");
    if !shards.is_dir() {
        return Ok((Vec::new(), 0));
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(&shards)
        .map_err(io(&shards))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    names.sort();
    let (mut out, mut step) = (Vec::new(), 0);
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
        step = get("step")? as u64;
        let layout = shard
            .layout(config)
            .map_err(|e| invalid(&path, e.to_string()))?;
        out.push(Part {
            path,
            bytes,
            shard,
            layout,
        });
    }
    Ok((out, step))
}

/// The parsed part files, in the order of `parts`.
fn headers(parts: &[Part]) -> Result<Vec<safetensors::SafeTensors<'_>>> {
    parts
        .iter()
        .map(|p| {
            safetensors::SafeTensors::deserialize(&p.bytes)
                .map_err(|e| invalid(&p.path, e.to_string()))
        })
        .collect()
}

/// The AdamW moments of the part `shard` holds (laid out as `local`), assembled from the parts
/// in `dir/shards/` one whole tensor at a time, whatever layout saved them; `None` when the
/// checkpoint has no parts. An incomplete set of parts is an error naming what is missing.
pub fn load_moments(
    dir: &Path,
    config: &Qwen3Config,
    shard: &Shard,
    local: &Layout,
) -> Result<Option<AdamWState>> {
    let (parts, step) = parts(dir, config)?;
    if parts.is_empty() {
        return Ok(None);
    }
    let files = headers(&parts)?;
    let global = Layout::new(config);
    let shards = dir.join("shards");
    let whole = |prefix: &str, g: &ParamSpec| assemble(&parts, &files, prefix, g, &shards);
    Ok(Some(AdamWState {
        m: shard.read_part(local, &global, |g| whole("exp_avg.", g))?,
        v: shard.read_part(local, &global, |g| whole("exp_avg_sq.", g))?,
        step,
    }))
}

/// The whole tensor `g` (its weights, or with `prefix` `exp_avg.`/`exp_avg_sq.` its moments),
/// assembled from the parts that hold some of it; an error naming what no part holds.
fn assemble(
    parts: &[Part],
    files: &[safetensors::SafeTensors<'_>],
    prefix: &str,
    g: &ParamSpec,
    shards: &Path,
) -> Result<Vec<f32>> {
    let (mut values, mut covered) = (vec![0.0f32; g.len], vec![false; g.len]);
    for (p, st) in parts.iter().zip(files) {
        if let Some(s) = p.shard.local_of(&p.layout, g) {
            let name = format!("{prefix}{}", s.name);
            let part = super::read_tensor(st, &name, s, &p.path)?;
            p.shard
                .scatter_tensor(s, g, &part, &mut values, &mut covered);
        }
    }
    let missing = covered.iter().filter(|c| !**c).count();
    if missing > 0 {
        return Err(invalid(
            shards,
            format!(
                "the parts cover all but {missing} of the {} values of {prefix}{}: a part is \
                 missing",
                g.len, g.name
            ),
        ));
    }
    Ok(values)
}

/// Rank 0 at the commit: the whole model's `model.safetensors` at `path`, each tensor
/// assembled from the parts in `staging/shards/` as the file is written, so that no process
/// ever holds the whole model. Fails (before anything is committed) if a part is missing.
pub fn write_unified(staging: &Path, config: &Qwen3Config, path: &Path) -> Result<()> {
    let (parts, _) = parts(staging, config)?;
    let files = headers(&parts)?;
    let global = Layout::new(config);
    let shards = staging.join("shards");
    let failed = std::cell::RefCell::new(None);
    let fetch = |g: &ParamSpec| assemble(&parts, &files, "", g, &shards);
    let tensors = global
        .specs
        .iter()
        .map(|g| {
            let view = Assembled {
                spec: g,
                fetch: &fetch,
                failed: &failed,
            };
            (g.name.clone(), view)
        })
        .collect::<Vec<_>>();
    safetensors::serialize_to_file(tensors, None, path)
        .map_err(|e| invalid(path, e.to_string()))?;
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io(path))
}

/// A tensor of the unified file, assembled when the writer asks for its bytes; an error is
/// kept in `failed` (the writer cannot return one) and zeros written in its place.
struct Assembled<'a> {
    spec: &'a ParamSpec,
    fetch: &'a dyn Fn(&ParamSpec) -> Result<Vec<f32>>,
    failed: &'a std::cell::RefCell<Option<super::Error>>,
}

impl safetensors::View for Assembled<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.spec.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        let values = (self.fetch)(self.spec).unwrap_or_else(|e| {
            self.failed.borrow_mut().get_or_insert(e);
            vec![0.0; self.spec.len]
        });
        std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.spec.len * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::qwen3::Qwen3;
    use crate::model::shard::stage_layers;

    /// Parts written by a tp 2 x pp 2 layout give back the whole model: the unified file
    /// assembled from them, and every part read from it, have the whole model's bits; a
    /// missing part is an error, not a file of zeros.
    #[test]
    fn the_unified_file_assembled_from_parts_is_the_whole_model() {
        let dir = tempfile::tempdir().expect("tempdir");
        for tied in [false, true] {
            let c = Qwen3Config::from_hf_json(&format!(
                r#"{{"vocab_size": 64, "hidden_size": 16, "intermediate_size": 24,
                "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
                "head_dim": 8, "tie_word_embeddings": {tied}}}"#
            ))
            .expect("config");
            let whole = Qwen3::init(c.clone(), 5).expect("model");
            let staging = begin(dir.path(), u64::from(tied)).expect("staging");
            for (stage, r) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let shard = Shard {
                    tp_rank: r,
                    tp_size: 2,
                    layers: stage_layers(&[2, 2], stage),
                    first: stage == 0,
                    last: stage == 1,
                };
                let part = Qwen3::sharded(&c, shard.clone(), &whole.params).expect("part");
                let moments = AdamWState::new(part.layout.total);
                write_shard(
                    &staging,
                    &shard,
                    stage,
                    &part.layout,
                    &part.params,
                    &moments,
                )
                .expect("write part");
            }
            let unified = staging.join("model.safetensors");
            write_unified(&staging, &c, &unified).expect("unified");
            let bytes = std::fs::read(&unified).expect("read");
            let back = whole
                .layout
                .load_safetensors(&bytes, &unified)
                .expect("load");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&back), bits(&whole.params), "tied {tied}");
            std::fs::remove_file(staging.join("shards/tp01-pp01.safetensors")).expect("rm");
            let err = write_unified(&staging, &c, &unified).expect_err("a part is missing");
            assert!(err.to_string().contains("a part is missing"), "{err}");
            // Through a save: refused before the commit, and nothing of it stays behind.
            let state = super::super::TrainerState {
                step: u64::from(tied),
                consumed_samples: 0,
                last_loss: 0.0,
            };
            let req = super::super::SaveRequest {
                root: dir.path(),
                config: &c,
                layout: &whole.layout,
                params: None,
                optimizer: None,
                staging: Some(&staging),
                state: &state,
                resolved_config: "",
                tokenizer_dir: None,
                keep_max: 2,
                mindspore_ckpt: false,
            };
            let err = super::super::save(&req).expect_err("a part is missing");
            assert!(err.to_string().contains("a part is missing"), "{err}");
            assert!(
                !staging.exists(),
                "the failed save's staging directory is removed"
            );
            assert!(
                super::super::iterations(dir.path()).is_empty(),
                "nothing committed"
            );
        }
    }
}
