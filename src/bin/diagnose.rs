//! `blockres-diagnose`: does a model's attention fit the block structure?
//!
//! ```text
//! blockres-diagnose --q Q.npy --k K.npy --v V.npy [options]
//! blockres-diagnose --dir DIR [options]            # DIR/q.npy, DIR/k.npy, DIR/v.npy
//! blockres-diagnose --synthetic DIR [--n 2048 --d 64 --heads 2 --kv-heads 2
//!                   --segment 64 --strength 4 --seed 1] [options]
//!
//! options: --gamma 0.5  --scale 0  --blocks 8,16,32,...  --eps 0.01  --tol 0.05
//!          --stride 0  --block-l 0  --summary 1  --alpha 0  --c-exp 0
//!          --svg PATH (default: diagnose.svg beside Q)  --threads N
//! ```
//!
//! Inputs are `.npy` arrays (float16/32/64, little-endian, C order) of shape `[n, d]`
//! (one head), `[H, n, d]` or `[B, H, n, d]`; K and V may have fewer heads than Q
//! (grouped-query attention). `--synthetic DIR` first writes block-structured inputs
//! (`blockres::synthetic::segmented`) to DIR, then diagnoses them. Prints the table of
//! `blockres::diagnostics::Report::table` and writes the SVG plot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use blockres::diagnostics::{Options, diagnose, npy};
use blockres::synthetic::segmented;
use blockres::{Par, Structure, TensorRef};

const USAGE: &str = "usage: blockres-diagnose (--q Q.npy --k K.npy --v V.npy | --dir DIR | --synthetic DIR [--n N --d D --heads H --kv-heads HKV --segment S --strength X --seed SEED])
       [--gamma G] [--scale S] [--blocks B1,B2,...] [--eps E] [--tol T] [--stride L] [--block-l L]
       [--summary C] [--alpha A] [--c-exp C] [--svg PATH] [--threads N]";

struct Args(Vec<String>);

impl Args {
    fn value(&self, name: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == name)?;
        self.0.get(i + 1).map(String::as_str)
    }
    fn num<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name}: cannot read '{v}' as a number")),
        }
    }
}

/// `[n, d]`, `[H, n, d]` or `[B, H, n, d]` as `[B, H, n, d]`.
fn as4(path: &Path, shape: &[usize]) -> Result<[usize; 4], String> {
    match *shape {
        [n, d] => Ok([1, 1, n, d]),
        [h, n, d] => Ok([1, h, n, d]),
        [b, h, n, d] => Ok([b, h, n, d]),
        _ => Err(format!(
            "{}: expected shape [n, d], [H, n, d] or [B, H, n, d], got {shape:?}",
            path.display()
        )),
    }
}

fn tensor<'a>(
    data: &'a [f32],
    shape: [usize; 4],
    name: &str,
) -> Result<TensorRef<'a, f32>, String> {
    TensorRef::new(data, shape).map_err(|e| format!("{name}: {e}"))
}

fn load(path: &Path) -> Result<(Vec<f32>, [usize; 4]), String> {
    let a = npy::read(path).map_err(|e| e.to_string())?;
    let shape = as4(path, &a.shape)?;
    Ok((a.data, shape))
}

fn write_synthetic(dir: &Path, a: &Args) -> Result<(), String> {
    let n = a.num("--n", 2048usize)?;
    let d = a.num("--d", 64usize)?;
    let h = a.num("--heads", 2usize)?;
    let hkv = a.num("--kv-heads", h)?;
    let segment = a.num("--segment", 64usize)?;
    let strength = a.num("--strength", 4.0f32)?;
    let seed = a.num("--seed", 1u64)?;
    if n == 0 || d == 0 || h == 0 || hkv == 0 || h % hkv != 0 {
        return Err(
            "--n, --d, --heads, --kv-heads must be > 0 and kv-heads must divide heads".into(),
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let x = segmented([1, h, hkv, n, d, d], segment, strength, seed);
    for (name, data, shape) in [
        ("q.npy", &x.q, x.q_shape()),
        ("k.npy", &x.k, x.k_shape()),
        ("v.npy", &x.v, x.v_shape()),
    ] {
        let p = dir.join(name);
        npy::write(&p, &shape, data).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    println!(
        "wrote synthetic inputs to {} (n={n}, d={d}, heads={h}, kv-heads={hkv}, segment={segment}, strength={strength})",
        dir.display()
    );
    Ok(())
}

fn main_inner() -> Result<(), String> {
    let a = Args(std::env::args().skip(1).collect());
    if a.0.is_empty() || a.0.iter().any(|s| s == "--help" || s == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let (qp, kp, vp) = if let Some(dir) = a.value("--synthetic").or(a.value("--dir")) {
        let dir = PathBuf::from(dir);
        if a.value("--synthetic").is_some() {
            write_synthetic(&dir, &a)?;
        }
        (dir.join("q.npy"), dir.join("k.npy"), dir.join("v.npy"))
    } else {
        match (a.value("--q"), a.value("--k"), a.value("--v")) {
            (Some(q), Some(k), Some(v)) => (q.into(), k.into(), v.into()),
            _ => {
                return Err(format!(
                    "give --q, --k and --v, or --dir, or --synthetic\n{USAGE}"
                ));
            }
        }
    };
    let (q, qs) = load(&qp)?;
    let (k, ks) = load(&kp)?;
    let (v, vs) = load(&vp)?;
    let threads = a.num("--threads", 0usize)?;
    let blocks = match a.value("--blocks") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|b| {
                b.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("--blocks: cannot read '{b}'"))
            })
            .collect::<Result<_, _>>()?,
    };
    let l = a.num("--block-l", 0usize)?;
    let opts = Options {
        gamma: a.num("--gamma", 0.5f32)?,
        scale: a.num("--scale", 0.0f32)?,
        blocks,
        eps: a.num("--eps", 0.01f32)?,
        tol: a.num("--tol", 0.05f64)?,
        others: vec![
            Structure::Strided {
                stride: a.num("--stride", 0usize)?,
            },
            Structure::Fixed {
                block: l,
                summary: a.num("--summary", 1usize)?,
            },
            Structure::TopK {
                alpha: a.num("--alpha", 0.0f32)?,
                c_exp: a.num("--c-exp", 0.0f32)?,
            },
        ],
        par: if threads == 1 {
            Par::Seq
        } else {
            Par::rayon(threads)
        },
    };
    let report = diagnose(
        tensor(&q, qs, "Q")?,
        tensor(&k, ks, "K")?,
        tensor(&v, vs, "V")?,
        &opts,
    )
    .map_err(|e| e.to_string())?;
    print!("{}", report.table());
    let svg = match a.value("--svg") {
        Some(p) => PathBuf::from(p),
        None => qp.parent().unwrap_or(Path::new(".")).join("diagnose.svg"),
    };
    std::fs::write(&svg, report.svg()).map_err(|e| format!("{}: {e}", svg.display()))?;
    println!("plot: {}", svg.display());
    Ok(())
}

fn main() -> ExitCode {
    match main_inner() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("blockres-diagnose: {e}");
            ExitCode::FAILURE
        }
    }
}
