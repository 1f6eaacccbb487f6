//! Against megatron-core 0.16.1: builder bytes, numpy's RandomState, preprocessing of the real
//! corpus, and the sample indices and items of every case in `tests/assets/megatron/cases/`
//! (fixtures and their generator: tests/assets/megatron/README.md).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pretrain::data::builder::IndexedDatasetBuilder;
use pretrain::data::gpt_dataset::{GptDataset, GptDatasetConfig};
use pretrain::data::preprocess::{self, PreprocessOptions};
use pretrain::data::rng::RandomState;
use pretrain::data::sampling::{build_datasets, CacheMode, DataConfig, MegatronDataset};
use pretrain::data::DType;
use pretrain_system_tests::{asset, qwen3_tokenizer, repo_root};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sha256_file(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:x}", Sha256::digest(bytes))
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("integer"))
        .collect()
}

fn flat(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Array(items) => items.iter().for_each(|x| flat(x, out)),
        Value::Bool(b) => out.push(*b as u8 as f64),
        x => out.push(x.as_f64().expect("number")),
    }
}

/// Compares an array we computed with megatron's encoded array (dtype, shape, sha256 of the
/// little-endian bytes, and the values in `data` or `head`).
fn check_array(what: &str, expected: &Value, ours: &[i64], shape: &[usize]) {
    let dtype = expected["dtype"].as_str().expect("dtype");
    let want_shape: Vec<usize> = ids(&expected["shape"])
        .iter()
        .map(|&d| d as usize)
        .collect();
    assert_eq!(want_shape, shape, "{what}: shape");
    let mut bytes = Vec::new();
    for &v in ours {
        match dtype {
            "int16" => bytes.extend((v as i16).to_le_bytes()),
            "int32" => bytes.extend((v as i32).to_le_bytes()),
            "uint32" => bytes.extend((v as u32).to_le_bytes()),
            "int64" => bytes.extend(v.to_le_bytes()),
            other => panic!("{what}: unexpected dtype {other}"),
        }
    }
    let mut want = Vec::new();
    if let Some(data) = expected.get("data") {
        flat(data, &mut want);
    } else {
        flat(&expected["head"], &mut want);
    }
    let got: Vec<f64> = ours.iter().take(want.len()).map(|&v| v as f64).collect();
    assert_eq!(got, want, "{what}: values");
    assert_eq!(
        format!("{:x}", Sha256::digest(&bytes)),
        expected["sha256"].as_str().expect("sha256"),
        "{what}: sha256 of the {dtype} bytes"
    );
}

/// Our own preprocessing of data/shakespeare.jsonl with the real Qwen3 tokenizer, built once.
fn shakespeare_prefix() -> &'static Path {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let out = dir.join("shakespeare");
        let opts = PreprocessOptions {
            inputs: vec![repo_root()
                .join("data/shakespeare.jsonl")
                .display()
                .to_string()],
            output_prefix: out.clone(),
            tokenizer: qwen3_tokenizer(),
            json_keys: vec!["text".into()],
            append_eod: true,
            eod_token: None,
            workers: 2,
            dtype: None,
            skip_bad_lines: false,
            progress_bar: Some(false),
            log_interval: std::time::Duration::from_secs(3600),
        };
        let report = preprocess::run(&opts).expect("preprocess the corpus");
        assert_eq!(report.eod.as_ref().map(|e| e.1), Some(151_645));
        dir.join("shakespeare_text_document")
    })
}

#[test]
fn preprocessing_the_corpus_is_byte_identical_to_megatron() {
    let oracle = load(&asset("megatron/preprocess/shakespeare_qwen3.json"));
    let prefix = shakespeare_prefix();
    let (idx, bin) = pretrain::data::indexed::dataset_paths(prefix);
    assert_eq!(
        sha256_file(&bin),
        oracle["bin_sha256"].as_str().expect("sha")
    );
    assert_eq!(
        sha256_file(&idx),
        oracle["idx_sha256"].as_str().expect("sha")
    );
}

