//! GPU kernels against an independent float64 reference (feature `cuda`; needs an
//! NVIDIA GPU: without one these tests fail, they never pass vacuously).
//!
//! The reference builds the block-structured attention matrix A of SPEC §2 entry by
//! entry in f64 (small n) and solves (I − γA)·W = A·V by forward substitution (causal)
//! or Gaussian elimination with partial pivoting (bidirectional, `tests/common`),
//! Y = (1−γ)·W: it shares no code with the kernels or the CPU path.
#![cfg(feature = "cuda")]

mod common;

use blockres::gpu::{self, Gpu, GpuElement, GpuWorkspace};
use blockres::synthetic::Rng;
use blockres::{CoarseQuery, Config, Dims, Error, Structure, TensorRef};
use half::{bf16, f16};

#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    n: usize,
    dk: usize,
    dv: usize,
    block: usize, // 0 = auto; usize::MAX = Structure::Dense
    gamma: f32,
    qgain: f64,
    causal: bool,
    /// `coarse_query = first`: the block's first query in the coarse logits.
    first: bool,
}

/// Reference for one head: q (n×dk), k (n×dk), v (n×dv) in f64, block size b.
#[allow(clippy::too_many_arguments)]
fn reference_head(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    n: usize,
    dk: usize,
    dv: usize,
    b: usize,
    scale: f64,
    gamma: f64,
    causal: bool,
    first: bool,
) -> Vec<f64> {
    let m = n.div_ceil(b);
    let mean = |x: &[f64], d: usize, j: usize| -> Vec<f64> {
        let (r0, r1) = (j * b, ((j + 1) * b).min(n));
        let mut o = vec![0.0; d];
        for r in r0..r1 {
            for c in 0..d {
                o[c] += x[r * d + c];
            }
        }
        o.iter().map(|s| s / (r1 - r0) as f64).collect()
    };
    let qb: Vec<Vec<f64>> = (0..m)
        .map(|j| {
            if first {
                q[j * b * dk..(j * b + 1) * dk].to_vec()
            } else {
                mean(q, dk, j)
            }
        })
        .collect();
    let kb: Vec<Vec<f64>> = (0..m).map(|j| mean(k, dk, j)).collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    // Row i of A: logits of every allowed j (local: exact; other blocks: coarse).
    let mut a = vec![0.0f64; n * n];
    for i in 0..n {
        let bi = i / b;
        let last = if causal { i } else { n - 1 };
        let mut lg = vec![f64::NEG_INFINITY; n];
        for j in 0..=last {
            let bj = j / b;
            lg[j] = if bj == bi {
                scale * dot(&q[i * dk..(i + 1) * dk], &k[j * dk..(j + 1) * dk])
            } else {
                scale * dot(&qb[bi], &kb[bj])
            };
        }
        let mx = lg.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = lg.iter().map(|&l| (l - mx).exp()).sum();
        for j in 0..=last {
            a[i * n + j] = (lg[j] - mx).exp() / z;
        }
    }
    if !causal {
        // Full system: Gaussian elimination with partial pivoting (tests/common).
        return common::resolvent(&a, v, n, dv, gamma);
    }
    let mut w = vec![0.0f64; n * dv];
    for i in 0..n {
        for c in 0..dv {
            let mut s = 0.0;
            for j in 0..=i {
                s += a[i * n + j] * v[j * dv + c];
            }
            for j in 0..i {
                s += gamma * a[i * n + j] * w[j * dv + c];
            }
            w[i * dv + c] = s / (1.0 - gamma * a[i * n + i]);
        }
    }
    w.iter().map(|x| (1.0 - gamma) * x).collect()
}

fn to64<T: GpuElement>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f32() as f64).collect()
}

fn rand_vec<T: GpuElement>(rng: &mut Rng, len: usize, gain: f64) -> Vec<T> {
    (0..len)
        .map(|_| T::from_f32((rng.normal() * gain) as f32))
        .collect()
}

fn gpu() -> Gpu {
    Gpu::new(0).unwrap_or_else(|e| panic!("these tests need a CUDA GPU: {e}"))
}

/// Run one case on the GPU (output poisoned with NaN first) and return the relative
/// Frobenius error against the f64 reference.
fn run_case<T: GpuElement>(g: &Gpu, c: Case, seed: u64) -> f64 {
    run_case_in::<T>(g, c, seed, &mut GpuWorkspace::new())
}

