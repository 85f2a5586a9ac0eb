//! A minimal `.npy` reader and writer (NumPy format versions 1–3): little-endian
//! float16, float32 and float64 arrays in C order, which is what `numpy.save` writes
//! for the Q, K, V of a model. Everything is converted to f32.

use std::io::{self, Read, Write};
use std::path::Path;

use half::f16;

/// An array read from a `.npy` file, widened to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Elements in C (row-major) order.
    pub data: Vec<f32>,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {msg}", path.display()),
    )
}

/// An I/O error of the file at `path`, with the path in its message (the kind kept).
fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// The value of `'key': value` in the header dict (up to the next top-level comma or
/// closing brace), as text.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
    if rest.starts_with('(') {
        Some(&rest[..=rest.find(')')?])
    } else {
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        Some(rest[..end].trim())
    }
}

/// Read a `.npy` file.
///
/// ```
/// use blockres::diagnostics::npy;
/// let path = std::env::temp_dir().join(format!("blockres-doc-{}.npy", std::process::id()));
/// npy::write(&path, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]).unwrap();
/// let a = npy::read(&path).unwrap();
/// assert_eq!(a.shape, vec![2, 3]);
/// assert_eq!(a.data[5], 6.5);
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn read(path: impl AsRef<Path>) -> io::Result<Array> {
    let path = path.as_ref();
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| with_path(path, e))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad(path, "not a .npy file (missing the \\x93NUMPY magic)"));
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(bad(path, format!("unsupported .npy version {v}"))),
    };
    let header = bytes
        .get(hstart..hstart + hlen)
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad(path, "truncated or non-text header"))?;
    let descr = field(header, "descr").ok_or_else(|| bad(path, "header has no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let width = match descr {
        "<f2" | "=f2" => 2,
        "<f4" | "=f4" => 4,
        "<f8" | "=f8" => 8,
        other => {
            return Err(bad(
                path,
                format!(
                    "dtype '{other}' is not supported; expected little-endian float16, float32 or float64 ('<f2', '<f4', '<f8')"
                ),
            ));
        }
    };
    if field(header, "fortran_order") != Some("False") {
        return Err(bad(
            path,
            "Fortran-order arrays are not supported; save a C-order array (numpy.ascontiguousarray)",
        ));
    }
    let shape_txt = field(header, "shape").ok_or_else(|| bad(path, "header has no 'shape'"))?;
    let shape = shape_txt
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| bad(path, format!("cannot read the shape {shape_txt}")))?;
    let count: usize = shape.iter().product();
    let body = &bytes[hstart + hlen..];
    if body.len() != count * width {
        return Err(bad(
            path,
            format!(
                "holds {} data bytes, the shape {shape:?} of '{descr}' needs {}",
                body.len(),
                count * width
            ),
        ));
    }
    let data = match width {
        2 => body
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        4 => body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => body
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
    };
    Ok(Array { shape, data })
}

/// Write a float32 `.npy` file (version 1, C order) that `numpy.load` reads.
pub fn write(path: impl AsRef<Path>, shape: &[usize], data: &[f32]) -> io::Result<()> {
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("shape {shape:?} holds {count} elements, got {}", data.len()),
        ));
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so the data starts on a 64-byte boundary, ending the header with '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.next_multiple_of(64) - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for x in data {
        out.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::File::create(path.as_ref())
        .and_then(|mut f| f.write_all(&out))
        .map_err(|e| with_path(path.as_ref(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("blockres-npy-{}-{name}", std::process::id()))
    }

    /// A file as NumPy writes it, built by hand: version 1, given dtype and body.
    fn numpy_file(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        let total = 10 + h.len() + 1;
        h.push_str(&" ".repeat(total.next_multiple_of(64) - total));
        h.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(h.len() as u16).to_le_bytes());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn reads_f16_f32_f64_and_round_trips() {
        let vals = [0.5f64, -2.0, 3.25, 1e-3];
        let p = tmp("f8.npy");
        let body: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&p, numpy_file("<f8", "(2, 2)", &body)).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 2]);
        assert_eq!(a.data, vals.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let body: Vec<u8> = vals
            .iter()
            .flat_map(|&v| f16::from_f64(v).to_le_bytes())
            .collect();
        std::fs::write(&p, numpy_file("<f2", "(4,)", &body)).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![4]);
        assert_eq!(a.data[2], 3.25);
        write(&p, &[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let a = read(&p).unwrap();
        assert_eq!((a.shape, a.data), (vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let p = tmp("bad.npy");
        std::fs::write(&p, numpy_file("<i4", "(1,)", &[0; 4])).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("'<i4'"));
        std::fs::write(&p, numpy_file("<f4", "(3,)", &[0; 4])).unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("needs 12"));
        std::fs::write(&p, b"hello").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("magic"));
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn file_errors_name_the_path() {
        let p = tmp("missing-dir").join("absent.npy");
        let e = read(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("absent.npy"), "{e}");
        let e = write(&p, &[1], &[0.0]).unwrap_err();
        assert!(e.to_string().contains("absent.npy"), "{e}");
    }
}
