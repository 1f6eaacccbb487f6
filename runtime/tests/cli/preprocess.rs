use std::path::Path;

use pretrain::data::indexed::IndexedDataset;

use crate::{assert_fails, files_in, pretrain, qwen3_dir, stdout};

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write input");
}

fn run(input: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    let tok = qwen3_dir();
    let mut args = vec![
        "preprocess",
        "--input",
        input,
        "--output-prefix",
        out.to_str().expect("utf-8"),
        "--tokenizer-dir",
        tok.to_str().expect("utf-8"),
        "--workers",
        "2",
    ];
    args.extend_from_slice(extra);
    pretrain(&args)
}

#[test]
fn directory_glob_and_several_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("in");
    std::fs::create_dir(&data).expect("mkdir");
    write(
        &data.join("b.jsonl"),
        "{\"text\": \"second file\", \"title\": \"B\"}\n",
    );
    write(
        &data.join("a.jsonl"),
        "{\"text\": \"Hello, world! The quick brown fox.\", \"title\": \"A\"}\n\n{\"text\": \"\", \"title\": \"empty\"}\n",
    );
    write(&data.join("ignored.txt"), "not json");
    let out = dir.path().join("out/corpus");
    let o = run(
        data.to_str().expect("utf-8"),
        &out,
        &["--json-keys", "text", "title", "--append-eod"],
    );
    assert!(o.status.success(), "{}", crate::stderr(&o));
    assert!(
        stdout(&o).contains("preprocessed 3 documents"),
        "{}",
        stdout(&o)
    );
    let text = IndexedDataset::open(dir.path().join("out/corpus_text_document")).expect("open");
    // a.jsonl comes first (sorted); the blank line is skipped; the empty text is an empty
    // document, as Megatron's add_document([], []) records it.
    assert_eq!(text.document_count(), 3);
    assert_eq!(text.len(), 2);
    let first: Vec<i64> = text.get(0, 0, None).expect("get").iter().collect();
    assert_eq!(
        first,
        [9707, 11, 1879, 0, 576, 3974, 13876, 38835, 13, 151_645]
    );
    assert_eq!(text.dtype(), pretrain::data::DType::I32);
    let titles = IndexedDataset::open(dir.path().join("out/corpus_title_document")).expect("open");
    assert_eq!(titles.len(), 3);

    let glob = format!("{}/*.jsonl", data.display());
    let o = run(&glob, &dir.path().join("g"), &[]);
    assert!(o.status.success(), "{}", crate::stderr(&o));
    assert!(stdout(&o).contains("from 2 file(s)"));
}

#[test]
fn malformed_line_names_file_and_line_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("bad.jsonl");
    write(
        &input,
        "{\"text\": \"fine\"}\n{\"text\": \"broken\n{\"text\": \"fine again\"}\n",
    );
    let out_dir = dir.path().join("out");
    let o = run(input.to_str().expect("utf-8"), &out_dir.join("x"), &[]);
    assert_fails(&o, 3, &["bad.jsonl:2:", "invalid JSON", "--skip-bad-lines"]);
    assert!(files_in(&out_dir).is_empty(), "{:?}", files_in(&out_dir));

    let o = run(
        input.to_str().expect("utf-8"),
        &out_dir.join("x"),
        &["--skip-bad-lines"],
    );
    assert!(o.status.success(), "{}", crate::stderr(&o));
    assert!(stdout(&o).contains("skipped 1 malformed lines"));
    assert_eq!(
        files_in(&out_dir),
        ["x_text_document.bin", "x_text_document.idx"]
    );
}

#[test]
fn missing_key_lists_the_keys_present() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("keys.jsonl");
    write(&input, "{\"content\": \"no text key here\"}\n");
    let o = run(input.to_str().expect("utf-8"), &dir.path().join("o/x"), &[]);
    assert_fails(
        &o,
        3,
        &[
            "keys.jsonl:1:",
            "missing key `text`",
            "content",
            "--json-keys",
        ],
    );
    assert!(files_in(&dir.path().join("o")).is_empty());
}

#[test]
fn missing_or_invalid_tokenizer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.jsonl");
    write(&input, "{\"text\": \"x\"}\n");
    let out = dir.path().join("o/x");
    let o = pretrain(&[
        "preprocess",
        "--input",
        input.to_str().expect("utf-8"),
        "--output-prefix",
        out.to_str().expect("utf-8"),
        "--tokenizer-dir",
        dir.path().to_str().expect("utf-8"),
    ]);
    assert_fails(
        &o,
        2,
        &["tokenizer.json", "no such file", "--tokenizer-dir"],
    );
    let bogus = dir.path().join("tokenizer.json");
    write(&bogus, "{\"not\": \"a tokenizer\"}");
    let o = pretrain(&[
        "preprocess",
        "--input",
        input.to_str().expect("utf-8"),
        "--output-prefix",
        out.to_str().expect("utf-8"),
        "--tokenizer-file",
        bogus.to_str().expect("utf-8"),
    ]);
    assert_fails(
        &o,
        2,
        &["tokenizer.json", "not a valid Hugging Face tokenizer.json"],
    );
    let o = pretrain(&[
        "preprocess",
        "--input",
        input.to_str().expect("utf-8"),
        "--output-prefix",
        "x",
    ]);
    assert_fails(&o, 2, &["--tokenizer-dir"]);
    assert!(files_in(&dir.path().join("o")).is_empty());
}

#[test]
fn token_ids_that_do_not_fit_the_dtype() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.jsonl");
    write(&input, "{\"text\": \"a\"}\n{\"text\": \"b\"}\n");
    let out_dir = dir.path().join("o");
    let o = run(
        input.to_str().expect("utf-8"),
        &out_dir.join("x"),
        &["--dtype", "uint8", "--append-eod"],
    );
    assert_fails(
        &o,
        3,
        &[
            "x_text_document.bin",
            "151645 does not fit uint8",
            "document 0",
            "--dtype",
        ],
    );
    assert!(files_in(&out_dir).is_empty(), "{:?}", files_in(&out_dir));
}

#[test]
fn missing_input_and_empty_corpus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = run("/nonexistent/file.jsonl", &dir.path().join("x"), &[]);
    assert_fails(&o, 2, &["/nonexistent/file.jsonl", "no such file"]);
    let o = run("/dev/zero", &dir.path().join("z"), &[]);
    assert_fails(&o, 2, &["/dev/zero", "not a regular file"]);
    let empty = dir.path().join("empty.jsonl");
    write(&empty, "\n\n");
    let o = run(empty.to_str().expect("utf-8"), &dir.path().join("o/x"), &[]);
    assert_fails(&o, 2, &["no documents"]);
    assert!(files_in(&dir.path().join("o")).is_empty());
}
