//! `topk`'s selection of a row's columns, and the row softmax.

use crate::cpu::small;

/// Largest value of `x` (NaN ignored), in 8 independent lanes so it vectorizes.
#[inline(always)]
fn max8(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let (c, t) = x.split_at(x.len() / 8 * 8);
    for v in c.chunks_exact(8) {
        for l in 0..8 {
            m[l] = m[l].max(v[l]);
        }
    }
    t.iter().chain(&m).fold(f32::NEG_INFINITY, |a, &b| a.max(b))
}

/// Scratch of [`select_top`].
#[derive(Default)]
pub(super) struct SelectScratch {
    vals: Vec<f32>,
    cols: Vec<u32>,
}

/// Values compared as numbers: −0 and +0 are one value (`x + 0.0` maps −0 to +0) and
/// a NaN ranks lowest, so the order below is total and matches `>` on logits.
#[inline(always)]
fn key(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x + 0.0
    }
}

/// The `out.len()` largest entries of `row` (ties: lower index first), written to
/// `out` in increasing column order: exactly SPEC §3's set.
///
/// A lower bound first: the k-th largest of the maxima of 8-wide chunks is at most the
/// k-th largest entry (k chunks each hold an entry at least that large). One scan keeps
/// the candidates at or above it (few, when k is much smaller than the row), a
/// quickselect among them finds the k-th largest value `t`, and a scan of the
/// candidates in column order keeps those above `t` and the first ties at `t`.
pub(super) fn select_top(row: &[f32], out: &mut [u32], s: &mut SelectScratch) {
    const CHUNK: usize = 8;
    let k = out.len();
    if k >= row.len() {
        for (j, o) in out.iter_mut().enumerate() {
            *o = j as u32;
        }
        return;
    }
    let desc = |a: &f32, b: &f32| b.total_cmp(a);
    let bound = if row.len() / CHUNK >= 2 * k {
        s.vals.clear();
        s.vals.extend(row.chunks(CHUNK).map(|c| key(max8(c))));
        *s.vals.select_nth_unstable_by(k - 1, desc).1
    } else {
        f32::NEG_INFINITY
    };
    s.vals.clear();
    s.cols.clear();
    for (j, &x) in row.iter().enumerate() {
        let x = key(x);
        if x >= bound {
            s.vals.push(x);
            s.cols.push(j as u32);
        }
    }
    let (before, t, _) = s.vals.select_nth_unstable_by(k - 1, desc);
    let t = *t;
    let mut ties = k - before.iter().filter(|&&x| x > t).count();
    let mut o = 0;
    for &j in &s.cols {
        let x = key(row[j as usize]);
        if x > t || (x == t && ties > 0) {
            if x == t {
                ties -= 1;
            }
            out[o] = j;
            o += 1;
        }
    }
    debug_assert_eq!(o, k);
}

/// Shifted softmax of a row's logits, in place.
#[inline(always)]
pub(super) fn softmax(x: &mut [f32]) {
    // Separate max, exp and sum passes: each vectorizes (a running sum inside the exp
    // loop would be a serial chain).
    let mx = small::max_f32(x);
    for a in x.iter_mut() {
        *a = small::exp(*a - mx);
    }
    let inv = 1.0 / small::sum_f32(x);
    x.iter_mut().for_each(|a| *a *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_selection_breaks_ties_by_lower_column() {
        let row = [1.0, 3.0, 3.0, 0.5, 3.0, 2.0];
        let mut out = [0u32; 2];
        select_top(&row, &mut out, &mut SelectScratch::default());
        assert_eq!(out, [1, 2]);
        let mut out = [0u32; 4];
        select_top(&row, &mut out, &mut SelectScratch::default());
        assert_eq!(out, [1, 2, 4, 5]);
        // −0 and +0 tie; a NaN never wins.
        let row = [f32::NAN, 0.0, -0.0, -1.0, 0.0];
        let mut out = [0u32; 2];
        select_top(&row, &mut out, &mut SelectScratch::default());
        assert_eq!(out, [1, 2]);
        let mut out = [0u32; 4];
        select_top(&row, &mut out, &mut SelectScratch::default());
        assert_eq!(out, [1, 2, 3, 4]);
    }

    #[test]
    fn top_selection_matches_a_full_sort() {
        let mut rng = crate::synthetic::Rng::new(4);
        for len in [1usize, 2, 100, 700, 5000] {
            // Coarse values: many exact ties.
            let row: Vec<f32> = (0..len)
                .map(|_| (rng.normal() * 4.0).round() as f32)
                .collect();
            for k in [1usize, 2, 3, 10, 40, len] {
                let k = k.min(len);
                let mut want: Vec<u32> = (0..len as u32).collect();
                want.sort_by(|&a, &b| {
                    row[b as usize]
                        .partial_cmp(&row[a as usize])
                        .unwrap()
                        .then(a.cmp(&b))
                });
                want.truncate(k);
                want.sort_unstable();
                let mut out = vec![0u32; k];
                select_top(&row, &mut out, &mut SelectScratch::default());
                assert_eq!(out, want, "len {len} k {k}");
            }
        }
    }
}
