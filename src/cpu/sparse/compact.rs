//! The compact copies of K, V and U that make strided reads contiguous ([`Compact`]).

use super::Pattern;

/// A compact copy of the rows a pattern reaches with a stride, so that each row's far
/// entries read one contiguous run of memory instead of one row every `l` rows (a
/// cache miss and a TLB miss each, at large n).
///
/// - `strided`: every row, ordered by residue `j mod l` then `j`: row `i`'s strided
///   columns `i mod l + t·l` are `start[i mod l] + t`, t = 0..⌊i/l⌋.
/// - `fixed`: the summary columns only, block by block: row `i`'s are `0..⌊i/l⌋·c`.
/// - `topk`: none.
pub(super) struct Compact {
    /// Original row of each compact row.
    pub(super) rows: Vec<u32>,
    /// Compact position of each original row (`u32::MAX`: not kept).
    pub(super) pos: Vec<u32>,
    /// `strided`: first compact row of each residue class.
    pub(super) start: Vec<usize>,
}

impl Compact {
    pub(super) fn new(p: Pattern, n: usize) -> Self {
        let mut rows = Vec::new();
        let mut start = Vec::new();
        match p {
            Pattern::Strided { l } => {
                for r in 0..l.min(n) {
                    start.push(rows.len());
                    rows.extend((r..n).step_by(l).map(|j| j as u32));
                }
            }
            Pattern::Fixed { l, c } => {
                let c = c.min(l);
                for b in 0..n.div_ceil(l) {
                    rows.extend((b * l + l - c..(b * l + l).min(n)).map(|j| j as u32));
                }
            }
            Pattern::TopK { .. } => {}
        }
        let mut pos = vec![u32::MAX; if rows.is_empty() { 0 } else { n }];
        for (t, &j) in rows.iter().enumerate() {
            pos[j as usize] = t as u32;
        }
        Self { rows, pos, start }
    }

    /// Row `i`'s leading entries that live in the compact copy: `(count, first)`.
    #[inline(always)]
    pub(super) fn prefix(&self, p: Pattern, i: usize) -> (usize, usize) {
        match p {
            Pattern::Strided { l } if i >= l => (i / l, self.start[i % l]),
            Pattern::Fixed { l, c } => ((i / l) * c.min(l), 0),
            _ => (0, 0),
        }
    }
}

/// Copy rows `rows` of `x` (row length `d`) into `out`, in that order.
pub(super) fn gather_rows(x: &[f32], d: usize, rows: &[u32], out: &mut [f32]) {
    for (o, &j) in out.chunks_exact_mut(d).zip(rows) {
        o.copy_from_slice(&x[j as usize * d..j as usize * d + d]);
    }
}
