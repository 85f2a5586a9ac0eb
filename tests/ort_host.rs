//! The custom-op library in a Rust ONNX Runtime host (the `ort` crate, loading
//! libonnxruntime dynamically from `ORT_DYLIB_PATH`, which `scripts/env.sh` sets to the
//! Python wheel's library). Models are written as ONNX protobuf bytes by the small
//! encoder below, so any element type and attribute set can be built in the test.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use blockres::synthetic::Rng;
use half::{bf16, f16};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::{PrimitiveTensorElementType, Tensor};

// ----------------------------------------------------------------------------- protobuf

/// Just enough of the protobuf wire format for ONNX ModelProto.
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn key(&mut self, field: u64, wire: u64) {
        self.varint((field << 3) | wire);
    }
    fn int(&mut self, field: u64, v: i64) -> &mut Self {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }
    fn bytes(&mut self, field: u64, b: &[u8]) -> &mut Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, field: u64, s: &str) -> &mut Self {
        self.bytes(field, s.as_bytes())
    }
    fn msg(&mut self, field: u64, m: &Pb) -> &mut Self {
        self.bytes(field, &m.0)
    }
    fn float(&mut self, field: u64, v: f32) -> &mut Self {
        self.key(field, 5);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
}

#[derive(Clone, Copy)]
enum Attr<'a> {
    F(f32),
    I(i64),
    S(&'a str),
}

const FLOAT: i64 = 1;
const FLOAT16: i64 = 10;
const DOUBLE: i64 = 11;
const BFLOAT16: i64 = 16;

/// A one-node model: inputs Q, K, V and output Y of element type `elem`, shapes
/// left open (the op's shape inference fills Y's).
fn model(elem: i64, attrs: &[(&str, Attr)]) -> Vec<u8> {
    let value_info = |name: &str| {
        let mut tensor = Pb::default();
        tensor.int(1, elem);
        let mut ty = Pb::default();
        ty.msg(1, &tensor);
        let mut vi = Pb::default();
        vi.str(1, name).msg(2, &ty);
        vi
    };
    let mut node = Pb::default();
    node.str(1, "Q").str(1, "K").str(1, "V").str(2, "Y");
    node.str(3, "ra")
        .str(4, "ResolventAttention")
        .str(7, "blockres");
    for &(name, value) in attrs {
        let mut a = Pb::default();
        a.str(1, name);
        match value {
            Attr::F(x) => a.float(2, x).int(20, 1),
            Attr::I(x) => a.int(3, x).int(20, 2),
            Attr::S(x) => a.str(4, x).int(20, 3),
        };
        node.msg(5, &a);
    }
    let mut graph = Pb::default();
    graph.msg(1, &node).str(2, "g");
    for name in ["Q", "K", "V"] {
        graph.msg(11, &value_info(name));
    }
    graph.msg(12, &value_info("Y"));
    let mut onnx_domain = Pb::default();
    onnx_domain.str(1, "").int(2, 17);
    let mut ours = Pb::default();
    ours.str(1, "blockres").int(2, 1);
    let mut m = Pb::default();
    m.int(1, 9).str(2, "blockres-test").msg(7, &graph);
    m.msg(8, &onnx_domain).msg(8, &ours);
    m.0
}

// ----------------------------------------------------------------------------- host

/// The cdylib cargo built with this test binary: `cargo test` leaves it in
/// `target/<profile>/deps/`, next to the test executable (it is copied up to
/// `target/<profile>/` only by `cargo build`).
fn library() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe
        .parent()
        .expect("test binary lives in target/<profile>/deps");
    let lib = deps.join("libblockres.so");
    assert!(
        lib.exists(),
        "{} is missing: the cdylib is built with the crate (crate-type includes cdylib)",
        lib.display()
    );
    lib
}