#[test]
fn builder_writes_megatrons_bytes_for_every_dtype() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for entry in std::fs::read_dir(asset("megatron/builder")).expect("ls") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let spec = load(&path);
        let name = spec["name"].as_str().expect("name");
        let dtype = DType::from_name(spec["dtype"].as_str().expect("dtype")).expect("dtype");
        let prefix = dir.path().join(name);
        let mut b = IndexedDatasetBuilder::create(&prefix, dtype).expect("create");
        for doc in spec["documents"].as_array().expect("documents") {
            for seq in doc.as_array().expect("sequences") {
                b.add_item(&ids(seq)).expect("add");
            }
            b.end_document();
        }
        let (idx, bin) = b.finalize().expect("finalize");
        assert_eq!(
            sha256_file(&bin),
            spec["bin_sha256"].as_str().expect("sha"),
            "{name}.bin"
        );
        assert_eq!(
            sha256_file(&idx),
            spec["idx_sha256"].as_str().expect("sha"),
            "{name}.idx"
        );
        // And the reader agrees with what megatron read back.
        let ds = pretrain::data::indexed::IndexedDataset::open(&prefix).expect("open");
        let lengths: Vec<i64> = ds.sequence_lengths().iter().map(|&l| l as i64).collect();
        assert_eq!(lengths, ids(&spec["sequence_lengths"]), "{name}");
        let docs: Vec<i64> = (0..=ds.document_count())
            .map(|k| ds.document_index(k) as i64)
            .collect();
        assert_eq!(docs, ids(&spec["document_indices"]), "{name}");
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} builder fixtures found");
}

#[test]
fn random_state_shuffles_match_numpy() {
    let oracle = load(&asset("megatron/numpy_random_state.json"));
    for case in oracle["cases"].as_array().expect("cases") {
        let seed = case["seed"].as_u64().expect("seed") as u32;
        let mut rs = RandomState::new(seed);
        if let Some(n) = case.get("n") {
            let n = n.as_u64().expect("n") as usize;
            let mut a: Vec<i64> = (0..n as i64).collect();
            rs.shuffle(&mut a);
            check_array(&format!("seed {seed} n {n}"), &case["result"], &a, &[n]);
        } else {
            let sizes = ids(&case["consecutive"]);
            for (k, (&n, want)) in sizes
                .iter()
                .zip(case["results"].as_array().expect("results"))
                .enumerate()
            {
                let mut a: Vec<i64> = (0..n).collect();
                rs.shuffle(&mut a);
                check_array(
                    &format!("seed {seed} consecutive #{k}"),
                    want,
                    &a,
                    &[n as usize],
                );
            }
        }
    }
}

/// Writes a case's dataset into `dir` (or finds it) and checks its bytes against megatron's.
fn materialize(name: &str, spec: &Value, dir: &Path) -> PathBuf {
    let prefix = match spec["kind"].as_str().expect("kind") {
        "inline" | "formula" => {
            let dtype = DType::from_name(spec["dtype"].as_str().expect("dtype")).expect("dtype");
            let prefix = dir.join(name);
            let mut b = IndexedDatasetBuilder::create(&prefix, dtype).expect("create");
            if spec["kind"] == "inline" {
                for doc in spec["documents"].as_array().expect("documents") {
                    b.add_item(&ids(doc)).expect("add");
                    b.end_document();
                }
            } else {
                let eod = spec["eod"].as_i64().expect("eod");
                for (d, n) in ids(&spec["lengths"]).into_iter().enumerate() {
                    let doc: Vec<i64> = (0..n)
                        .map(|j| {
                            if j == n - 1 {
                                eod
                            } else {
                                2 + (d as i64 * 131 + j * 7) % 30000
                            }
                        })
                        .collect();
                    b.add_item(&doc).expect("add");
                    b.end_document();
                }
            }
            b.finalize().expect("finalize");
            prefix
        }
        "builder_fixture" => repo_root().join(spec["path"].as_str().expect("path")),
        "shakespeare_qwen3" => shakespeare_prefix().to_path_buf(),
        other => panic!("unknown dataset kind {other}"),
    };
    let (idx, bin) = pretrain::data::indexed::dataset_paths(&prefix);
    assert_eq!(
        sha256_file(&bin),
        spec["bin_sha256"].as_str().expect("sha"),
        "{name}.bin"
    );
    assert_eq!(
        sha256_file(&idx),
        spec["idx_sha256"].as_str().expect("sha"),
        "{name}.idx"
    );
    prefix
}

