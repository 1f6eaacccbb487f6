//! Every (dp, mp, pp) layout, alone and combined with ZeRO-1, background saves, recompute,
//! tied embeddings, bf16 compute and uneven stages, gives the one-process losses and one
//! unified checkpoint.

use super::{byte_dataset, free_port, launch_cmd, losses, opts, run_ok, train_args};

/// A layout of [`every_layout_gives_the_single_process_losses`]: (name, workers, overrides),
/// global batch 4. Every "1-1-1…" entry is the one-process reference of those after it.
type Layout = (&'static str, usize, &'static [&'static str]);

/// Every layout, in order.
fn layouts() -> Vec<Layout> {
    [basic_layouts(), memory_layouts(), model_layouts()].concat()
}

/// Layouts of [`every_layout_gives_the_single_process_losses`]: each parallelism alone and in pairs.
fn basic_layouts() -> Vec<Layout> {
    vec![
        (
            "1-1-1",
            1,
            &["--runner_config.gradient_accumulation_steps=4"],
        ),
        (
            "2-1-1",
            2,
            &[
                "--parallel_config.data_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
            ],
        ),
        (
            "1-2-1",
            2,
            &[
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=4",
            ],
        ),
        (
            "1-1-2",
            2,
            &[
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
            ],
        ),
        (
            "2-2-1",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
            ],
        ),
        (
            "1-2-2",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
            ],
        ),
        (
            "2-1-2",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=2",
            ],
        ),
    ]
}

/// Layouts of [`every_layout_gives_the_single_process_losses`]: background saves, recompute and ZeRO-1 under parallelism.
fn memory_layouts() -> Vec<Layout> {
    vec![
        // Checkpoints written in the background: the same parts and unified export.
        (
            "1-2-2-async-save",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--callbacks.1.async_save=True",
            ],
        ),
        // Recomputation: every layer, then the first layer of each stage.
        (
            "2-2-1-recompute",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
                "--recompute_config.recompute=True",
            ],
        ),
        (
            "1-2-2-recompute",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--recompute_config.recompute=[1, 1]",
            ],
        ),
        // ZeRO-1: optimizer state sharded over the replicas.
        (
            "2-1-1-zero1",
            2,
            &[
                "--parallel_config.data_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
                "--parallel.enable_parallel_optimizer=True",
            ],
        ),
        (
            "2-2-1-zero1",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
                "--parallel.enable_parallel_optimizer=True",
            ],
        ),
    ]
}

/// Layouts of [`every_layout_gives_the_single_process_losses`]: tied embeddings, bf16 compute and uneven stages under parallelism.
fn model_layouts() -> Vec<Layout> {
    vec![
        // Tied embeddings: the first and last stage each hold a copy.
        (
            "1-1-1-tied",
            1,
            &[
                "--runner_config.gradient_accumulation_steps=4",
                "--model.model_config.tie_word_embeddings=True",
            ],
        ),
        (
            "1-2-2-tied",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--model.model_config.tie_word_embeddings=True",
            ],
        ),
        // bf16 compute: tensor parallelism splits the row-parallel sums, so the f32 partial
        // sums differ in their last bits, and a later rounding to bf16 can turn that into one
        // bf16 step (2^-8) of an element; the losses agree to 2e-4 relative (4e-5 measured over
        // 10 steps), not bit for bit.
        (
            "1-1-1-bf16",
            1,
            &[
                "--runner_config.gradient_accumulation_steps=4",
                "--model.model_config.compute_dtype=bfloat16",
            ],
        ),
        (
            "2-2-1-bf16",
            4,
            &[
                "--parallel_config.data_parallel=2",
                "--parallel_config.model_parallel=2",
                "--runner_config.gradient_accumulation_steps=2",
                "--model.model_config.compute_dtype=bfloat16",
            ],
        ),
        (
            "1-2-2-bf16-recompute",
            4,
            &[
                "--parallel_config.model_parallel=2",
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--recompute_config.recompute=True",
                "--model.model_config.compute_dtype=bfloat16",
            ],
        ),
        // Three layers split 2 + 1 by MindSpore Transformers' offset list.
        (
            "1-1-1-3-layers",
            1,
            &[
                "--runner_config.gradient_accumulation_steps=4",
                "--model.model_config.num_hidden_layers=3",
            ],
        ),
        (
            "1-1-2-offset",
            2,
            &[
                "--parallel_config.pipeline_stage=2",
                "--parallel_config.micro_batch_num=4",
                "--model.model_config.num_hidden_layers=3",
                "--model.model_config.offset=[1, 0]",
            ],
        ),
    ]
}

#[test]
fn every_layout_gives_the_single_process_losses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = byte_dataset(dir.path(), 20);
    // Global batch 4 in every layout; 10 steps.
    let layouts = layouts();
    let mut reference: Option<Vec<f32>> = None;
    for (name, workers, extra) in layouts {
        let out = dir.path().join(name);
        let port = free_port();
        let c = launch_cmd(
            &opts(workers, workers, 0, port, &out.join("log")),
            &train_args(&data, &out, 40, extra),
        );
        run_ok(c);
        let got = losses(&out);
        assert_eq!(got.len(), 10, "{name}: steps");
        // Each "1-1-1…" run is the one-process reference of the layouts after it.
        if name.starts_with("1-1-1") {
            reference = Some(got);
            continue;
        }
        let want = reference.as_ref().expect("reference first");
        let bound = if name.contains("bf16") { 2e-4 } else { 1e-5 };
        for (step, (a, b)) in got.iter().zip(want).enumerate() {
            let rel = ((a - b) / b).abs();
            assert!(
                rel < bound,
                "{name} step {}: loss {a} vs {b} (rel {rel:e})",
                step + 1
            );
        }
        // One HF-format checkpoint of the whole model, whatever the layout, and one part per
        // (tensor, pipeline) rank.
        let it = out.join("checkpoint/iteration_00000010");
        assert!(
            it.join("model.safetensors").is_file(),
            "{name}: no unified checkpoint"
        );
        let parts = std::fs::read_dir(it.join("shards")).map_or(0, |d| d.count());
        let dp = if name.starts_with('2') { 2 } else { 1 };
        assert_eq!(parts, workers / dp, "{name}: parts");
    }
}
