//! # blockres
//!
//! Fast kernels for *resolvent attention*
//! `Y = (1−γ)·A·(I−γA)⁻¹·V` (ChaCAL), the multi-hop attention that propagates state
//! across a whole sequence in one layer.
//!
//! - [`Structure::Dense`]: the exact operator, O(n²·d) causal.
//! - [`Structure::Block`]: exact within blocks of `b` tokens, block means across them,
//!   evaluated through an m×m reduced system in O(n^{4/3}·d) at `b ≈ n^{1/3}`.
//!
//! Tensors are `[B, H, n, d]` row-major (grouped-query attention when K/V have fewer
//! heads), in `f32`, [`half::f16`] or [`half::bf16`]; arithmetic is f32.
//!
//! ```
//! use blockres::{Config, Par, TensorRef, resolvent_attention_alloc};
//! let (h, n, d) = (2, 300, 16);
//! let x: Vec<f32> = (0..h * n * d).map(|i| ((i * 31 % 97) as f32 / 97.0) - 0.5).collect();
//! let t = TensorRef::new(&x, [1, h, n, d]).unwrap();
//! let y = resolvent_attention_alloc(t, t, t, &Config::default(), Par::rayon(0)).unwrap();
//! assert_eq!(y.len(), h * n * d);
//! ```

#![warn(clippy::undocumented_unsafe_blocks)]

mod attention;
mod config;
pub mod cpu;
pub(crate) mod decode;
#[cfg(feature = "diagnostics")]
pub mod diagnostics;
mod element;
mod error;
#[cfg(feature = "cuda")]
pub mod gpu;
#[cfg(feature = "ort-op")]
mod ort_op;
pub mod synthetic;
mod tensor;

pub use attention::{
    Dims, Workspace, resolvent_attention, resolvent_attention_alloc, resolvent_attention_with,
};
pub use config::{CoarseQuery, Config, Structure};
pub use cpu::block::auto_block_size;
pub use decode::Decoder;
pub use element::Element;
pub use error::{Error, Result};
pub use faer::Par;
pub use half;
pub use tensor::{TensorMut, TensorRef};
