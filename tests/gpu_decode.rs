//! The GPU decoder (`blockres::gpu::GpuDecoder`, feature `cuda`; needs an NVIDIA GPU:
//! without one these tests fail, they never pass vacuously) against the CPU
//! `blockres::Decoder` fed the same split of the same sequence, and against one full
//! CPU call on the whole sequence (SPEC §6: every split gives the rows of one call).
#![cfg(feature = "cuda")]

use blockres::gpu::{Gpu, GpuDecoder, GpuElement};
use blockres::synthetic::Rng;
use blockres::{
    CoarseQuery, Config, Decoder, Error, Par, Structure, TensorMut, TensorRef,
    resolvent_attention_alloc,
};
use half::{bf16, f16};

const DENSE: usize = usize::MAX;

#[derive(Clone, Copy, Debug)]
struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    n: usize,
    dk: usize,
    dv: usize,
    /// Block size, or `DENSE`.
    block: usize,
    gamma: f32,
    qgain: f64,
}

impl Case {
    fn config(&self) -> Config {
        if self.block == DENSE {
            Config {
                gamma: self.gamma,
                structure: Structure::Dense,
                ..Config::default()
            }
        } else {
            Config {
                gamma: self.gamma,
                block_size: self.block,
                structure: Structure::Block,
                coarse_query: CoarseQuery::First,
                ..Config::default()
            }
        }
    }
}

/// Base case: B = 2, GQA (H = 4, Hkv = 2), dk ≠ dv, neither a multiple of 16.
fn case(block: usize, n: usize) -> Case {
    Case {
        batch: 2,
        heads: 4,
        kv_heads: 2,
        n,
        dk: 24,
        dv: 40,
        block,
        gamma: 0.6,
        qgain: 1.0,
    }
}

fn cases() -> Vec<Case> {
    vec![
        case(DENSE, 37),
        case(DENSE, 1),
        case(1, 20),
        case(7, 45),
        case(16, 70),
        case(16, 1),
        case(64, 150),
        // More than one 256-row chunk of local rows (dense, b = 300) and of coarse
        // rows (b = 1: a block per token).
        case(DENSE, 600),
        case(300, 620),
        case(1, 530),
        Case {
            heads: 3,
            kv_heads: 1,
            batch: 1,
            dk: 64,
            dv: 64,
            qgain: 3.0,
            ..case(16, 83)
        },
        Case {
            dk: 128,
            dv: 128,
            gamma: 0.3,
            ..case(64, 130)
        },
    ]
}

#[derive(Clone, Copy, Debug)]
enum Split {
    /// One call.
    One,
    /// A prefill of `p` tokens, then one token per call.
    Prefill(usize),
    /// Random pieces of 1..=max tokens.
    Random(u64, usize),
}

fn pieces(n: usize, split: Split) -> Vec<(usize, usize)> {
    match split {
        Split::One => vec![(0, n)],
        Split::Prefill(p) => {
            let p = p.clamp(1, n);
            std::iter::once((0, p))
                .chain((p..n).map(|t| (t, t + 1)))
                .collect()
        }
        Split::Random(seed, max) => {
            let mut rng = Rng::new(seed);
            let mut out = Vec::new();
            let mut lo = 0;
            while lo < n {
                let hi = (lo + 1 + rng.below(max)).min(n);
                out.push((lo, hi));
                lo = hi;
            }
            out
        }
    }
}

fn splits(c: &Case) -> Vec<Split> {
    let b = if c.block == DENSE { 9 } else { c.block };
    let mut v = vec![
        Split::One,
        Split::Prefill(c.n / 2 + 1),
        Split::Random(c.n as u64 * 31 + 7, b + 5),
    ];
    if c.n <= 160 {
        // Every token its own call from an empty state: the step kernel only.
        v.push(Split::Prefill(1));
    }
    v
}

/// Tokens lo..hi of a `[rows, n, d]` tensor, as `[rows, hi − lo, d]`.
fn piece<T: Copy>(x: &[T], rows: usize, n: usize, d: usize, lo: usize, hi: usize) -> Vec<T> {
    (0..rows)
        .flat_map(|r| x[(r * n + lo) * d..(r * n + hi) * d].iter().copied())
        .collect()
}