/// [`run_case`] on a caller's workspace.
fn run_case_in<T: GpuElement>(g: &Gpu, c: Case, seed: u64, ws: &mut GpuWorkspace) -> f64 {
    let mut rng = Rng::new(seed | 1);
    let Case {
        batch,
        heads,
        kv_heads,
        n,
        dk,
        dv,
        block,
        gamma,
        qgain,
        causal,
        first,
    } = c;
    let q: Vec<T> = rand_vec(&mut rng, batch * heads * n * dk, qgain);
    let k: Vec<T> = rand_vec(&mut rng, batch * kv_heads * n * dk, 1.0);
    let v: Vec<T> = rand_vec(&mut rng, batch * kv_heads * n * dv, 1.0);
    let cfg = Config {
        gamma,
        block_size: if block == usize::MAX { 0 } else { block },
        causal,
        scale: 0.0,
        structure: if block == usize::MAX {
            Structure::Dense
        } else {
            Structure::Block
        },
        coarse_query: if first {
            CoarseQuery::First
        } else {
            CoarseQuery::Mean
        },
    };
    let dims = Dims::from_shapes(
        [batch, heads, n, dk],
        [batch, kv_heads, n, dk],
        [batch, kv_heads, n, dv],
    )
    .unwrap();
    let dq = g.upload(&q).unwrap();
    let dkk = g.upload(&k).unwrap();
    let dvv = g.upload(&v).unwrap();
    let poison = vec![T::from_f32(f32::NAN); batch * heads * n * dv];
    let mut dy = g.upload(&poison).unwrap();
    gpu::resolvent_attention_device(g, &dq, &dkk, &dvv, &mut dy, &dims, &cfg, ws).unwrap();
    ws.check_finite(g).unwrap();
    let y = to64(&g.download(&dy).unwrap());
    assert!(
        y.iter().all(|v| v.is_finite()),
        "{c:?} {}: output not fully written (NaN left)",
        T::SUFFIX
    );
    let b = if block == usize::MAX {
        n
    } else if block == 0 && !causal {
        gpu::auto_block_size_bidirectional(n, dk.max(dv))
    } else if block == 0 {
        gpu::auto_block_size(n, dk.max(dv))
    } else {
        block
    }
    .clamp(1, n);
    let (q, k, v) = (to64(&q), to64(&k), to64(&v));
    let scale = 1.0 / (dk as f64).sqrt();
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for bh in 0..batch * heads {
        let kvh = (bh / heads) * kv_heads + (bh % heads) / (heads / kv_heads);
        let r = reference_head(
            &q[bh * n * dk..(bh + 1) * n * dk],
            &k[kvh * n * dk..(kvh + 1) * n * dk],
            &v[kvh * n * dv..(kvh + 1) * n * dv],
            n,
            dk,
            dv,
            b,
            scale,
            gamma as f64,
            causal,
            first,
        );
        for (o, rr) in y[bh * n * dv..(bh + 1) * n * dv].iter().zip(&r) {
            num += (o - rr) * (o - rr);
            den += rr * rr;
        }
    }
    (num / den).sqrt()
}

