//! A Rust ONNX Runtime host running blockres' custom op, with the `ort` crate.
//!
//! ```text
//! bash scripts/setup.sh && source scripts/env.sh   # ORT_DYLIB_PATH → the onnxruntime wheel's library
//! cargo build --release --lib                      # target/release/libblockres.so
//! cargo run --release --example ort_host
//! ```
//!
//! `ort` here uses `load-dynamic`: it opens the libonnxruntime named by
//! `ORT_DYLIB_PATH` at run time instead of downloading one at build time (offline
//! builds: `ort = { version = "=2.0.0-rc.15", default-features = false, features =
//! ["load-dynamic", "std", "api-18", "half"] }`; `half` gives f16/bf16 tensors). The
//! path must name the versioned file (`libonnxruntime.so.1.32.0`), as the wheel ships
//! it: there is no unversioned `libonnxruntime.so` there.
//!
//! It runs `onnx/models/examples/resolvent_{float32,float16,bfloat16}.onnx` (one
//! `blockres.ResolventAttention` node each, written by `make.py` beside them) on the
//! same random Q, K, V and checks each result against the crate's own API.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use blockres::half::{bf16, f16};
use blockres::{CoarseQuery, Config, Element, Par, TensorRef, resolvent_attention_alloc};
use ort::session::Session;
use ort::value::{PrimitiveTensorElementType, Tensor};

const SHAPE: [usize; 4] = [1, 4, 1000, 32];

fn main() -> Result<(), Box<dyn Error>> {
    let dylib = std::env::var("ORT_DYLIB_PATH").map_err(|_| {
        "ORT_DYLIB_PATH is not set: point it at libonnxruntime.so.<version> (after \
         `bash scripts/setup.sh`, `source scripts/env.sh` does)"
    })?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The example binary is target/<profile>/examples/ort_host; the op library is built
    // into target/<profile>/ by `cargo build --lib` and into target/<profile>/deps/ by
    // `cargo test` (or name it with BLOCKRES_LIBRARY).
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("no target folder")?;
    let lib = std::env::var_os("BLOCKRES_LIBRARY")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            profile.join("libblockres.so"),
            profile.join("deps/libblockres.so"),
        ])
        .find(|p| p.exists())
        .ok_or("libblockres.so not found: run `cargo build --release --lib`")?;
    let env = ort::init_from(&dylib)?.build()?;
    println!("onnxruntime from {dylib}\nop library {}", lib.display());

    let n: usize = SHAPE.iter().product();
    let x: Vec<f32> = (0..3 * n)
        .map(|i| ((i * 7919 % 1009) as f32 / 1009.0 - 0.5) * 2.0)
        .collect();
    let cfg = Config {
        gamma: 0.9,
        block_size: 16,
        coarse_query: CoarseQuery::First,
        ..Config::default()
    };
    for (name, run) in [
        ("float32", run::<f32> as Runner),
        ("float16", run::<f16>),
        ("bfloat16", run::<bf16>),
    ] {
        let model = root.join(format!("onnx/models/examples/resolvent_{name}.onnx"));
        let mut session = Session::builder(&env)?
            .with_operator_library(&lib)?
            .commit_from_file(&model)?;
        let (ms, err) = run(&mut session, &x, &cfg)?;
        println!("{name:>9}: Y {SHAPE:?} in {ms:.2} ms, max |ORT − crate| / max |Y| = {err:.1e}");
    }
    Ok(())
}

type Runner = fn(&mut Session, &[f32], &Config) -> Result<(f64, f64), Box<dyn Error>>;

/// Run the session on Q, K, V (the thirds of `x`, rounded to `T`) and compare its Y with
/// `resolvent_attention` on the same tensors.
fn run<T>(s: &mut Session, x: &[f32], cfg: &Config) -> Result<(f64, f64), Box<dyn Error>>
where
    T: Element + PrimitiveTensorElementType + std::fmt::Debug,
{
    let n = x.len() / 3;
    let parts: Vec<Vec<T>> = x
        .chunks(n)
        .map(|c| c.iter().map(|&v| T::from_f32(v)).collect())
        .collect();
    let t = |i: usize| Tensor::from_array((SHAPE, parts[i].clone()));
    let start = Instant::now();
    let out = s.run(ort::inputs!["Q" => t(0)?, "K" => t(1)?, "V" => t(2)?])?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let (_, y) = out["Y"].try_extract_tensor::<T>()?;
    let view = |i: usize| TensorRef::new(&parts[i], SHAPE);
    let want = resolvent_attention_alloc(view(0)?, view(1)?, view(2)?, cfg, Par::rayon(0))?;
    let scale = want
        .iter()
        .fold(0f64, |m, v| m.max(v.to_f32().abs() as f64));
    let err = y.iter().zip(&want).fold(0f64, |m, (a, b)| {
        m.max((a.to_f32() - b.to_f32()).abs() as f64)
    });
    Ok((ms, err / scale))
}
