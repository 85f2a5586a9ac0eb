//! The diagnostics plot, written by hand: two log–log panels (relative error and time
//! against the block size), one polyline per structure; structures that do not depend
//! on `b` (and the dense time) are horizontal dashed lines.

use std::fmt::Write;

use super::Report;
use crate::Structure;

const W: f64 = 900.0;
const H: f64 = 400.0;
const PW: f64 = 330.0;
const PH: f64 = 250.0;
const TOP: f64 = 50.0;

const COLORS: [(&str, &str); 5] = [
    ("block", "#1f77b4"),
    ("strided", "#d62728"),
    ("fixed", "#2ca02c"),
    ("topk", "#9467bd"),
    ("dense", "#555555"),
];

fn color(name: &str) -> &'static str {
    COLORS
        .iter()
        .find(|c| c.0 == name)
        .map_or("#000000", |c| c.1)
}

/// A log-scale axis range covering `vals`, widened to whole decades.
fn decades(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (-1.0, 0.0);
    }
    let (a, b) = (lo.log10().floor(), hi.log10().ceil());
    if a == b { (a - 1.0, b) } else { (a, b) }
}

struct Panel {
    x0: f64,
    xr: (f64, f64),
    yr: (f64, f64),
}

impl Panel {
    fn x(&self, b: f64) -> f64 {
        let (a, c) = self.xr;
        self.x0 + (b.log2() - a) / (c - a).max(1e-9) * PW
    }
    fn y(&self, v: f64) -> f64 {
        let (a, c) = self.yr;
        let l = v.max(10f64.powf(a)).log10();
        TOP + PH - (l - a) / (c - a) * PH
    }
}

fn axes(s: &mut String, p: &Panel, title: &str, ylabel: &str, ticks: &[usize]) {
    let _ = writeln!(
        s,
        r##"<rect x="{:.1}" y="{TOP}" width="{PW}" height="{PH}" fill="none" stroke="#000"/>"##,
        p.x0
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="14">{title}</text>"##,
        p.x0 + PW / 2.0,
        TOP - 12.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">block size b</text>"##,
        p.x0 + PW / 2.0,
        TOP + PH + 34.0
    );
    let _ = writeln!(
        s,
        r##"<text transform="translate({:.1},{:.1}) rotate(-90)" text-anchor="middle" font-size="12">{ylabel}</text>"##,
        p.x0 - 48.0,
        TOP + PH / 2.0
    );
    for &b in ticks {
        let x = p.x(b as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#000"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="11">{b}</text>"##,
            TOP + PH,
            TOP + PH + 5.0,
            TOP + PH + 18.0
        );
    }
    let (a, c) = p.yr;
    for e in a as i32..=c as i32 {
        let y = p.y(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">1e{e}</text>"##,
            p.x0,
            p.x0 + PW,
            p.x0 - 4.0,
            y + 4.0
        );
    }
}

fn polyline(s: &mut String, pts: &[(f64, f64)], col: &str, dashed: bool) {
    let d: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let dash = if dashed {
        r#" stroke-dasharray="6,4""#
    } else {
        ""
    };
    let _ = writeln!(
        s,
        r#"<polyline points="{}" fill="none" stroke="{col}" stroke-width="2"{dash}/>"#,
        d.join(" ")
    );
    if !dashed {
        for (x, y) in pts {
            let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{col}"/>"#);
        }
    }
}

pub(super) fn plot(r: &Report) -> String {
    let blocks: Vec<usize> = r.block_mass.iter().map(|(b, _)| *b).collect();
    let (bmin, bmax) = (
        *blocks.first().unwrap_or(&1) as f64,
        *blocks.last().unwrap_or(&1) as f64,
    );
    let xr = if bmax > bmin {
        (bmin.log2(), bmax.log2())
    } else {
        (bmin.log2() - 1.0, bmin.log2() + 1.0)
    };
    let err = Panel {
        x0: 80.0,
        xr,
        yr: decades(r.entries.iter().map(|e| e.rel_error.max(1e-8))),
    };
    let time = Panel {
        x0: 80.0 + PW + 110.0,
        xr,
        yr: decades(
            r.entries
                .iter()
                .map(|e| e.seconds * 1e3)
                .chain([r.dense_seconds * 1e3]),
        ),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="#fff"/>"##);
    axes(
        &mut s,
        &err,
        "relative error vs exact dense resolvent",
        "relative error",
        &blocks,
    );
    axes(&mut s, &time, "time", "milliseconds", &blocks);
    // Horizontal lines span the panels' width.
    let (xa, xb) = (err.x0, err.x0 + PW);
    let (ta, tb) = (time.x0, time.x0 + PW);
    let blk: Vec<_> = r
        .entries
        .iter()
        .filter(|e| e.structure == Structure::Block)
        .collect();
    let line = |p: &Panel, f: &dyn Fn(&super::Entry) -> f64| -> Vec<(f64, f64)> {
        blk.iter()
            .map(|e| (p.x(e.param as f64), p.y(f(e))))
            .collect()
    };
    polyline(
        &mut s,
        &line(&err, &|e| e.rel_error.max(1e-8)),
        color("block"),
        false,
    );
    polyline(
        &mut s,
        &line(&time, &|e| e.seconds * 1e3),
        color("block"),
        false,
    );
    let mut legend = vec![("block".to_string(), color("block"), false)];
    for e in r.entries.iter().filter(|e| e.structure != Structure::Block) {
        let col = color(e.structure.name());
        let y = err.y(e.rel_error.max(1e-8));
        polyline(&mut s, &[(xa, y), (xb, y)], col, true);
        let y = time.y(e.seconds * 1e3);
        polyline(&mut s, &[(ta, y), (tb, y)], col, true);
        legend.push((
            format!("{} ({})", e.structure.name(), e.param_label()),
            col,
            true,
        ));
    }
    let y = time.y(r.dense_seconds * 1e3);
    polyline(&mut s, &[(ta, y), (tb, y)], color("dense"), true);
    legend.push(("dense (exact)".into(), color("dense"), true));
    if let Some(b) = r
        .recommended_block
        .filter(|&b| b as f64 >= bmin && b as f64 <= bmax)
    {
        let rb = b as f64;
        let x = err.x(rb);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#1f77b4" stroke-dasharray="2,3"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#1f77b4">recommended b={}</text>"##,
            TOP + PH,
            x + 3.0,
            TOP + 12.0,
            b
        );
    }
    for (t, (label, col, dashed)) in legend.iter().enumerate() {
        let x = 80.0 + (t % 3) as f64 * 260.0;
        let y = H - 30.0 + (t / 3) as f64 * 16.0;
        let dash = if *dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{col}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}" font-size="11">{label}</text>"#,
            x + 22.0,
            x + 26.0,
            y + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}
