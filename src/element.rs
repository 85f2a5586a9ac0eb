//! Element types of the tensors: `f32`, `f16` and `bf16`. All arithmetic is done in
//! `f32` (or wider); half-precision values are widened once per head on entry and
//! rounded once on exit.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A tensor element type the kernels accept. Sealed: implemented for `f32`,
/// [`half::f16`] and [`half::bf16`].
///
/// ```
/// use blockres::Element;
/// let x = half::bf16::from_f32(1.5);
/// assert_eq!(x.to_f32(), 1.5);
/// assert_eq!(<half::bf16 as Element>::NAME, "bfloat16");
/// ```
pub trait Element: sealed::Sealed + Copy + Send + Sync + Default + PartialEq + 'static {
    /// The ONNX name of the type (`float`, `float16`, `bfloat16`).
    const NAME: &'static str;
    /// Widen one value.
    fn to_f32(self) -> f32;
    /// Round one value (to nearest even).
    fn from_f32(x: f32) -> Self;
    /// Widen a slice (vectorized for the half types).
    fn widen(src: &[Self], dst: &mut [f32]);
    /// Round a slice.
    fn narrow(src: &[f32], dst: &mut [Self]);
    /// The slice itself when `Self` is `f32`, so the f32 path never copies.
    fn as_f32(src: &[Self]) -> Option<&[f32]>;
    /// The mutable slice itself when `Self` is `f32`.
    fn as_f32_mut(src: &mut [Self]) -> Option<&mut [f32]>;
}

impl Element for f32 {
    const NAME: &'static str = "float";
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline]
    fn from_f32(x: f32) -> Self {
        x
    }
    fn widen(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn narrow(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    fn as_f32(src: &[Self]) -> Option<&[f32]> {
        Some(src)
    }
    fn as_f32_mut(src: &mut [Self]) -> Option<&mut [f32]> {
        Some(src)
    }
}

macro_rules! half_element {
    ($t:ty, $name:literal) => {
        impl Element for $t {
            const NAME: &'static str = $name;
            #[inline]
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            #[inline]
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            fn widen(src: &[Self], dst: &mut [f32]) {
                src.convert_to_f32_slice(dst);
            }
            fn narrow(src: &[f32], dst: &mut [Self]) {
                dst.convert_from_f32_slice(src);
            }
            fn as_f32(_: &[Self]) -> Option<&[f32]> {
                None
            }
            fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
                None
            }
        }
    };
}
half_element!(f16, "float16");
half_element!(bf16, "bfloat16");
