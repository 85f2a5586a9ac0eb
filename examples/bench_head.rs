//! Timing driver for one configuration of blockres on synthetic inputs, used by the
//! benchmark scripts in `benches/` (the numpy peer reads the inputs it saves).
//!
//! ```text
//! cargo run --release --example bench_head -- --n 4096,16384 --structure both \
//!     --threads 2 --dtype f32 --reps 5 [--save DIR] [--load DIR]
//! ```
//!
//! Prints one JSON line per (n, structure) to stdout: the median of `--reps` timed
//! calls after `--warmup` untimed ones, the first (cold) call, the block size used,
//! the relative Frobenius difference of block vs dense when both ran, and the
//! process's peak RSS so far. `--save DIR` (one n only) writes `q.npy`, `k.npy`,
//! `v.npy` (the inputs as the kernel saw them, widened to f32), `y_dense.npy` /
//! `y_block.npy` and `meta.json`; `--load DIR` reads `q.npy`, `k.npy`, `v.npy`
//! (f32, shape `[1, H, n, d]` or `[n, d]`) instead of generating inputs.

use std::any::Any;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use blockres::half::{bf16, f16};
use blockres::{
    Config, Element, Par, Structure, TensorMut, TensorRef, Workspace, auto_block_size,
    resolvent_attention_with, synthetic,
};

#[derive(Debug, Clone)]
struct Args {
    ns: Vec<usize>,
    heads: usize,
    dk: usize,
    dv: usize,
    dense: bool,
    block: bool,
    b: usize,
    threads: usize,
    dtype: String,
    reps: usize,
    warmup: usize,
    gamma: f32,
    causal: bool,
    seed: u64,
    segment: usize,
    strength: f32,
    save: Option<PathBuf>,
    load: Option<PathBuf>,
}

const USAGE: &str = "usage: bench_head [--n N[,N...]] [--heads H] [--dk D] [--dv D] \
[--structure dense|block|both] [--b B (0 = auto)] [--threads T] [--dtype f32|f16|bf16] \
[--reps R] [--warmup W] [--gamma G] [--bidirectional] [--seed S] [--segment S (0 = auto)] \
[--strength X] [--save DIR] [--load DIR]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        ns: vec![4096],
        heads: 1,
        dk: 64,
        dv: 64,
        dense: true,
        block: true,
        b: 0,
        threads: 1,
        dtype: "f32".into(),
        reps: 3,
        warmup: 1,
        gamma: 0.5,
        causal: true,
        seed: 42,
        segment: 0,
        strength: 4.0,
        save: None,
        load: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bidirectional" {
            a.causal = false;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        let val = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Result<usize, String> {
            v.parse::<usize>()
                .map_err(|e| format!("{flag}: '{v}' is not a count ({e})"))
        };
        let real = |v: &str| -> Result<f32, String> {
            v.parse::<f32>()
                .map_err(|e| format!("{flag}: '{v}' is not a number ({e})"))
        };
        match flag.as_str() {
            "--n" => a.ns = val.split(',').map(num).collect::<Result<_, _>>()?,
            "--heads" => a.heads = num(&val)?,
            "--dk" => a.dk = num(&val)?,
            "--dv" => a.dv = num(&val)?,
            "--structure" => {
                (a.dense, a.block) = match val.as_str() {
                    "dense" => (true, false),
                    "block" => (false, true),
                    "both" => (true, true),
                    _ => {
                        return Err(format!(
                            "--structure: expected dense|block|both, got '{val}'"
                        ));
                    }
                }
            }
            "--b" => a.b = num(&val)?,
            "--threads" => a.threads = num(&val)?.max(1),
            "--dtype" => {
                if !matches!(val.as_str(), "f32" | "f16" | "bf16") {
                    return Err(format!("--dtype: expected f32|f16|bf16, got '{val}'"));
                }
                a.dtype = val;
            }
            "--reps" => a.reps = num(&val)?.max(1),
            "--warmup" => a.warmup = num(&val)?,
            "--gamma" => a.gamma = real(&val)?,
            "--seed" => a.seed = val.parse().map_err(|e| format!("--seed: '{val}' ({e})"))?,
            "--segment" => a.segment = num(&val)?,
            "--strength" => a.strength = real(&val)?,
            "--save" => a.save = Some(val.into()),
            "--load" => a.load = Some(val.into()),
            _ => return Err(format!("unknown flag '{flag}'\n{USAGE}")),
        }
    }
    if a.save.is_some() && a.ns.len() > 1 {
        return Err("--save takes a single --n".into());
    }
    Ok(a)
}

/// Peak resident set size of this process (Linux `VmHWM`), in bytes.
fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    // Format 1.0: magic (6) + version (2) + header length (2) + header, padded with
    // spaces so the data starts on a 64-byte boundary, ending in '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut f = BufWriter::new(File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    for x in data {
        f.write_all(&x.to_le_bytes())?;
    }
    f.flush()
}

fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f32>), String> {
    let err = |m: String| format!("{}: {m}", path.display());
    let mut f = BufReader::new(File::open(path).map_err(|e| err(e.to_string()))?);
    let mut pre = [0u8; 8];
    f.read_exact(&mut pre).map_err(|e| err(e.to_string()))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(err("not an .npy file".into()));
    }
    let hlen = if pre[6] == 1 {
        let mut b = [0u8; 2];
        f.read_exact(&mut b).map_err(|e| err(e.to_string()))?;
        u16::from_le_bytes(b) as usize
    } else {
        let mut b = [0u8; 4];
        f.read_exact(&mut b).map_err(|e| err(e.to_string()))?;
        u32::from_le_bytes(b) as usize
    };
    let mut h = vec![0u8; hlen];
    f.read_exact(&mut h).map_err(|e| err(e.to_string()))?;
    let h = String::from_utf8_lossy(&h).into_owned();
    if !h.contains("'descr': '<f4'") || !h.contains("'fortran_order': False") {
        return Err(err(format!(
            "expected little-endian float32 in C order, header is {h}"
        )));
    }
    let shape_txt = h
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| err(format!("no shape in header {h}")))?;
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| err(format!("shape '{s}': {e}"))))
        .collect::<Result<_, _>>()?;
    let len: usize = shape.iter().product();
    let mut bytes = vec![0u8; len * 4];
    f.read_exact(&mut bytes).map_err(|e| err(e.to_string()))?;
    let data = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((shape, data))
}

/// `[heads, n, d]` of a loaded array (`[1, H, n, d]`, `[H, n, d]` or `[n, d]`).
fn heads_n_d(shape: &[usize], name: &str) -> Result<[usize; 3], String> {
    match *shape {
        [1, h, n, d] | [h, n, d] => Ok([h, n, d]),
        [n, d] => Ok([1, n, d]),
        _ => Err(format!(
            "{name}.npy: expected shape [1, H, n, d] or [n, d], got {shape:?}"
        )),
    }
}

/// Moves the f32 data into `Vec<T>`; for `T = f32` without a copy, so the inputs
/// are held once and the peak RSS measures the kernel, not the harness.
fn into_elems<T: Element>(x: Vec<f32>) -> Vec<T> {
    let boxed: Box<dyn Any> = Box::new(x);
    match boxed.downcast::<Vec<T>>() {
        Ok(v) => *v,
        Err(other) => match other.downcast::<Vec<f32>>() {
            Ok(x) => x.iter().map(|&v| T::from_f32(v)).collect(),
            Err(_) => unreachable!("the box holds a Vec<f32>"),
        },
    }
}

fn widened<T: Element>(x: &[T]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

fn rel_diff<T: Element>(a: &[T], b: &[T]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (x.to_f32() as f64, y.to_f32() as f64);
        num += (x - y) * (x - y);
        den += y * y;
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    heads: usize,
    n: usize,
    dk: usize,
    dv: usize,
    segment: usize,
}

fn inputs(a: &Args, n: usize) -> Result<Inputs, String> {
    if let Some(dir) = &a.load {
        let (qs, q) = read_npy(&dir.join("q.npy"))?;
        let (ks, k) = read_npy(&dir.join("k.npy"))?;
        let (vs, v) = read_npy(&dir.join("v.npy"))?;
        let [h, n, dk] = heads_n_d(&qs, "q")?;
        let [hk, nk, dkk] = heads_n_d(&ks, "k")?;
        let [hv, nv, dv] = heads_n_d(&vs, "v")?;
        if (hk, nk, dkk) != (h, n, dk) || (hv, nv) != (h, n) {
            return Err(format!(
                "loaded shapes disagree: q {qs:?}, k {ks:?}, v {vs:?} (same H and n needed)"
            ));
        }
        return Ok(Inputs {
            q,
            k,
            v,
            heads: h,
            n,
            dk,
            dv,
            segment: 0,
        });
    }
    let segment = if a.segment > 0 {
        a.segment
    } else {
        // Segments about one block long: the structure the block method targets.
        let b = auto_block_size(n, a.dk.max(a.dv));
        if b < n {
            b
        } else {
            ((4.0 * (n as f64).cbrt()).round() as usize).max(1)
        }
    };
    let x = synthetic::segmented(
        [1, a.heads, a.heads, n, a.dk, a.dv],
        segment,
        a.strength,
        a.seed,
    );
    Ok(Inputs {
        q: x.q,
        k: x.k,
        v: x.v,
        heads: a.heads,
        n,
        dk: a.dk,
        dv: a.dv,
        segment,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[m]
    } else {
        0.5 * (xs[m - 1] + xs[m])
    }
}

fn json_num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:e}"),
        _ => "null".into(),
    }
}

