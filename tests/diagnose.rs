//! Attention-structure diagnostics: the measured quantities against a float64
//! computation written here, and the `blockres-diagnose` command on `.npy` files.

use std::path::PathBuf;
use std::process::Command;

use blockres::diagnostics::{Options, diagnose, npy};
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
    let fastest = r.entries[..3]
        .iter()
        .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .unwrap();
    assert!(r.meets_tol);
    assert_eq!(r.recommended_block, fastest.param);
    // topk with k = n is dense.
    assert!(r.entries[3].rel_error < 1e-5);
    // An unreachable tolerance: the most accurate (b = n, exact).
    let r = diagnose(q, k, v, &Options { tol: 0.0, ..opts }).unwrap();
    assert!(!r.meets_tol || r.entries[2].rel_error == 0.0);
    assert_eq!(r.recommended_block, 300);
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
        "recommended block size: b = ",
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
