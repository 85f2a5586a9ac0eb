//! `blockres-diagnose`: does a model's attention fit the block structure?
//!
//! ```text
//! blockres-diagnose --q Q.npy --k K.npy --v V.npy [options]
//! blockres-diagnose --dir DIR [options]            # DIR/q.npy, DIR/k.npy, DIR/v.npy
//! blockres-diagnose --synthetic DIR [--n 2048 --d 64 --heads 2 --kv-heads 2
//!                   --segment 64 --strength 8 --seed 1] [options]
//! blockres-diagnose --help | --version
//! ```
//!
//! Inputs are `.npy` arrays (float16/32/64, little-endian, C order) of shape `[n, d]`
//! (one head), `[H, n, d]` or `[B, H, n, d]`; K and V may have fewer heads than Q
//! (grouped-query attention). `--synthetic DIR` first writes block-structured inputs
//! (`blockres::synthetic::segmented`) to DIR, then diagnoses them. Prints the table of
//! `blockres::diagnostics::Report::table` and writes the SVG plot. `--help` lists
//! every option (the text is [`HELP`]).
//!
//! Arguments are parsed with `lexopt`: an unknown option, a missing value or a value
//! that does not parse is an error naming the option, with exit status 2 and the usage
//! line; a failure while running (a missing or unreadable file, bad shapes) has exit
//! status 1 and names the file. The folder of the SVG output is checked before
//! anything is computed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use blockres::diagnostics::{Options, diagnose, npy};
use blockres::synthetic::segmented;
use blockres::{Par, Structure, TensorRef};

const USAGE: &str = "usage: blockres-diagnose (--q Q.npy --k K.npy --v V.npy | --dir DIR | --synthetic DIR [synthetic options]) [options]
       blockres-diagnose --help | --version";

/// The text of `--help`.
const HELP: &str = "\
Does a model's attention fit the block structure? Measures, on one call's Q, K, V
(causal), the attention mass inside the block diagonal, the effective support per
row, and the error and time of `block` at candidate block sizes and of `strided`,
`fixed` and `topk` against the exact dense resolvent; prints a table, a
recommendation, and writes an SVG plot.

Inputs (one of):
  --q FILE, --k FILE, --v FILE  .npy arrays (float16/32/64, little-endian, C order)
                                of shape [n, d], [H, n, d] or [B, H, n, d]; K and V
                                may have fewer heads than Q (grouped-query attention)
  --dir DIR                     DIR/q.npy, DIR/k.npy and DIR/v.npy
  --synthetic DIR               write block-structured synthetic inputs to DIR
                                (created if missing), then diagnose them

Synthetic inputs (only with --synthetic):
  --n N             tokens (default 2048)
  --d D             head width, dk = dv (default 64)
  --heads H         query heads (default 2)
  --kv-heads HKV    key/value heads, dividing H (default: H)
  --segment S       length of the segments attention concentrates in (default 64)
  --strength X      how strongly it concentrates (default 8)
  --seed SEED       random seed (default 1)

Options:
  --gamma G         γ of the resolvent, in [0, 1) (default 0.5)
  --scale S         logit scale; 0 means 1/sqrt(dk) (default 0)
  --blocks B1,B2,…  candidate block sizes (default: powers of two 8…1024 below n and
                    the automatic block size)
  --eps E           ε of the effective support, relative to the row max (default 0.01)
  --tol T           relative error a structure must reach to be recommended
                    (default 0.05)
  --stride L        l of `strided`; 0 means automatic (default 0)
  --block-l L       l of `fixed`; 0 means automatic (default 0)
  --summary C       summary columns per block of `fixed` (default 1)
  --alpha A         α of `topk`'s window k; 0 means the default (default 0)
  --c-exp C         exponent of `topk`'s window k; 0 means the default (default 0)
  --svg PATH        where the plot goes; its folder must exist (default:
                    diagnose.svg beside Q)
  --threads N       worker threads; 0 means all cores, 1 runs sequentially
                    (default 0)
  -h, --help        print this help and exit
  -V, --version     print the version and exit

A block size is recommended only when it is at least 10% faster than the exact
dense resolvent (measured: each time is the median of at least 3 runs after a
warm-up); a sparse structure that reaches the tolerance faster is named on the same
line.
Exit status: 0 on success, 1 when running fails, 2 for a usage error.";

/// Why the command stops.
enum Fail {
    /// The command line is wrong: exit status 2, with the usage line.
    Usage(String),
    /// Running failed: exit status 1.
    Run(String),
}

impl From<lexopt::Error> for Fail {
    fn from(e: lexopt::Error) -> Self {
        Fail::Usage(e.to_string())
    }
}

type Res<T> = Result<T, Fail>;

fn run_err(e: impl ToString) -> Fail {
    Fail::Run(e.to_string())
}

/// Where the inputs come from.
enum Input {
    Files { q: PathBuf, k: PathBuf, v: PathBuf },
    Dir(PathBuf),
    Synthetic(PathBuf),
}

