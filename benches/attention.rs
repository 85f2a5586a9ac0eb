//! Criterion benchmarks: dense and block resolvent attention across n and d, one head,
//! causal, f32 (plus bidirectional block and the half types at one size), reported as
//! tokens per second.
//!
//! `cargo bench --bench attention` (all), `cargo bench --bench attention -- block/`
//! (one group).

use std::hint::black_box;
use std::time::Duration;

use blockres::half::{bf16, f16};
use blockres::synthetic::segmented;
use blockres::{
    Config, Element, Par, Structure, TensorMut, TensorRef, Workspace, auto_block_size,
    resolvent_attention_with,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

struct Head<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    y: Vec<T>,
    shape: [usize; 4],
}

fn head<T: Element>(heads: usize, n: usize, d: usize) -> Head<T> {
    let x = segmented([1, heads, heads, n, d, d], auto_block_size(n, d), 8.0, 7);
    let conv = |v: &[f32]| v.iter().map(|&e| T::from_f32(e)).collect::<Vec<T>>();
    Head {
        q: conv(&x.q),
        k: conv(&x.k),
        v: conv(&x.v),
        y: vec![T::default(); x.q.len()],
        shape: [1, heads, n, d],
    }
}

fn run<T: Element>(h: &mut Head<T>, cfg: &Config, par: Par, ws: &Workspace) {
    resolvent_attention_with(
        TensorRef::new(&h.q, h.shape).unwrap(),
        TensorRef::new(&h.k, h.shape).unwrap(),
        TensorRef::new(&h.v, h.shape).unwrap(),
        TensorMut::new(&mut h.y, h.shape).unwrap(),
        cfg,
        par,
        ws,
    )
    .unwrap();
    black_box(&h.y);
}

fn structures(c: &mut Criterion) {
    let ws = Workspace::new();
    for (name, structure, ns) in [
        ("dense", Structure::Dense, &[1024usize, 4096][..]),
        ("block", Structure::Block, &[1024, 4096, 16384, 65536][..]),
    ] {
        let mut g = c.benchmark_group(name);
        g.sample_size(10).measurement_time(Duration::from_secs(3));
        for &d in &[64usize, 128] {
            for &n in ns {
                let mut h = head::<f32>(1, n, d);
                let cfg = Config {
                    structure,
                    ..Config::default()
                };
                g.throughput(Throughput::Elements(n as u64));
                g.bench_function(BenchmarkId::new(format!("d{d}"), n), |b| {
                    b.iter(|| run(&mut h, &cfg, Par::rayon(0), &ws))
                });
            }
        }
        g.finish();
    }
}

fn variants(c: &mut Criterion) {
    let ws = Workspace::new();
    let n = 16384;
    let mut g = c.benchmark_group("block-variants");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(n as u64));
    let causal = Config::default();
    let mut h32 = head::<f32>(1, n, 64);
    g.bench_function("f32", |b| {
        b.iter(|| run(&mut h32, &causal, Par::rayon(0), &ws))
    });
    let mut h16 = head::<f16>(1, n, 64);
    g.bench_function("f16", |b| {
        b.iter(|| run(&mut h16, &causal, Par::rayon(0), &ws))
    });
    let mut hb = head::<bf16>(1, n, 64);
    g.bench_function("bf16", |b| {
        b.iter(|| run(&mut hb, &causal, Par::rayon(0), &ws))
    });
    let bidir = Config {
        causal: false,
        ..causal
    };
    g.bench_function("f32-bidirectional", |b| {
        b.iter(|| run(&mut h32, &bidir, Par::rayon(0), &ws))
    });
    g.finish();

    // Thread scaling: 16 heads of n = 8192, sequential vs the rayon pool.
    let mut g = c.benchmark_group("threads");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let mut h = head::<f32>(16, 8192, 64);
    g.throughput(Throughput::Elements(16 * 8192));
    g.bench_function("H16-n8192-seq", |b| {
        b.iter(|| run(&mut h, &causal, Par::Seq, &ws))
    });
    g.bench_function("H16-n8192-rayon", |b| {
        b.iter(|| run(&mut h, &causal, Par::rayon(0), &ws))
    });
    g.finish();
}

criterion_group!(benches, structures, variants);
criterion_main!(benches);
