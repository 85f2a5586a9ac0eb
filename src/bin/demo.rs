//! The main job: dense vs blockwise resolvent attention on synthetic entity-tracking
//! inputs (attention concentrated in segments), one head, d = 64, f32, causal.
//! Prints n, both times, the speed-up and the relative difference of block to dense.
//!
//! `blockres-demo [n ...]` overrides the sequence lengths.

use std::time::Instant;

use blockres::synthetic::segmented;
use blockres::{Config, Par, Structure, TensorRef, auto_block_size, resolvent_attention_alloc};

fn time<F: FnMut() -> Vec<f32>>(mut f: F) -> (f64, Vec<f32>) {
    let mut best = f64::INFINITY;
    let mut out = Vec::new();
    let mut spent = 0.0;
    // Best of a few runs, bounded in total time.
    for _ in 0..5 {
        let t = Instant::now();
        out = f();
        let s = t.elapsed().as_secs_f64();
        best = best.min(s);
        spent += s;
        if spent > 3.0 {
            break;
        }
    }
    (best, out)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let ns = if args.is_empty() {
        vec![1024, 4096, 16384]
    } else {
        args
    };
    let d = 64;
    let gamma = 0.5;
    println!(
        "blockres: resolvent attention Y = (1-γ)·A·(I-γA)⁻¹·V, γ = {gamma}, causal, one head, d = {d}, f32"
    );
    println!("inputs: synthetic, attention concentrated in segments of ~b tokens\n");
    println!(
        "{:>8} {:>5} {:>12} {:>12} {:>9} {:>14}",
        "n", "b", "dense (ms)", "block (ms)", "speed-up", "rel. diff"
    );
    for n in ns {
        let b = auto_block_size(n, d);
        let x = segmented([1, 1, 1, n, d, d], b, 8.0, 2024 + n as u64);
        let q = TensorRef::new(&x.q, x.q_shape()).expect("shape");
        let k = TensorRef::new(&x.k, x.k_shape()).expect("shape");
        let v = TensorRef::new(&x.v, x.v_shape()).expect("shape");
        let run = |structure| {
            let cfg = Config {
                gamma,
                structure,
                ..Config::default()
            };
            move || resolvent_attention_alloc(q, k, v, &cfg, Par::rayon(0)).expect("valid inputs")
        };
        let (tb, yb) = time(run(Structure::Block));
        let (td, yd) = time(run(Structure::Dense));
        let num: f64 = yb
            .iter()
            .zip(&yd)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let den: f64 = yd.iter().map(|b| (*b as f64).powi(2)).sum();
        println!(
            "{:>8} {:>5} {:>12.2} {:>12.2} {:>8.1}× {:>14.3e}",
            n,
            b,
            td * 1e3,
            tb * 1e3,
            td / tb,
            (num / den).sqrt()
        );
    }
}
