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
