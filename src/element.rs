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
    /// The largest finite value, as f32 (results beyond it would round to infinity).
    const MAX: f32;
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
    const MAX: f32 = f32::MAX;
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
    ($t:ty, $name:literal, $widen:expr, $narrow:expr) => {
        impl Element for $t {
            const NAME: &'static str = $name;
            const MAX: f32 = <$t>::MAX.to_f32_const();
            #[inline]
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
            #[inline]
            fn from_f32(x: f32) -> Self {
                <$t>::from_f32(x)
            }
            fn widen(src: &[Self], dst: &mut [f32]) {
                ($widen)(src, dst)
            }
            fn narrow(src: &[f32], dst: &mut [Self]) {
                ($narrow)(src, dst)
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
half_element!(
    f16,
    "float16",
    |src: &[f16], dst: &mut [f32]| src.convert_to_f32_slice(dst),
    |src: &[f32], dst: &mut [f16]| dst.convert_from_f32_slice(src)
);
half_element!(bf16, "bfloat16", bf16_widen, bf16_narrow);

crate::cpu::simd::multiversion! {
    /// bf16 → f32 is a 16-bit shift; written on the bits so it vectorizes (`half`'s
    /// slice conversion goes element by element for bf16).
    fn bf16_widen(src: &[bf16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }
}

crate::cpu::simd::multiversion! {
    /// f32 → bf16 with round-to-nearest-even on the bits (NaN stays a quiet NaN).
    fn bf16_narrow(src: &[f32], dst: &mut [bf16]) {
        for (d, s) in dst.iter_mut().zip(src) {
            let b = s.to_bits();
            let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
            let nan = ((b >> 16) as u16) | 0x0040;
            *d = bf16::from_bits(if s.is_nan() { nan } else { rounded });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_conversions_match_half() {
        let mut x = 1.0e-38f32;
        let mut vals = vec![
            0.0f32,
            -0.0,
            1.0,
            -2.5,
            f32::MAX,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        while x < 1.0e38 {
            vals.extend([x, -x, x * 1.000_123, x * 0.999_77]);
            x *= 1.37;
        }
        let mut ours = vec![bf16::ZERO; vals.len()];
        <bf16 as Element>::narrow(&vals, &mut ours);
        for (v, o) in vals.iter().zip(&ours) {
            assert_eq!(o.to_bits(), bf16::from_f32(*v).to_bits(), "narrow {v:e}");
        }
        let mut back = vec![0.0f32; vals.len()];
        <bf16 as Element>::widen(&ours, &mut back);
        for (o, b) in ours.iter().zip(&back) {
            assert_eq!(b.to_bits(), o.to_f32().to_bits());
        }
        let mut nan = [bf16::ZERO];
        <bf16 as Element>::narrow(&[f32::NAN], &mut nan);
        assert!(nan[0].is_nan());
    }
}
