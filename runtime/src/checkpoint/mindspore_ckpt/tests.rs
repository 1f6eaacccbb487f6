//! Tests of the parent module.
use super::*;

const ASSETS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/assets/mindspore_ckpt"
);

/// The fixture tensors, from `tiny.json` (written by `gen_fixture.py` with the `.ckpt` files).
fn fixture_tensors() -> Vec<CkptTensor> {
    let text = std::fs::read_to_string(Path::new(ASSETS).join("tiny.json")).expect("tiny.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("tiny.json parses");
    let list = json.as_array().expect("a list");
    list.iter()
        .map(|t| {
            let name = t["name"].as_str().expect("name").to_string();
            let shape = t["shape"].as_array().expect("shape");
            let shape = shape
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .collect();
            let values = t["values"].as_array().expect("values");
            let values = values
                .iter()
                .map(|v| match v.as_str() {
                    Some("inf") => f32::INFINITY,
                    Some("-inf") => f32::NEG_INFINITY,
                    Some("nan") => f32::NAN,
                    _ => v.as_f64().expect("number") as f32,
                })
                .collect();
            (name, shape, values)
        })
        .collect()
}

fn borrowed(t: &[CkptTensor]) -> Vec<(String, Vec<usize>, &[f32])> {
    t.iter()
        .map(|(n, s, v)| (n.clone(), s.clone(), v.as_slice()))
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn writes_the_bytes_mindspore_writes() {
    let owned = fixture_tensors();
    let tensors = borrowed(&owned);
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, dtype) in [
        ("tiny.ckpt", CkptDtype::Float32),
        ("tiny_bf16.ckpt", CkptDtype::BFloat16),
    ] {
        let out = dir.path().join(file);
        write_ckpt_as(&out, &tensors, dtype).expect("write");
        let ours = std::fs::read(&out).expect("read ours");
        let theirs = std::fs::read(Path::new(ASSETS).join(file)).expect("read fixture");
        assert_eq!(
            ours, theirs,
            "{file} differs from mindspore.save_checkpoint's"
        );
        assert!(!dir.path().join(format!("{file}.tmp")).exists());
    }
}

#[test]
fn reads_mindspore_files() {
    let owned = fixture_tensors();
    for file in ["tiny.ckpt", "tiny_bf16.ckpt"] {
        let read = read_ckpt(&Path::new(ASSETS).join(file)).expect("read fixture");
        assert_eq!(read.len(), owned.len());
        for ((n, s, v), (en, es, ev)) in read.iter().zip(&owned) {
            assert_eq!((n, s, bits(v)), (en, es, bits(ev)), "{file}");
        }
    }
}

#[test]
fn round_trip_f32_and_bf16() {
    let a: Vec<f32> = (0..24).map(|i| i as f32 * 0.37 - 3.0).collect();
    let b = [f32::NAN, -0.0, 1.0e-45, f32::MAX];
    let scalar = [7.5f32];
    let tensors = vec![
        ("w".to_string(), vec![2, 3, 4], &a[..]),
        ("odd".to_string(), vec![4], &b[..]),
        ("scalar".to_string(), vec![], &scalar[..]),
        ("empty".to_string(), vec![0, 3], &[][..]),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.ckpt");
    write_ckpt(&path, &tensors).expect("write");
    let read = read_ckpt(&path).expect("read");
    // Zero-element tensors are left out, as MindSpore leaves them out.
    assert_eq!(read.len(), 3);
    for ((n, s, v), (en, es, ev)) in read.iter().zip(&tensors) {
        assert_eq!((n, s, bits(v)), (en, es, bits(ev)));
    }

    write_ckpt_as(&path, &tensors, CkptDtype::BFloat16).expect("write bf16");
    let read = read_ckpt(&path).expect("read bf16");
    for ((n, s, v), (en, es, ev)) in read.iter().zip(&tensors) {
        assert_eq!((n, s), (en, es));
        let want: Vec<u32> = ev
            .iter()
            .map(|&x| bf16_to_f32(f32_to_bf16(x)).to_bits())
            .collect();
        assert_eq!(bits(v), want, "{n}");
    }
}

#[test]
fn bf16_rounds_like_mindspore() {
    // Inputs and results from MindSpore 2.10's float32 -> bfloat16 cast.
    let cases: [(u32, u16); 8] = [
        (0x3f80_8000, 0x3f80),
        (0x3f81_8000, 0x3f82),
        (0x3f80_8008, 0x3f81),
        (0xbf80_8000, 0xbf80),
        (0x7f7f_0000, 0x7f7f),
        (0x7fc0_0000, 0x7fc0),
        (0xffc0_0000, 0x7fc0),
        (0x0001_16c2, 0x0001),
    ];
    for (f, b) in cases {
        assert_eq!(f32_to_bf16(f32::from_bits(f)), b, "{f:#x}");
    }
    assert_eq!(f32_to_bf16(f32::MAX), 0x7f80); // rounds up to +inf
}

#[test]
fn large_tensors_are_sliced_and_rejoined() {
    let data: Vec<f32> = (0..1000).map(|i| i as f32).collect();
    let small = [1.0f32, 2.0];
    let tensors = vec![
        ("big".to_string(), vec![10, 100], &data[..]),
        ("small".to_string(), vec![2], &small[..]),
    ];
    let mut bytes = Vec::new();
    write_records(&mut bytes, &tensors, CkptDtype::Float32, 1024).expect("write");
    // 4000 bytes in 1024-byte slices: 4 records for "big", 1 for "small".
    let mut r = Reader::new(&bytes);
    let mut tags = Vec::new();
    while let Some((_, Field::Bytes(v))) = r.field().expect("field") {
        tags.push(parse_value(v).expect("value").tag);
    }
    assert_eq!(tags, ["big", "big", "big", "big", "small"]);
    let read = parse(&bytes).expect("parse");
    assert_eq!(read.len(), 2);
    assert_eq!((&read[0].1, &read[0].2), (&vec![10, 100], &data));
    assert_eq!(read[1].2, small);
}

#[test]
fn crc_trailer_is_checked_and_stripped() {
    let v = [1.0f32, 2.0, 3.0];
    let mut bytes = Vec::new();
    write_records(
        &mut bytes,
        &[("x".into(), vec![3], &v[..])],
        CkptDtype::Float32,
        SLICE_BYTES,
    )
    .expect("write");
    let crc = crc32(&bytes);
    let mut with_crc = bytes.clone();
    with_crc.extend_from_slice(CRC_MARK);
    with_crc.extend_from_slice(&u128::from(crc).to_be_bytes()[6..]);
    assert_eq!(parse(&with_crc).expect("parse")[0].2, v);
    let last = with_crc.len() - 1;
    with_crc[last] ^= 1;
    assert!(parse(&with_crc).expect_err("bad crc").contains("CRC"));
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
}

#[test]
fn rejects_bad_input_without_writing() {
    let v = [1.0f32, 2.0];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.ckpt");
    let cases = [
        vec![("a".to_string(), vec![3], &v[..])],
        vec![(String::new(), vec![2], &v[..])],
        vec![
            ("a".to_string(), vec![2], &v[..]),
            ("a".to_string(), vec![1, 2], &v[..]),
        ],
    ];
    for tensors in cases {
        let err = write_ckpt(&path, &tensors).expect_err("invalid");
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(!path.exists() && !tmp_path(&path).exists());
    }
}

#[test]
fn rejects_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.ckpt");
    let v = [1.0f32, 2.0];
    let mut good = Vec::new();
    write_records(
        &mut good,
        &[("a".into(), vec![2], &v[..])],
        CkptDtype::Float32,
        SLICE_BYTES,
    )
    .expect("write");
    let truncated = good[..good.len() - 1].to_vec();
    let wrong_type = String::from_utf8_lossy(&good)
        .replace("Float32", "Float64")
        .into_bytes();
    let short = {
        let mut b = good.clone();
        let at = b.iter().position(|&x| x == 1 << 3).expect("dims") + 1; // TensorProto.dims
        b[at] = 3;
        b
    };
    for (bytes, want) in [
        (truncated, "past the end"),
        (wrong_type, "Float64"),
        (short, "needs 12 bytes"),
    ] {
        std::fs::write(&path, bytes).expect("write");
        let err = read_ckpt(&path).expect_err("invalid");
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(err.to_string().contains(want), "{err}");
    }
}