/// Write `[rows, hi − lo, d]` into tokens lo..hi of a `[rows, n, d]` tensor.
#[allow(clippy::too_many_arguments)]
fn place<T: Copy>(
    dst: &mut [T],
    part: &[T],
    rows: usize,
    n: usize,
    d: usize,
    lo: usize,
    hi: usize,
) {
    let w = (hi - lo) * d;
    for r in 0..rows {
        dst[(r * n + lo) * d..(r * n + hi) * d].copy_from_slice(&part[r * w..(r + 1) * w]);
    }
}

/// max |a − b| / max |b|.
fn rel_err<T: GpuElement>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mut num = 0.0f64;
    let mut den = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.to_f32() as f64, y.to_f32() as f64);
        assert!(x.is_finite(), "non-finite GPU output");
        num = num.max((x - y).abs());
        den = den.max(y.abs());
    }
    num / den.max(1e-30)
}

struct Inputs<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
}

fn inputs<T: GpuElement>(c: &Case, seed: u64) -> Inputs<T> {
    let mut rng = Rng::new(seed | 1);
    let mut draw = |len: usize, gain: f64| -> Vec<T> {
        (0..len)
            .map(|_| T::from_f32((rng.normal() * gain) as f32))
            .collect()
    };
    Inputs {
        q: draw(c.batch * c.heads * c.n * c.dk, c.qgain),
        k: draw(c.batch * c.kv_heads * c.n * c.dk, 1.0),
        v: draw(c.batch * c.kv_heads * c.n * c.dv, 1.0),
    }
}

/// Rows of every split on the GPU decoder and on the CPU decoder.
fn decode_split<T: GpuElement>(
    gpu: &Gpu,
    c: &Case,
    x: &Inputs<T>,
    split: Split,
    capacity: usize,
) -> (Vec<T>, Vec<T>) {
    let cfg = c.config();
    let (bh, bhkv) = (c.batch * c.heads, c.batch * c.kv_heads);
    let mut gd = GpuDecoder::new(
        gpu, &cfg, c.batch, c.heads, c.kv_heads, c.dk, c.dv, capacity,
    )
    .unwrap();
    let mut cd = Decoder::new(&cfg, c.batch, c.heads, c.kv_heads, c.dk, c.dv).unwrap();
    let mut yg = vec![T::from_f32(f32::NAN); bh * c.n * c.dv];
    let mut yc = yg.clone();
    for (lo, hi) in pieces(c.n, split) {
        let s = hi - lo;
        let q = piece(&x.q, bh, c.n, c.dk, lo, hi);
        let k = piece(&x.k, bhkv, c.n, c.dk, lo, hi);
        let v = piece(&x.v, bhkv, c.n, c.dv, lo, hi);
        let part = gd.extend_host(&q, &k, &v, s).unwrap();
        place(&mut yg, &part, bh, c.n, c.dv, lo, hi);
        let mut out = vec![T::default(); bh * s * c.dv];
        cd.extend(
            TensorRef::new(&q, [c.batch, c.heads, s, c.dk]).unwrap(),
            TensorRef::new(&k, [c.batch, c.kv_heads, s, c.dk]).unwrap(),
            TensorRef::new(&v, [c.batch, c.kv_heads, s, c.dv]).unwrap(),
            TensorMut::new(&mut out, [c.batch, c.heads, s, c.dv]).unwrap(),
            Par::Seq,
        )
        .unwrap();
        place(&mut yc, &out, bh, c.n, c.dv, lo, hi);
        assert_eq!(gd.len(), hi);
    }
    (yg, yc)
}

fn full_cpu<T: GpuElement>(c: &Case, x: &Inputs<T>) -> Vec<T> {
    resolvent_attention_alloc(
        TensorRef::new(&x.q, [c.batch, c.heads, c.n, c.dk]).unwrap(),
        TensorRef::new(&x.k, [c.batch, c.kv_heads, c.n, c.dk]).unwrap(),
        TensorRef::new(&x.v, [c.batch, c.kv_heads, c.n, c.dv]).unwrap(),
        &c.config(),
        Par::Seq,
    )
    .unwrap()
}

