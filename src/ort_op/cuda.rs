//! Compute on ONNX Runtime's CUDA execution provider: Q, K, V and Y are ORT's device
//! buffers, the kernels are enqueued on ORT's compute stream
//! (`KernelContext_GetGPUComputeStream`) and Compute returns without waiting, as ORT's
//! own CUDA kernels do. Scratch is kept per device and stream (`gpu::external`).
//!
//! What the GPU kernels lack is an error status, never a silent trip through the host:
//! a structure without CUDA kernels at session creation, a shape beyond the GPU limits
//! at run. NaN/∞ in the inputs propagates to Y (reporting it would need a wait).

use ort_sys::{OrtErrorCode, OrtKernelContext};

use super::api::Fail;
use super::kernel::{Call, Kernel, OnnxElement};
use crate::{Config, Structure};

/// At session creation: the node's structure must have CUDA kernels, and a
/// bidirectional γ must be one the GPU's f32 solves take.
pub(crate) fn check_config(cfg: &Config) -> Result<(), Fail> {
    if !cfg.causal && cfg.gamma > crate::gpu::MAX_BIDIRECTIONAL_GAMMA {
        return Err(Fail::Msg(
            OrtErrorCode::ORT_NOT_IMPLEMENTED,
            format!(
                "blockres.ResolventAttention: bidirectional attention on the CUDA execution \
                 provider takes gamma ≤ {} (got {}): its f32 solves lose accuracy nearer 1; \
                 use the CPU execution provider, which solves in f64",
                crate::gpu::MAX_BIDIRECTIONAL_GAMMA,
                cfg.gamma
            ),
        ));
    }
    match cfg.structure {
        Structure::Block | Structure::Dense => Ok(()),
        other => Err(Fail::Msg(
            OrtErrorCode::ORT_NOT_IMPLEMENTED,
            format!(
                "blockres.ResolventAttention: structure '{}' has no CUDA kernels; on the \
                 CUDA execution provider use 'block' or 'dense', or run the model with the \
                 CPU execution provider",
                other.name()
            ),
        )),
    }
}

pub(crate) fn compute<T: OnnxElement>(
    kernel: &Kernel<T>,
    ctx: *mut OrtKernelContext,
) -> Result<(), Fail> {
    let api = kernel.api;
    let call = Call::read::<T>(api, ctx)?;
    if call.out_shape.contains(&0) {
        return Ok(());
    }
    // SAFETY: `ctx` and Q's value belong to this Compute call.
    let (stream, (place, ordinal)) = unsafe { (api.gpu_stream(ctx)?, api.location(call.q_value)?) };
    if stream.is_null() || place != "Cuda" {
        return Err(Fail::Msg(
            OrtErrorCode::ORT_FAIL,
            format!(
                "blockres.ResolventAttention: the CUDA kernel got input Q in '{place}' memory \
                 and {} compute stream; expected CUDA device memory and ORT's stream",
                if stream.is_null() { "no" } else { "a" }
            ),
        ));
    }
    let ordinal = usize::try_from(ordinal)
        .map_err(|_| Fail::invalid(format!("blockres.ResolventAttention: device id {ordinal}")))?;
    // One operator per node wherever it runs: `block_size = 0` resolves with the
    // crate's rule, as on the CPU registration.
    let mut cfg = kernel.cfg;
    if cfg.structure == Structure::Block && cfg.block_size == 0 {
        cfg.block_size = crate::auto_block_size(call.dims.n, call.dims.dk.max(call.dims.dv));
    }
    let [q, k, v] = call.data.map(|p| p as u64);
    // SAFETY: ORT's device buffers of the checked shapes stay valid until the work on
    // its stream is done (ORT frees them in stream order); Y is a fresh output.
    unsafe {
        crate::gpu::resolvent_attention_on_stream::<T>(
            ordinal,
            stream.cast(),
            q,
            k,
            v,
            call.y as u64,
            &call.dims,
            &cfg,
        )
    }?;
    Ok(())
}
