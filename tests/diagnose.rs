//! Attention-structure diagnostics: the measured quantities against a float64
//! computation written here, and the `blockres-diagnose` command on `.npy` files.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use blockres::diagnostics::{FASTER, MIN_TIMED_RUNS, Options, Report, diagnose, npy};
use blockres::synthetic::{Rng, segmented};
use blockres::{Par, Structure, TensorRef};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("blockres-diag-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Dense causal attention of one head in f64.
fn attention_f64(q: &[f32], k: &[f32], n: usize, d: usize) -> Vec<Vec<f64>> {
    let scale = 1.0 / (d as f64).sqrt();
    (0..n)
        .map(|i| {
            let l: Vec<f64> = (0..=i)
                .map(|j| {
                    scale
                        * (0..d)
                            .map(|t| q[i * d + t] as f64 * k[j * d + t] as f64)
                            .sum::<f64>()
                })
                .collect();
            let mx = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = l.iter().map(|x| (x - mx).exp()).sum();
            l.iter().map(|x| (x - mx).exp() / z).collect()
        })
        .collect()
}

#[test]
fn mass_and_support_match_a_float64_computation() {
    // GQA: 4 query heads over 2 kv heads, n not a multiple of the block sizes.
    let (b, h, hkv, n, d) = (1, 4, 2, 75, 8);
    let mut rng = Rng::new(21);
    let q: Vec<f32> = rng.normals(b * h * n * d).iter().map(|x| 2.0 * x).collect();
    let k = rng.normals(b * hkv * n * d);
    let v = rng.normals(b * hkv * n * d);
    let blocks = [1usize, 7, 16, 75];
    let eps = 0.05f32;
    let opts = Options {
        blocks: blocks.to_vec(),
        eps,
        par: Par::Seq,
        ..Options::default()
    };
    let r = diagnose(
        TensorRef::new(&q, [b, h, n, d]).unwrap(),
        TensorRef::new(&k, [b, hkv, n, d]).unwrap(),
        TensorRef::new(&v, [b, hkv, n, d]).unwrap(),
        &opts,
    )
    .unwrap();
    let mut mass = vec![0.0f64; blocks.len()];
    let (mut ssum, mut smax) = (0.0f64, 0usize);
    for hi in 0..h {
        let kv = hi / (h / hkv);
        let a = attention_f64(&q[hi * n * d..][..n * d], &k[kv * n * d..][..n * d], n, d);
        for (i, row) in a.iter().enumerate() {
            for (m, &bs) in mass.iter_mut().zip(&blocks) {
                *m += row[i / bs * bs..].iter().sum::<f64>();
            }
            let mx = row.iter().cloned().fold(0.0, f64::max);
            let s = row.iter().filter(|&&x| x > eps as f64 * mx).count();
            ssum += s as f64;
            smax = smax.max(s);
        }
    }
    let rows = (h * n) as f64;
    for ((&(bs, got), want), &bw) in r.block_mass.iter().zip(&mass).zip(&blocks) {
        assert_eq!(bs, bw);
        assert!(
            (got - want / rows).abs() < 1e-5,
            "b={bs}: {got} vs {}",
            want / rows
        );
    }
    assert!(
        (r.block_mass[3].1 - 1.0).abs() < 1e-12,
        "b = n holds all the mass"
    );
    assert!((r.support_mean - ssum / rows).abs() < 1e-9);
    assert_eq!(r.support_max, smax);
    // b = n is the dense operator itself.
    let full = r
        .entries
        .iter()
        .find(|e| e.structure == Structure::Block && e.param == n)
        .unwrap();
    assert!(full.rel_error < 1e-5, "{}", full.rel_error);
    assert_eq!(r.entries.len(), blocks.len() + 3);
}

/// The rule of `Report::recommended_block` and `Report::cheaper_sparse`, recomputed
/// from the report's own entries, and its point: never a block size slower than dense.
fn check_rule(r: &Report) {
    let blocks: Vec<_> = r
        .entries
        .iter()
        .filter(|e| e.structure == Structure::Block)
        .collect();
    let others: Vec<_> = r
        .entries
        .iter()
        .filter(|e| e.structure != Structure::Block)
        .collect();
    for e in &r.entries {
        assert!(e.runs >= MIN_TIMED_RUNS && e.runs % 2 == 1, "{e:?}");
        assert!(e.seconds > 0.0);
    }
    let faster: Vec<_> = blocks
        .iter()
        .filter(|e| e.seconds <= FASTER * r.dense_seconds)
        .collect();
    let meeting = faster
        .iter()
        .filter(|e| e.rel_error <= r.tol)
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
    match (r.recommended_block, meeting) {
        (Some(b), Some(e)) => {
            assert!(r.meets_tol);
            assert_eq!(b, e.param);
        }
        (Some(b), None) => {
            assert!(!r.meets_tol);
            let most = faster
                .iter()
                .min_by(|a, b| a.rel_error.total_cmp(&b.rel_error))
                .unwrap();
            assert_eq!(b, most.param);
        }
        (None, _) => {
            assert!(faster.is_empty(), "{}", r.table());
            assert!(!r.meets_tol);
        }
    }
    if let Some(b) = r.recommended_block {
        let e = blocks.iter().find(|e| e.param == b).unwrap();
        assert!(e.seconds < r.dense_seconds, "{}", r.table());
    }
    let bar = match r.recommended_block {
        Some(b) if r.meets_tol => blocks.iter().find(|e| e.param == b).unwrap().seconds,
        _ => r.dense_seconds,
    };
    let sparse = others
        .iter()
        .filter(|e| e.rel_error <= r.tol && e.seconds <= FASTER * bar)
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
    assert_eq!(r.cheaper_sparse.as_ref(), sparse.copied(), "{}", r.table());
    let line = r.recommendation();
    assert!(r.table().contains(&line));
    match &r.cheaper_sparse {
        Some(e) => assert!(
            line.contains(&format!("but {} (", e.structure.name())),
            "{line}"
        ),
        None => assert!(!line.contains("but "), "{line}"),
    }
}

#[test]
fn recommendation_follows_the_documented_rule() {
    let x = segmented([1, 1, 1, 300, 16, 16], 30, 6.0, 3);
    let q = TensorRef::new(&x.q, x.q_shape()).unwrap();
    let k = TensorRef::new(&x.k, x.k_shape()).unwrap();
    let v = TensorRef::new(&x.v, x.v_shape()).unwrap();
    let others = vec![Structure::TopK {
        alpha: 1.0,
        c_exp: 1.0,
    }];
    // A loose tolerance: the fastest block size that meets it.
    let opts = Options {
        blocks: vec![10, 20, 300],
        tol: 10.0,
        others: others.clone(),
        ..Options::default()
    };
    let r = diagnose(q, k, v, &opts).unwrap();
    check_rule(&r);
    // Everything meets the tolerance: the fastest block size faster than dense.
    let fastest = r.entries[..3]
        .iter()
        .filter(|e| e.seconds <= FASTER * r.dense_seconds)
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds));
    assert_eq!(r.recommended_block, fastest.map(|e| e.param));
    assert_eq!(r.meets_tol, fastest.is_some());
    // topk with k = n is dense.
    assert!(r.entries[3].rel_error < 1e-5);
    // An unreachable tolerance: the most accurate of those faster than dense.
    let r = diagnose(q, k, v, &Options { tol: 0.0, ..opts }).unwrap();
    check_rule(&r);
    assert!(!r.meets_tol || r.entries[2].rel_error == 0.0);
}