fn check_type<T: GpuElement>(tol: f64) {
    let gpu = Gpu::new(0).expect("these tests need a CUDA GPU");
    let mut worst = (0.0f64, 0.0f64);
    for (ci, c) in cases().iter().enumerate() {
        let x = inputs::<T>(c, 0x9E37_79B9 ^ (ci as u64) << 8);
        let full = full_cpu(c, &x);
        for split in splits(c) {
            let (yg, yc) = decode_split(&gpu, c, &x, split, c.n + 3);
            let (e_dec, e_full) = (rel_err(&yg, &yc), rel_err(&yg, &full));
            println!(
                "{} {c:?} {split:?}: vs CPU decoder {e_dec:.2e}, vs full call {e_full:.2e}",
                T::SUFFIX
            );
            assert!(
                e_dec <= tol && e_full <= tol,
                "{} {c:?} {split:?}: vs CPU decoder {e_dec:.2e}, vs full {e_full:.2e} (bar {tol:.0e})",
                T::SUFFIX
            );
            worst = (worst.0.max(e_dec), worst.1.max(e_full));
        }
    }
    println!(
        "{}: largest relative error vs CPU decoder {:.2e}, vs full call {:.2e}",
        T::SUFFIX,
        worst.0,
        worst.1
    );
}

#[test]
fn every_split_matches_cpu_f32() {
    check_type::<f32>(1e-5);
}

#[test]
fn every_split_matches_cpu_f16() {
    check_type::<f16>(1e-2);
}

#[test]
fn every_split_matches_cpu_bf16() {
    check_type::<bf16>(1e-2);
}

#[test]
fn device_buffers_and_exact_capacity() {
    // The device entry point with buffers made by the caller, steps of one token up to
    // exactly the capacity.
    let gpu = Gpu::new(0).expect("these tests need a CUDA GPU");
    let c = case(7, 30);
    let x = inputs::<f32>(&c, 77);
    let cfg = c.config();
    let (bh, bhkv) = (c.batch * c.heads, c.batch * c.kv_heads);
    let mut gd =
        GpuDecoder::new(&gpu, &cfg, c.batch, c.heads, c.kv_heads, c.dk, c.dv, c.n).unwrap();
    let mut y = vec![0.0f32; bh * c.n * c.dv];
    for (lo, hi) in pieces(c.n, Split::Prefill(12)) {
        let up = |t: Vec<f32>| gpu.upload(&t).unwrap();
        let q = up(piece(&x.q, bh, c.n, c.dk, lo, hi));
        let k = up(piece(&x.k, bhkv, c.n, c.dk, lo, hi));
        let v = up(piece(&x.v, bhkv, c.n, c.dv, lo, hi));
        let mut dy = gpu.zeros::<f32>(bh * (hi - lo) * c.dv).unwrap();
        gd.extend(&q, &k, &v, &mut dy, hi - lo).unwrap();
        place(&mut y, &gpu.download(&dy).unwrap(), bh, c.n, c.dv, lo, hi);
    }
    assert_eq!(gd.len(), gd.capacity());
    let e = rel_err(&y, &full_cpu(&c, &x));
    assert!(e <= 1e-5, "{e:.2e}");
    // Full: one more token is refused.
    let (q1, k1, v1) = (
        gpu.upload(&vec![0.0f32; bh * c.dk]).unwrap(),
        gpu.upload(&vec![0.0f32; bhkv * c.dk]).unwrap(),
        gpu.upload(&vec![0.0f32; bhkv * c.dv]).unwrap(),
    );
    let mut y1 = gpu.zeros::<f32>(bh * c.dv).unwrap();
    let err = gd.extend(&q1, &k1, &v1, &mut y1, 1).unwrap_err();
    assert!(
        matches!(err, Error::Shape { tensor: "Q", .. }) && err.to_string().contains("capacity"),
        "{err}"
    );
}

