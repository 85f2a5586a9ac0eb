//! Incremental decoding (SPEC §6) against the float64 reference of one full call and
//! against the crate's own full call: every split into prefill + steps, GQA, batches,
//! odd sizes, element types, and the error paths (which must leave the state intact).

mod common;

use blockres::half::{bf16, f16};
use blockres::synthetic::Rng;
use blockres::{
    CoarseQuery, Config, Decoder, Element, Error, Par, Structure, TensorMut, TensorRef,
    resolvent_attention_alloc,
};
use common::*;

#[derive(Debug, Clone, Copy)]
struct Case {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    n: usize,
    dk: usize,
    dv: usize,
    gamma: f32,
    /// 0 = dense.
    b: usize,
}

fn config(c: &Case) -> Config {
    Config {
        gamma: c.gamma,
        block_size: c.b,
        structure: if c.b == 0 {
            Structure::Dense
        } else {
            Structure::Block
        },
        coarse_query: CoarseQuery::First,
        ..Config::default()
    }
}

struct Inputs<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
}

fn inputs<T: Element>(c: &Case, rng: &mut Rng) -> Inputs<T> {
    let mut draw = |len: usize, s: f64| -> Vec<T> {
        (0..len)
            .map(|_| T::from_f32((rng.normal() * s) as f32))
            .collect()
    };
    Inputs {
        q: draw(c.batch * c.heads * c.n * c.dk, 1.3),
        k: draw(c.batch * c.kv_heads * c.n * c.dk, 1.3),
        v: draw(c.batch * c.kv_heads * c.n * c.dv, 1.0),
    }
}

/// Rows `lo..hi` of every (batch, head) of a `[B, H, n, d]` tensor, contiguous.
fn rows<T: Copy>(x: &[T], bh: usize, n: usize, d: usize, lo: usize, hi: usize) -> Vec<T> {
    (0..bh)
        .flat_map(|i| x[(i * n + lo) * d..(i * n + hi) * d].iter().copied())
        .collect()
}

/// Decode the sequence in the given pieces and return the full `Y` in `[B, H, n, dv]`.
fn decode<T: Element>(c: &Case, x: &Inputs<T>, cuts: &[usize], par: Par) -> Vec<T> {
    let mut dec = Decoder::new(&config(c), c.batch, c.heads, c.kv_heads, c.dk, c.dv).unwrap();
    let (bq, bkv) = (c.batch * c.heads, c.batch * c.kv_heads);
    let mut y = vec![T::default(); bq * c.n * c.dv];
    let mut lo = 0;
    for &hi in cuts.iter().chain([c.n].iter()) {
        if hi <= lo {
            continue;
        }
        let s = hi - lo;
        let q = rows(&x.q, bq, c.n, c.dk, lo, hi);
        let k = rows(&x.k, bkv, c.n, c.dk, lo, hi);
        let v = rows(&x.v, bkv, c.n, c.dv, lo, hi);
        let mut part = vec![T::default(); bq * s * c.dv];
        dec.extend(
            TensorRef::new(&q, [c.batch, c.heads, s, c.dk]).unwrap(),
            TensorRef::new(&k, [c.batch, c.kv_heads, s, c.dk]).unwrap(),
            TensorRef::new(&v, [c.batch, c.kv_heads, s, c.dv]).unwrap(),
            TensorMut::new(&mut part, [c.batch, c.heads, s, c.dv]).unwrap(),
            par,
        )
        .unwrap_or_else(|e| panic!("{c:?} cut {lo}..{hi}: {e}"));
        for i in 0..bq {
            y[(i * c.n + lo) * c.dv..(i * c.n + hi) * c.dv]
                .copy_from_slice(&part[i * s * c.dv..(i + 1) * s * c.dv]);
        }
        lo = hi;
        assert_eq!(dec.len(), hi);
    }
    y
}

fn full<T: Element>(c: &Case, x: &Inputs<T>) -> Vec<T> {
    resolvent_attention_alloc(
        TensorRef::new(&x.q, [c.batch, c.heads, c.n, c.dk]).unwrap(),
        TensorRef::new(&x.k, [c.batch, c.kv_heads, c.n, c.dk]).unwrap(),
        TensorRef::new(&x.v, [c.batch, c.kv_heads, c.n, c.dv]).unwrap(),
        &config(c),
        Par::Seq,
    )
    .unwrap()
}