fn cases() -> Vec<Case> {
    let c = |batch, heads, kv_heads, n, dk, dv, block, gamma, qgain| Case {
        batch,
        heads,
        kv_heads,
        n,
        dk,
        dv,
        block,
        gamma,
        qgain,
        causal: true,
        first: false,
    };
    let bidir = |c: Case| Case { causal: false, ..c };
    let first = |c: Case| Case { first: true, ..c };
    vec![
        // Bidirectional (causal = 0): GQA, dk ≠ dv, short last block; odd dk, B = 2; dense
        // (b ≥ n and Structure::Dense); b = 1; d = 128 with b = 64; automatic b, γ near 1;
        bidir(c(1, 4, 2, 200, 32, 48, 64, 0.5, 1.0)),
        bidir(c(2, 3, 1, 333, 24, 40, 50, 0.9, 1.5)),
        bidir(c(1, 1, 1, 90, 16, 16, 1000, 0.5, 2.0)),
        bidir(c(1, 2, 1, 120, 64, 32, usize::MAX, 0.7, 1.0)),
        bidir(c(1, 2, 2, 100, 8, 8, 1, 0.5, 1.0)),
        bidir(c(1, 2, 2, 150, 128, 128, 64, 0.3, 1.0)),
        bidir(c(1, 2, 2, 700, 64, 64, 0, 0.95, 1.0)),
        // The largest tiles (local_bidir_b128v128, local_bidir_tc_b128v128: b = dk = dv = 128); tiny widths
        // and an odd block size; m = 150 blocks: five panels of the reduced solve, the
        // last one short, and three row tiles of its update.
        bidir(c(1, 2, 1, 300, 128, 128, 128, 0.6, 1.0)),
        bidir(c(1, 1, 1, 300, 5, 3, 17, 0.5, 3.0)),
        bidir(c(1, 2, 1, 1200, 16, 16, 8, 0.8, 1.0)),
        c(1, 2, 2, 1, 16, 16, 0, 0.5, 1.0),            // n = 1
        c(1, 4, 2, 200, 32, 48, 64, 0.5, 1.0),         // GQA, dk ≠ dv, n not a multiple of b
        c(2, 3, 1, 333, 24, 40, 50, 0.9, 1.5),         // odd dk (not a multiple of 16), B = 2
        c(1, 2, 2, 130, 64, 64, 0, 0.5, 1.0),          // automatic block size
        c(1, 2, 1, 150, 64, 32, usize::MAX, 0.7, 1.0), // Structure::Dense (3 row tiles)
        c(1, 1, 1, 90, 16, 16, 1000, 0.5, 2.0),        // b ≥ n: the dense operator
        c(1, 2, 2, 100, 8, 8, 1, 0.5, 1.0),            // b = 1
        c(1, 2, 2, 150, 128, 128, 70, 0.3, 1.0),       // largest head dims, b not a multiple of 64
        c(1, 4, 2, 230, 128, 96, 64, 0.6, 1.0),        // 4-warp tiles at d = 128, GQA, dk ≠ dv
        c(1, 2, 1, 300, 96, 128, 96, 0.5, 1.0),        // 6-warp tiles (d = 128, b ≤ 96)
        c(1, 2, 2, 260, 128, 128, 112, 0.7, 1.0),      // 8-warp tiles at d = 128
        c(1, 2, 2, 700, 64, 64, 0, 0.95, 1.0),         // auto b, γ near 1, many blocks
        c(1, 2, 2, 257, 64, 64, 128, 0.0, 1.0),        // γ = 0 (plain block attention)
        c(1, 1, 1, 300, 5, 3, 17, 0.5, 3.0),           // tiny widths, peaky attention
        // Around 64 blocks per head, where the fused prologue and the reduced solve's own
        // panel inverses stop: m = 59 (two panels, the last short; GQA), m = 64, and
        // m = 66 with whole 64-row blocks (the separate kernels; V waited for late).
        c(1, 2, 1, 1000, 32, 32, 17, 0.6, 1.0),
        c(1, 2, 2, 1024, 16, 16, 16, 0.5, 1.0),
        c(1, 1, 1, 4200, 64, 64, 64, 0.5, 1.0),
        // More blocks than the reduced solve's 256 threads: its update takes two rows a
        // thread (m = 300, GQA, dk ≠ dv, last panel 12 rows) and, with m not a multiple
        // of 4, the scalar loads of G̃ (m = 286).
        c(1, 2, 1, 2400, 16, 24, 8, 0.7, 1.0),
        c(1, 1, 1, 2000, 32, 32, 7, 0.5, 1.0),
        // coarse_query = first: GQA, dk ≠ dv, short last block; B = 2, odd dk;
        // bidirectional; f16/bf16 tensor-core widths.
        first(c(1, 4, 2, 200, 32, 48, 64, 0.5, 1.0)),
        first(c(2, 3, 1, 333, 24, 40, 50, 0.9, 1.5)),
        first(bidir(c(1, 4, 2, 200, 32, 48, 64, 0.7, 1.0))),
        first(c(1, 2, 2, 700, 64, 64, 0, 0.95, 1.0)),
    ]
}

fn check_all<T: GpuElement>(bar: f64) {
    let g = gpu();
    for (i, c) in cases().into_iter().enumerate() {
        for rep in 0..2u64 {
            let err = run_case::<T>(&g, c, 0x9E37_79B9_7F4A_7C15 ^ ((i as u64) << 8) ^ rep);
            println!("{} case {i} rep {rep}: {c:?}: rel err {err:.3e}", T::SUFFIX);
            assert!(
                err <= bar,
                "{} {c:?}: relative error {err:.3e} > {bar:e}",
                T::SUFFIX
            );
        }
    }
}

/// One workspace for every case in turn, with calls on non-finite input between them:
/// its record is cleared only when allocated, so each call's non-finite values and the
/// fused kernel's flags carry that call's epoch, and its tickets count on from the
/// calls before (src/gpu/mod.rs). A stale record would report a NaN a call did not
/// have, or miss one it had; a stale ticket count would leave blocks unwritten (NaN).
#[test]
fn one_workspace_serves_every_shape_in_turn() {
    let g = gpu();
    let mut ws = GpuWorkspace::new();
    let nan_call = |ws: &mut GpuWorkspace, n: usize, block: usize, index: Option<usize>| {
        let (h, d) = (2, 16);
        let mut k = vec![bf16::from_f32(0.2); h * n * d];
        if let Some(i) = index {
            k[i] = bf16::NAN;
        }
        let x = g.upload(&vec![bf16::from_f32(0.1); h * n * d]).unwrap();
        let kk = g.upload(&k).unwrap();
        let mut y = g.upload(&vec![bf16::from_f32(0.0); h * n * d]).unwrap();
        let dims = Dims::from_shapes([1, h, n, d], [1, h, n, d], [1, h, n, d]).unwrap();
        let cfg = Config {
            block_size: block,
            ..Config::default()
        };
        gpu::resolvent_attention_device(&g, &x, &kk, &x, &mut y, &dims, &cfg, ws).unwrap();
        ws.check_finite(&g)
    };
    for (i, c) in cases().into_iter().enumerate() {
        let err = run_case_in::<bf16>(&g, c, 0xE90C ^ ((i as u64) << 8), &mut ws);
        assert!(err <= 1e-2, "case {i} {c:?}: relative error {err:.3e}");
        // A NaN in K on the fused path (m = 5) and on the separate one (m = 100), then
        // the same shapes without: only the call that had it reports it.
        let (n, block) = if i % 2 == 0 { (300, 0) } else { (200, 2) };
        let index = 37 * i + 5;
        let e = nan_call(&mut ws, n, block, Some(index)).unwrap_err();
        assert_eq!(e, Error::NonFinite { tensor: "K", index }, "after case {i}");
        nan_call(&mut ws, n, block, None).unwrap();
    }
}