fn case_config(case: &Value, dir: &Path, cache: CacheMode) -> DataConfig {
    let c = &case["config"];
    let mut prefixes = std::collections::HashMap::new();
    for (name, spec) in case["datasets"].as_object().expect("datasets") {
        prefixes.insert(name.clone(), materialize(name, spec, dir));
    }
    let data_path = c["data_path"]
        .as_array()
        .expect("data_path")
        .iter()
        .map(|v| {
            let s = v.as_str().expect("string");
            prefixes
                .get(s)
                .map_or(s.to_owned(), |p| p.display().to_string())
        })
        .collect();
    let sizes = c["sizes"].as_array().expect("sizes");
    let size = |i: usize| sizes.get(i).and_then(Value::as_u64).map(|s| s as usize);
    let flag = |k: &str| c[k].as_bool().unwrap_or_else(|| panic!("config.{k}"));
    DataConfig {
        data_path,
        split: c["split"].as_str().expect("split").to_owned(),
        sizes: [size(0), size(1), size(2)],
        gpt: GptDatasetConfig {
            sequence_length: c["sequence_length"].as_u64().expect("S") as usize,
            random_seed: c["random_seed"].as_u64().expect("seed") as u32,
            eod: c["tokenizer"]["eod"].as_i64().expect("eod"),
            pad: c["tokenizer"]["pad"].as_i64().expect("pad"),
            eod_mask_loss: flag("eod_mask_loss"),
            reset_position_ids: flag("reset_position_ids"),
            reset_attention_mask: flag("reset_attention_mask"),
            create_attention_mask: flag("create_attention_mask"),
            add_extra_token_to_sequence: flag("add_extra_token_to_sequence"),
            drop_last_partial_validation_sequence: flag("drop_last_partial_validation_sequence"),
        },
        cache,
    }
}

fn check_gpt(what: &str, want: &Value, gpt: &GptDataset) {
    let idx = gpt.indices();
    assert_eq!(
        gpt.len() as u64,
        want["len"].as_u64().expect("len"),
        "{what}: len"
    );
    let range = ids(&want["sequence_range"]);
    let doc: Vec<i64> = idx.document_index.iter().map(|&d| d as i64).collect();
    check_array(
        &format!("{what} document_index"),
        &want["document_index"],
        &doc,
        &[doc.len()],
    );
    if let (Some(&lo), Some(&hi)) = (range.first(), range.get(1)) {
        assert!(
            doc.iter().all(|&d| d >= lo && d < hi),
            "{what}: documents outside the split"
        );
    }
    let rows = idx.sample_index.len() / 2;
    check_array(
        &format!("{what} sample_index"),
        &want["sample_index"],
        &idx.sample_index,
        &[rows, 2],
    );
    let shuffle: Vec<i64> = idx.shuffle_index.iter().map(|&s| s as i64).collect();
    check_array(
        &format!("{what} shuffle_index"),
        &want["shuffle_index"],
        &shuffle,
        &[shuffle.len()],
    );
}

fn check_item(what: &str, want: &Value, ds: &MegatronDataset) {
    let i = want["index"].as_u64().expect("index") as usize;
    let s = ds.get(i).unwrap_or_else(|e| panic!("{what} item {i}: {e}"));
    assert_eq!(s.tokens, ids(&want["tokens"]), "{what} item {i} tokens");
    assert_eq!(s.labels, ids(&want["labels"]), "{what} item {i} labels");
    assert_eq!(
        s.position_ids,
        ids(&want["position_ids"]),
        "{what} item {i} position_ids"
    );
    let mut mask = Vec::new();
    flat(&want["loss_mask"], &mut mask);
    let ours: Vec<f64> = s.loss_mask.iter().map(|&m| m as f64).collect();
    assert_eq!(ours, mask, "{what} item {i} loss_mask");
    if let Some(attn) = want.get("attention_mask") {
        let mut expected = Vec::new();
        flat(attn, &mut expected);
        let ours: Vec<f64> = s
            .attention_mask
            .as_ref()
            .unwrap_or_else(|| panic!("{what} item {i}: no attention mask"))
            .iter()
            .map(|&m| m as u8 as f64)
            .collect();
        assert_eq!(ours, expected, "{what} item {i} attention_mask");
    }
}

fn check_case(path: &Path, cache: CacheMode, dir: &Path) {
    let case = load(path);
    let name = case["name"].as_str().expect("name").to_owned();
    let config = case_config(&case, dir, cache);
    let built = build_datasets(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
    for (k, split) in ["train", "valid", "test"].into_iter().enumerate() {
        let want = &case["splits"][split];
        let what = format!("{name} {split}");
        let Some(ds) = &built[k] else {
            assert!(
                want.is_null(),
                "{what}: megatron built this split, we did not"
            );
            continue;
        };
        assert!(!want.is_null(), "{what}: we built a split megatron did not");
        assert_eq!(
            ds.len() as u64,
            want["len"].as_u64().expect("len"),
            "{what}: len"
        );
        let gpts = want["gpt_datasets"].as_array().expect("gpt_datasets");
        match ds {
            MegatronDataset::Gpt(g) => {
                assert_eq!(want["top_level"], "GPTDataset", "{what}");
                check_gpt(&what, &gpts[0], g);
            }
            MegatronDataset::Blended(b) => {
                assert_eq!(want["top_level"], "BlendedDataset", "{what}");
                let bl = &want["blended"];
                let di: Vec<i64> = b.dataset_index.iter().map(|&d| d as i64).collect();
                check_array(
                    &format!("{what} dataset_index"),
                    &bl["dataset_index"],
                    &di,
                    &[di.len()],
                );
                check_array(
                    &format!("{what} dataset_sample_index"),
                    &bl["dataset_sample_index"],
                    &b.dataset_sample_index,
                    &[b.dataset_sample_index.len()],
                );
                assert_eq!(b.datasets().len(), gpts.len(), "{what}: component count");
                for (g, w) in b.datasets().iter().zip(gpts) {
                    check_gpt(&format!("{what} {}", w["dataset"]), w, g);
                }
            }
        }
        for item in want["items"].as_array().expect("items") {
            check_item(&what, item, ds);
        }
    }
}

fn case_paths() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(asset("megatron/cases"))
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            let name = p.to_string_lossy();
            !name.ends_with("_hang.json") && !name.ends_with("_error.json")
        })
        .collect();
    paths.sort();
    assert!(paths.len() >= 10, "fixtures missing: {paths:?}");
    paths
}

