use pretrain::data::builder::IndexedDatasetBuilder;
use pretrain::data::DType;

use crate::{assert_fails, pretrain, qwen3_dir, stdout};

fn small_dataset(dir: &std::path::Path) -> std::path::PathBuf {
    let prefix = dir.join("ds");
    let mut b = IndexedDatasetBuilder::create(&prefix, DType::I32).expect("create");
    for doc in [
        &[9707i64, 11, 1879, 0, 151_645][..],
        &[576, 3974, 13876, 38835, 13, 151_645],
    ] {
        b.add_item(doc).expect("add");
        b.end_document();
    }
    b.finalize().expect("finalize");
    prefix
}

#[test]
fn stats_and_decoding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = small_dataset(dir.path());
    let tok = qwen3_dir();
    let o = pretrain(&[
        "inspect-data",
        prefix.to_str().expect("utf-8"),
        "--tokenizer-dir",
        tok.to_str().expect("utf-8"),
        "--sequence",
        "0",
        "--sample",
        "0",
        "--seq-length",
        "4",
    ]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}", crate::stderr(&o));
    assert!(out.contains("documents:  2"), "{out}");
    assert!(out.contains("tokens:     11"), "{out}");
    assert!(out.contains("int32 (code 4)"), "{out}");
    assert!(out.contains("text: Hello, world!<|im_end|>"), "{out}");
    assert!(out.contains("train sample 0 (seq_length 4"), "{out}");
}

#[test]
fn corrupt_files_are_named_with_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = small_dataset(dir.path());
    let p = prefix.to_str().expect("utf-8");
    let idx = dir.path().join("ds.idx");
    let bin = dir.path().join("ds.bin");
    let good = std::fs::read(&idx).expect("read");

    std::fs::write(&idx, &good[..40]).expect("write");
    assert_fails(
        &pretrain(&["inspect-data", p]),
        3,
        &["ds.idx", "truncated index"],
    );

    let mut wrong = good.clone();
    wrong[..4].copy_from_slice(b"ABCD");
    std::fs::write(&idx, &wrong).expect("write");
    assert_fails(
        &pretrain(&["inspect-data", p]),
        3,
        &["ds.idx", "magic at offset 0"],
    );

    let mut wrong = good.clone();
    wrong[9] = 7;
    std::fs::write(&idx, &wrong).expect("write");
    assert_fails(
        &pretrain(&["inspect-data", p]),
        3,
        &["ds.idx", "version 7 at offset 9"],
    );

    std::fs::write(&idx, &good).expect("write");
    let data = std::fs::read(&bin).expect("read");
    std::fs::write(&bin, &data[..data.len() - 4]).expect("write");
    assert_fails(
        &pretrain(&["inspect-data", p]),
        3,
        &["ds.bin", "do not belong together"],
    );

    std::fs::remove_file(&bin).expect("rm");
    assert_fails(
        &pretrain(&["inspect-data", p]),
        3,
        &["ds.bin", "file not found"],
    );
}

/// A byte-token dataset (one token per UTF-8 byte, EOD 0) of `docs` lines of the corpus from
/// line `from` on.
fn byte_dataset(dir: &std::path::Path, name: &str, from: usize, docs: usize) -> String {
    let prefix = dir.join(name);
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/shakespeare.jsonl");
    let text = std::fs::read_to_string(corpus).expect("corpus");
    let mut b = IndexedDatasetBuilder::create(&prefix, DType::U16).expect("builder");
    for line in text.lines().skip(from).take(docs) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let mut ids: Vec<i64> = v["text"]
            .as_str()
            .expect("text")
            .bytes()
            .map(i64::from)
            .collect();
        ids.push(0);
        b.add_item(&ids).expect("add");
        b.end_document();
    }
    b.finalize().expect("finalize");
    prefix.display().to_string()
}

/// The ids `inspect-data` printed for the sample.
fn printed_ids(out: &str) -> String {
    let at = out.find("train sample").expect("a sample");
    out[at..]
        .lines()
        .find_map(|l| l.strip_prefix("ids:  "))
        .expect("ids line")
        .to_string()
}

#[test]
fn with_a_config_it_shows_the_sample_training_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = byte_dataset(dir.path(), "a", 0, 3);
    let b = byte_dataset(dir.path(), "b", 3, 5);
    let config =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/qwen3/qwen3_tiny.yaml");
    let config = config.to_str().expect("utf-8");
    // A weighted single prefix asked for several epochs, and two prefixes without weights.
    for (data_path, source) in [
        (format!("['1', '{a}']"), "a"),
        (format!("['{a}', '{b}']"), ""),
    ] {
        let overrides = [
            "--tokenizer_dir=".to_string(),
            "--model.model_config.vocab_size=256".into(),
            "--train_dataset.data_loader.config.eod=0".into(),
            "--train_dataset.data_loader.config.seq_length=64".into(),
            "--model.model_config.seq_length=64".into(),
            format!("--train_dataset.data_loader.config.data_path={data_path}"),
            "--train_dataset.data_loader.sizes=[400, 0, 0]".into(),
        ];
        let plan = pretrain::config::load(std::path::Path::new(config), &overrides)
            .and_then(|c| c.validate())
            .expect("config");
        let [train, _, _] = pretrain::data::sampling::build_datasets(&plan.data).expect("data");
        let train = train.expect("train split");
        for n in [0usize, 37, 399] {
            let mut args = vec!["inspect-data", "--config", config, "--sample"];
            let n_text = n.to_string();
            args.push(&n_text);
            args.extend(overrides.iter().map(String::as_str));
            let o = pretrain(&args);
            let out = stdout(&o);
            assert!(o.status.success(), "{}", crate::stderr(&o));
            let want = train.get(n % train.len()).expect("sample");
            let mut ids = want.tokens.clone();
            ids.extend(want.labels.last());
            assert_eq!(
                printed_ids(&out),
                format!("{:?}", &ids[..32]),
                "sample {n}: {out}"
            );
            let gb = plan.global_batch_size;
            assert!(
                out.contains(&format!("read at step {}", n / gb + 1)),
                "{out}"
            );
            let (prefix, _) = train.source(n % train.len()).expect("source");
            assert!(out.contains(&prefix.display().to_string()), "{out}");
            assert!(prefix.ends_with(source) || source.is_empty());
        }
    }
    // Bad input: an override without --config, a bad key.
    assert_fails(
        &pretrain(&["inspect-data", &a, "--model.x=1"]),
        2,
        &["overrides need --config"],
    );
    assert_fails(
        &pretrain(&[
            "inspect-data",
            "--config",
            config,
            "--model.model_config.nope=1",
        ]),
        2,
        &["qwen3_tiny.yaml", "nope"],
    );
}