#[test]
fn no_block_size_slower_than_dense_is_recommended() {
    // Small n, where dense is cheap; b ≥ n/2 is the dense operator itself.
    for (n, seed) in [(24, 1), (40, 2), (64, 3), (96, 4)] {
        let x = segmented([1, 2, 2, n, 32, 32], 8, 8.0, seed);
        let opts = Options {
            blocks: vec![2, 4, 8, 16, n / 2, n],
            tol: 0.5,
            par: Par::Seq,
            ..Options::default()
        };
        let r = diagnose(
            TensorRef::new(&x.q, x.q_shape()).unwrap(),
            TensorRef::new(&x.k, x.k_shape()).unwrap(),
            TensorRef::new(&x.v, x.v_shape()).unwrap(),
            &opts,
        )
        .unwrap();
        check_rule(&r);
    }
}

#[test]
fn bad_options_are_refused() {
    let x = segmented([1, 1, 1, 20, 4, 4], 5, 1.0, 3);
    let q = TensorRef::new(&x.q, x.q_shape()).unwrap();
    for opts in [
        Options {
            blocks: vec![0, 4],
            ..Options::default()
        },
        Options {
            eps: 0.0,
            ..Options::default()
        },
        Options {
            gamma: 1.0,
            ..Options::default()
        },
    ] {
        assert!(diagnose(q, q, q, &opts).is_err());
    }
}

fn diagnose_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_blockres-diagnose"))
}

/// A float64 `.npy` file written byte by byte, as `numpy.save` would.
fn write_f64_npy(path: &PathBuf, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut h = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    let total = 10 + h.len() + 1;
    h.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    h.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(h.as_bytes());
    for &x in data {
        out.extend_from_slice(&(x as f64).to_le_bytes());
    }
    std::fs::write(path, out).unwrap();
}

fn check_output(out: &std::process::Output, svg: &PathBuf) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "effective support",
        "block-diag mass",
        "block     b=",
        "strided",
        "fixed",
        "topk",
        "recommended block size: ",
        "median of",
    ] {
        assert!(stdout.contains(needle), "missing '{needle}' in:\n{stdout}");
    }
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.matches("<polyline").count() >= 8, "{svg}");
}

