//! The one error type of the crate.

use std::fmt;

/// Why a call was refused. Every message names the tensor or parameter at fault and
/// the form that was expected, so it can be shown to a user as it is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A tensor has the wrong rank, length or dimensions.
    Shape {
        /// `"Q"`, `"K"`, `"V"` or `"Y"`.
        tensor: &'static str,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A parameter (attribute) is outside its domain.
    Param {
        /// The parameter's name, as in the ONNX schema (`gamma`, `block_size`, ...).
        name: &'static str,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A tensor holds NaN or infinity, which the operator cannot give a meaning to.
    NonFinite {
        /// The tensor holding the value.
        tensor: &'static str,
        /// Flat index of the first offending element.
        index: usize,
    },
    /// The inputs are finite but the result is not representable: the logits
    /// `scale·q·k`, the values or `W = Y/(1−γ)` exceed the element type's range.
    Overflow(String),
    /// Scratch memory for the call could not be allocated (its size depends on the
    /// inputs: an address-space limit, or simply too large).
    OutOfMemory {
        /// What the memory was for.
        what: &'static str,
        /// Bytes asked for.
        bytes: usize,
    },
    /// A valid request this build cannot serve (a structure with a restriction, a
    /// device that is missing).
    Unsupported(String),
    /// A failure reported by the GPU driver or runtime compiler.
    Device(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { tensor, message } => write!(f, "input {tensor}: {message}"),
            Error::Param { name, message } => write!(f, "attribute {name}: {message}"),
            Error::NonFinite { tensor, index } => write!(
                f,
                "input {tensor}: element {index} is not finite (NaN or infinity); all values must be finite"
            ),
            Error::Overflow(m) => write!(f, "overflow: {m}"),
            Error::OutOfMemory { what, bytes } => write!(
                f,
                "out of memory: {what} needs {bytes} bytes ({:.2} GiB), which could not be \
                 allocated; use a smaller input, a larger block_size for long sequences, or \
                 structure 'block' instead of a dense bidirectional call",
                *bytes as f64 / (1u64 << 30) as f64
            ),
            Error::Unsupported(m) => write!(f, "unsupported: {m}"),
            Error::Device(m) => write!(f, "device error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