/// The synthetic inputs' parameters.
struct Synth {
    n: usize,
    d: usize,
    heads: usize,
    kv_heads: Option<usize>,
    segment: usize,
    strength: f32,
    seed: u64,
}

/// The parsed command line.
struct Cli {
    input: Input,
    synth: Synth,
    opts: Options,
    svg: Option<PathBuf>,
}

enum Command {
    Help,
    Version,
    Run(Box<Cli>),
}

/// The next value of `flag`, parsed as `T`; an error names the flag and the value.
fn value<T: FromStr>(p: &mut lexopt::Parser, flag: &str) -> Res<T>
where
    T::Err: std::fmt::Display,
{
    let raw = p.value()?;
    let text = raw
        .to_str()
        .ok_or_else(|| Fail::Usage(format!("{flag}: the value is not valid UTF-8")))?;
    text.parse()
        .map_err(|e| Fail::Usage(format!("{flag}: cannot read '{text}': {e}")))
}

fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> Res<Command> {
    use lexopt::prelude::*;
    let mut p = lexopt::Parser::from_args(args);
    let (mut q, mut k, mut v, mut dir, mut synthetic) = (None, None, None, None, None);
    let mut synth = Synth {
        n: 2048,
        d: 64,
        heads: 2,
        kv_heads: None,
        segment: 64,
        strength: 8.0,
        seed: 1,
    };
    let mut synth_flags = Vec::new();
    let mut opts = Options::default();
    let (mut stride, mut block_l, mut summary, mut alpha, mut c_exp) = (0, 0, 1, 0.0, 0.0);
    let mut threads = 0usize;
    let mut svg = None;
    while let Some(arg) = p.next()? {
        let flag = match &arg {
            Short(c) => format!("-{c}"),
            Long(l) => format!("--{l}"),
            Value(v) => {
                return Err(Fail::Usage(format!(
                    "unexpected argument '{}'",
                    v.to_string_lossy()
                )));
            }
        };
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("q") => q = Some(value::<PathBuf>(&mut p, &flag)?),
            Long("k") => k = Some(value::<PathBuf>(&mut p, &flag)?),
            Long("v") => v = Some(value::<PathBuf>(&mut p, &flag)?),
            Long("dir") => dir = Some(value::<PathBuf>(&mut p, &flag)?),
            Long("synthetic") => synthetic = Some(value::<PathBuf>(&mut p, &flag)?),
            Long(name @ ("n" | "d" | "heads" | "kv-heads" | "segment" | "strength" | "seed")) => {
                match name {
                    "n" => synth.n = value(&mut p, &flag)?,
                    "d" => synth.d = value(&mut p, &flag)?,
                    "heads" => synth.heads = value(&mut p, &flag)?,
                    "kv-heads" => synth.kv_heads = Some(value(&mut p, &flag)?),
                    "segment" => synth.segment = value(&mut p, &flag)?,
                    "strength" => synth.strength = value(&mut p, &flag)?,
                    _ => synth.seed = value(&mut p, &flag)?,
                }
                synth_flags.push(flag);
            }
            Long("gamma") => opts.gamma = value(&mut p, &flag)?,
            Long("scale") => opts.scale = value(&mut p, &flag)?,
            Long("blocks") => {
                let list: String = value(&mut p, &flag)?;
                opts.blocks = list
                    .split(',')
                    .map(|b| {
                        b.trim()
                            .parse::<usize>()
                            .map_err(|e| Fail::Usage(format!("--blocks: cannot read '{b}': {e}")))
                    })
                    .collect::<Res<_>>()?;
            }
            Long("eps") => opts.eps = value(&mut p, &flag)?,
            Long("tol") => opts.tol = value(&mut p, &flag)?,
            Long("stride") => stride = value(&mut p, &flag)?,
            Long("block-l") => block_l = value(&mut p, &flag)?,
            Long("summary") => summary = value(&mut p, &flag)?,
            Long("alpha") => alpha = value(&mut p, &flag)?,
            Long("c-exp") => c_exp = value(&mut p, &flag)?,
            Long("svg") => svg = Some(value::<PathBuf>(&mut p, &flag)?),
            Long("threads") => threads = value(&mut p, &flag)?,
            _ => return Err(arg.unexpected().into()),
        }
    }
    let input = match (q, k, v, dir, synthetic) {
        (Some(q), Some(k), Some(v), None, None) => Input::Files { q, k, v },
        (None, None, None, Some(d), None) => Input::Dir(d),
        (None, None, None, None, Some(d)) => Input::Synthetic(d),
        (None, None, None, None, None) => {
            return Err(Fail::Usage(
                "no input: give --q, --k and --v, or --dir, or --synthetic".into(),
            ));
        }
        (q, k, v, None, None) => {
            let missing: Vec<&str> = [
                ("--q", q.is_none()),
                ("--k", k.is_none()),
                ("--v", v.is_none()),
            ]
            .into_iter()
            .filter_map(|(f, m)| m.then_some(f))
            .collect();
            return Err(Fail::Usage(format!(
                "{} missing: --q, --k and --v go together",
                missing.join(", ")
            )));
        }
        _ => {
            return Err(Fail::Usage(
                "give only one of: --q/--k/--v, --dir, --synthetic".into(),
            ));
        }
    };
    if !matches!(input, Input::Synthetic(_)) && !synth_flags.is_empty() {
        return Err(Fail::Usage(format!(
            "used only with --synthetic: {}",
            synth_flags.join(", ")
        )));
    }
    opts.others = vec![
        Structure::Strided { stride },
        Structure::Fixed {
            block: block_l,
            summary,
        },
        Structure::TopK { alpha, c_exp },
    ];
    opts.par = if threads == 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    };
    Ok(Command::Run(Box::new(Cli {
        input,
        synth,
        opts,
        svg,
    })))
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