#[test]
fn cli_reads_one_head_f32_files() {
    let dir = tmpdir("f32");
    let (n, d) = (90, 8);
    let x = segmented([1, 1, 1, n, d, d], 12, 4.0, 8);
    for (name, data) in [("q.npy", &x.q), ("k.npy", &x.k), ("v.npy", &x.v)] {
        npy::write(dir.join(name), &[n, d], data).unwrap();
    }
    let svg = dir.join("plot.svg");
    let out = diagnose_cmd()
        .args(["--q", dir.join("q.npy").to_str().unwrap()])
        .args(["--k", dir.join("k.npy").to_str().unwrap()])
        .args(["--v", dir.join("v.npy").to_str().unwrap()])
        .args(["--blocks", "4,8,16", "--svg", svg.to_str().unwrap()])
        .output()
        .unwrap();
    check_output(&out, &svg);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_reads_batched_gqa_f64_files() {
    let dir = tmpdir("f64");
    let (b, h, hkv, n, dk, dv) = (2, 4, 2, 40, 6, 5);
    let x = segmented([b, h, hkv, n, dk, dv], 8, 3.0, 9);
    write_f64_npy(&dir.join("q.npy"), &x.q_shape(), &x.q);
    write_f64_npy(&dir.join("k.npy"), &x.k_shape(), &x.k);
    write_f64_npy(&dir.join("v.npy"), &x.v_shape(), &x.v);
    let out = diagnose_cmd()
        .args(["--dir", dir.to_str().unwrap(), "--threads", "1"])
        .output()
        .unwrap();
    check_output(&out, &dir.join("diagnose.svg"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("B=2 H=4 Hkv=2 n=40 dk=6 dv=5"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_synthetic_demo_in_one_command() {
    let dir = tmpdir("synthetic");
    let out = diagnose_cmd()
        .args([
            "--synthetic",
            dir.to_str().unwrap(),
            "--n",
            "256",
            "--d",
            "16",
        ])
        .output()
        .unwrap();
    check_output(&out, &dir.join("diagnose.svg"));
    assert_eq!(
        npy::read(dir.join("q.npy")).unwrap().shape,
        vec![1, 2, 256, 16]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_reports_bad_input_clearly() {
    let dir = tmpdir("bad");
    npy::write(dir.join("q.npy"), &[10, 4], &[0.0; 40]).unwrap();
    npy::write(dir.join("k.npy"), &[10, 3], &[0.0; 30]).unwrap();
    npy::write(dir.join("v.npy"), &[10, 4], &[0.0; 40]).unwrap();
    let out = diagnose_cmd()
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("input K"), "{err}");
    std::fs::write(dir.join("q.npy"), b"not numpy").unwrap();
    let out = diagnose_cmd()
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("q.npy"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cli_refuses_unknown_options_and_bad_values() {
    for (args, needles) in [
        (vec!["--dir", ".", "--gama", "0.9"], vec!["--gama"]),
        (vec!["--dir", ".", "--gamma"], vec!["--gamma"]),
        (vec!["--dir", ".", "--gamma", "abc"], vec!["--gamma", "abc"]),
        (
            vec!["--dir", ".", "--blocks", "8,x"],
            vec!["--blocks", "'x'"],
        ),
        (vec!["--dir", ".", "--threads", "-1"], vec!["--threads"]),
        (vec!["--dir", ".", "stray"], vec!["stray"]),
        (vec!["--dir", ".", "--n", "64"], vec!["--n", "--synthetic"]),
        (vec!["--q", "q.npy"], vec!["--k", "--v"]),
        (vec![], vec!["--synthetic"]),
    ] {
        let out = diagnose_cmd().args(&args).output().unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("usage: blockres-diagnose"), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: no '{n}' in {err}");
        }
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn cli_help_and_version() {
    for flag in ["--help", "-h"] {
        let out = diagnose_cmd().arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let help = String::from_utf8_lossy(&out.stdout);
        for opt in [
            "--q",
            "--k",
            "--v",
            "--dir",
            "--synthetic",
            "--n",
            "--d",
            "--heads",
            "--kv-heads",
            "--segment",
            "--strength",
            "--seed",
            "--gamma",
            "--scale",
            "--blocks",
            "--eps",
            "--tol",
            "--stride",
            "--block-l",
            "--summary",
            "--alpha",
            "--c-exp",
            "--svg",
            "--threads",
            "--help",
            "--version",
        ] {
            // Each option is listed at the start of a line of the option list.
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(opt) || l.contains(&format!(", {opt} "))),
                "{opt} not explained in:\n{help}"
            );
        }
        assert!(help.contains("usage: blockres-diagnose"));
    }
    for flag in ["--version", "-V"] {
        let out = diagnose_cmd().arg(flag).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("blockres-diagnose {}", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn cli_file_errors_name_the_path() {
    let dir = tmpdir("missing");
    npy::write(dir.join("q.npy"), &[10, 4], &[0.0; 40]).unwrap();
    npy::write(dir.join("v.npy"), &[10, 4], &[0.0; 40]).unwrap();
    let absent = dir.join("no-such-k.npy");
    let out = diagnose_cmd()
        .args(["--q", dir.join("q.npy").to_str().unwrap()])
        .args(["--k", absent.to_str().unwrap()])
        .args(["--v", dir.join("v.npy").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains(absent.to_str().unwrap()), "{err}");
    // --dir without the files: the missing q.npy is named.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = diagnose_cmd()
        .args(["--dir", empty.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains(empty.join("q.npy").to_str().unwrap()), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_svg_into_a_missing_folder_fails_before_computing() {
    let dir = tmpdir("svg");
    let svg = dir.join("no-such-folder").join("plot.svg");
    // n = 2^17: writing the inputs alone takes a while and the diagnosis minutes.
    let t0 = Instant::now();
    let mut child = diagnose_cmd()
        .args(["--synthetic", dir.join("inputs").to_str().unwrap()])
        .args(["--n", "131072", "--svg", svg.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("still running after 10 s: the --svg folder was not checked first");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = t0.elapsed();
    let out = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
    let err = stderr_of(&out);
    assert!(err.contains("no-such-folder"), "{err}");
    // Nothing was written: the synthetic inputs come after the check.
    assert!(!dir.join("inputs").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One printed row: (structure, parameter, rel. error, ms).
type Row = (String, String, f64, f64);

/// `(dense ms, rows, recommendation line)` of the printed table.
fn parse_table(stdout: &str) -> (f64, Vec<Row>, String) {
    let dense = stdout
        .lines()
        .find_map(|l| l.strip_prefix("exact dense resolvent: "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let rows = stdout
        .lines()
        .filter(|l| {
            ["block ", "strided ", "fixed ", "topk "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let t = w.len();
            (
                w[0].to_string(),
                w[1..t - 3].join(" "),
                w[t - 2].parse().unwrap(),
                w[t - 1].parse().unwrap(),
            )
        })
        .collect();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("recommended block size: "))
        .unwrap()
        .to_string();
    (dense, rows, line)
}

#[test]
fn cli_never_recommends_a_block_size_slower_than_dense() {
    let dir = tmpdir("small");
    // n = 24: dense is a few microseconds; b = 12 and 24 are dense itself.
    let out = diagnose_cmd()
        .args(["--synthetic", dir.to_str().unwrap()])
        .args([
            "--n",
            "24",
            "--d",
            "64",
            "--segment",
            "8",
            "--blocks",
            "2,4,8,12,24",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (dense, rows, line) = parse_table(&stdout);
    assert_eq!(rows.len(), 8, "{stdout}");
    if let Some(b) = line
        .strip_prefix("recommended block size: b = ")
        .map(|r| r.split(' ').next().unwrap())
    {
        let row = rows
            .iter()
            .find(|r| r.0 == "block" && r.1 == format!("b={b}"))
            .unwrap();
        assert!(row.3 <= dense, "b = {b} is slower than dense:\n{stdout}");
    } else {
        assert!(
            line.contains("none") && line.contains("use dense"),
            "{line}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cli_names_a_sparse_structure_that_meets_the_tolerance_faster() {
    // Spans of 48 tokens, strongly concentrated: `fixed` and `strided` with l = 48
    // follow the spans (relative error ~3e-3), while no power-of-two block size
    // reaches 5% (the spans straddle the blocks), and fixed is ~3× faster than dense.
    let dir = tmpdir("sparse");
    let out = diagnose_cmd()
        .args(["--synthetic", dir.to_str().unwrap()])
        .args([
            "--n",
            "1024",
            "--d",
            "32",
            "--segment",
            "48",
            "--strength",
            "24",
        ])
        .args(["--block-l", "48", "--stride", "48", "--tol", "0.05"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (dense, rows, line) = parse_table(&stdout);
    let fixed = rows.iter().find(|r| r.0 == "fixed").unwrap();
    assert!(fixed.2 <= 0.05 && fixed.3 < dense, "{stdout}");
    assert!(
        rows.iter().filter(|r| r.0 == "block").all(|r| r.2 > 0.05),
        "{stdout}"
    );
    assert!(
        line.contains("but fixed (l=48, c=1)") || line.contains("but strided (l=48)"),
        "{stdout}"
    );
    assert!(line.contains("reaches relative error ≤ 0.05"), "{line}");
    std::fs::remove_dir_all(&dir).unwrap();
}