#[test]
fn f32_matches_f64_reference() {
    check_all::<f32>(1e-4);
}

#[test]
fn f16_matches_f64_reference() {
    check_all::<f16>(1e-2);
}

#[test]
fn bf16_matches_f64_reference() {
    check_all::<bf16>(1e-2);
}

#[test]
fn gpu_matches_cpu_path() {
    // The GPU and CPU implementations compute the same operator for the same b (here
    // the GPU's automatic one, passed to the CPU explicitly).
    let mut rng = Rng::new(77);
    let (h, n, d) = (3, 1000, 64);
    let q: Vec<f32> = rand_vec(&mut rng, h * n * d, 1.0);
    let k: Vec<f32> = rand_vec(&mut rng, h * n * d, 1.0);
    let v: Vec<f32> = rand_vec(&mut rng, h * n * d, 1.0);
    let t = |x| TensorRef::new(x, [1, h, n, d]).unwrap();
    let yg = gpu::resolvent_attention_host(t(&q), t(&k), t(&v), &Config::default()).unwrap();
    let cfg = Config {
        block_size: gpu::auto_block_size(n, d),
        ..Config::default()
    };
    let yc =
        blockres::resolvent_attention_alloc(t(&q), t(&k), t(&v), &cfg, blockres::Par::Seq).unwrap();
    let num: f64 = yg
        .iter()
        .zip(&yc)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = yc.iter().map(|b| (*b as f64).powi(2)).sum();
    let err = (num / den).sqrt();
    println!("gpu vs cpu: {err:.3e}");
    assert!(err < 1e-4, "GPU vs CPU relative error {err:e}");
}

/// A call large enough to be split into groups of query heads on their own streams
/// (`plan::head_groups`: b = 128, B·H·m = 32·256), with GQA (four query heads a K/V
/// head: two K/V heads a group). Against the CPU path on the same values (the GPU in bf16,
/// the CPU in f32), and the non-finite record's indices from the groups past the first.
#[test]
fn split_by_heads_matches_cpu_path() {
    let mut rng = Rng::new(91);
    let (h, hkv, n, d) = (32, 8, 32768, 16);
    assert_eq!(gpu::auto_block_size(n, d), 128);
    let q: Vec<bf16> = rand_vec(&mut rng, h * n * d, 1.0);
    let k: Vec<bf16> = rand_vec(&mut rng, hkv * n * d, 1.0);
    let v: Vec<bf16> = rand_vec(&mut rng, hkv * n * d, 1.0);
    let tq = |x| TensorRef::new(x, [1, h, n, d]).unwrap();
    let tk = |x| TensorRef::new(x, [1, hkv, n, d]).unwrap();
    let yg = gpu::resolvent_attention_host(tq(&q), tk(&k), tk(&v), &Config::default()).unwrap();
    let f = |x: &[bf16]| x.iter().map(|e| e.to_f32()).collect::<Vec<f32>>();
    let (qf, kf, vf) = (f(&q), f(&k), f(&v));
    let cfg = Config {
        block_size: 128,
        ..Config::default()
    };
    let (sq, sk) = ([1, h, n, d], [1, hkv, n, d]);
    let yc = blockres::resolvent_attention_alloc(
        TensorRef::new(&qf, sq).unwrap(),
        TensorRef::new(&kf, sk).unwrap(),
        TensorRef::new(&vf, sk).unwrap(),
        &cfg,
        blockres::Par::Seq,
    )
    .unwrap();
    let rel = |g: &[bf16], c: &[f32]| {
        let num: f64 = g
            .iter()
            .zip(c)
            .map(|(a, b)| ((a.to_f32() - b) as f64).powi(2))
            .sum();
        let den: f64 = c.iter().map(|b| (*b as f64).powi(2)).sum();
        (num / den).sqrt()
    };
    let err = rel(&yg, &yc);
    println!("split call, gpu (bf16) vs cpu (f32): {err:.3e}");
    assert!(err < 1e-2, "relative error {err:e}");
    // Per head, too: a group with the wrong offsets would be off by O(1) in its heads.
    for hd in 0..h {
        let r = hd * n * d..(hd + 1) * n * d;
        let e = rel(&yg[r.clone()], &yc[r]);
        assert!(e < 2e-2, "head {hd}: relative error {e:e}");
    }
    // Non-finite values in the later groups: the index is into the whole tensor.
    for (tensor, first, second) in [
        ("Q", 13 * n * d + 777, 14 * n * d + 5),
        ("K", 2 * n * d + 4321, 3 * n * d + 1),
        ("V", 3 * n * d + 99, 3 * n * d + 100),
    ] {
        let x = [q.clone(), k.clone(), v.clone()];
        assert_reports_first_non_finite(x, [sq, sk, sk], tensor, first, second, &Config::default());
    }
}