fn tensor<'a>(data: &'a [f32], shape: [usize; 4], path: &Path) -> Res<TensorRef<'a, f32>> {
    TensorRef::new(data, shape).map_err(|e| Fail::Run(format!("{}: {e}", path.display())))
}

/// Read one input; every error names the file (`npy::read`'s do).
fn load(path: &Path) -> Res<(Vec<f32>, [usize; 4])> {
    let a = npy::read(path).map_err(run_err)?;
    let shape = as4(path, &a.shape).map_err(Fail::Run)?;
    Ok((a.data, shape))
}

fn write_synthetic(dir: &Path, s: &Synth) -> Res<()> {
    let hkv = s.kv_heads.unwrap_or(s.heads);
    let (n, d, h) = (s.n, s.d, s.heads);
    if n == 0 || d == 0 || h == 0 || hkv == 0 || h % hkv != 0 {
        return Err(Fail::Usage(
            "--n, --d, --heads, --kv-heads must be > 0 and --kv-heads must divide --heads".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Fail::Run(format!("{}: {e}", dir.display())))?;
    let x = segmented([1, h, hkv, n, d, d], s.segment, s.strength, s.seed);
    for (name, data, shape) in [
        ("q.npy", &x.q, x.q_shape()),
        ("k.npy", &x.k, x.k_shape()),
        ("v.npy", &x.v, x.v_shape()),
    ] {
        npy::write(dir.join(name), &shape, data).map_err(run_err)?;
    }
    println!(
        "wrote synthetic inputs to {} (n={n}, d={d}, heads={h}, kv-heads={hkv}, segment={}, strength={})",
        dir.display(),
        s.segment,
        s.strength
    );
    Ok(())
}

/// Refuse an SVG path whose folder does not exist (or that is a folder) before any
/// computation; the plot is written only at the end.
fn check_svg_path(svg: &Path) -> Res<()> {
    if svg.is_dir() {
        return Err(Fail::Run(format!(
            "--svg {}: is a folder, give a file path",
            svg.display()
        )));
    }
    let parent = match svg.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(Fail::Run(format!(
            "--svg {}: the folder {} does not exist",
            svg.display(),
            parent.display()
        )));
    }
    Ok(())
}

fn run(cli: Cli) -> Res<()> {
    if let Some(svg) = &cli.svg {
        check_svg_path(svg)?;
    }
    let (qp, kp, vp) = match &cli.input {
        Input::Files { q, k, v } => (q.clone(), k.clone(), v.clone()),
        Input::Dir(dir) | Input::Synthetic(dir) => {
            if let Input::Synthetic(_) = cli.input {
                write_synthetic(dir, &cli.synth)?;
            }
            (dir.join("q.npy"), dir.join("k.npy"), dir.join("v.npy"))
        }
    };
    let (q, qs) = load(&qp)?;
    let (k, ks) = load(&kp)?;
    let (v, vs) = load(&vp)?;
    let svg = cli.svg.clone().unwrap_or_else(|| {
        qp.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("diagnose.svg")
    });
    check_svg_path(&svg)?;
    let report = diagnose(
        tensor(&q, qs, &qp)?,
        tensor(&k, ks, &kp)?,
        tensor(&v, vs, &vp)?,
        &cli.opts,
    )
    .map_err(run_err)?;
    print!("{}", report.table());
    std::fs::write(&svg, report.svg()).map_err(|e| Fail::Run(format!("{}: {e}", svg.display())))?;
    println!("plot: {}", svg.display());
    Ok(())
}

fn main() -> ExitCode {
    let result = parse(std::env::args_os().skip(1)).and_then(|c| match c {
        Command::Help => {
            println!("{USAGE}\n\n{HELP}");
            Ok(())
        }
        Command::Version => {
            println!("blockres-diagnose {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Run(cli) => run(*cli),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(e)) => {
            eprintln!("blockres-diagnose: {e}\n{USAGE}\n(--help lists every option)");
            ExitCode::from(2)
        }
        Err(Fail::Run(e)) => {
            eprintln!("blockres-diagnose: {e}");
            ExitCode::FAILURE
        }
    }
}
