//! Tests of the parent module.
use super::*;

const ASSETS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/assets/mindrecord");

fn asset(name: &str) -> PathBuf {
    Path::new(ASSETS).join(name)
}

/// `expected.json`'s records of `field` for the dataset opened through `file`.
fn expected(file: &str, field: &str) -> Vec<Vec<i64>> {
    let text = std::fs::read_to_string(asset("expected.json")).expect("read expected.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("parse expected.json");
    serde_json::from_value(json["datasets"][file][field].clone()).expect("records of field")
}

fn read_all(path: &Path, field: &str) -> Result<Vec<Vec<i64>>> {
    MindRecordReader::open(path)?
        .token_field_records(field)?
        .collect()
}

#[test]
fn reads_int32_tokens_across_pages() {
    let reader = MindRecordReader::open(&asset("tokens_int32.mindrecord")).expect("open");
    let want = expected("tokens_int32.mindrecord", "input_ids");
    assert_eq!(want.len(), 40);
    assert_eq!(reader.num_records(), 40);
    assert_eq!(
        reader.shards[0].groups.len(),
        2,
        "fixture should span two blob pages"
    );
    let got: Vec<Vec<i64>> = reader
        .token_field_records("input_ids")
        .expect("field")
        .collect::<Result<_>>()
        .expect("read");
    assert_eq!(got, want);
    assert!(got.iter().any(|r| r.len() == 3000) && got.iter().any(|r| r.len() == 1));
    let fields = reader.fields();
    assert_eq!(
        fields,
        vec![("input_ids".into(), "int32".into(), Some(vec![-1]))]
    );
}

#[test]
fn reads_int64_and_scalar_fields_among_others() {
    let path = asset("mixed_int64.mindrecord");
    for field in ["input_ids", "labels", "window", "doc_id", "seq_len"] {
        let got = read_all(&path, field).expect(field);
        assert_eq!(
            got,
            expected("mixed_int64.mindrecord", field),
            "field {field}"
        );
    }
    let reader = MindRecordReader::open(&path).expect("open");
    let names: Vec<String> = reader.fields().into_iter().map(|f| f.0).collect();
    assert_eq!(names.len(), 9);
    assert!(reader
        .fields()
        .contains(&("window".into(), "int32".into(), Some(vec![2, 3]))));
    assert!(reader
        .fields()
        .contains(&("text".into(), "string".into(), None)));
}

#[test]
fn reads_all_shards_in_order_from_any_shard() {
    let want = expected("sharded.mindrecord0", "input_ids");
    assert_eq!(want.len(), 11);
    for name in ["sharded.mindrecord0", "sharded.mindrecord1"] {
        let reader = MindRecordReader::open(&asset(name)).expect("open");
        assert_eq!((reader.shards.len(), reader.num_records()), (2, 11));
        assert_eq!(
            read_all(&asset(name), "input_ids").expect(name),
            want,
            "{name}"
        );
    }
}

#[test]
fn rejects_unknown_and_non_integer_fields() {
    let reader = MindRecordReader::open(&asset("mixed_int64.mindrecord")).expect("open");
    let Err(Error::InvalidArgument(msg)) = reader.token_field_records("tokens") else {
        panic!("unknown field accepted");
    };
    assert!(
        msg.contains("`tokens` not found") && msg.contains("input_ids, labels"),
        "{msg}"
    );
    for field in ["loss_mask", "text", "score", "raw"] {
        let Err(Error::InvalidArgument(msg)) = reader.token_field_records(field) else {
            panic!("{field} accepted");
        };
        assert!(msg.contains("only int32 and int64"), "{msg}");
    }
}

/// Copies `name` into a tempdir, lets `damage` edit its bytes, returns the dir and path.
fn damaged(name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut bytes = std::fs::read(asset(name)).expect("read fixture");
    damage(&mut bytes);
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write");
    (dir, path)
}

fn corrupt_reason(result: Result<Vec<Vec<i64>>>) -> String {
    match result {
        Err(Error::Corrupt { reason, .. }) => reason,
        other => panic!("expected a corrupt error, got {other:?}"),
    }
}

fn check_message(reason: &str, at: &str) {
    assert!(reason.contains(at), "{reason}");
    assert!(reason.contains("; "), "no hint: {reason}");
    assert!(
        !reason.ends_with('.') && reason.starts_with(char::is_lowercase),
        "{reason}"
    );
}

#[test]
fn damaged_headers_are_corrupt() {
    type Damage = Box<dyn FnOnce(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        ("short", Box::new(|b| b.truncate(5)), "at byte 0"),
        (
            "length",
            Box::new(|b| b[..8].copy_from_slice(&u64::MAX.to_le_bytes())),
            "at byte 0",
        ),
        ("json", Box::new(|b| b[8] = b'['), "header json at byte 8"),
        (
            "truncated",
            Box::new(|b| b.truncate(40_000)),
            "at byte 16384",
        ),
        (
            "no pages",
            Box::new(|b| b.truncate(16_384)),
            "at byte 16384",
        ),
    ];
    for (what, damage, at) in cases {
        let (_dir, path) = damaged("tokens_int32.mindrecord", damage);
        let reason = corrupt_reason(read_all(&path, "input_ids"));
        check_message(&reason, at);
        assert!(
            reason.contains("regenerate") || reason.contains("not a MindRecord"),
            "{what}"
        );
    }
}

#[test]
fn damaged_pages_are_corrupt() {
    // The first blob record's length (at the start of page 0) overruns the page.
    let (_dir, path) = damaged("tokens_int32.mindrecord", |b| {
        b[16_384..16_392].copy_from_slice(&1_000_000u64.to_le_bytes())
    });
    check_message(
        &corrupt_reason(read_all(&path, "input_ids")),
        "at byte 16384",
    );
    // Its element count (u32 big-endian after the length) claims more than the record holds.
    let (_dir, path) = damaged("tokens_int32.mindrecord", |b| b[16_392] = 0x7f);
    check_message(&corrupt_reason(read_all(&path, "input_ids")), "needs");
    // A field length inside a multi-field blob record overruns the record.
    let (_dir, path) = damaged("mixed_int64.mindrecord", |b| b[16_392] = 0x7f);
    check_message(&corrupt_reason(read_all(&path, "labels")), "at byte 16392");
    // A raw row whose msgpack map is cut short.
    let (_dir, path) = damaged("mixed_int64.mindrecord", |b| b[16_384 + 32_768] = 3);
    check_message(&corrupt_reason(read_all(&path, "seq_len")), "raw row");
}

#[test]
fn iteration_stops_after_an_error() {
    let (_dir, path) = damaged("tokens_int32.mindrecord", |b| b[16_392] = 0x7f);
    let reader = MindRecordReader::open(&path).expect("open");
    let results: Vec<_> = reader
        .token_field_records("input_ids")
        .expect("field")
        .collect();
    assert_eq!(results.len(), 1);
    assert!(matches!(results[0], Err(Error::Corrupt { .. })));
}

#[test]
fn missing_or_foreign_shards_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shard0 = dir.path().join("sharded.mindrecord0");
    std::fs::copy(asset("sharded.mindrecord0"), &shard0).expect("copy");
    assert!(matches!(
        MindRecordReader::open(&shard0),
        Err(Error::Io { .. })
    ));
    let other = dir.path().join("sharded.mindrecord1");
    std::fs::copy(asset("tokens_int32.mindrecord"), &other).expect("copy");
    let Err(Error::Corrupt { path, reason }) = MindRecordReader::open(&shard0) else {
        panic!("foreign shard accepted");
    };
    assert_eq!(path, other);
    check_message(&reason, "at byte 8");
}