#[test]
fn constant_values_pass_through() {
    // SPEC §2: if every v_i = c then every y_i = c.
    let mut rng = Rng::new(5);
    let (h, n, d) = (2, 500, 32);
    let q: Vec<bf16> = rand_vec(&mut rng, h * n * d, 1.0);
    let k: Vec<bf16> = rand_vec(&mut rng, h * n * d, 1.0);
    let v = vec![bf16::from_f32(1.25); h * n * d];
    let t = |x| TensorRef::new(x, [1, h, n, d]).unwrap();
    let y = gpu::resolvent_attention_host(
        t(&q),
        t(&k),
        t(&v),
        &Config {
            gamma: 0.8,
            ..Config::default()
        },
    )
    .unwrap();
    assert!(
        y.iter().all(|x| (x.to_f32() - 1.25).abs() < 1.25 * 8e-3),
        "constant V not preserved"
    );
}

/// NaN at `first` and ∞ at `second` of one of Q, K, V: the GPU path must report `first`.
fn assert_reports_first_non_finite(
    mut x: [Vec<bf16>; 3],
    shapes: [[usize; 4]; 3],
    tensor: &'static str,
    first: usize,
    second: usize,
    cfg: &Config,
) {
    let i = ["Q", "K", "V"].iter().position(|&t| t == tensor).unwrap();
    x[i][second] = bf16::INFINITY;
    x[i][first] = bf16::NAN;
    let [q, k, v] = &x;
    let e = gpu::resolvent_attention_host(
        TensorRef::new(q, shapes[0]).unwrap(),
        TensorRef::new(k, shapes[1]).unwrap(),
        TensorRef::new(v, shapes[2]).unwrap(),
        cfg,
    )
    .unwrap_err();
    let want = Error::NonFinite {
        tensor,
        index: first,
    };
    assert_eq!(e, want, "{tensor}");
}

#[test]
fn non_finite_input_is_reported() {
    let (h, n, d) = (2, 100, 16);
    let q = vec![0.1f32; h * n * d];
    let mut k = vec![0.2f32; h * n * d];
    k[1234] = f32::NAN;
    k[2000] = f32::INFINITY;
    let v = vec![0.3f32; h * n * d];
    let t = |x| TensorRef::new(x, [1, h, n, d]).unwrap();
    let e = gpu::resolvent_attention_host(t(&q), t(&k), t(&v), &Config::default()).unwrap_err();
    assert_eq!(
        e,
        Error::NonFinite {
            tensor: "K",
            index: 1234
        }
    );
    // bf16, causal: the tensor-core kernel's own scan (fused means), GQA; one tensor at a
    // time, the smaller of two indices, in a block past the first.
    // Then n = 200 in blocks of 2 (m = 100, past the fused path's 64 blocks): the separate
    // kernels with h deferred, where the local kernel scans V and the means pass Q and K.
    let (hkv, dk, dv) = (1, 16, 24);
    let deferred = Config {
        block_size: 2,
        ..Config::default()
    };
    for (n, cfg) in [(100, Config::default()), (200, deferred)] {
        for (tensor, first, second) in [("Q", 2800, 3000), ("K", 1234, 1300), ("V", 1900, 2390)] {
            let x = [
                vec![bf16::from_f32(0.1); h * n * dk],
                vec![bf16::from_f32(0.2); hkv * n * dk],
                vec![bf16::from_f32(0.3); hkv * n * dv],
            ];
            let shapes = [[1, h, n, dk], [1, hkv, n, dk], [1, hkv, n, dv]];
            assert_reports_first_non_finite(x, shapes, tensor, first, second, &cfg);
        }
    }
}

#[test]
fn unsupported_requests_are_errors() {
    let x = vec![0.5f32; 2 * 50 * 16];
    let t = TensorRef::new(&x, [1, 2, 50, 16]).unwrap();
    // Bidirectional blocks above 128 rows (the register tiles' limit).
    for (block, d) in [(200, 16), (129, 16)] {
        let x = vec![0.5f32; 300 * d];
        let t = TensorRef::new(&x, [1, 1, 300, d]).unwrap();
        let cfg = Config {
            causal: false,
            block_size: block,
            ..Config::default()
        };
        let e = gpu::resolvent_attention_host(t, t, t, &cfg);
        assert!(matches!(e, Err(Error::Unsupported(_))), "{e:?}");
    }
    let wide = vec![0.5f32; 50 * 200];
    let tw = TensorRef::new(&wide, [1, 1, 50, 200]).unwrap();
    let e = gpu::resolvent_attention_host(tw, tw, tw, &Config::default()).unwrap_err();
    assert!(e.to_string().contains("dk, dv"), "{e}");
    let bad = gpu::resolvent_attention_host(
        t,
        t,
        t,
        &Config {
            gamma: 1.0,
            ..Config::default()
        },
    );
    assert!(matches!(bad, Err(Error::Param { name: "gamma", .. })));
}

