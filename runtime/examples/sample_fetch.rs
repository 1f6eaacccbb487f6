//! Benchmark: GPT sample fetch rate, the Rust side of `scripts/bench/bench-data.sh` (its peer is
//! `scripts/bench/sample_fetch_baseline.py`, megatron-core's `GPTDataset.__getitem__`).
//!
//! Builds the train split of a bare prefix as training does (index building is not timed),
//! then fetches N random samples with labels, loss mask and position ids.
//!
//! `cargo run --release --example sample_fetch -- --prefix P [--seq-length 512] [--samples 2000]
//!  [--eod 151645] [-n 20000] [--reset-position-ids] [--eod-mask-loss] [--attention-mask]`

use std::time::Instant;

use pretrain::data::gpt_dataset::GptDatasetConfig;
use pretrain::data::rng::RandomState;
use pretrain::data::sampling::{build_datasets, CacheMode, DataConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Option<String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let prefix = value("--prefix").ok_or("--prefix is required")?;
    let seq_length: usize = value("--seq-length").map_or(Ok(512), |v| v.parse())?;
    let samples: usize = value("--samples").map_or(Ok(2000), |v| v.parse())?;
    let eod: i64 = value("--eod").map_or(Ok(151_645), |v| v.parse())?;
    let n: usize = value("-n").map_or(Ok(20_000), |v| v.parse())?;
    let config = DataConfig {
        data_path: vec![prefix],
        split: "1,0,0".into(),
        sizes: [Some(samples), Some(0), Some(0)],
        gpt: GptDatasetConfig {
            sequence_length: seq_length,
            eod,
            reset_position_ids: has("--reset-position-ids"),
            eod_mask_loss: has("--eod-mask-loss"),
            reset_attention_mask: has("--attention-mask"),
            create_attention_mask: has("--attention-mask"),
            ..GptDatasetConfig::default()
        },
        cache: CacheMode::Off,
    };
    let started = Instant::now();
    let [train, _, _] = build_datasets(&config)?;
    let train = train.ok_or("no train split")?;
    eprintln!(
        "index build: {:.3} s, {} samples",
        started.elapsed().as_secs_f64(),
        train.len()
    );
    let mut rng = RandomState::new(0);
    let indices: Vec<usize> = (0..n)
        .map(|_| rng.random_interval(train.len() as u64 - 1) as usize)
        .collect();
    let started = Instant::now();
    let mut checksum = 0i64;
    for &i in &indices {
        let s = train.get(i)?;
        checksum = checksum.wrapping_add(s.tokens[0] + s.labels[seq_length - 1]);
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("checksum {checksum}");
    println!(
        "pretrain: {n} samples, {secs:.3} s, {:.0} samples/s",
        n as f64 / secs
    );
    Ok(())
}