#[test]
fn converts_to_indexed_dataset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = dir.path().join("out/tokens");
    let input = asset("sharded.mindrecord1");
    let report = convert(&input, "input_ids", &prefix, DType::I32).expect("convert");
    let want = expected("sharded.mindrecord0", "input_ids");
    let flat: Vec<i64> = want.concat();
    assert_eq!((report.records, report.tokens), (11, flat.len() as u64));
    let bin = std::fs::read(&report.bin).expect("read bin");
    let ids: Vec<i64> = bin.chunks(4).map(le_signed).collect();
    assert_eq!(ids, flat);
    assert!(report.idx.exists());
    let Err(Error::TokenOutOfRange { .. }) = convert(&input, "input_ids", &prefix, DType::U8)
    else {
        panic!("ids above 255 fit u8");
    };
}

#[test]
fn compressed_integer_decoding() {
    assert_eq!(le_signed(&[0xff]), -1);
    assert_eq!(le_signed(&[0x00, 0x80]), -32768);
    assert_eq!(le_signed(&0x1_0000_0000_i64.to_le_bytes()), 1 << 32);
    let mut mp = MsgPack {
        b: &[0x82, 0xa1, b'a', 0xc3, 0xa1, b'b', 0xd1, 0xff, 0x9c],
        pos: 0,
    };
    assert_eq!(mp.find_int(b"b"), Ok(Some(-100)));
}
