//! Tests of the parent module.
use super::group::BUCKET;
use super::peer::FRAME_ELEMS;
use super::*;
use crate::dist::auth::Token;
use crate::dist::store::StoreServer;
use crate::dist::Communicator;
use std::time::Instant;

const JOB: &str = "job-m";
const WAIT: Duration = Duration::from_secs(10);

fn token() -> Token {
    Token::new("mesh-test-token-0123456789", "test").expect("token")
}

/// Runs `f(mesh)` on `world` threads connected through a fresh store; results by rank.
fn run_world<T: Send>(world: usize, f: impl Fn(Mesh) -> T + Sync) -> Vec<T> {
    let t = token();
    run_world_jobs(&vec![(JOB, &t); world], WAIT, |r| {
        f(r.expect("mesh connects"))
    })
}

/// Like `run_world`, with a mesh job id and token per rank, handing over the connect result.
fn run_world_jobs<T: Send>(
    jobs: &[(&str, &Token)],
    wait: Duration,
    f: impl Fn(Result<Mesh>) -> T + Sync,
) -> Vec<T> {
    let world = jobs.len();
    let store_token = token();
    let server = StoreServer::start("127.0.0.1", 0, JOB, &store_token).expect("store starts");
    let port = server.addr().port();
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .enumerate()
            .map(|(rank, &(job, mesh_token))| {
                let (f, store_token) = (&f, &store_token);
                s.spawn(move || {
                    let mut store = StoreClient::connect("127.0.0.1", port, JOB, store_token, WAIT)
                        .expect("store client");
                    f(Mesh::connect(
                        &mut store, "mesh", job, mesh_token, rank, world, wait,
                    ))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect()
    })
}

/// Deterministic values in [-1, 1) for (rank, index).
fn values(rank: usize, len: usize) -> Vec<f32> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ (rank as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn world_group(mesh: &Mesh) -> TcpGroup {
    mesh.group(&(0..mesh.world()).collect::<Vec<_>>())
        .expect("world group")
}

#[test]
fn all_reduce_sum_is_exact_identical_and_deterministic() {
    for world in 1..=4 {
        let mut lens = vec![0, 1, 3, 1000];
        if world == 2 {
            lens.push(5_000_001);
        }
        let results = run_world(world, |mesh| {
            let mut g = world_group(&mesh);
            assert_eq!((g.rank(), g.size()), (mesh.rank(), world));
            lens.iter()
                .map(|&len| {
                    let mut a = values(mesh.rank(), len);
                    let mut b = a.clone();
                    g.all_reduce_sum(&mut a).expect("all_reduce");
                    g.all_reduce_sum(&mut b).expect("all_reduce again");
                    assert_eq!(bits(&a), bits(&b), "repeated run differs");
                    bits(&a)
                })
                .collect::<Vec<_>>()
        });
        for (i, &len) in lens.iter().enumerate() {
            let inputs: Vec<Vec<f32>> = (0..world).map(|r| values(r, len)).collect();
            for k in 0..len {
                let exact: f64 = inputs.iter().map(|v| f64::from(v[k])).sum();
                let scale: f64 = inputs.iter().map(|v| f64::from(v[k]).abs()).sum();
                let got = f64::from(f32::from_bits(results[0][i][k]));
                assert!(
                    (got - exact).abs() <= 1e-6 * scale + 1e-30,
                    "world {world} len {len}"
                );
            }
            for r in 1..world {
                assert!(
                    results[r][i] == results[0][i],
                    "rank {r} differs (world {world})"
                );
            }
        }
    }
}

#[test]
fn other_collectives() {
    let world = 3;
    run_world(world, |mesh| {
        let mut g = world_group(&mesh);
        let r = mesh.rank();

        let mut m = values(r, 1001);
        m[7] = 100.0 + r as f32;
        g.all_reduce_max(&mut m).expect("all_reduce_max");
        for (k, &got) in m.iter().enumerate() {
            let want = (0..world)
                .map(|q| values(q, 1001)[k])
                .fold(f32::MIN, f32::max);
            assert_eq!(got, if k == 7 { 102.0 } else { want });
        }
        let mut nan = [1.0, 2.0];
        nan[r % 2] = f32::NAN;
        g.all_reduce_max(&mut nan).expect("max with NaN");
        assert!(nan[0].is_nan() && nan[1].is_nan());

        for m in [0, 2, 5] {
            let mut out = vec![0.0; world * m];
            g.all_gather(&values(r, m), &mut out).expect("all_gather");
            let want: Vec<f32> = (0..world).flat_map(|q| values(q, m)).collect();
            assert_eq!(bits(&out), bits(&want));
        }

        for m in [0, 1, 4, 333] {
            check_reduce_scatter(&mut g, world, m);
        }
        assert!(matches!(
            g.reduce_scatter_sum(&[0.0; 4], &mut [0.0; 1]),
            Err(Error::Mismatch(_))
        ));
        assert!(matches!(
            g.all_gather(&[0.0; 2], &mut [0.0; 5]),
            Err(Error::Mismatch(_))
        ));

        let mut b = if r == 2 {
            values(9, 100)
        } else {
            vec![0.0; 100]
        };
        g.broadcast(&mut b, 2).expect("broadcast");
        assert_eq!(bits(&b), bits(&values(9, 100)));

        // A ring of sends: member r sends to r+1 and receives from r-1.
        let (to, from) = ((r + 1) % world, (r + world - 1) % world);
        for len in [0, 10, 70_000] {
            let mut got = vec![0.0; len];
            if r == 0 {
                g.send(&values(r, len), to).expect("send");
                g.recv(&mut got, from).expect("recv");
            } else {
                g.recv(&mut got, from).expect("recv");
                g.send(&values(r, len), to).expect("send");
            }
            assert_eq!(bits(&got), bits(&values(from, len)));
        }
        // Both directions at once, with buffers far larger than the socket buffers.
        let len = 3 << 20;
        let mut got = vec![0.0; len];
        g.send_recv(&values(r, len), to, &mut got, from)
            .expect("send_recv ring");
        assert!(bits(&got) == bits(&values(from, len)));
        if r < 2 {
            let other = 1 - r;
            let mut got = vec![0.0; len];
            g.send_recv(&values(r, len), other, &mut got, other)
                .expect("send_recv pair");
            assert!(bits(&got) == bits(&values(other, len)));
            // Mixed with plain send/recv on the other side.
            let mut got = vec![0.0; 5];
            if r == 0 {
                g.send_recv(&values(0, 5), 1, &mut got, 1)
                    .expect("send_recv");
            } else {
                g.recv(&mut got, 0).expect("recv");
                g.send(&values(1, 5), 0).expect("send");
            }
            assert_eq!(bits(&got), bits(&values(other, 5)));
        }
        assert!(matches!(g.send(&[1.0], r), Err(Error::Mismatch(_))));
        assert!(matches!(g.send(&[1.0], world), Err(Error::Mismatch(_))));
        g.barrier().expect("barrier");
    });
}

fn check_reduce_scatter(g: &mut TcpGroup, world: usize, m: usize) {
    let r = g.rank();
    let mut out = vec![0.0; m];
    g.reduce_scatter_sum(&values(r, world * m), &mut out)
        .expect("reduce_scatter");
    let inputs: Vec<Vec<f32>> = (0..world).map(|q| values(q, world * m)).collect();
    for (k, &got) in out.iter().enumerate() {
        let exact: f64 = inputs.iter().map(|v| f64::from(v[r * m + k])).sum();
        assert!(
            (f64::from(got) - exact).abs() < 1e-5,
            "reduce_scatter m={m}"
        );
    }
}

#[test]
fn large_messages_cross_buckets_and_frames() {
    let world = 3;
    run_world(world, |mesh| {
        let mut g = world_group(&mesh);
        let r = mesh.rank();
        let len = BUCKET + 7;
        let mut a = values(r, len);
        g.all_reduce_sum(&mut a).expect("all_reduce");
        let inputs: Vec<Vec<f32>> = (0..world).map(|q| values(q, len)).collect();
        for (k, &got) in a.iter().enumerate() {
            let want = (inputs[0][k] + inputs[1][k]) + inputs[2][k];
            let other = inputs[0][k] + (inputs[1][k] + inputs[2][k]);
            let alt = (inputs[0][k] + inputs[2][k]) + inputs[1][k];
            assert!(got == want || got == other || got == alt, "k={k}");
        }
        let mut sums = [a.iter().map(|&x| f64::from(x)).sum::<f64>() as f32];
        let mine = sums;
        g.all_reduce_max(&mut sums).expect("max");
        assert_eq!(
            sums[0].to_bits(),
            mine[0].to_bits(),
            "results differ between ranks"
        );
        drop((a, inputs));

        check_reduce_scatter(&mut g, world, BUCKET + 3);

        let m = FRAME_ELEMS + 1;
        let mut out = vec![0.0; world * m];
        g.all_gather(&values(r, m), &mut out).expect("all_gather");
        for q in 0..world {
            assert!(
                bits(&out[q * m..(q + 1) * m]) == bits(&values(q, m)),
                "all_gather {q}"
            );
        }

        let len = FRAME_ELEMS + 5;
        if r == 0 {
            g.send(&values(0, len), 2).expect("send");
        } else if r == 2 {
            let mut got = vec![0.0; len];
            g.recv(&mut got, 0).expect("recv");
            assert!(bits(&got) == bits(&values(0, len)));
        }
        g.barrier().expect("barrier");
    });
}

#[test]
fn subgroups_interleave() {
    run_world(4, |mesh| {
        let r = mesh.rank();
        assert!(matches!(mesh.group(&[0, 0, r]), Err(Error::Mismatch(_))));
        assert!(matches!(mesh.group(&[r, 4]), Err(Error::Mismatch(_))));
        assert!(matches!(
            mesh.group(&[(r + 1) % 4]),
            Err(Error::Mismatch(_))
        ));
        let pair = mesh
            .group(if r % 2 == 0 { &[0, 2] } else { &[3, 1] })
            .expect("pair");
        let mut pair = pair;
        let mut low = if r < 2 {
            Some(mesh.group(&[0, 1]).expect("low"))
        } else {
            None
        };
        let mut world = world_group(&mesh);
        for round in 0..3 {
            let mut x = vec![r as f32 + round as f32; 5];
            pair.all_reduce_sum(&mut x).expect("pair all_reduce");
            let want = if r % 2 == 0 { 2.0 } else { 4.0 } + 2.0 * round as f32;
            assert_eq!(x, vec![want; 5]);
            if let Some(low) = low.as_mut() {
                let mut y = vec![r as f32; 3];
                low.all_reduce_sum(&mut y).expect("low all_reduce");
                assert_eq!(y, vec![1.0; 3]);
                let mut z = vec![0.0; 2];
                low.all_gather(&[r as f32], &mut z).expect("low all_gather");
                assert_eq!(z, vec![0.0, 1.0]);
            }
            let mut w = vec![1.0; 7];
            world.all_reduce_sum(&mut w).expect("world all_reduce");
            assert_eq!(w, vec![4.0; 7]);
        }
        world.barrier().expect("barrier");
    });
}

#[test]
fn different_sizes_are_a_mismatch() {
    let results = run_world(2, |mesh| {
        let mut g = world_group(&mesh);
        let mut x = vec![1.0; 10 + 2 * mesh.rank()];
        g.all_reduce_sum(&mut x)
    });
    assert!(results.iter().all(|r| r.is_err()), "{results:?}");
    assert!(
        results.iter().any(|r| matches!(r, Err(Error::Mismatch(_)))),
        "{results:?}"
    );
}

#[test]
fn a_dead_peer_is_lost_promptly() {
    let results = run_world(2, |mesh| {
        let mut g = world_group(&mesh);
        g.barrier().expect("barrier");
        if mesh.rank() == 1 {
            std::thread::sleep(Duration::from_millis(300));
            drop(g);
            drop(mesh);
            return None;
        }
        let t0 = Instant::now();
        let result = g.all_reduce_sum(&mut [1.0; 1000]);
        let again = g.barrier();
        Some((result, again, t0.elapsed()))
    });
    let Some((result, again, elapsed)) = &results[0] else {
        panic!("rank 0 has a result")
    };
    assert!(
        matches!(result, Err(Error::PeerLost { rank: 1, .. })),
        "{result:?}"
    );
    assert!(
        matches!(again, Err(Error::PeerLost { rank: 1, .. })),
        "{again:?}"
    );
    assert!(*elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[test]
fn another_job_or_token_in_the_mesh_is_rejected() {
    let (t, other) = (
        token(),
        Token::new("another-token-0123456789", "test").expect("token"),
    );
    for jobs in [[("job-x", &t), ("job-y", &t)], [(JOB, &t), (JOB, &other)]] {
        let results = run_world_jobs(&jobs, Duration::from_secs(2), |r| r.err());
        // Rank 1 connects and finds that rank 0 cannot prove its token; rank 0 drops the
        // connection that cannot prove its own, and times out.
        match &results[1] {
            Some(Error::Handshake(msg)) => {
                assert!(
                    msg.contains("cannot prove it holds this job's token"),
                    "{msg}"
                );
                assert!(!msg.contains(t.as_text()) && !msg.contains(other.as_text()));
            }
            r => panic!("expected a handshake error, got {r:?}"),
        }
        assert!(
            matches!(results[0], Some(Error::Timeout { .. })),
            "{:?}",
            results[0]
        );
    }
}

#[test]
fn strangers_at_a_mesh_port_are_dropped() {
    // A peer that connects to rank 0's mesh port and sends junk, or a hello without a valid
    // proof, is dropped; the real rank 1 still gets in.
    let t = token();
    let server = StoreServer::start("127.0.0.1", 0, JOB, &t).expect("store starts");
    let port = server.addr().port();
    std::thread::scope(|s| {
        let rank0 = s.spawn(|| {
            let mut store = StoreClient::connect("127.0.0.1", port, JOB, &t, WAIT).expect("store");
            let mesh = Mesh::connect(&mut store, "m", JOB, &t, 0, 2, WAIT)?;
            world_group(&mesh).barrier()?;
            Ok::<_, Error>(mesh.world())
        });
        let mut store = StoreClient::connect("127.0.0.1", port, JOB, &t, WAIT).expect("store");
        let addr = store.get("m/addr/0", WAIT).expect("rank 0 published");
        let addr: SocketAddr = std::str::from_utf8(&addr)
            .expect("utf8")
            .parse()
            .expect("addr");
        let mut junk = TcpStream::connect(addr).expect("connect");
        junk.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("junk");
        let mut forger = TcpStream::connect(addr).expect("connect");
        let hello = Hello::new(1, 2).expect("hello");
        forger.write_all(&hello.encode()).expect("hello");
        let mut answer = vec![0u8; hello.encode().len() + PROOF_BYTES];
        forger
            .read_exact(&mut answer)
            .expect("rank 0 answers a hello");
        forger
            .write_all(&[0u8; PROOF_BYTES])
            .expect("a wrong proof");
        let mesh = Mesh::connect(&mut store, "m", JOB, &t, 1, 2, WAIT).expect("rank 1 joins");
        world_group(&mesh).barrier().expect("barrier");
        assert_eq!(rank0.join().expect("thread").expect("rank 0 joins"), 2);
        let mut sink = Vec::new();
        forger.set_read_timeout(Some(WAIT)).expect("timeout");
        assert_eq!(
            forger.read_to_end(&mut sink).expect("closed"),
            0,
            "the forger is dropped"
        );
    });
}

#[test]
fn a_missing_rank_times_out() {
    let t = token();
    let server = StoreServer::start("127.0.0.1", 0, JOB, &t).expect("store starts");
    let mut store = StoreClient::connect("127.0.0.1", server.addr().port(), JOB, &t, WAIT)
        .expect("store client");
    let t0 = Instant::now();
    let result = Mesh::connect(&mut store, "m", JOB, &t, 0, 2, Duration::from_millis(300));
    assert!(
        matches!(result, Err(Error::Timeout { .. })),
        "{:?}",
        result.err()
    );
    let result = Mesh::connect(&mut store, "m2", JOB, &t, 1, 2, Duration::from_millis(300));
    assert!(
        matches!(result, Err(Error::Timeout { .. })),
        "{:?}",
        result.err()
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        Mesh::connect(&mut store, "m3", JOB, &t, 2, 2, WAIT),
        Err(Error::Mismatch(_))
    ));
}

#[test]
fn solo_mesh_is_identity() {
    let t = token();
    let server = StoreServer::start("127.0.0.1", 0, JOB, &t).expect("store starts");
    let mut store = StoreClient::connect("127.0.0.1", server.addr().port(), JOB, &t, WAIT)
        .expect("store client");
    let mesh = Mesh::connect(&mut store, "solo", JOB, &t, 0, 1, WAIT).expect("mesh");
    let mut g = mesh.group(&[0]).expect("group");
    let mut x = vec![1.5; 3];
    g.all_reduce_sum(&mut x).expect("identity");
    g.broadcast(&mut x, 0).expect("identity");
    let mut out = vec![0.0; 3];
    g.all_gather(&x, &mut out).expect("identity");
    g.reduce_scatter_sum(&x, &mut out).expect("identity");
    g.barrier().expect("identity");
    assert_eq!(out, vec![1.5; 3]);
    assert!(matches!(g.send(&x, 0), Err(Error::Mismatch(_))));
}