/// Bidirectional with γ near 1, where `I − γA` nears singularity. The GPU solves in
/// f32: it takes γ ≤ MAX_BIDIRECTIONAL_GAMMA, within 1e-4 of the float64 reference
/// there (f32 lost 1.2e-4 at γ = 0.999, 5.6e-4 at 0.9999: v21_gpu_tests.txt), and says
/// so above it (the ONNX op's `auto` then runs the CPU's f64 path).
#[test]
fn bidirectional_near_gamma_one() {
    let g = gpu();
    for gamma in [0.9f32, 0.97, gpu::MAX_BIDIRECTIONAL_GAMMA] {
        for (n, block) in [(600, 64), (600, 128), (120, usize::MAX)] {
            let c = Case {
                batch: 1,
                heads: 2,
                kv_heads: 2,
                n,
                dk: 16,
                dv: 5,
                block,
                gamma,
                qgain: 1.0,
                causal: false,
                first: false,
            };
            let err = run_case::<f32>(&g, c, 0xB1D1 ^ n as u64);
            println!("f32 bidirectional γ = {gamma} n = {n} b = {block}: rel err {err:.3e}");
            assert!(
                err <= 1e-4,
                "γ = {gamma} n = {n} b = {block}: rel err {err:.3e}"
            );
        }
    }
    let x = vec![0.5f32; 2 * 100 * 16];
    let t = TensorRef::new(&x, [1, 2, 100, 16]).unwrap();
    let cfg = Config {
        causal: false,
        gamma: 0.999,
        ..Config::default()
    };
    let e = gpu::resolvent_attention_host(t, t, t, &cfg).unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(_)) && e.to_string().contains("γ"),
        "{e}"
    );
}

#[test]
fn small_mixed_case() {
    // Small enough for compute-sanitizer (memcheck, racecheck): GQA, dk ≠ dv, three
    // row tiles in a block (64, 64, 22), a short last block, both kernel families.
    let g = gpu();
    let c = Case {
        batch: 1,
        heads: 2,
        kv_heads: 1,
        n: 320,
        dk: 40,
        dv: 24,
        block: 150,
        gamma: 0.6,
        qgain: 1.0,
        causal: true,
        first: false,
    };
    let e32 = run_case::<f32>(&g, c, 11);
    let e16 = run_case::<bf16>(&g, c, 12);
    println!("small case: f32 {e32:.3e}, bf16 {e16:.3e}");
    assert!(e32 <= 1e-4 && e16 <= 1e-2, "f32 {e32:e}, bf16 {e16:e}");
    // m = 300 blocks of 2 rows: the causal reduced solve's inverses kernel, ten panels
    // (the last one 12 rows) and two rows a thread in its update.
    let many = Case {
        n: 600,
        block: 2,
        dk: 8,
        dv: 12,
        ..c
    };
    let (e32, e16) = (
        run_case::<f32>(&g, many, 22),
        run_case::<bf16>(&g, many, 23),
    );
    println!("small case m = 300: f32 {e32:.3e}, bf16 {e16:.3e}");
    assert!(e32 <= 1e-4 && e16 <= 1e-2, "f32 {e32:e}, bf16 {e16:e}");
    // The tensor-core block kernel (f16/bf16, b ≤ 128): 16-byte copies with 3 warps and a
    // short last block; element copies (dk = 5) with 2 warps; 8 warps, dv > 64; 4 and 5 (of
    // 6) warps at d = 128; whole 128-row blocks at dk = dv = 64 and a short last one (with
    // BLOCKRES_GPU_FUSED=0 the whole ones wait for V on its mbarrier: cuda/perf_run.sh
    // runs the sanitizers that way too), whose heavy panels are all padding; 7 warps
    // (an odd count) with whole panels, dk ≠ dv, and with the last panel 4 rows short.
    let tiles = [
        (48, 40, 24, 13),
        (20, 5, 24, 14),
        (128, 72, 80, 15),
        (64, 128, 96, 16),
        (80, 96, 128, 17),
        (128, 64, 64, 18),
        (112, 64, 48, 20),
        (100, 64, 64, 21),
    ];
    for (block, dk, dv, seed) in tiles {
        let c = Case { block, dk, dv, ..c };
        let eb = run_case::<bf16>(&g, c, seed);
        let eh = run_case::<f16>(&g, c, seed + 100);
        println!("small case b = {block}, dk = {dk}, dv = {dv}: bf16 {eb:.3e}, f16 {eh:.3e}");
        assert!(eb <= 1e-2 && eh <= 1e-2, "bf16 {eb:e}, f16 {eh:e}");
    }
    // Bidirectional (cuda/bidir.cu, and cuda/bidir_tc.cu for 16-bit types): blocks of 48
    // with a short last one, f32 and bf16; 8 warps' panels with dv > 64 (b = 100), f16.
    let c = Case {
        causal: false,
        block: 48,
        ..c
    };
    let (e32, eb) = (run_case::<f32>(&g, c, 16), run_case::<bf16>(&g, c, 17));
    println!("small case bidirectional b = 48: f32 {e32:.3e}, bf16 {eb:.3e}");
    assert!(e32 <= 1e-4 && eb <= 1e-2, "f32 {e32:e}, bf16 {eb:e}");
    let wide = Case {
        block: 100,
        dv: 72,
        ..c
    };
    let eh = run_case::<f16>(&g, wide, 19);
    println!("small case bidirectional b = 100, dv = 72: f16 {eh:.3e}");
    assert!(eh <= 1e-2, "f16 {eh:e}");
    // coarse_query = first (the means kernel's other output), causal.
    let c = Case {
        causal: true,
        first: true,
        ..c
    };
    let e32 = run_case::<f32>(&g, c, 18);
    println!("small case first query: f32 {e32:.3e}");
    assert!(e32 <= 1e-4, "f32 {e32:e}");
}