#[test]
fn refused_calls_leave_the_state_unchanged() {
    let gpu = Gpu::new(0).expect("these tests need a CUDA GPU");
    for block in [DENSE, 7] {
        let c = case(block, 40);
        let x = inputs::<f32>(&c, 5);
        let cfg = c.config();
        let (bh, bhkv) = (c.batch * c.heads, c.batch * c.kv_heads);
        let cap = 30;
        let mut gd =
            GpuDecoder::new(&gpu, &cfg, c.batch, c.heads, c.kv_heads, c.dk, c.dv, cap).unwrap();
        let get = |lo, hi| {
            (
                piece(&x.q, bh, c.n, c.dk, lo, hi),
                piece(&x.k, bhkv, c.n, c.dk, lo, hi),
                piece(&x.v, bhkv, c.n, c.dv, lo, hi),
            )
        };
        let mut y = vec![0.0f32; bh * 30 * c.dv];
        let (q, k, v) = get(0, 22);
        place(
            &mut y,
            &gd.extend_host(&q, &k, &v, 22).unwrap(),
            bh,
            30,
            c.dv,
            0,
            22,
        );
        // 9 more tokens pass the capacity of 30.
        let (q, k, v) = get(22, 31);
        let err = gd.extend_host(&q, &k, &v, 9).unwrap_err();
        assert!(
            matches!(err, Error::Shape { tensor: "Q", .. }) && err.to_string().contains("capacity"),
            "{err}"
        );
        assert_eq!(gd.len(), 22);
        // Wrong shapes, s = 0, a NaN: refused by name.
        let (q, k, v) = get(22, 25);
        let err = gd.extend_host(&q, &k[1..], &v, 3).unwrap_err();
        assert!(matches!(err, Error::Shape { tensor: "K", .. }), "{err}");
        let err = gd.extend_host(&q, &k, &v, 2).unwrap_err();
        assert!(matches!(err, Error::Shape { tensor: "Q", .. }), "{err}");
        let err = gd.extend_host::<f32>(&[], &[], &[], 0).unwrap_err();
        assert!(matches!(err, Error::Shape { .. }), "{err}");
        let mut bad = v.clone();
        bad[17] = f32::NAN;
        let err = gd.extend_host::<f32>(&q, &k, &bad, 3).unwrap_err();
        assert_eq!(
            err,
            Error::NonFinite {
                tensor: "V",
                index: 17
            }
        );
        assert_eq!(gd.len(), 22);
        // The state is intact: the rest of the sequence up to the capacity gives the
        // rows of one call on 30 tokens.
        for (lo, hi) in [(22, 25), (25, 26), (26, 30)] {
            let (q, k, v) = get(lo, hi);
            let part = gd.extend_host(&q, &k, &v, hi - lo).unwrap();
            place(&mut y, &part, bh, 30, c.dv, lo, hi);
        }
        let c30 = Case { n: 30, ..c };
        let x30 = Inputs {
            q: piece(&x.q, bh, c.n, c.dk, 0, 30),
            k: piece(&x.k, bhkv, c.n, c.dk, 0, 30),
            v: piece(&x.v, bhkv, c.n, c.dv, 0, 30),
        };
        let e = rel_err(&y, &full_cpu(&c30, &x30));
        assert!(e <= 1e-5, "block {block}: {e:.2e}");
    }
}

#[test]
fn reset_starts_a_new_sequence() {
    let gpu = Gpu::new(0).expect("these tests need a CUDA GPU");
    let c = case(16, 50);
    let (a, b) = (inputs::<bf16>(&c, 11), inputs::<bf16>(&c, 12));
    let cfg = c.config();
    let mut gd = GpuDecoder::new(&gpu, &cfg, c.batch, c.heads, c.kv_heads, c.dk, c.dv, 64).unwrap();
    gd.extend_host(&a.q, &a.k, &a.v, c.n).unwrap();
    gd.reset();
    assert!(gd.is_empty());
    let again = gd.extend_host(&b.q, &b.k, &b.v, c.n).unwrap();
    let mut fresh =
        GpuDecoder::new(&gpu, &cfg, c.batch, c.heads, c.kv_heads, c.dk, c.dv, 64).unwrap();
    let want = fresh.extend_host(&b.q, &b.k, &b.v, c.n).unwrap();
    assert_eq!(again, want);
}

#[test]
fn undecodable_configs_and_limits_are_errors() {
    let gpu = Gpu::new(0).expect("these tests need a CUDA GPU");
    let new = |cfg: &Config, dk: usize, cap: usize| GpuDecoder::new(&gpu, cfg, 1, 2, 1, dk, 8, cap);
    let first = Config {
        block_size: 16,
        coarse_query: CoarseQuery::First,
        ..Config::default()
    };
    let param = |r: Result<GpuDecoder<'_>, Error>, name: &str| match r {
        Err(Error::Param { name: got, .. }) => assert_eq!(got, name),
        other => panic!("expected a parameter error naming {name}, got {other:?}"),
    };
    param(new(&Config::default(), 8, 64), "coarse_query");
    param(
        new(
            &Config {
                block_size: 0,
                ..first
            },
            8,
            64,
        ),
        "block_size",
    );
    param(
        new(
            &Config {
                causal: false,
                ..first
            },
            8,
            64,
        ),
        "causal",
    );
    param(
        new(
            &Config {
                structure: Structure::Strided { stride: 0 },
                ..first
            },
            8,
            64,
        ),
        "structure",
    );
    param(new(&first, 8, 0), "capacity");
    assert!(matches!(new(&first, 129, 64), Err(Error::Unsupported(_))));
    assert!(new(&first, 8, 64).is_ok());
}