/// The process-wide ORT environment, plus one warm-up session: ORT registers a custom
/// domain's schemas on first use without a lock, so the first session must not race.
/// `None` (the tests skip, saying why) when `ORT_DYLIB_PATH` is unset, unless
/// `BLOCKRES_REQUIRE_ORT` is set (as `scripts/test.sh` does): a plain `cargo test` needs
/// no ONNX Runtime.
fn env() -> Option<&'static Environment> {
    static ENV: OnceLock<Option<Environment>> = OnceLock::new();
    ENV.get_or_init(|| {
        let Ok(path) = std::env::var("ORT_DYLIB_PATH") else {
            assert!(
                std::env::var_os("BLOCKRES_REQUIRE_ORT").is_none(),
                "ORT_DYLIB_PATH is not set. It must name libonnxruntime.so.<version>; run \
                 `bash scripts/setup.sh && source scripts/env.sh` (it points at the onnxruntime \
                 wheel in .venv) or `bash scripts/test.sh`"
            );
            eprintln!(
                "skipped: ORT_DYLIB_PATH is not set (source scripts/env.sh after \
                 scripts/setup.sh to run the ONNX Runtime host tests)"
            );
            return None;
        };
        let env = ort::init_from(&path)
            .unwrap_or_else(|e| panic!("cannot load ONNX Runtime from ORT_DYLIB_PATH={path}: {e}"))
            .build()
            .expect("ONNX Runtime environment");
        let mut warm = session_in(&env, &model(FLOAT, &[])).expect("warm-up session");
        let x = vec![0.5f32; 8];
        warm.run(ort::inputs![
            "Q" => Tensor::from_array(([1usize, 1, 2, 4], x.clone())).unwrap(),
            "K" => Tensor::from_array(([1usize, 1, 2, 4], x.clone())).unwrap(),
            "V" => Tensor::from_array(([1usize, 1, 2, 4], x)).unwrap(),
        ])
        .expect("warm-up run");
        Some(env)
    })
    .as_ref()
}

fn session_in(env: &Environment, bytes: &[u8]) -> Result<Session, String> {
    Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(2)
        .map_err(|e| e.to_string())?
        .with_operator_library(library())
        .map_err(|e| e.to_string())?
        .commit_from_memory(bytes)
        .map_err(|e| e.to_string())
}

fn session(bytes: &[u8]) -> Result<Session, String> {
    session_in(env().expect("checked by the test"), bytes)
}

/// Run one model on Q, K, V given as f32 (converted to `T`); Y back as f64.
fn run<T>(s: &mut Session, shapes: [[usize; 4]; 3], data: [&[f32]; 3]) -> Result<Vec<f64>, String>
where
    T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static + Conv,
{
    let t = |i: usize| {
        let v: Vec<T> = data[i].iter().map(|&x| T::from_f32(x)).collect();
        Tensor::from_array((shapes[i], v)).map_err(|e| e.to_string())
    };
    let out = s
        .run(ort::inputs!["Q" => t(0)?, "K" => t(1)?, "V" => t(2)?])
        .map_err(|e| e.to_string())?;
    let (shape, y) = out["Y"]
        .try_extract_tensor::<T>()
        .map_err(|e| e.to_string())?;
    let want = [shapes[0][0], shapes[0][1], shapes[0][2], shapes[2][3]].map(|d| d as i64);
    assert_eq!(&shape[..], &want[..]);
    Ok(y.iter().map(|x| x.to_f64()).collect())
}

trait Conv {
    fn from_f32(x: f32) -> Self;
    fn to_f64(&self) -> f64;
}
impl Conv for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
    fn to_f64(&self) -> f64 {
        *self as f64
    }
}
impl Conv for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_f64(&self) -> f64 {
        self.to_f32() as f64
    }
}
impl Conv for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_f64(&self) -> f64 {
        self.to_f32() as f64
    }
}

// ----------------------------------------------------------------------------- reference

/// Inputs in ±1.7, uniform (the op's tests need no heavy tails).
fn uniform_vec(rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| (rng.uniform() * 2.0 - 1.0) as f32 * 1.7)
        .collect()
}

