//! Decode-step timing of the GPU decoder (feature `cuda`): one step (s = 1 token per
//! sequence) at context P = 2^10, 2^12, …, 2^20, for `block` (b = 128, coarse_query =
//! first) and `dense`; B = 1, H = Hkv = 16, d = 64, bf16, γ = 0.5.
//!
//! ```text
//! cargo run --release --features cuda --example gpu_decode_bench -- [--steps N] [--max-log2 L]
//! ```
//!
//! Each row: CUDA-event time over N (default 400) consecutive steps after 50 warm-up
//! steps, per step, launches included. The context grows by the steps themselves (the
//! GPU decoder cannot truncate), which is negligible against P.
//!
//! The block state is computed for real: a prefill of the first 2^16 tokens through
//! the full kernels, then chunks of 2^16 tokens through the step kernel (the same
//! chunk's data repeated). A dense prefill is O(P²); above 2^12 tokens the dense caches
//! keep arbitrary finite values instead (`fill_dense_for_benchmarks`): a step's cost
//! depends only on P, not on the values.

use blockres::gpu::{self, Gpu, GpuDecoder};
use blockres::synthetic::Rng;
use blockres::{CoarseQuery, Config, Structure};
use cudarc::driver::sys::CUevent_flags;
use half::bf16;

const H: usize = 16;
const D: usize = 64;
/// Tokens per prefill call.
const CHUNK: usize = 1 << 16;
/// Largest dense context computed rather than filled.
const DENSE_COMPUTED: usize = 1 << 12;

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .map(|p| {
            args.get(p + 1)
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes an integer"))
        })
        .unwrap_or(default)
}

fn normals(rng: &mut Rng, len: usize) -> Vec<bf16> {
    (0..len).map(|_| bf16::from_f64(rng.normal())).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steps = arg(&args, "--steps", 400).max(200);
    let max_log2 = arg(&args, "--max-log2", 20);
    let warm = 50;
    let g = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gpu_decode_bench: {e}");
            std::process::exit(2);
        }
    };
    println!("# device: {}; PTX: {}", g.name(), gpu::ptx_tool());
    println!(
        "# B=1 H=Hkv={H} d={D} bf16 gamma=0.5; one step = 1 token; {steps} timed steps after \
         {warm} warm-up"
    );
    println!(
        "# block: state computed (prefill {CHUNK} tokens by the full kernels, the rest by \
         steps); dense: computed up to P = {DENSE_COMPUTED}, above that the caches hold \
         arbitrary finite values (a step's cost depends only on P)"
    );
    let mut rng = Rng::new(7);
    // One prefill chunk, reused for every chunk of every P (values do not change costs).
    let (cq, ck, cv) = (
        g.upload(&normals(&mut rng, H * CHUNK * D)).unwrap(),
        g.upload(&normals(&mut rng, H * CHUNK * D)).unwrap(),
        g.upload(&normals(&mut rng, H * CHUNK * D)).unwrap(),
    );
    let mut cy = g.zeros::<bf16>(H * CHUNK * D).unwrap();
    let step: Vec<_> = (0..3)
        .map(|_| g.upload(&normals(&mut rng, H * D)).unwrap())
        .collect();
    let mut sy = g.zeros::<bf16>(H * D).unwrap();
    let f = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let (ea, eb) = (
        g.context().new_event(f).unwrap(),
        g.context().new_event(f).unwrap(),
    );
    let mut rows = Vec::new();
    for (name, cfg) in [
        (
            "block",
            Config {
                gamma: 0.5,
                block_size: 128,
                structure: Structure::Block,
                coarse_query: CoarseQuery::First,
                ..Config::default()
            },
        ),
        (
            "dense",
            Config {
                gamma: 0.5,
                structure: Structure::Dense,
                ..Config::default()
            },
        ),
    ] {
        for log2 in (10..=max_log2).step_by(2) {
            let p = 1usize << log2;
            let cap = p + warm + steps;
            let mut dec = GpuDecoder::new(&g, &cfg, 1, H, H, D, D, cap).unwrap();
            let t0 = std::time::Instant::now();
            if name == "dense" && p > DENSE_COMPUTED {
                dec.fill_dense_for_benchmarks(p).unwrap();
            } else {
                if p < CHUNK {
                    let n = H * p * D;
                    let up = |x: Vec<bf16>| g.upload(&x).unwrap();
                    let (q, k, v) = (
                        up(normals(&mut rng, n)),
                        up(normals(&mut rng, n)),
                        up(normals(&mut rng, n)),
                    );
                    let mut y = g.zeros::<bf16>(n).unwrap();
                    dec.extend(&q, &k, &v, &mut y, p).unwrap();
                } else {
                    // P is a power of two: a whole number of chunks.
                    while dec.len() < p {
                        dec.extend(&cq, &ck, &cv, &mut cy, CHUNK).unwrap();
                    }
                }
            }
            g.synchronize().unwrap();
            let prefill = t0.elapsed().as_secs_f64();
            let [q, k, v] = &step[..] else { unreachable!() };
            for _ in 0..warm {
                dec.extend(q, k, v, &mut sy, 1).unwrap();
            }
            ea.record(g.stream()).unwrap();
            for _ in 0..steps {
                dec.extend(q, k, v, &mut sy, 1).unwrap();
            }
            eb.record(g.stream()).unwrap();
            eb.synchronize().unwrap();
            let us = ea.elapsed_ms(&eb).unwrap() as f64 * 1e3 / steps as f64;
            let y = g.download(&sy).unwrap();
            assert!(
                y.iter().all(|x| x.to_f32().is_finite()),
                "non-finite step output"
            );
            println!("# {name} P = {p}: state built in {prefill:.2} s");
            rows.push(format!("{name:9} {p:8} {us:11.2}"));
        }
    }
    println!("structure        P us_per_step");
    for r in rows {
        println!("{r}");
    }
}