fn run<T: Element>(a: &Args, n: usize) -> Result<(), String> {
    let inp = inputs(a, n)?;
    let (h, n, dk, dv) = (inp.heads, inp.n, inp.dk, inp.dv);
    let (q, k, v) = (
        into_elems::<T>(inp.q),
        into_elems::<T>(inp.k),
        into_elems::<T>(inp.v),
    );
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, x, d) in [("q", &q, dk), ("k", &k, dk), ("v", &v, dv)] {
            write_npy(&dir.join(format!("{name}.npy")), &[1, h, n, d], &widened(x))
                .map_err(|e| format!("writing {name}.npy: {e}"))?;
        }
    }
    let b_used = if a.b == 0 {
        auto_block_size(n, dk.max(dv))
    } else {
        a.b
    }
    .clamp(1, n);
    let pool = if a.threads > 1 {
        Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(a.threads)
                .build()
                .map_err(|e| format!("thread pool: {e}"))?,
        )
    } else {
        None
    };
    let par = if pool.is_some() {
        Par::rayon(0)
    } else {
        Par::Seq
    };
    let ws = Workspace::new();
    let mut outputs: Vec<(&str, Vec<T>)> = Vec::new();
    let structures: Vec<(&str, Structure)> = [
        (a.dense, "dense", Structure::Dense),
        (a.block, "block", Structure::Block),
    ]
    .into_iter()
    .filter(|s| s.0)
    .map(|s| (s.1, s.2))
    .collect();
    for (name, structure) in structures {
        let cfg = Config {
            gamma: a.gamma,
            block_size: a.b,
            causal: a.causal,
            scale: 0.0,
            structure,
            ..Config::default()
        };
        let mut y = vec![T::default(); h * n * dv];
        let mut call = || -> Result<f64, String> {
            let t0 = Instant::now();
            resolvent_attention_with(
                TensorRef::new(&q, [1, h, n, dk]).map_err(|e| e.to_string())?,
                TensorRef::new(&k, [1, h, n, dk]).map_err(|e| e.to_string())?,
                TensorRef::new(&v, [1, h, n, dv]).map_err(|e| e.to_string())?,
                TensorMut::new(&mut y, [1, h, n, dv]).map_err(|e| e.to_string())?,
                &cfg,
                par,
                &ws,
            )
            .map_err(|e| e.to_string())?;
            Ok(t0.elapsed().as_secs_f64())
        };
        let mut timed = || -> Result<(f64, Vec<f64>), String> {
            let first = call()?;
            for _ in 1..a.warmup {
                call()?;
            }
            let mut times = if a.warmup == 0 { vec![first] } else { vec![] };
            while times.len() < a.reps {
                times.push(call()?);
            }
            Ok((first, times))
        };
        let (first, times) = match &pool {
            Some(p) => p.install(timed)?,
            None => timed()?,
        };
        let rel = match (name, outputs.first()) {
            ("block", Some((_, yd))) => Some(rel_diff(&y, yd)),
            _ => None,
        };
        println!(
            "{{\"n\": {n}, \"heads\": {h}, \"dk\": {dk}, \"dv\": {dv}, \"structure\": \"{name}\", \
             \"b\": {b}, \"dtype\": \"{dt}\", \"threads\": {th}, \"causal\": {causal}, \
             \"gamma\": {g}, \"segment\": {seg}, \"reps\": {reps}, \"seconds\": {sec}, \
             \"min_seconds\": {mn}, \"first_seconds\": {first}, \"rel_diff_vs_dense\": {rel}, \
             \"peak_rss_bytes\": {rss}}}",
            b = if name == "block" { b_used } else { n },
            dt = a.dtype,
            th = a.threads,
            causal = a.causal,
            g = a.gamma,
            seg = inp.segment,
            reps = times.len(),
            sec = json_num(Some(median(times.clone()))),
            mn = json_num(times.iter().copied().reduce(f64::min)),
            first = json_num(Some(first)),
            rel = json_num(rel),
            rss = peak_rss().map_or("null".into(), |r| r.to_string()),
        );
        std::io::stdout().flush().ok();
        if let Some(dir) = &a.save {
            write_npy(
                &dir.join(format!("y_{name}.npy")),
                &[1, h, n, dv],
                &widened(&y),
            )
            .map_err(|e| format!("writing y_{name}.npy: {e}"))?;
        }
        // Only dense is compared against, so later outputs need not be kept.
        if name == "dense" {
            outputs.push((name, y));
        }
    }
    if let Some(dir) = &a.save {
        let meta = format!(
            "{{\"n\": {n}, \"heads\": {h}, \"dk\": {dk}, \"dv\": {dv}, \"b\": {b_used}, \
             \"gamma\": {g}, \"causal\": {c}, \"dtype\": \"{dt}\"}}\n",
            g = a.gamma,
            c = a.causal,
            dt = a.dtype
        );
        std::fs::write(dir.join("meta.json"), meta).map_err(|e| format!("meta.json: {e}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let ns = if args.load.is_some() {
        vec![0]
    } else {
        args.ns.clone()
    };
    for n in ns {
        let r = match args.dtype.as_str() {
            "f16" => run::<f16>(&args, n),
            "bf16" => run::<bf16>(&args, n),
            _ => run::<f32>(&args, n),
        };
        if let Err(e) = r {
            eprintln!("bench_head: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