fn pick(rng: &mut Rng, xs: &[usize]) -> usize {
    xs[rng.below(xs.len())]
}

/// Float64 reference over [B, H, n, d] with GQA, on inputs already rounded to the
/// element type under test.
#[allow(clippy::too_many_arguments)]
fn reference(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    [b, h, hkv, n, dk, dv]: [usize; 6],
    gamma: f64,
    causal: bool,
    block: Option<usize>,
) -> Vec<f64> {
    let scale = 1.0 / (dk as f64).sqrt();
    let mut y = Vec::with_capacity(b * h * n * dv);
    for bi in 0..b {
        for hi in 0..h {
            let kvh = bi * hkv + hi / (h / hkv);
            let qh = &q[(bi * h + hi) * n * dk..][..n * dk];
            let kh = &k[kvh * n * dk..][..n * dk];
            let vh = &v[kvh * n * dv..][..n * dv];
            let a = match block {
                None => common::dense_a(qh, kh, n, dk, scale, causal),
                Some(bs) => common::block_a(qh, kh, n, dk, bs, scale, causal),
            };
            y.extend(common::resolvent(&a, vh, n, dv, gamma));
        }
    }
    y
}

fn rounded<T: Conv>(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| T::from_f32(v).to_f64()).collect()
}

fn check_type<T>(elem: i64, tol: f64, rng: &mut Rng)
where
    T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static + Conv,
{
    for case in 0..6 {
        let hkv = pick(rng, &[1, 2]);
        let h = hkv * pick(rng, &[1, 2, 3]);
        let b = pick(rng, &[1, 2]);
        let n = [1, 9, 50, 101, 64, 130][case];
        let (dk, dv) = (pick(rng, &[4, 8, 16]), pick(rng, &[3, 8, 12]));
        let gamma = [0.0, 0.3, 0.5, 0.9][case % 4];
        let causal = case % 3 != 2;
        let dense = case % 2 == 0;
        let bs = pick(rng, &[1, 5, 16, n, n + 3]).max(1);
        let structure = if dense { "dense" } else { "block" };
        let attrs = [
            ("gamma", Attr::F(gamma)),
            ("causal", Attr::I(causal as i64)),
            ("structure", Attr::S(structure)),
            ("block_size", Attr::I(bs as i64)),
        ];
        let mut s = session(&model(elem, &attrs)).expect("session");
        let shapes = [[b, h, n, dk], [b, hkv, n, dk], [b, hkv, n, dv]];
        let q = uniform_vec(rng, b * h * n * dk);
        let k = uniform_vec(rng, b * hkv * n * dk);
        let v = uniform_vec(rng, b * hkv * n * dv);
        let y = run::<T>(&mut s, shapes, [&q, &k, &v]).expect("run");
        let r = reference(
            &rounded::<T>(&q),
            &rounded::<T>(&k),
            &rounded::<T>(&v),
            [b, h, hkv, n, dk, dv],
            gamma as f64,
            causal,
            (!dense).then_some(bs),
        );
        let err = common::rel_err(&y, &r);
        assert!(
            err <= tol,
            "elem {elem} case {case} ({structure}, b={bs}, n={n}, h={h}/{hkv}, dk={dk}, dv={dv}, γ={gamma}, causal={causal}): rel err {err:e}"
        );
    }
}

// ----------------------------------------------------------------------------- tests

#[test]
fn matches_reference_in_all_element_types() {
    if env().is_none() {
        return;
    }
    let seed = common::seed();
    eprintln!("BLOCKRES_SEED={seed}");
    let mut rng = Rng::new(seed);
    check_type::<f32>(FLOAT, 1e-5, &mut rng);
    check_type::<f16>(FLOAT16, 1e-2, &mut rng);
    check_type::<bf16>(BFLOAT16, 1e-2, &mut rng);
}

