//! All-reduce bus bandwidth on loopback against a plain memcpy of the same bytes, in one
//! invocation: `ranks` threads, each with its own store client and mesh connections (TCP over
//! 127.0.0.1, as separate processes would use), sum `mib` MiB of f32 per rank. Bus bandwidth
//! follows nccl-tests: `bytes · 2(n−1)/n / time`. Each round prints both and their ratio; the
//! last line is the median and spread of the ratios.
//!
//! `cargo run --release -p pretrain-runtime --example allreduce -- [ranks=2] [mib=64] [rounds=5]`

use std::time::{Duration, Instant};

use pretrain::dist::auth::Token;
use pretrain::dist::store::{StoreClient, StoreServer};
use pretrain::dist::tcp::Mesh;
use pretrain::dist::Communicator;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ranks = args.first().copied().unwrap_or(2);
    let mib = args.get(1).copied().unwrap_or(64);
    let rounds = args.get(2).copied().unwrap_or(5);
    let n = mib * (1 << 20) / 4;
    let bytes = (n * 4) as f64;
    let token = Token::generate()?;
    let server = StoreServer::start("127.0.0.1", 0, "bench", &token)?;
    let port = server.addr().port();
    let timeout = Duration::from_secs(30);
    // Per round: every rank's all-reduce time (the slowest one counts).
    let times: Vec<Vec<f64>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ranks)
            .map(|rank| {
                let token = &token;
                s.spawn(move || -> Result<Vec<f64>, pretrain::dist::Error> {
                    let mut store =
                        StoreClient::connect("127.0.0.1", port, "bench", token, timeout)?;
                    let mesh =
                        Mesh::connect(&mut store, "bench", "bench", token, rank, ranks, timeout)?;
                    let mut group = mesh.group(&(0..ranks).collect::<Vec<_>>())?;
                    let mut buf: Vec<f32> = (0..n).map(|i| (i % 97) as f32).collect();
                    group.all_reduce_sum(&mut buf)?; // warm-up
                    let mut t = Vec::new();
                    for _ in 0..rounds {
                        group.barrier()?;
                        let start = Instant::now();
                        group.all_reduce_sum(&mut buf)?;
                        t.push(start.elapsed().as_secs_f64());
                    }
                    Ok(t)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread").expect("all-reduce"))
            .collect()
    });
    let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let mut dst = vec![0.0f32; n];
    dst.copy_from_slice(&src); // warm-up (page faults)
    let mut ratios = Vec::new();
    for r in 0..rounds {
        let slowest = times.iter().map(|t| t[r]).fold(0.0, f64::max);
        let bus = bytes * 2.0 * (ranks - 1) as f64 / ranks as f64 / slowest;
        let start = Instant::now();
        dst.copy_from_slice(&src);
        let copy = bytes / start.elapsed().as_secs_f64();
        std::hint::black_box(&dst);
        let ratio = bus / copy;
        ratios.push(ratio);
        println!(
            "round {}: all-reduce {ranks} ranks {mib} MiB: {:.0} ms, bus {:.2} GB/s | memcpy {:.2} GB/s | ratio {ratio:.3}",
            r + 1,
            slowest * 1e3,
            bus / 1e9,
            copy / 1e9
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "all-reduce bus bandwidth / memcpy bandwidth ({ranks} ranks, {mib} MiB): median {:.3} (min {:.3}, max {:.3}, {rounds} rounds)",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok(())
}
