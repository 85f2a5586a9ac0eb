//! Time and accuracy of every structure against sequence length, on the same inputs.
//!
//! ```text
//! cargo run --release --example sparse_scaling -- [--max-log2 18] [--dense-max-log2 14]
//!     [--topk-max-log2 16] [--d 64] [--gamma 0.5] [--min-log2 10]
//! ```
//!
//! One head, `dk = dv = d`. Two inputs per length: `segmented` (block-diagonal
//! attention, segments of ~64 tokens, strength 4) and plain Gaussian (strength 0).
//! The error is relative (Frobenius) against the exact dense resolvent, where dense
//! is affordable. Times are the best of a few runs (one run above 2^14). Ends with the
//! fitted time exponents of `strided` and `fixed` over n = 2^12 … 2^max. `--seq` runs
//! on one thread and times its CPU time, which a busy machine disturbs far less.

use std::time::Instant;

use blockres::synthetic::segmented;
use blockres::{Config, Par, Structure, TensorRef, resolvent_attention_alloc};

fn arg(args: &[String], name: &str, default: f64) -> f64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// CPU time of the calling thread (Linux: `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`,
/// from the C library std links anyway), so `--seq` timings hold up on a busy machine;
/// `None` elsewhere (wall time is used then).
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_seconds() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    unsafe extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `t` is a valid, writable timespec (64-bit Linux layout).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut t) };
    (rc == 0).then(|| t.sec as f64 + t.nsec as f64 * 1e-9)
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_seconds() -> Option<f64> {
    None
}

fn rel_err(y: &[f32], r: &[f32]) -> f64 {
    let num: f64 = y.iter().zip(r).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = r.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Least-squares slope of log t against log n.
fn exponent(pts: &[(f64, f64)]) -> f64 {
    let m = pts.len() as f64;
    let (sx, sy) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), (n, t)| (a + n.ln(), b + t.ln()));
    let (mx, my) = (sx / m, sy / m);
    let (num, den) = pts.iter().fold((0.0, 0.0), |(a, b), (n, t)| {
        (a + (n.ln() - mx) * (t.ln() - my), b + (n.ln() - mx).powi(2))
    });
    num / den
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let epoch = Instant::now();
    let max_log2 = arg(&args, "--max-log2", 18.0) as u32;
    let min_log2 = arg(&args, "--min-log2", 10.0) as u32;
    let dense_max = arg(&args, "--dense-max-log2", 14.0) as u32;
    let topk_max = arg(&args, "--topk-max-log2", 16.0) as u32;
    let d = arg(&args, "--d", 64.0) as usize;
    let gamma = arg(&args, "--gamma", 0.5) as f32;
    // `--seq`: one thread, timed by its CPU time rather than the wall clock.
    let seq = args.iter().any(|a| a == "--seq");
    let par = if seq { Par::Seq } else { Par::rayon(0) };
    let clock = || {
        if seq {
            thread_cpu_seconds().unwrap_or_else(|| epoch.elapsed().as_secs_f64())
        } else {
            epoch.elapsed().as_secs_f64()
        }
    };
    // `--only NAME` restricts the run to one structure (plus dense for the error).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let structures = [
        Structure::Dense,
        Structure::Block,
        Structure::Strided { stride: 0 },
        Structure::Fixed {
            block: 0,
            summary: 0,
        },
        Structure::TopK {
            alpha: 0.0,
            c_exp: 0.0,
        },
    ];
    if seq {
        println!("# sparse_scaling: one head, d = {d}, γ = {gamma}, one thread, thread CPU time");
    } else {
        println!(
            "# sparse_scaling: one head, d = {d}, γ = {gamma}, {} threads, wall time",
            rayon::current_num_threads()
        );
    }
    println!("| input | n | structure | time (ms) | rel. error vs dense |");
    println!("|---|---:|---|---:|---:|");
    let mut fits: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (label, strength) in [("segmented", 4.0f32), ("gaussian", 0.0)] {
        let mut pts = [Vec::new(), Vec::new()];
        for lg in min_log2..=max_log2 {
            let n = 1usize << lg;
            let x = segmented([1, 1, 1, n, d, d], 64, strength, 1234 + lg as u64);
            let shape = [1, 1, n, d];
            let (q, k, v) = (
                TensorRef::new(&x.q, shape).unwrap(),
                TensorRef::new(&x.k, shape).unwrap(),
                TensorRef::new(&x.v, shape).unwrap(),
            );
            let mut dense: Option<Vec<f32>> = None;
            for s in structures {
                let affordable = match s {
                    Structure::Dense => lg <= dense_max,
                    Structure::TopK { .. } => lg <= topk_max,
                    _ => true,
                };
                let wanted = only
                    .as_deref()
                    .is_none_or(|o| o == s.name() || s == Structure::Dense);
                if !affordable || !wanted {
                    continue;
                }
                let cfg = Config {
                    gamma,
                    structure: s,
                    ..Config::default()
                };
                let reps = if lg <= 12 {
                    5
                } else if lg <= 14 {
                    2
                } else {
                    1
                };
                let mut best = f64::INFINITY;
                let mut y = Vec::new();
                for _ in 0..reps {
                    let t0 = clock();
                    y = resolvent_attention_alloc(q, k, v, &cfg, par).unwrap();
                    best = best.min(clock() - t0);
                }
                let err = match (&dense, s) {
                    (_, Structure::Dense) => "0 (reference)".to_string(),
                    (Some(r), _) => format!("{:.3e}", rel_err(&y, r)),
                    (None, _) => "–".to_string(),
                };
                println!(
                    "| {label} | 2^{lg} | {} | {:.2} | {err} |",
                    s.name(),
                    best * 1e3
                );
                match s {
                    Structure::Dense => dense = Some(y),
                    Structure::Strided { .. } if lg >= 12 => pts[0].push((n as f64, best)),
                    Structure::Fixed { .. } if lg >= 12 => pts[1].push((n as f64, best)),
                    _ => {}
                }
            }
        }
        let [a, b] = pts;
        fits.push((format!("{label} strided"), a));
        fits.push((format!("{label} fixed"), b));
    }
    println!();
    for (name, pts) in fits {
        if pts.len() >= 2 {
            println!(
                "fitted time exponent, {name}, n = 2^12 … 2^{max_log2}: {:.3}",
                exponent(&pts)
            );
        }
    }
}