/// The entry point for a host's stream and buffers (ONNX Runtime's CUDA execution
/// provider): raw pointers, a stream this crate did not create, no synchronization.
/// Same result as the host path, on two host streams, with the scratch growing between
/// calls, f32 and f16.
#[test]
fn host_stream_entry_matches_host_path() {
    use cudarc::driver::{CudaContext, DevicePtr};
    let ctx = CudaContext::new(0).unwrap();
    let mut rng = Rng::new(4242);
    for (round, (n, h, hkv, d)) in [(300, 2, 1, 32), (2000, 4, 2, 64), (700, 3, 3, 16)]
        .into_iter()
        .enumerate()
    {
        let stream = ctx.new_stream().unwrap();
        let q: Vec<f16> = rand_vec(&mut rng, h * n * d, 1.0);
        let k: Vec<f16> = rand_vec(&mut rng, hkv * n * d, 1.0);
        let v: Vec<f16> = rand_vec(&mut rng, hkv * n * d, 1.0);
        let cfg = Config {
            block_size: 64,
            gamma: 0.7,
            coarse_query: if round == 1 {
                CoarseQuery::First
            } else {
                CoarseQuery::Mean
            },
            ..Config::default()
        };
        let dims = Dims::from_shapes([1, h, n, d], [1, hkv, n, d], [1, hkv, n, d]).unwrap();
        let (dq, dk, dv) = (
            stream.clone_htod(&q).unwrap(),
            stream.clone_htod(&k).unwrap(),
            stream.clone_htod(&v).unwrap(),
        );
        let dy = stream.alloc_zeros::<f16>(h * n * d).unwrap();
        {
            let (pq, _a) = dq.device_ptr(&stream);
            let (pk, _b) = dk.device_ptr(&stream);
            let (pv, _c) = dv.device_ptr(&stream);
            let (py, _d) = dy.device_ptr(&stream);
            for _ in 0..2 {
                // SAFETY: `stream` is a live stream of device 0's primary context; the
                // pointers are its allocations of exactly the shapes' lengths, kept
                // alive (and `dy` distinct) until `clone_dtoh` below waits for the work.
                unsafe {
                    gpu::resolvent_attention_on_stream::<f16>(
                        0,
                        stream.cu_stream(),
                        pq,
                        pk,
                        pv,
                        py,
                        &dims,
                        &cfg,
                    )
                }
                .unwrap();
            }
            // A host buffer off the 16-byte grid is refused by name, before any launch.
            // SAFETY: as above; the misaligned pointer is rejected before it is used.
            let e = unsafe {
                gpu::resolvent_attention_on_stream::<f16>(
                    0,
                    stream.cu_stream(),
                    pq + 2,
                    pk,
                    pv,
                    py,
                    &dims,
                    &cfg,
                )
            }
            .unwrap_err();
            assert!(
                e.to_string().contains("input Q") && e.to_string().contains("aligned"),
                "{e}"
            );
        }
        let got = stream.clone_dtoh(&dy).unwrap();
        let want = gpu::resolvent_attention_host(
            TensorRef::new(&q, [1, h, n, d]).unwrap(),
            TensorRef::new(&k, [1, hkv, n, d]).unwrap(),
            TensorRef::new(&v, [1, hkv, n, d]).unwrap(),
            &cfg,
        )
        .unwrap();
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a.to_f32() - b.to_f32()).abs())
            .fold(0.0f32, f32::max);
        println!("host stream round {round} n = {n}: max |diff| vs host path {diff:.3e}");
        assert!(diff <= 2e-3, "round {round}: {diff}");
    }
    // Bad input is an error, before anything is enqueued.
    let dims = Dims::from_shapes([1, 1, 8, 8], [1, 1, 8, 8], [1, 1, 8, 8]).unwrap();
    let s = ctx.new_stream().unwrap();
    // SAFETY: refused for the null pointers before anything is enqueued or read.
    let e = unsafe {
        gpu::resolvent_attention_on_stream::<f32>(
            0,
            s.cu_stream(),
            0,
            0,
            0,
            0,
            &dims,
            &Config::default(),
        )
    };
    assert!(matches!(e, Err(Error::Shape { tensor: "Q", .. })), "{e:?}");
}