#[test]
fn sample_indices_and_items_match_megatron_for_every_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    for path in case_paths() {
        check_case(&path, CacheMode::Off, dir.path());
    }
}

#[test]
fn cached_indices_give_the_same_samples() {
    // First run writes the cache, second run must read it back and still match megatron.
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    for path in case_paths() {
        check_case(&path, CacheMode::Dir(cache.clone()), dir.path());
        check_case(&path, CacheMode::Dir(cache.clone()), dir.path());
    }
    let cached = std::fs::read_dir(&cache).expect("cache dir").count();
    assert!(cached > 40, "expected cache files, found {cached}");
}

#[test]
fn an_unweighted_blend_with_an_empty_part_is_an_error_as_in_megatron() {
    let case = load(&asset("megatron/cases/unweighted_empty_split_error.json"));
    let dir = tempfile::tempdir().expect("tempdir");
    let common = &case["config_common"];
    let attempts = case["attempts"].as_array().expect("attempts");
    assert!(attempts.len() >= 4);
    for a in attempts {
        assert!(a["megatron_error"]["raised_at"]
            .as_str()
            .expect("where")
            .starts_with("megatron/core/datasets/blended_dataset.py"));
        let names: Vec<&str> = a["data_path"]
            .as_array()
            .expect("data_path")
            .iter()
            .map(|n| n.as_str().expect("name"))
            .collect();
        let data_path = names
            .iter()
            .map(|n| {
                materialize(n, &case["datasets"][*n], dir.path())
                    .display()
                    .to_string()
            })
            .collect();
        let sizes = a["sizes"].as_array().expect("sizes");
        let config = DataConfig {
            data_path,
            split: a["split"].as_str().expect("split").into(),
            sizes: [0, 1, 2].map(|i| sizes[i].as_u64().map(|n| n as usize)),
            gpt: GptDatasetConfig {
                sequence_length: a["sequence_length"].as_u64().expect("S") as usize,
                eod: common["tokenizer"]["eod"].as_i64().expect("eod"),
                random_seed: common["random_seed"].as_u64().expect("seed") as u32,
                ..GptDatasetConfig::default()
            },
            cache: CacheMode::Off,
        };
        let msg = build_datasets(&config)
            .err()
            .expect("must not build")
            .to_string();
        assert!(
            msg.contains("split") && msg.contains("cannot join an unweighted blend"),
            "{msg}"
        );
    }
}

#[test]
fn an_empty_split_asked_for_samples_is_an_error_where_megatron_hangs() {
    let case = load(&asset(
        "megatron/cases/shakespeare_qwen3_969_30_1_hang.json",
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let c = &case["config"];
    let prefix = materialize(
        "shakespeare_qwen3",
        &case["datasets"]["shakespeare_qwen3"],
        dir.path(),
    );
    let sizes = ids(&c["sizes"]);
    let config = DataConfig {
        data_path: vec!["1.0".into(), prefix.display().to_string()],
        split: c["split"].as_str().expect("split").into(),
        sizes: [0, 1, 2].map(|i| Some(sizes[i] as usize)),
        gpt: GptDatasetConfig {
            sequence_length: c["sequence_length"].as_u64().expect("S") as usize,
            eod: 151_645,
            ..GptDatasetConfig::default()
        },
        cache: CacheMode::Off,
    };
    let err = build_datasets(&config).err().expect("must not build");
    let msg = err.to_string();
    assert!(
        msg.contains("test split") && msg.contains("no tokens"),
        "{msg}"
    );
}
