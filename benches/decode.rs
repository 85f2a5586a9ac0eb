//! Criterion benchmarks of incremental decoding (SPEC §6): the time of one step (one
//! token appended to a context of P tokens) for `block` and `dense`, one head, d = 64,
//! f32, through the Rust API. One iteration is one token.
//!
//! `cargo bench --bench decode` (all), `cargo bench --bench decode -- block/` (one group).
//!
//! A block step attends to its own block's earlier tokens and, at the first token of a
//! block, computes one coarse logit per finished block: O(b·d) per token plus O(m·d)
//! once per block. The timed tokens are P..P+b−1 (a whole block but its last token,
//! whose completion does not change the cost), after which the decoder is truncated
//! back to P, untimed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use blockres::synthetic::Rng;
use blockres::{CoarseQuery, Config, Decoder, Par, Structure, TensorMut, TensorRef};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const D: usize = 64;
const B: usize = 128;

fn normals(rng: &mut Rng, len: usize) -> Vec<f32> {
    rng.normals(len)
}

fn extend(dec: &mut Decoder, q: &[f32], k: &[f32], v: &[f32], y: &mut [f32]) {
    let s = q.len() / D;
    dec.extend(
        TensorRef::new(q, [1, 1, s, D]).unwrap(),
        TensorRef::new(k, [1, 1, s, D]).unwrap(),
        TensorRef::new(v, [1, 1, s, D]).unwrap(),
        TensorMut::new(y, [1, 1, s, D]).unwrap(),
        Par::rayon(0),
    )
    .unwrap();
}

/// A decoder holding `p` tokens: a real prefill where it takes seconds at most, else
/// (dense, p > 2^14) a filled cache of the same size.
fn prefilled(cfg: &Config, p: usize, rng: &mut Rng) -> Decoder {
    let mut dec = Decoder::new(cfg, 1, 1, 1, D, D).unwrap();
    dec.reserve(p + B).unwrap();
    if cfg.structure == Structure::Dense && p > 1 << 14 {
        let row = normals(rng, D);
        dec.fill_dense_for_benchmarks(p, &row, &row).unwrap();
    } else {
        let (q, k, v) = (
            normals(rng, p * D),
            normals(rng, p * D),
            normals(rng, p * D),
        );
        let mut y = vec![0.0; p * D];
        extend(&mut dec, &q, &k, &v, &mut y);
    }
    dec
}

fn steps(c: &mut Criterion) {
    let mut rng = Rng::new(11);
    for (name, structure, chunk) in [
        ("block", Structure::Block, B - 1),
        ("dense", Structure::Dense, 1),
    ] {
        let cfg = Config {
            gamma: 0.9,
            block_size: B,
            structure,
            coarse_query: CoarseQuery::First,
            ..Config::default()
        };
        let mut g = c.benchmark_group(name);
        g.sample_size(10)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500))
            .throughput(Throughput::Elements(1));
        for log_p in (10..=20).step_by(2) {
            let p = 1usize << log_p;
            let mut dec = prefilled(&cfg, p, &mut rng);
            let (q, k, v) = (
                normals(&mut rng, chunk * D),
                normals(&mut rng, chunk * D),
                normals(&mut rng, chunk * D),
            );
            let mut y = vec![0.0; D];
            g.bench_function(BenchmarkId::new("step", format!("P=2^{log_p}")), |bch| {
                bch.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    let mut done = 0u64;
                    while done < iters {
                        let n = chunk.min((iters - done) as usize);
                        let t0 = Instant::now();
                        for i in 0..n {
                            let r = i * D..(i + 1) * D;
                            extend(&mut dec, &q[r.clone()], &k[r.clone()], &v[r], &mut y);
                        }
                        spent += t0.elapsed();
                        black_box(&y);
                        dec.truncate(p).unwrap();
                        done += n as u64;
                    }
                    spent
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, steps);
criterion_main!(benches);
