//! CPU kernels. Each works on one (batch, head) pair in f32, row-major:
//! `q: n×dk`, `k: n×dk`, `v: n×dv`, output `n×dv`.

mod bidir;
pub mod block;
pub mod dense;
pub(crate) mod simd;
pub(crate) mod small;
pub mod sparse;

use crate::error::{Error, Result};

/// One head's inputs, widened to f32.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Head<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub n: usize,
    pub dk: usize,
    pub dv: usize,
    pub scale: f32,
    pub gamma: f32,
}

/// Per-call buffers kept by a [`Workspace`](crate::Workspace): the widened inputs and
/// output of the half-precision paths, and the kernels' arena.
#[derive(Default, Debug)]
pub(crate) struct Scratch {
    pub qf: Vec<f32>,
    pub kf: Vec<f32>,
    pub vf: Vec<f32>,
    pub yf: Vec<f32>,
    pub kernel: KernelScratch,
}

/// A growable f32 arena a kernel carves its work arrays from. Contents are not
/// cleared between uses: kernels initialize what they read.
#[derive(Default, Debug)]
pub(crate) struct KernelScratch {
    arena: Vec<f32>,
}

impl KernelScratch {
    /// Work arrays of the given lengths, carved from the arena (grown fallibly: the
    /// sizes depend on the inputs, and a failed allocation must be an error, not an
    /// abort).
    pub fn parts<const K: usize>(&mut self, sizes: [usize; K]) -> Result<[&mut [f32]; K]> {
        let total = sizes
            .iter()
            .try_fold(0usize, |a, &s| a.checked_add(s))
            .ok_or(Error::OutOfMemory {
                what: "the kernel's scratch",
                bytes: usize::MAX,
            })?;
        grow(&mut self.arena, total, "the kernel's scratch")?;
        let mut rest = &mut self.arena[..total];
        Ok(sizes.map(|len| {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            part
        }))
    }
}

/// Grow `buf` to at least `len` elements without aborting when memory is short.
pub(crate) fn grow<T: Copy + Default>(
    buf: &mut Vec<T>,
    len: usize,
    what: &'static str,
) -> Result<()> {
    if buf.len() < len {
        let bytes = len.saturating_mul(std::mem::size_of::<T>());
        buf.try_reserve_exact(len - buf.len())
            .map_err(|_| Error::OutOfMemory { what, bytes })?;
        buf.resize(len, T::default());
    }
    Ok(())
}

pub(crate) fn threads(par: faer::Par) -> usize {
    match par {
        faer::Par::Seq => 1,
        faer::Par::Rayon(t) => t.get(),
    }
}