fn reference<T: Element>(c: &Case, x: &Inputs<T>) -> Vec<f64> {
    let (n, dk, dv) = (c.n, c.dk, c.dv);
    let scale = 1.0 / (dk as f64).sqrt();
    let dims = [c.batch, c.heads, c.kv_heads, n, dk, dv];
    let (q, k, v) = (to64(&x.q), to64(&x.k), to64(&x.v));
    reference_by_head([&q, &k, &v], dims, c.gamma as f64, |qh, kh| {
        if c.b == 0 {
            dense_a(qh, kh, n, dk, scale, true)
        } else {
            block_a_with(qh, kh, n, dk, c.b.min(n), scale, true, CoarseQuery::First)
        }
    })
}

fn to64<T: Element>(y: &[T]) -> Vec<f64> {
    y.iter().map(|e| e.to_f32() as f64).collect()
}

/// Splits of `0..n`: one call, a prefill then single tokens, single tokens from the
/// start, and random pieces (some crossing several blocks).
fn splits(n: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut out = vec![vec![], (n / 3..n).collect(), (1..n).collect()];
    let mut random = Vec::new();
    let mut t = 0;
    while t < n {
        t += 1 + (rng.uniform() * 23.0) as usize;
        random.push(t.min(n));
    }
    out.push(random);
    out
}

fn check<T: Element>(c: Case, seed: u64, tol: f64) {
    let mut rng = Rng::new(seed);
    let x = inputs::<T>(&c, &mut rng);
    let want = reference(&c, &x);
    let whole = to64(&full(&c, &x));
    for (i, cuts) in splits(c.n, &mut rng).into_iter().enumerate() {
        for par in [Par::Seq, Par::rayon(2)] {
            let got = to64(&decode(&c, &x, &cuts, par));
            let e_ref = rel_err(&got, &want);
            let e_full = rel_err(&got, &whole);
            assert!(
                e_ref <= tol && e_full <= tol,
                "{} {c:?} split {i} {par:?}: rel err {e_ref:.2e} vs float64, {e_full:.2e} vs \
                 one call (> {tol:.1e}; BLOCKRES_SEED={seed})",
                T::NAME
            );
        }
    }
}

const fn case(n: usize, dk: usize, dv: usize, gamma: f32, b: usize) -> Case {
    Case {
        batch: 1,
        heads: 1,
        kv_heads: 1,
        n,
        dk,
        dv,
        gamma,
        b,
    }
}

#[test]
fn every_split_equals_one_call_f32() {
    let s = seed();
    for (i, c) in [
        case(1, 8, 8, 0.5, 0),
        case(1, 8, 8, 0.5, 4),
        case(77, 16, 8, 0.9, 0),
        case(77, 16, 8, 0.9, 1),
        case(77, 8, 12, 0.9, 7),
        case(96, 16, 16, 0.99, 16),
        case(130, 12, 20, 0.5, 200),
        case(200, 32, 32, 0.0, 13),
    ]
    .into_iter()
    .enumerate()
    {
        check::<f32>(c, s.wrapping_add(i as u64), 1e-5);
    }
}

#[test]
fn grouped_query_attention_and_batches() {
    let s = seed();
    for (i, b) in [0, 5, 16].into_iter().enumerate() {
        let c = Case {
            batch: 2,
            heads: 6,
            kv_heads: 2,
            ..case(53, 8, 12, 0.8, b)
        };
        check::<f32>(c, s.wrapping_add(i as u64), 1e-5);
    }
}

#[test]
fn half_precision_inputs() {
    let s = seed();
    let c = Case {
        heads: 2,
        kv_heads: 1,
        ..case(70, 16, 8, 0.8, 8)
    };
    // f32 arithmetic, one rounding of the output to the element type.
    check::<f16>(c, s, 1e-3);
    check::<bf16>(c, s.wrapping_add(1), 8e-3);
    check::<f16>(Case { b: 0, ..c }, s.wrapping_add(2), 1e-3);
}