#[test]
fn bad_inputs_are_error_statuses() {
    if env().is_none() {
        return;
    }
    let mut s = session(&model(FLOAT, &[])).expect("session");
    let x = vec![0.25f32; 2 * 10 * 4];
    let err = s
        .run(ort::inputs![
            "Q" => Tensor::from_array(([2usize, 10, 4], x.clone())).unwrap(),
            "K" => Tensor::from_array(([1usize, 2, 10, 4], x.clone())).unwrap(),
            "V" => Tensor::from_array(([1usize, 2, 10, 4], x.clone())).unwrap(),
        ])
        .map(|_| ())
        .expect_err("rank-3 Q must fail");
    let msg = err.to_string();
    assert!(msg.contains("input Q") && msg.contains("rank-4"), "{msg}");

    let mut nan = x.clone();
    nan[5] = f32::NAN;
    let err = s
        .run(ort::inputs![
            "Q" => Tensor::from_array(([1usize, 2, 10, 4], x.clone())).unwrap(),
            "K" => Tensor::from_array(([1usize, 2, 10, 4], x.clone())).unwrap(),
            "V" => Tensor::from_array(([1usize, 2, 10, 4], nan)).unwrap(),
        ])
        .map(|_| ())
        .expect_err("NaN in V must fail");
    assert!(err.to_string().contains("input V"), "{err}");

    // The session still works after failed runs.
    let y = run::<f32>(&mut s, [[1, 2, 10, 4]; 3], [&x, &x, &x]).expect("run");
    assert!(y.iter().all(|&v| (v - 0.25).abs() < 1e-6));
}

#[test]
fn bad_attributes_and_types_fail_session_creation() {
    if env().is_none() {
        return;
    }
    for (attrs, needle) in [
        (vec![("gamma", Attr::F(1.0))], "attribute gamma"),
        (vec![("structure", Attr::S("nope"))], "attribute structure"),
        // A value with an interior NUL is not the value before it.
        (vec![("structure", Attr::S("block\0x"))], "'block\\0x'"),
        (
            vec![("coarse_query", Attr::S("middle"))],
            "attribute coarse_query: expected one of 'mean', 'first', got 'middle'",
        ),
        (
            vec![("coarse_query", Attr::S("first\0"))],
            "attribute coarse_query",
        ),
        (vec![("coarse_query", Attr::I(1))], "attribute coarse_query"),
        (vec![("causal", Attr::I(7))], "attribute causal"),
        (vec![("gamma", Attr::I(0))], "attribute gamma"),
    ] {
        let err = session(&model(FLOAT, &attrs))
            .map(|_| ())
            .expect_err(needle);
        assert!(err.contains(needle), "{err}");
    }
    let err = session(&model(DOUBLE, &[]))
        .map(|_| ())
        .expect_err("double");
    assert!(err.contains("ResolventAttention"), "{err}");
}

#[test]
fn sessions_in_parallel_threads() {
    if env().is_none() {
        return;
    }
    let seed = common::seed();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ (t as u64 + 1).wrapping_mul(0x1234_5678_9abc));
                let n = 40 + 17 * t;
                let attrs = [("block_size", Attr::I(8)), ("gamma", Attr::F(0.6))];
                let mut s = session(&model(FLOAT, &attrs)).expect("session");
                let shapes = [[1, 2, n, 8], [1, 1, n, 8], [1, 1, n, 8]];
                let (q, k, v) = (
                    uniform_vec(&mut rng, 2 * n * 8),
                    uniform_vec(&mut rng, n * 8),
                    uniform_vec(&mut rng, n * 8),
                );
                let r = reference(
                    &rounded::<f32>(&q),
                    &rounded::<f32>(&k),
                    &rounded::<f32>(&v),
                    [1, 2, 1, n, 8, 8],
                    0.6f32 as f64,
                    true,
                    Some(8),
                );
                for _ in 0..20 {
                    let y = run::<f32>(&mut s, shapes, [&q, &k, &v]).expect("run");
                    let err = common::rel_err(&y, &r);
                    assert!(err <= 1e-5, "thread {t}: rel err {err:e}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("worker thread");
    }
}