/// Relative Frobenius error of `y` (H heads of n × d, one batch, one KV head a query
/// head) against the f64 reference, causal, block size `b`.
#[allow(clippy::too_many_arguments)]
fn rel_err_mha(
    q: &[bf16],
    k: &[bf16],
    v: &[bf16],
    y: &[bf16],
    h: usize,
    n: usize,
    d: usize,
    b: usize,
    gamma: f64,
) -> f64 {
    let (q, k, v, y) = (to64(q), to64(k), to64(v), to64(y));
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for hh in 0..h {
        let s = hh * n * d..(hh + 1) * n * d;
        let r = reference_head(
            &q[s.clone()],
            &k[s.clone()],
            &v[s.clone()],
            n,
            d,
            d,
            b,
            1.0 / (d as f64).sqrt(),
            gamma,
            true,
            false,
        );
        for (o, rr) in y[s].iter().zip(&r) {
            num += (o - rr) * (o - rr);
            den += rr * rr;
        }
    }
    (num / den).sqrt()
}

#[test]
fn a_captured_call_replays_on_new_inputs() {
    // ONNX Runtime's CUDA graphs (`enable_cuda_graph`) capture the op's call once and
    // replay it on new inputs. The call's epoch and ticket base are fixed in the graph,
    // so each replay must clear the record itself (the host-stream entry clears it
    // before every call): the fused path (m = 5) and the separate one (m = 100), three
    // replays each, then a call outside the graph.
    use cudarc::driver::{CudaContext, DevicePtr, result, sys};
    let ctx = CudaContext::new(0).unwrap();
    let mut rng = Rng::new(0xCA97);
    for (n, block) in [(300usize, 64usize), (200, 2)] {
        let (h, d) = (2, 32);
        let len = h * n * d;
        let stream = ctx.new_stream().unwrap();
        let cfg = Config {
            block_size: block,
            ..Config::default()
        };
        let dims = Dims::from_shapes([1, h, n, d], [1, h, n, d], [1, h, n, d]).unwrap();
        let bufs: Vec<_> = (0..4)
            .map(|_| stream.alloc_zeros::<bf16>(len).unwrap())
            .collect();
        let guards: Vec<_> = bufs.iter().map(|b| b.device_ptr(&stream)).collect();
        let [pq, pk, pv, py] = [0, 1, 2, 3].map(|i| guards[i].0);
        // SAFETY (the three closures): `stream` is a live stream of device 0's primary
        // context; the pointers are its allocations of `len` elements each, alive until
        // the end of this round, and every host buffer outlives the synchronize after it.
        let call = || {
            unsafe {
                gpu::resolvent_attention_on_stream::<bf16>(
                    0,
                    stream.cu_stream(),
                    pq,
                    pk,
                    pv,
                    py,
                    &dims,
                    &cfg,
                )
            }
            .unwrap()
        };
        let fresh = |rng: &mut Rng| {
            let x: [Vec<bf16>; 3] = std::array::from_fn(|_| rand_vec(rng, len, 1.0));
            for (p, h) in [pq, pk, pv].into_iter().zip(&x) {
                unsafe { result::memcpy_htod_async(p, h, stream.cu_stream()) }.unwrap();
            }
            stream.synchronize().unwrap();
            x
        };
        let check = |x: &[Vec<bf16>; 3], what: &str| {
            let mut y = vec![bf16::ZERO; len];
            unsafe { result::memcpy_dtoh_async(&mut y, py, stream.cu_stream()) }.unwrap();
            stream.synchronize().unwrap();
            let err = rel_err_mha(&x[0], &x[1], &x[2], &y, h, n, d, block, 0.5);
            println!("n = {n}, b = {block}, {what}: relative error {err:.3e}");
            assert!(
                err <= 1e-2,
                "n = {n}, b = {block}, {what}: relative error {err:.3e}"
            );
        };
        // The first call sizes the scratch, as ONNX Runtime's warm-up run does.
        let x = fresh(&mut rng);
        call();
        check(&x, "before the capture");
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .unwrap();
        call();
        let graph = stream
            .end_capture(sys::CUgraphInstantiate_flags(0))
            .unwrap()
            .expect("the capture holds the call");
        for replay in 0..3 {
            let x = fresh(&mut rng);
            graph.launch().unwrap();
            check(&x, &format!("replay {replay}"));
        }
        let x = fresh(&mut rng);
        call();
        check(&x, "after the replays");
        drop(graph);
        drop(guards);
    }
}
