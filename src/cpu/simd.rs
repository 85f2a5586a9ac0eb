//! The one CPU-feature dispatch of the crate, and the primitives its kernels share.
//!
//! The crate builds for baseline x86-64 (so the cdylib loads anywhere), but its hot
//! loops run 2× wider, and fused, where the CPU has AVX2 and FMA. [`multiversion!`]
//! defines a function whose body is compiled twice, inside an
//! `#[target_feature(enable = "avx2,fma")]` trampoline and for the baseline, and picks
//! one per call with [`fma_available`].
//!
//! Bodies that need fused multiply-adds are generic over `const FMA: bool` and call the
//! primitives here ([`fmadd`], [`axpy`], [`dot`], [`gather_axpy`]) with their own
//! `FMA`: Rust never contracts `a·b + c` on its own, and `mul_add` without the FMA
//! feature is a libm call. **`FMA = true` may only be instantiated inside a body that
//! [`multiversion!`] runs**: [`dot`] then executes AVX2 instructions unchecked.

use std::sync::OnceLock;

/// Whether the AVX2 + FMA versions of the kernels can run on this CPU. Detected once:
/// every dispatch asks, some once per row.
#[inline]
pub(crate) fn fma_available() -> bool {
    #[cfg(test)]
    if tests::PORTABLE.with(std::cell::Cell::get) {
        return false;
    }
    static DETECTED: OnceLock<bool> = OnceLock::new();
    *DETECTED.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

/// Define a function run with AVX2 + FMA enabled where [`fma_available`] says so, on
/// the baseline target otherwise: `fn name<G: Bound>(args) -> R { ... }`. The body is
/// compiled twice, with a `const FMA: bool` in scope (true in the AVX2 + FMA copy) that
/// it passes to this module's primitives; a body that needs no fused multiply-add
/// ignores it and gains from the wider vectors alone.
macro_rules! multiversion {
    (@dispatch $body:ident [$($g:ident: $b:path),*] ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {{
        #[cfg(target_arch = "x86_64")]
        if $crate::cpu::simd::fma_available() {
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn fast<$($g: $b),*>($($arg: $ty),*) $(-> $ret)? {
                $body::<true, $($g),*>($($arg),*)
            }
            // SAFETY: `fast` needs AVX2 and FMA, and this CPU has both (just checked).
            return unsafe { fast($($arg),*) };
        }
        $body::<false, $($g),*>($($arg),*)
    }};
    ($(#[$m:meta])* $vis:vis fn $name:ident $(<$($g:ident: $b:path),*>)? ($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name $(<$($g: $b),*>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn imp<const FMA: bool $($(, $g: $b)*)?>($($arg: $ty),*) $(-> $ret)? $body
            $crate::cpu::simd::multiversion!(
                @dispatch imp [$($($g: $b),*)?] ($($arg: $ty),*) $(-> $ret)?
            )
        }
    };
}

pub(crate) use multiversion;

/// `a·b + c`, fused when `FMA` (see the module's rule on `FMA = true`).
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

/// `o += a·x`.
#[inline(always)]
pub(crate) fn axpy<const FMA: bool>(o: &mut [f32], a: f32, x: &[f32]) {
    for (o, &x) in o.iter_mut().zip(x) {
        *o = fmadd::<FMA>(a, x, *o);
    }
}

/// Columns of `x` kept in registers while [`gather_axpy`] sweeps its rows.
const XBLOCK: usize = 32;

/// `x += Σ_t coefs[t]·row(t)`, with `x` held in registers `XBLOCK` columns at a time
/// (one pass over the entries per block) instead of loaded and stored per entry.
#[inline(always)]
pub(crate) fn gather_axpy<'s, const FMA: bool>(
    x: &mut [f32],
    coefs: &[f32],
    row: impl Fn(usize) -> &'s [f32],
) {
    let d = x.len();
    let mut c0 = 0;
    while c0 + XBLOCK <= d {
        let mut acc = [0.0f32; XBLOCK];
        for (t, &a) in coefs.iter().enumerate() {
            let r: &[f32; XBLOCK] = row(t)[c0..c0 + XBLOCK].try_into().expect("XBLOCK wide");
            for c in 0..XBLOCK {
                acc[c] = fmadd::<FMA>(a, r[c], acc[c]);
            }
        }
        for (o, a) in x[c0..c0 + XBLOCK].iter_mut().zip(acc) {
            *o += a;
        }
        c0 += XBLOCK;
    }
    if c0 < d {
        for (t, &a) in coefs.iter().enumerate() {
            axpy::<FMA>(&mut x[c0..], a, &row(t)[c0..d]);
        }
    }
}

/// Dot product. `FMA = true` uses the explicit 256-bit kernel: the compiler's own
/// vectorization of the portable loop measured poor (128-bit halves with 64-bit
/// loads).
#[inline(always)]
pub(crate) fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if FMA {
        debug_assert!(fma_available(), "dot::<true> outside a multiversion! body");
        // SAFETY: FMA = true is instantiated only by bodies that `multiversion!` runs
        // after `fma_available()` returned true (the module's rule).
        return unsafe { dot_avx2_fma(a, b) };
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // SAFETY: every load reads 8 floats at offsets i..i + 8 ≤ n of both slices.
    unsafe {
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(
                _mm256_loadu_ps(pa.add(i + 8)),
                _mm256_loadu_ps(pb.add(i + 8)),
                acc1,
            );
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        let mut r = _mm_cvtss_f32(h);
        while i < n {
            r = a[i].mul_add(b[i], r);
            i += 1;
        }
        r
    }
}

/// Dot product with 16 independent partial sums, so it vectorizes (a plain fold is a
/// serial dependency chain the compiler may not reorder).
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ac, at) = a.split_at(a.len() / 16 * 16);
    let (bc, bt) = b[..a.len()].split_at(ac.len());
    for (x, y) in ac.chunks_exact(16).zip(bc.chunks_exact(16)) {
        for t in 0..16 {
            acc[t] += x[t] * y[t];
        }
    }
    let mut s = 0.0f32;
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    for t in 0..8 {
        acc[t] += acc[t + 8];
    }
    for t in 0..4 {
        acc[t] += acc[t + 4];
    }
    s + (acc[0] + acc[2]) + (acc[1] + acc[3])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// Set by [`portable`]. Per thread, so that other tests running meanwhile keep
        /// their path (the two round differently).
        pub(super) static PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Run `f` with every [`multiversion!`] function called on this thread taking its
    /// baseline body (what a CPU without AVX2/FMA runs). Work `f` hands to other
    /// threads (rayon) is not affected: run it with `Par::Seq`.
    pub(crate) fn portable<R>(f: impl FnOnce() -> R) -> R {
        PORTABLE.with(|p| p.set(true));
        let r = f();
        PORTABLE.with(|p| p.set(false));
        r
    }

    multiversion! {
        fn dot_dispatched(a: &[f32], b: &[f32]) -> f32 {
            dot::<FMA>(a, b)
        }
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        for len in [0usize, 1, 15, 16, 17, 64, 100] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.3).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).cos()).collect();
            let want: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            for d in [dot_dispatched(&a, &b), portable(|| dot_dispatched(&a, &b))] {
                assert!((d as f64 - want).abs() < 1e-5, "len {len}");
            }
        }
    }

    #[test]
    fn portable_overrides_detection_on_its_thread_only() {
        let native = fma_available();
        assert!(!portable(fma_available));
        assert!(portable(|| std::thread::spawn(fma_available).join().unwrap()) == native);
        assert_eq!(fma_available(), native);
    }
}
