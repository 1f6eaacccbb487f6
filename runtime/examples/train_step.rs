//! Benchmark: one training step (forward, loss, backward, AdamW) of the bench model of
//! compute.md — the Rust side of `scripts/bench/bench-train.sh`, whose peer is
//! `scripts/bench/torch_train_step.py` (PyTorch eager, same model, data and threads).
//!
//! `RAYON_NUM_THREADS=2 cargo run --release --example train_step -- [--steps 10] [--warmup 2]
//! [--bf16]` (`--bf16`: `compute_dtype: bfloat16`, the peer then runs under autocast).
//! Last line: `pretrain: <median s/step> s/step, <tokens/s> tokens/s, peak RSS <MB> MB`.

use std::time::Instant;

use pretrain::data::rng::RandomState;
use pretrain::model::qwen3::{Activations, Batch, Qwen3};
use pretrain::model::Qwen3Config;
use pretrain::optim::adamw::{adamw_step, AdamWConfig, AdamWState};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(default)
    };
    let (steps, warmup) = (value("--steps", 10), value("--warmup", 2));
    let (b, t) = (value("--batch", 4), value("--seq", 256));
    let config = Qwen3Config {
        vocab_size: 32_000,
        hidden_size: 512,
        intermediate_size: 1536,
        num_hidden_layers: 8,
        num_attention_heads: 8,
        num_key_value_heads: 4,
        head_dim: 64,
        max_position_embeddings: 4096,
        rope_theta: 1e6,
        rms_norm_eps: 1e-6,
        tie_word_embeddings: false,
        initializer_range: 0.02,
        hidden_act: "silu".into(),
        attention_bias: false,
        bos_token_id: None,
        eos_token_id: None,
    };
    let mut model = Qwen3::init(config.clone(), 1234)?;
    if args.iter().any(|a| a == "--bf16") {
        model.compute = pretrain::tensor::gemm::Compute::Bf16;
    }
    let n_params = model.layout.total;
    let mut acts = Activations::new(&config, b, t);
    let mut grads = vec![0.0f32; n_params];
    let mut opt = AdamWState::new(n_params);
    let cfg = AdamWConfig {
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let decay: Vec<(usize, usize, bool)> = model
        .layout
        .specs
        .iter()
        .map(|s| (s.offset, s.len, s.decays()))
        .collect();
    let mut rng = RandomState::new(1234);
    let positions: Vec<i64> = (0..b).flat_map(|_| 0..t as i64).collect();
    let mask = vec![1.0f32; b * t];
    println!(
        "pretrain: {} parameters, {} threads, batch {b} x seq {t}",
        n_params,
        rayon::current_num_threads()
    );
    let mut times = Vec::new();
    for step in 0..steps {
        let tokens: Vec<u32> = (0..b * (t + 1))
            .map(|_| rng.random_interval(31_999) as u32)
            .collect();
        let ids: Vec<u32> = (0..b)
            .flat_map(|r| tokens[r * (t + 1)..r * (t + 1) + t].to_vec())
            .collect();
        let labels: Vec<u32> = (0..b)
            .flat_map(|r| tokens[r * (t + 1) + 1..(r + 1) * (t + 1)].to_vec())
            .collect();
        let batch = Batch {
            ids: &ids,
            labels: &labels,
            loss_mask: &mask,
            positions: &positions,
            b,
            t,
        };
        let started = Instant::now();
        grads.fill(0.0);
        let loss = model.forward(&mut acts, &batch)?;
        model.backward(&mut acts, &batch, &mut grads, 1.0);
        adamw_step(&mut model.params, &grads, &mut opt, &decay, &cfg, 1e-3);
        let dt = started.elapsed().as_secs_f64();
        let tag = if step < warmup { " (warm-up)" } else { "" };
        println!("step {step}: {dt:.3} s, loss {loss:.4}{tag}");
        if step >= warmup {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "pretrain: {med:.3} s/step, {:.0} tokens/s, peak RSS {:.0} MB",
        (b * t) as f64 / med,
        peak_rss_mb()
    );
    Ok(())
}