#[test]
fn non_finite_inputs_on_device_are_reported_by_check_finite() {
    // `extend` on device buffers does not wait; the kernels record a NaN/∞ in the new
    // tokens' Q, K, V and `check_finite` reports the tensor and index, then clears.
    let gpu = Gpu::new(0).expect("these tests need a CUDA GPU");
    for block in [DENSE, 7] {
        let c = case(block, 20);
        let x = inputs::<f32>(&c, 31);
        let cfg = c.config();
        let (bh, bhkv) = (c.batch * c.heads, c.batch * c.kv_heads);
        let up = |t: Vec<f32>| gpu.upload(&t).unwrap();
        let get = |lo, hi| {
            (
                piece(&x.q, bh, c.n, c.dk, lo, hi),
                piece(&x.k, bhkv, c.n, c.dk, lo, hi),
                piece(&x.v, bhkv, c.n, c.dv, lo, hi),
            )
        };
        // `which`: 0 Q, 1 K, 2 V; `at`: the flat index made NaN (or ∞) in that tensor
        // of the call appending tokens lo..hi after a clean prefill of `lo` tokens (or
        // of the prefill itself when lo = 0).
        let run = |which: usize, at: usize, lo: usize, hi: usize, bad: f32| {
            let mut gd =
                GpuDecoder::new(&gpu, &cfg, c.batch, c.heads, c.kv_heads, c.dk, c.dv, c.n).unwrap();
            if lo > 0 {
                let (q, k, v) = get(0, lo);
                let mut dy = gpu.zeros::<f32>(bh * lo * c.dv).unwrap();
                gd.extend(&up(q), &up(k), &up(v), &mut dy, lo).unwrap();
                assert_eq!(gd.check_finite(), Ok(()), "block {block}: clean prefill");
            }
            let (mut q, mut k, mut v) = get(lo, hi);
            [&mut q, &mut k, &mut v][which][at] = bad;
            let mut dy = gpu.zeros::<f32>(bh * (hi - lo) * c.dv).unwrap();
            gd.extend(&up(q), &up(k), &up(v), &mut dy, hi - lo).unwrap();
            let err = gd.check_finite().unwrap_err();
            // Cleared: the next check finds nothing new.
            assert_eq!(gd.check_finite(), Ok(()));
            err
        };
        let want = |tensor, index| Error::NonFinite { tensor, index };
        // A NaN in k of a one-token step.
        let e = run(1, 5, 10, 11, f32::NAN);
        assert_eq!(e, want("K", 5), "block {block}");
        // Q and V of a step, K at the last element of a three-token step.
        let e = run(0, bh * c.dk - 1, 10, 11, f32::INFINITY);
        assert_eq!(e, want("Q", bh * c.dk - 1), "block {block}");
        let e = run(2, 3, 10, 11, f32::NEG_INFINITY);
        assert_eq!(e, want("V", 3), "block {block}");
        let e = run(1, bhkv * 3 * c.dk - 1, 10, 13, f32::NAN);
        assert_eq!(e, want("K", bhkv * 3 * c.dk - 1), "block {block}");
        // In a prefill (through the full kernels): every row of Q, K, V is read.
        let e = run(0, bh * 12 * c.dk - 2, 0, 12, f32::NAN);
        assert_eq!(e, want("Q", bh * 12 * c.dk - 2), "block {block}");
        let e = run(1, 77, 0, 12, f32::NAN);
        assert_eq!(e, want("K", 77), "block {block}");
        let e = run(2, bhkv * 12 * c.dv - 1, 0, 12, f32::NAN);
        assert_eq!(e, want("V", bhkv * 12 * c.dv - 1), "block {block}");
    }
}