/// SPEC §1's special cases hold token by token: γ = 0 with n = 1 gives V, constant
/// values pass through.
#[test]
fn special_cases() {
    let mut rng = Rng::new(seed());
    for b in [0, 3] {
        let c = case(20, 4, 4, 0.9, b);
        let mut x = inputs::<f32>(&c, &mut rng);
        x.v.iter_mut().for_each(|v| *v = 2.5);
        let y = decode(&c, &x, &(1..20).collect::<Vec<_>>(), Par::Seq);
        assert!(y.iter().all(|&v| (v - 2.5).abs() < 1e-5), "{y:?}");
        let c1 = case(1, 4, 3, 0.0, b);
        let x1 = inputs::<f32>(&c1, &mut rng);
        assert_eq!(decode(&c1, &x1, &[], Par::Seq), x1.v);
    }
}

fn step(dec: &mut Decoder, q: &[f32], k: &[f32], v: &[f32], d: usize) -> Result<Vec<f32>, Error> {
    let s = q.len() / d;
    let mut y = vec![0.0; s * d];
    dec.extend(
        TensorRef::new(q, [1, 1, s, d])?,
        TensorRef::new(k, [1, 1, s, d])?,
        TensorRef::new(v, [1, 1, s, d])?,
        TensorMut::new(&mut y, [1, 1, s, d])?,
        Par::Seq,
    )?;
    Ok(y)
}

#[test]
fn undecodable_configs_are_refused_by_name() {
    let first = Config {
        coarse_query: CoarseQuery::First,
        block_size: 8,
        ..Config::default()
    };
    let cases = [
        (
            Config {
                coarse_query: CoarseQuery::Mean,
                ..first
            },
            "coarse_query",
        ),
        (
            Config {
                block_size: 0,
                ..first
            },
            "block_size",
        ),
        (
            Config {
                causal: false,
                ..first
            },
            "causal",
        ),
        (
            Config {
                structure: Structure::Strided { stride: 4 },
                ..first
            },
            "structure",
        ),
        (
            Config {
                gamma: 1.0,
                ..first
            },
            "gamma",
        ),
    ];
    for (cfg, name) in cases {
        let e = Decoder::new(&cfg, 1, 1, 1, 4, 4).unwrap_err();
        assert!(
            matches!(&e, Error::Param { name: n, .. } if *n == name),
            "{cfg:?}: {e}"
        );
    }
    let e = Decoder::new(&first, 1, 3, 2, 4, 4).unwrap_err();
    assert!(e.to_string().contains("divide"), "{e}");
}

/// Wrong shapes, non-finite inputs and overflow are errors naming the cause, and a
/// failed call leaves the state as it was: decoding continues as if it never happened.
#[test]
fn errors_leave_the_state_intact() {
    let mut rng = Rng::new(seed());
    for b in [0, 4] {
        let c = case(23, 4, 4, 0.9, b);
        let x = inputs::<f32>(&c, &mut rng);
        let want = full(&c, &x);
        let cfg = config(&c);
        let mut dec = Decoder::new(&cfg, 1, 1, 1, 4, 4).unwrap();
        let d = 4;
        let mut got = step(&mut dec, &x.q[..10 * d], &x.k[..10 * d], &x.v[..10 * d], d).unwrap();
        for t in 10..23 {
            let (q, k, v) = (
                &x.q[t * d..(t + 1) * d],
                &x.k[t * d..(t + 1) * d],
                &x.v[t * d..(t + 1) * d],
            );
            // A NaN key: refused, named.
            let mut bad = k.to_vec();
            bad[2] = f32::NAN;
            let e = step(&mut dec, q, &bad, v, d).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::NonFinite {
                        tensor: "K",
                        index: 2
                    }
                ),
                "{e}"
            );
            // Resolved values z = v + γ·w beyond f32: an overflow error, not ∞.
            let big = vec![f32::MAX; d];
            let e = step(&mut dec, q, k, &big, d).unwrap_err();
            assert!(matches!(e, Error::Overflow(_)), "{e}");
            // Wrong width.
            let mut y = vec![0.0; 8];
            let e = dec
                .extend(
                    TensorRef::new(&x.q[..8], [1, 1, 1, 8]).unwrap(),
                    TensorRef::new(&x.k[..8], [1, 1, 1, 8]).unwrap(),
                    TensorRef::new(&x.v[..8], [1, 1, 1, 8]).unwrap(),
                    TensorMut::new(&mut y, [1, 1, 1, 8]).unwrap(),
                    Par::Seq,
                )
                .unwrap_err();
            assert!(e.to_string().contains("dk=4"), "{e}");
            assert_eq!(dec.len(), t);
            got.extend(step(&mut dec, q, k, v, d).unwrap());
        }
        let err = rel_err(&to64(&got), &to64(&want));
        assert!(err <= 1e-5, "b={b}: {err:.2e}");
    }
}

