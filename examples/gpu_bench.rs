//! GPU benchmark of the causal block operator (feature `cuda`):
//! B = 1, H = 16, d = 64, bf16, automatic block size, timed with CUDA events.
//!
//! ```text
//! cargo run --release --features cuda --example gpu_bench -- [--dump DIR] [--block B | --blocks B1,B2] [--bidirectional] [--d D] [N ...]
//! ```
//! Prints one row per n: median and best time over 50 runs after 1 s and 5 runs of
//! warm-up, the
//! bytes that must cross memory at least (Q, K, V read once, Y written once) over the
//! median time, and that rate against a measured device-to-device copy. `--dump DIR`
//! writes the inputs and output of the smallest n (raw bf16) for the cross-check in
//! cuda/bench_torch.py.

use blockres::gpu::{self, Gpu, GpuWorkspace};
use blockres::gpu::{auto_block_size, auto_block_size_bidirectional};
use blockres::synthetic::Rng;
use blockres::{Config, Dims};
use cudarc::driver::sys::CUevent_flags;
use half::bf16;

fn events(g: &Gpu) -> (cudarc::driver::CudaEvent, cudarc::driver::CudaEvent) {
    let f = Some(CUevent_flags::CU_EVENT_DEFAULT);
    (
        g.context().new_event(f).unwrap(),
        g.context().new_event(f).unwrap(),
    )
}

fn median(mut x: Vec<f32>) -> f32 {
    x.sort_by(|a, b| a.partial_cmp(b).unwrap());
    x[x.len() / 2]
}

