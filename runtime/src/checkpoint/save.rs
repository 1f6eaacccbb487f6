//! Writing a checkpoint: the files into a staging directory (temporary name), synced, renamed
//! into place, then the commit marker; pruning of old ones; and a failed save's cleanup.

use super::*;

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(io(path))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(path))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|f| f.sync_all()).map_err(io(dir))
}

/// Writes the moments as `exp_avg.<name>` / `exp_avg_sq.<name>` safetensors, a tensor at a
/// time, synced.
fn write_optimizer(layout: &Layout, st: &AdamWState, path: &Path) -> Result<()> {
    let mut tensors = Vec::new();
    for s in &layout.specs {
        for (prefix, buf) in [("exp_avg", &st.m), ("exp_avg_sq", &st.v)] {
            let view = F32View {
                shape: s.shape.clone(),
                data: &buf[s.offset..s.offset + s.len],
            };
            tensors.push((format!("{prefix}.{}", s.name), view));
        }
    }
    let meta = HashMap::from([("step".to_string(), st.step.to_string())]);
    write_safetensors(tensors, Some(meta), path).map_err(|e| invalid(path, e))
}

/// What [`save`] writes besides the weights.
pub struct SaveRequest<'a> {
    /// Checkpoint root (`<output_dir>/checkpoint`).
    pub root: &'a Path,
    /// The model config (written as `config.json`).
    pub config: &'a Qwen3Config,
    /// Parameter layout.
    pub layout: &'a Layout,
    /// The whole model's parameters; `None` in a multi-process save, whose `model.safetensors`
    /// is assembled from the parts in `staging` ([`sharded::write_unified`]).
    pub params: Option<&'a [f32]>,
    /// Optimizer state of the whole model; `None` when the ranks wrote their parts into
    /// `staging` instead ([`sharded`]).
    pub optimizer: Option<&'a AdamWState>,
    /// The staging directory the ranks' parts were written to ([`sharded::begin`]); `None`
    /// for a single process.
    pub staging: Option<&'a Path>,
    /// Trainer state.
    pub state: &'a TrainerState,
    /// The resolved training config (YAML).
    pub resolved_config: &'a str,
    /// Tokenizer files to copy, if known.
    pub tokenizer_dir: Option<&'a Path>,
    /// Checkpoints to keep (at least 1).
    pub keep_max: usize,
    /// Also write `model.ckpt` (MindSpore's format, HF parameter names).
    pub mindspore_ckpt: bool,
}

/// Writes, commits and prunes one checkpoint; returns its directory.
pub fn save(req: &SaveRequest<'_>) -> Result<PathBuf> {
    let root = req.root;
    std::fs::create_dir_all(root).map_err(io(root))?;
    let step = req.state.step;
    let final_dir = iteration_dir(root, step);
    let tmp = match req.staging {
        Some(dir) => dir.to_path_buf(),
        None => {
            let tmp = root.join(format!(".iteration_{step:08}.tmp-{}", std::process::id()));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
            }
            std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
            tmp
        }
    };
    let written = write_and_commit(req, &tmp, &final_dir);
    if let Err(e) = written {
        // Nothing of a failed save stays behind: its directory never committed.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(explain_disk_full(e, root, req));
    }
    prune(root, req.keep_max.max(1), step)?;
    Ok(final_dir)
}

/// A save that ran out of disk space, said so: the directory and about how many bytes the
/// checkpoint needs.
fn explain_disk_full(e: Error, root: &Path, req: &SaveRequest<'_>) -> Error {
    let full = match &e {
        Error::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
        Error::Invalid { reason, .. } => reason.contains("os error 28"),
    };
    if !full {
        return e;
    }
    // Weights, and the two moments (in optimizer.safetensors or the parts).
    let need = req.layout.total as u64 * 12;
    Error::Io {
        path: root.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "no space left on the device while writing a checkpoint of about {:.2} GiB \
                 ({e}); free space there, lower keep_checkpoint_max, or move the checkpoint \
                 directory",
                need as f64 / (1u64 << 30) as f64
            ),
        ),
    }
}

