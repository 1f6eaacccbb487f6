use crate::{assert_fails, pretrain};

const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../configs/qwen3/qwen3_tiny.yaml"
);

#[test]
fn unknown_key_is_a_config_error_with_a_suggestion() {
    let o = pretrain(&[
        "train",
        "--config",
        CONFIG,
        "--optimizer.weight_decy",
        "0.1",
    ]);
    assert_fails(
        &o,
        2,
        &[
            "qwen3_tiny.yaml",
            "optimizer.weight_decy",
            "did you mean",
            "weight_decay",
        ],
    );
}

#[test]
fn wrong_type_and_layout_errors_name_the_key() {
    let o = pretrain(&[
        "train",
        "--config",
        CONFIG,
        "--runner_config.batch_size=1.0",
    ]);
    assert_fails(&o, 2, &["runner_config.batch_size"]);
    let o = pretrain(&[
        "train",
        "--config",
        CONFIG,
        "--model.model_config.num_key_value_heads=3",
    ]);
    assert_fails(&o, 2, &["num_key_value_heads"]);
    let o = pretrain(&[
        "train",
        "--config",
        CONFIG,
        "--parallel_config.data_parallel",
        "2",
    ]);
    assert_fails(&o, 2, &["data_parallel"]);
}

#[test]
fn missing_dataset_is_a_data_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let o = pretrain(&[
        "train",
        "--config",
        CONFIG,
        "--output_dir",
        out.to_str().expect("utf-8"),
        "--tokenizer_dir=",
        "--train_dataset.data_loader.config.data_path=['1', '/nonexistent/corpus_text_document']",
    ]);
    assert_fails(
        &o,
        3,
        &["/nonexistent/corpus_text_document.idx", "file not found"],
    );
}

/// Same seed and inputs give the same bits whatever the number of threads: no kernel splits a
/// reduction by thread count, so a gang resumed on nodes with other core counts stays exact.
#[test]
fn training_bits_do_not_depend_on_the_thread_count() {
    use super::signals::{small_run, synthetic_dataset};
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = synthetic_dataset(dir.path(), 20, 200);
    let files = ["model.safetensors", "optimizer.safetensors"];
    let mut runs = Vec::new();
    for threads in ["1", "3"] {
        let out = dir.path().join(format!("threads{threads}"));
        let st = small_run(&out, &prefix, &["--runner_config.train_iters=6"])
            .env("RAYON_NUM_THREADS", threads)
            .status()
            .expect("run");
        assert!(st.success());
        let it = out.join("checkpoint/iteration_00000006");
        runs.push(files.map(|f| std::fs::read(it.join(f)).expect("checkpoint file")));
    }
    for (i, f) in files.iter().enumerate() {
        assert!(
            runs[0][i] == runs[1][i],
            "{f} differs between 1 and 3 threads"
        );
    }
}

#[test]
fn dry_run_prints_the_memory_plan_and_trains_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    let o = pretrain(&[
        "train",
        "--config",
        CONFIG,
        "--dry-run",
        "--output_dir",
        out.to_str().expect("utf-8"),
        "--recompute_config.recompute=True",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}");
    for needle in ["stage", "params", "activations", "optimizer", "peak"] {
        assert!(stdout.contains(needle), "{needle} in {stdout}");
    }
    assert!(!out.exists(), "a dry run wrote {}", out.display());
}

#[test]
fn sizes_beyond_any_machine_are_refused_before_allocating() {
    // hidden_size 1e9: parameters alone would be petabytes. Refused with exit 2 and the
    // breakdown, both by --dry-run and by a real run (never a panic or an allocator abort).
    for dry in [true, false] {
        let mut args = vec![
            "train",
            "--config",
            CONFIG,
            "--model.model_config.hidden_size=1000000000",
        ];
        if dry {
            args.push("--dry-run");
        }
        let o = pretrain(&args);
        assert_fails(
            &o,
            2,
            &[
                "memory: stage 0 needs",
                "GiB per process",
                "is available; try",
            ],
        );
    }
}

/// Nine lines of nested YAML aliases ("billion laughs") took 24 GB and an OOM kill before the
/// loader counted nodes: now a config error at once, naming the file and line.
#[test]
fn alias_bombs_are_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut doc = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let path = dir.path().join("laughs.yaml");
    std::fs::write(&path, doc).expect("write");
    let o = pretrain(&["train", "--config", path.to_str().expect("utf-8")]);
    assert_fails(&o, 2, &["laughs.yaml:", "more than 100000 values"]);
}