/// Device-to-device copy rate (bytes read + written per second) of a 1 GiB buffer.
fn copy_rate(g: &Gpu) -> f64 {
    let len = 1usize << 28; // f32 → 1 GiB
    let src = g.zeros::<f32>(len).unwrap();
    let mut dst = g.zeros::<f32>(len).unwrap();
    let (a, b) = events(g);
    let mut t = Vec::new();
    for i in 0..13 {
        a.record(g.stream()).unwrap();
        g.stream().memcpy_dtod(&src, &mut dst).unwrap();
        b.record(g.stream()).unwrap();
        b.synchronize().unwrap();
        if i >= 3 {
            t.push(a.elapsed_ms(&b).unwrap());
        }
    }
    2.0 * (len * 4) as f64 / (median(t) as f64 * 1e-3)
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut dump = None;
    if let Some(p) = args.iter().position(|a| a == "--dump") {
        dump = Some(args[p + 1].clone());
        args.drain(p..p + 2);
    }
    // `--d 128`: the head width (64 by default).
    let mut d = 64usize;
    if let Some(p) = args.iter().position(|a| a == "--d") {
        d = args[p + 1].parse().expect("--d takes an integer");
        args.drain(p..p + 2);
    }
    let mut blocks = vec![0usize];
    if let Some(p) = args.iter().position(|a| a == "--block") {
        blocks.push(args[p + 1].parse().expect("--block takes an integer"));
        args.drain(p..p + 2);
    }
    // `--bidirectional`: causal = 0 (cuda/bidir.cu).
    let causal = match args.iter().position(|a| a == "--bidirectional") {
        Some(p) => {
            args.remove(p);
            false
        }
        None => true,
    };
    // `--blocks 64,128`: exactly these block sizes (0 = automatic), for profiling one.
    if let Some(p) = args.iter().position(|a| a == "--blocks") {
        blocks = args[p + 1]
            .split(',')
            .map(|x| x.parse().expect("--blocks takes integers"))
            .collect();
        args.drain(p..p + 2);
    }
    let ns: Vec<usize> = if args.is_empty() {
        vec![4096, 16384, 32768, 65536]
    } else {
        args.iter()
            .map(|a| a.parse().expect("n must be an integer"))
            .collect()
    };
    let g = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gpu_bench: {e}");
            std::process::exit(2);
        }
    };
    let copy = copy_rate(&g);
    println!(
        "device: {}; PTX: {}; d2d copy {:.0} GB/s (read+write)",
        g.name(),
        gpu::ptx_tool(),
        copy / 1e9
    );
    let h = 16usize;
    let cfg = Config {
        gamma: 0.5,
        causal,
        ..Config::default()
    };
    let mut rows = Vec::new();
    let mut ws = GpuWorkspace::new();
    for (idx, &n) in ns.iter().enumerate() {
        let len = h * n * d;
        let mut rng = Rng::new(42 + n as u64);
        let mk = |rng: &mut Rng| -> Vec<bf16> {
            rng.normals(len).into_iter().map(bf16::from_f32).collect()
        };
        let (q, k, v) = (mk(&mut rng), mk(&mut rng), mk(&mut rng));
        let dims = Dims::from_shapes([1, h, n, d], [1, h, n, d], [1, h, n, d]).unwrap();
        let (dq, dk, dv) = (
            g.upload(&q).unwrap(),
            g.upload(&k).unwrap(),
            g.upload(&v).unwrap(),
        );
        for &block in &blocks {
            let cfg = Config {
                block_size: block,
                ..cfg
            };
            let mut dy = g.upload(&vec![bf16::from_f32(f32::NAN); len]).unwrap();
            let (a, b) = events(&g);
            let mut t = Vec::new();
            // Warm-up for at least 1 s so that the clocks have ramped up (an idle H100
            // sits at a low clock; a short warm-up left small n timed partly at it).
            let t0 = std::time::Instant::now();
            while t0.elapsed().as_secs_f32() < 1.0 {
                gpu::resolvent_attention_device(&g, &dq, &dk, &dv, &mut dy, &dims, &cfg, &mut ws)
                    .unwrap();
                g.synchronize().unwrap();
            }
            for i in 0..55 {
                a.record(g.stream()).unwrap();
                gpu::resolvent_attention_device(&g, &dq, &dk, &dv, &mut dy, &dims, &cfg, &mut ws)
                    .unwrap();
                b.record(g.stream()).unwrap();
                b.synchronize().unwrap();
                if i >= 5 {
                    t.push(a.elapsed_ms(&b).unwrap());
                }
            }
            ws.check_finite(&g).unwrap();
            let y = g.download(&dy).unwrap();
            assert!(
                y.iter().all(|x| x.to_f32().is_finite()),
                "n = {n}: output not fully written"
            );
            let best = t.iter().cloned().fold(f32::INFINITY, f32::min);
            let med = median(t);
            let bytes = 4.0 * (len * 2) as f64;
            let bw = bytes / (med as f64 * 1e-3);
            let bsz = if block == 0 && !causal {
                auto_block_size_bidirectional(n, d)
            } else if block == 0 {
                auto_block_size(n, d)
            } else {
                block.min(n)
            };
            let how = if block == 0 { "auto" } else { "fixed" };
            rows.push(format!(
                "| {n:6} | {bsz:4} {how:5} | {:5} | {med:8.3} | {best:8.3} | {:7.0} | {:5.1}% |",
                n.div_ceil(bsz),
                bw / 1e9,
                100.0 * bw / copy
            ));
            if idx == 0
                && block == 0
                && let Some(dir) = &dump
            {
                std::fs::create_dir_all(dir).unwrap();
                for (name, x) in [("q", &q), ("k", &k), ("v", &v), ("y", &y)] {
                    let bytes: Vec<u8> = x.iter().flat_map(|e| e.to_bits().to_le_bytes()).collect();
                    std::fs::write(format!("{dir}/{name}_{n}.bf16"), bytes).unwrap();
                }
            }
        }
    }
    let mask = if causal { "causal" } else { "bidirectional" };
    println!("blockres block, {mask}, bf16, B=1 H=16 d={d}, gamma=0.5");
    println!("|      n | b          |     m | median ms | best ms | GB/s min-bytes | of copy |");
    println!("|-------:|:-----------|------:|----------:|--------:|--------:|--------:|");
    for r in rows {
        println!("{r}");
    }
}