/// A clone continues independently; a reset decoder starts over.
#[test]
fn clone_and_reset() {
    let mut rng = Rng::new(seed());
    let c = case(40, 8, 8, 0.7, 6);
    let x = inputs::<f32>(&c, &mut rng);
    let want = full(&c, &x);
    let d = 8;
    let mut dec = Decoder::new(&config(&c), 1, 1, 1, d, d).unwrap();
    step(&mut dec, &x.q[..20 * d], &x.k[..20 * d], &x.v[..20 * d], d).unwrap();
    let mut fork = dec.try_clone().unwrap();
    // Feed the original something else; the clone must not see it.
    step(&mut dec, &x.v[..5 * d], &x.q[..5 * d], &x.k[..5 * d], d).unwrap();
    let rest = step(&mut fork, &x.q[20 * d..], &x.k[20 * d..], &x.v[20 * d..], d).unwrap();
    assert!(rel_err(&to64(&rest), &to64(&want[20 * d..])) <= 1e-5);
    assert!(dec.state_bytes() > 0);
    dec.reset();
    assert!(dec.is_empty());
    let again = step(&mut dec, &x.q, &x.k, &x.v, d).unwrap();
    assert!(rel_err(&to64(&again), &to64(&want)) <= 1e-5);
}

/// The block state stays O((b + m)·d): the caches hold one block of tokens, not the
/// context.
#[test]
fn block_state_does_not_hold_the_context() {
    let mut rng = Rng::new(seed());
    let (b, d, n) = (16, 8, 2000);
    let c = case(n, d, d, 0.9, b);
    let x = inputs::<f32>(&c, &mut rng);
    let mut dec = Decoder::new(&config(&c), 1, 1, 1, d, d).unwrap();
    step(&mut dec, &x.q, &x.k, &x.v, d).unwrap();
    let m = n / b;
    // ksum, zsum: m rows; tails < b rows each; coarse terms and their saved copy.
    assert!(
        dec.state_bytes() <= 4 * (2 * m * d + 2 * b * d + 2 * d),
        "{}",
        dec.state_bytes()
    );
}

/// Dropping draft tokens and decoding others gives the rows of the sequence actually
/// kept.
#[test]
fn truncate_then_continue() {
    let mut rng = Rng::new(seed());
    for b in [0, 8] {
        let d = 4;
        let c = case(30, d, d, 0.8, b);
        let x = inputs::<f32>(&c, &mut rng);
        let want = full(&c, &x);
        let mut dec = Decoder::new(&config(&c), 1, 1, 1, d, d).unwrap();
        dec.reserve(30).unwrap();
        let mut got = step(&mut dec, &x.q[..17 * d], &x.k[..17 * d], &x.v[..17 * d], d).unwrap();
        // Three wrong draft tokens (17..20, inside the block 16..24), then the real ones.
        step(&mut dec, &x.v[..3 * d], &x.q[..3 * d], &x.k[..3 * d], d).unwrap();
        dec.truncate(17).unwrap();
        assert!(dec.truncate(18).is_err());
        got.extend(step(&mut dec, &x.q[17 * d..], &x.k[17 * d..], &x.v[17 * d..], d).unwrap());
        assert!(rel_err(&to64(&got), &to64(&want)) <= 1e-5, "b={b}");
        if b > 0 {
            assert!(
                dec.truncate(23).is_err(),
                "token 23 is in the finished block 16..24"
            );
        }
    }
}
