//! Borrowed views of the `[B, H, n, d]` row-major tensors the operator reads and writes.

use crate::error::{Error, Result};

/// A borrowed, row-major, contiguous rank-4 tensor `[B, H, n, d]`.
///
/// ```
/// use blockres::TensorRef;
/// let data = vec![0.0f32; 2 * 3 * 5 * 4];
/// let t = TensorRef::new(&data, [2, 3, 5, 4]).unwrap();
/// assert_eq!(t.shape(), [2, 3, 5, 4]);
/// assert!(TensorRef::new(&data, [2, 3, 5, 5]).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a, T> {
    data: &'a [T],
    shape: [usize; 4],
}

/// A mutable, row-major, contiguous rank-4 tensor `[B, H, n, d]`.
#[derive(Debug)]
pub struct TensorMut<'a, T> {
    data: &'a mut [T],
    shape: [usize; 4],
}

fn check_len(len: usize, shape: [usize; 4]) -> Result<()> {
    let want = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Shape {
            tensor: "tensor",
            message: format!("shape {shape:?} overflows usize"),
        })?;
    if want != len {
        return Err(Error::Shape {
            tensor: "tensor",
            message: format!("shape {shape:?} needs {want} elements, the slice has {len}"),
        });
    }
    Ok(())
}

impl<'a, T> TensorRef<'a, T> {
    /// View `data` as `shape`; fails when the lengths disagree.
    pub fn new(data: &'a [T], shape: [usize; 4]) -> Result<Self> {
        check_len(data.len(), shape)?;
        Ok(Self { data, shape })
    }
    /// `[B, H, n, d]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
    /// The elements, row-major.
    pub fn data(&self) -> &'a [T] {
        self.data
    }
}

impl<'a, T> TensorMut<'a, T> {
    /// View `data` as `shape`; fails when the lengths disagree.
    pub fn new(data: &'a mut [T], shape: [usize; 4]) -> Result<Self> {
        check_len(data.len(), shape)?;
        Ok(Self { data, shape })
    }
    /// `[B, H, n, d]`.
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
    /// The elements, row-major.
    pub fn data_mut(&mut self) -> &mut [T] {
        self.data
    }
    /// Give up the borrow as a plain slice.
    pub fn into_data(self) -> &'a mut [T] {
        self.data
    }
    /// Reborrow as a read-only view.
    pub fn as_ref(&self) -> TensorRef<'_, T> {
        TensorRef {
            data: self.data,
            shape: self.shape,
        }
    }
}