#[test]
fn clean_inputs_pass_check_finite() {
    // Finite inputs of ordinary size: prefill, steps and multi-token calls, f32 and
    // bf16, never leave a record.
    let gpu = Gpu::new(0).expect("these tests need a CUDA GPU");
    for block in [DENSE, 1, 7] {
        let c = case(block, 40);
        let x = inputs::<bf16>(&c, 3);
        let cfg = c.config();
        let (bh, bhkv) = (c.batch * c.heads, c.batch * c.kv_heads);
        let mut gd =
            GpuDecoder::new(&gpu, &cfg, c.batch, c.heads, c.kv_heads, c.dk, c.dv, c.n).unwrap();
        for (lo, hi) in pieces(c.n, Split::Random(9, 9)) {
            let up = |t: Vec<bf16>| gpu.upload(&t).unwrap();
            let q = up(piece(&x.q, bh, c.n, c.dk, lo, hi));
            let k = up(piece(&x.k, bhkv, c.n, c.dk, lo, hi));
            let v = up(piece(&x.v, bhkv, c.n, c.dv, lo, hi));
            let mut dy = gpu.zeros::<bf16>(bh * (hi - lo) * c.dv).unwrap();
            gd.extend(&q, &k, &v, &mut dy, hi - lo).unwrap();
        }
        assert_eq!(gd.check_finite(), Ok(()), "block {block}");
        let x = inputs::<f32>(&c, 4);
        gd.reset();
        gd.extend_host(&x.q, &x.k, &x.v, c.n).unwrap();
        assert_eq!(gd.check_finite(), Ok(()), "block {block}");
    }
}

#[test]
fn overflow_of_finite_inputs_is_reported() {
    // V = f32::MAX/2 with γ = 0.99: w ≈ v/(1−γ) = 100·v overflows f32, from finite
    // inputs. `check_finite` (and `extend_host`, which calls it) says Overflow.
    let gpu = Gpu::new(0).expect("these tests need a CUDA GPU");
    for block in [DENSE, 4] {
        let c = Case {
            gamma: 0.99,
            ..case(block, 12)
        };
        let cfg = c.config();
        let (bh, bhkv) = (c.batch * c.heads, c.batch * c.kv_heads);
        let new =
            || GpuDecoder::new(&gpu, &cfg, c.batch, c.heads, c.kv_heads, c.dk, c.dv, c.n).unwrap();
        let huge = f32::MAX / 2.0;
        let overflow = |r: Result<(), Error>, what: &str| match r {
            Err(Error::Overflow(_)) => {}
            other => panic!("block {block}, {what}: expected Overflow, got {other:?}"),
        };
        // Device buffers, a one-token step (an empty decoder's first token).
        let mut gd = new();
        let q = gpu.upload(&vec![0.1f32; bh * c.dk]).unwrap();
        let k = gpu.upload(&vec![0.1f32; bhkv * c.dk]).unwrap();
        let v = gpu.upload(&vec![huge; bhkv * c.dv]).unwrap();
        let mut dy = gpu.zeros::<f32>(bh * c.dv).unwrap();
        gd.extend(&q, &k, &v, &mut dy, 1).unwrap();
        overflow(gd.check_finite(), "a step");
        assert_eq!(gd.check_finite(), Ok(()));
        // A prefill of several tokens through the full kernels.
        let mut gd = new();
        let s = 6;
        let q = gpu.upload(&vec![0.1f32; bh * s * c.dk]).unwrap();
        let k = gpu.upload(&vec![0.1f32; bhkv * s * c.dk]).unwrap();
        let v = gpu.upload(&vec![huge; bhkv * s * c.dv]).unwrap();
        let mut dy = gpu.zeros::<f32>(bh * s * c.dv).unwrap();
        gd.extend(&q, &k, &v, &mut dy, s).unwrap();
        overflow(gd.check_finite(), "a prefill");
        // From the host: the inputs pass the host check, the result does not.
        let mut gd = new();
        let r = gd.extend_host(
            &vec![0.1f32; bh * 2 * c.dk],
            &vec![0.1f32; bhkv * 2 * c.dk],
            &vec![huge; bhkv * 2 * c.dv],
            2,
        );
        overflow(r.map(|_| ()), "extend_host");
        // The same sizes with ordinary V are fine.
        let mut gd = new();
        let y = gd
            .extend_host(
                &vec![0.1f32; bh * 2 * c.dk],
                &vec![0.1f32; bhkv * 2 * c.dk],
                &vec![1.0f32; bhkv * 2 * c.dv],
                2,
            )
            .unwrap();
        assert!(y.iter().all(|v| v.is_finite()));
        assert_eq!(gd.check_finite(), Ok(()));
    }
}
