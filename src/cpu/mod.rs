//! CPU kernels. Each works on one (batch, head) pair in f32, row-major:
//! `q: n×dk`, `k: n×dk`, `v: n×dv`, output `n×dv`.

pub mod block;
pub mod dense;
#[macro_use]
pub(crate) mod small;
pub mod sparse;

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
    pub fn parts<const K: usize>(&mut self, sizes: [usize; K]) -> [&mut [f32]; K] {
        let total: usize = sizes.iter().sum();
        if self.arena.len() < total {
            self.arena.resize(total, 0.0);
        }
        let mut rest = &mut self.arena[..total];
        sizes.map(|len| {
            let (part, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            part
        })
    }
}

pub(crate) fn threads(par: faer::Par) -> usize {
    match par {
        faer::Par::Seq => 1,
        faer::Par::Rayon(t) => t.get(),
    }
}