/// Writes the files of `req` into `tmp` (a staging directory), renames it to `final_dir` and
/// moves the commit marker.
fn write_and_commit(req: &SaveRequest<'_>, tmp: &Path, final_dir: &Path) -> Result<()> {
    let (root, step) = (req.root, req.state.step);
    let model_path = tmp.join("model.safetensors");
    match req.params {
        Some(params) => req
            .layout
            .save_safetensors(params, &model_path, None)
            .map_err(|e| invalid(&model_path, e.to_string()))?,
        None => sharded::write_unified(tmp, req.config, &model_path)?,
    }
    let json = serde_json::to_vec_pretty(&req.config.to_hf_json()).unwrap_or_default();
    write_synced(&tmp.join("config.json"), &json)?;
    if let Some(opt) = req.optimizer {
        let opt_path = tmp.join("optimizer.safetensors");
        write_optimizer(req.layout, opt, &opt_path)?;
    }
    let state = serde_json::to_vec_pretty(req.state).unwrap_or_default();
    write_synced(&tmp.join("trainer_state.json"), &state)?;
    write_synced(&tmp.join("config.yaml"), req.resolved_config.as_bytes())?;
    if let Some(dir) = req.tokenizer_dir {
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            let src = dir.join(name);
            if src.is_file() {
                let bytes = std::fs::read(&src).map_err(io(&src))?;
                write_synced(&tmp.join(name), &bytes)?;
            }
        }
    }
    if req.mindspore_ckpt {
        write_mindspore_ckpt(req.layout, &model_path, &tmp.join("model.ckpt"))?;
    }
    write_metadata(tmp)?;
    if tmp.join("shards").is_dir() {
        sync_dir(&tmp.join("shards"))?;
    }
    sync_dir(tmp)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(final_dir).map_err(io(final_dir))?;
    }
    std::fs::rename(tmp, final_dir).map_err(io(final_dir))?;
    sync_dir(root)?;
    let marker_tmp = root.join(format!(".{MARKER}.tmp-{}", std::process::id()));
    write_synced(&marker_tmp, step.to_string().as_bytes())?;
    std::fs::rename(&marker_tmp, root.join(MARKER)).map_err(io(root))?;
    sync_dir(root)
}

/// `model.ckpt` (MindSpore's format, HF names, in `layout`'s order) from the f32
/// `model.safetensors` just written, read through a mapping: no second copy of the model in
/// memory.
fn write_mindspore_ckpt(layout: &Layout, model_path: &Path, path: &Path) -> Result<()> {
    let bytes = map_file(model_path)?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| invalid(model_path, e.to_string()))?;
    let mut tensors: Vec<(String, Vec<usize>, &[f32])> = Vec::new();
    for spec in &layout.specs {
        let name = spec.name.clone();
        let t = st
            .tensor(&name)
            .map_err(|_| invalid(model_path, format!("missing {name}")))?;
        // SAFETY: any 4 bytes are a valid f32; `align_to` puts only whole, aligned f32 in the
        // middle (the map is page-aligned and safetensors aligns its data), checked below.
        let (head, values, tail) = unsafe { t.data().align_to::<f32>() };
        if t.dtype() != Dtype::F32
            || !head.is_empty()
            || !tail.is_empty()
            || !cfg!(target_endian = "little")
        {
            return Err(invalid(
                model_path,
                format!("{name}: not an aligned f32 tensor"),
            ));
        }
        tensors.push((name, t.shape().to_vec(), values));
    }
    mindspore_ckpt::write_ckpt(path, &tensors).map_err(io(path))
}

/// `metadata.json`: `{"files": {name: {"bytes": n, "sha256": h}}}` for every file in `dir`
/// (names of files in subdirectories are relative paths, e.g. `shards/tp00-pp00.safetensors`).
fn write_metadata(dir: &Path) -> Result<()> {
    let mut files = BTreeMap::new();
    for name in files_below(dir)? {
        let path = dir.join(&name);
        let bytes = std::fs::metadata(&path).map_err(io(&path))?.len();
        files.insert(
            name,
            serde_json::json!({"bytes": bytes, "sha256": sha256_file(&path)?}),
        );
    }
    let meta = serde_json::json!({"format": "pretrain-checkpoint-v1", "files": files});
    write_synced(
        &dir.join("metadata.json"),
        &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    )
}

/// Deletes iterations beyond the newest `keep`, except `newest` (just committed).
fn prune(root: &Path, keep: usize, newest: u64) -> Result<()> {
    for (step, dir) in iterations(root).into_iter().skip(keep) {
        if step != newest {
            std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
    }
    Ok(())
}
