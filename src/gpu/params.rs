//! The kernel ABI: one `#[repr(C)]` parameter struct per kernel family, mirroring the
//! structs of `cuda/common.cuh` field for field, and [`Args`], which turns device
//! buffers into the raw pointers those structs hold while keeping each buffer's stream
//! ordering until the launch is enqueued.
//!
//! Every entry point takes its family's struct by value, so a launch passes one
//! argument and the order of twenty fields is written once on each side. The tests
//! read each entry point's parameter size out of the built PTX and compare it with
//! the struct's size here (see `module.rs`): a field added on one side only fails them.

use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, SyncOnDrop};

/// A device address, as the kernels' pointer fields hold it (`CUdeviceptr`).
pub(crate) type Ptr = u64;

/// `MeansParams`: `block_means_*` (cuda/means.cu), Q, K and V (index 0, 1, 2) in one
/// launch.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct MeansParams {
    pub x: [Ptr; 3],
    pub out: [Ptr; 3],
    /// Three u64 flags, one per tensor.
    pub bad: Ptr,
    pub heads: [i32; 3],
    pub d: [i32; 3],
    pub n: i32,
    pub b: i32,
    pub m: i32,
    pub first: i32,
    /// The call's epoch in its workspace (`rec_value` in cuda/common.cuh).
    pub epoch: u64,
}

/// `CoarseParams`: `coarse` (cuda/coarse.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CoarseParams {
    pub qbar: Ptr,
    pub kbar: Ptr,
    pub vbar: Ptr,
    pub g: Ptr,
    pub sigma: Ptr,
    pub gsum: Ptr,
    pub h: Ptr,
    pub heads: i32,
    pub kv_heads: i32,
    pub n: i32,
    pub dk: i32,
    pub dv: i32,
    pub b: i32,
    pub m: i32,
    pub scale: f32,
    pub causal: i32,
    pub nbuf: i32,
}

/// `LocalParams`: `local_causal_*` (cuda/local.cu), `local_tc_*` (cuda/local_tc.cu),
/// `local_bidir_*` (cuda/bidir.cu), `local_bidir_tc_*` (cuda/bidir_tc.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct LocalParams {
    pub q: Ptr,
    pub k: Ptr,
    pub v: Ptr,
    pub y: Ptr,
    pub w: Ptr,
    pub pbar: Ptr,
    pub cvec: Ptr,
    pub sigma: Ptr,
    pub gsum: Ptr,
    pub h: Ptr,
    /// With `fused`: k̄, v̄ (per query head) and G̃, written by the local kernel.
    pub kbar: Ptr,
    pub vbar: Ptr,
    pub g: Ptr,
    /// The non-finite record, then (with `fused`) the CTA ticket and per-block flags.
    pub bad: Ptr,
    pub heads: i32,
    pub kv_heads: i32,
    pub n: i32,
    pub dk: i32,
    pub dv: i32,
    pub b: i32,
    pub m: i32,
    pub scale: f32,
    pub gamma: f32,
    /// coarse_query = first (only read with `fused`).
    pub first: i32,
    /// 1: the causal tensor-core kernel does the means and coarse stages itself.
    pub fused: i32,
    /// The call's epoch: its non-finite records and (with `fused`) its flags carry it.
    pub epoch: u64,
    /// With `fused`: the workspace's ticket count before the call.
    pub ticket0: u64,
}

/// `ReducedParams`: `reduced_inverses`, `reduced_causal`, `reduced_causal_small` (cuda/reduced.cu) and
/// `reduced_bidir_{build,step,apply}` (cuda/bidir.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReducedParams {
    pub g: Ptr,
    pub pbar: Ptr,
    pub cvec: Ptr,
    pub minv: Ptr,
    pub s: Ptr,
    pub m: i32,
    pub dv: i32,
    pub gamma: f32,
    /// First pivot of the bidirectional elimination's panel (`reduced_bidir_step`), or
    /// of its last panel (`reduced_bidir_apply`); 0 elsewhere.
    pub p0: i32,
}

/// `CombineParams`: `combine_*` (cuda/combine.cu).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct CombineParams {
    pub y: Ptr,
    pub w: Ptr,
    pub s: Ptr,
    pub n: i32,
    pub dv: i32,
    pub b: i32,
    pub m: i32,
    pub gamma: f32,
    /// The factor of w⊗s: γ, or 1 with deferred h.
    pub coef: f32,
}

/// `DecodeParams`: `decode_{keys,step,prefill}_*` (cuda/decode.cu). A pointer a kernel
/// does not read is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DecodeParams {
    pub q: Ptr,
    pub k: Ptr,
    pub v: Ptr,
    pub y: Ptr,
    pub kc: Ptr,
    pub zc: Ptr,
    pub ks: Ptr,
    pub zs: Ptr,
    pub co: Ptr,
    pub bad: Ptr,
    pub heads: i32,
    pub kv_heads: i32,
    pub s: i32,
    pub len: i32,
    pub cap: i32,
    pub dk: i32,
    pub dv: i32,
    pub b: i32,
    pub maxb: i32,
    pub scale: f32,
    pub gamma: f32,
}

// SAFETY: this and the five below are plain #[repr(C)] structs of u64, i32 and f32 with
// the field order, types and therefore layout of the same-named structs in
// cuda/common.cuh (the PTX parameter sizes are checked against size_of in module.rs's
// tests, the loaded functions' at load); cudarc passes them by address as one kernel
// parameter.
unsafe impl DeviceRepr for MeansParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for CoarseParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for LocalParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for ReducedParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for CombineParams {}
// SAFETY: as above.
unsafe impl DeviceRepr for DecodeParams {}

/// The raw addresses of one launch's buffers, with the guards that order them on the
/// launch stream: taking an address makes the stream wait for the buffer's pending
/// work on other streams, and dropping the guard (after the launch is enqueued)
/// records the launch as the buffer's latest use. Drop it after the launch, never
/// before.
pub(crate) struct Args<'a> {
    stream: &'a Arc<CudaStream>,
    guards: Vec<SyncOnDrop<'a>>,
}

impl<'a> Args<'a> {
    pub fn new(stream: &'a Arc<CudaStream>) -> Self {
        Self {
            stream,
            guards: Vec::with_capacity(12),
        }
    }

    /// The address of a buffer the kernel reads.
    pub fn r<T, S: DevicePtr<T>>(&mut self, s: &'a S) -> Ptr {
        let (p, g) = s.device_ptr(self.stream);
        self.guards.push(g);
        p
    }

    /// The address of a buffer the kernel writes.
    pub fn w<T, S: DevicePtrMut<T>>(&mut self, s: &'a mut S) -> Ptr {
        let (p, g) = s.device_ptr_mut(self.stream);
        self.guards.push(g);
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, size_of};

    /// The sizes the C structs have on a 64-bit target (pointers 8 bytes, padded to 8),
    /// written out so a change on either side is a visible decision.
    #[test]
    fn sizes_match_the_c_layout() {
        assert_eq!(size_of::<MeansParams>(), 104);
        assert_eq!(size_of::<CoarseParams>(), 96);
        assert_eq!(size_of::<LocalParams>(), 176);
        assert_eq!(size_of::<ReducedParams>(), 56);
        assert_eq!(size_of::<CombineParams>(), 48);
        assert_eq!(size_of::<DecodeParams>(), 128);
        assert_eq!(align_of::<LocalParams>(), 8);
    }
}
