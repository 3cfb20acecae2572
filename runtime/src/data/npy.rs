//! NumPy `.npy` arrays (format versions 1–3): a magic string, a header dict giving the
//! element type (`descr`), the memory order and the shape, then the elements. Read as
//! `f32`: unsigned bytes (`|u1`), little-endian `f4` and `f8`; C order only. Every
//! malformed file is a [`DataError`] at the byte where it goes wrong. [`write_npy`]
//! writes `f32` arrays (tests and tools).

use std::path::Path;

use super::{DataError, DataErrorKind, Location};
use crate::tensor::Tensor;

const MAGIC: &[u8] = b"\x93NUMPY";

/// The array stored in the `.npy` file at `path`, as `f32`s of its shape.
pub fn read_npy(path: &Path) -> Result<Tensor, DataError> {
    let bytes = super::read_file(path)?;
    parse_npy(path, &bytes)
}

fn parse_npy(path: &Path, bytes: &[u8]) -> Result<Tensor, DataError> {
    let err = |at: usize, kind: DataErrorKind, msg: String| {
        DataError::new(kind, path, Location::Byte(at as u64), msg)
    };
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err(err(
            0,
            DataErrorKind::Format,
            "not a NumPy .npy file (no `\\x93NUMPY` magic)".into(),
        )
        .with_help("save arrays with `numpy.save`"));
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => {
            return Err(err(
                6,
                DataErrorKind::Format,
                format!("unsupported .npy format version {major}"),
            ))
        }
    };
    let header = bytes.get(start..start + len).ok_or_else(|| {
        err(
            start,
            DataErrorKind::Format,
            "the header is truncated".into(),
        )
    })?;
    let header = String::from_utf8_lossy(header);
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\'')?.split('\'').next())
        .ok_or_else(|| {
            err(
                start,
                DataErrorKind::Format,
                "the header has no `descr`".into(),
            )
        })?;
    let width = match descr {
        "|u1" | "<u1" | "u1" => 1,
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(err(
                start,
                DataErrorKind::Format,
                format!("elements of type `{other}` are not supported"),
            )
            .with_help("use uint8, float32 or float64 (little-endian): `a.astype(np.float32)`"))
        }
    };
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err(err(
            start,
            DataErrorKind::Format,
            "the array is in Fortran (column-major) order".into(),
        )
        .with_help("save `np.ascontiguousarray(a)` instead"));
    }
    let shape_text = field("shape")
        .and_then(|r| r.strip_prefix('(')?.split(')').next())
        .ok_or_else(|| {
            err(
                start,
                DataErrorKind::Format,
                "the header has no `shape`".into(),
            )
        })?;
    let shape = shape_text
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.trim_end_matches('L').parse::<usize>())
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| {
            err(
                start,
                DataErrorKind::Format,
                format!("cannot read the shape `({shape_text})`"),
            )
        })?;
    let data_at = start + len;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            err(
                start,
                DataErrorKind::Format,
                "the shape is too large".into(),
            )
        })?;
    let body = &bytes[data_at.min(bytes.len())..];
    if body.len() != count * width {
        return Err(err(
            data_at,
            DataErrorKind::Mismatch,
            format!(
                "the shape ({shape_text}) needs {} bytes of elements, the file has {}",
                count * width,
                body.len()
            ),
        ));
    }
    let mut data = Vec::with_capacity(count);
    for (i, c) in body.chunks_exact(width).enumerate() {
        let v = match width {
            1 => f32::from(c[0]),
            4 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            _ => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32,
        };
        if !v.is_finite() {
            return Err(err(
                data_at + i * width,
                DataErrorKind::Parse,
                format!("element {i} is not a finite number"),
            ));
        }
        data.push(v);
    }
    Tensor::new(shape, data).map_err(|e| err(start, DataErrorKind::Format, e.to_string()))
}

/// The bytes of a version-1 `.npy` file holding `t` as little-endian `f32`.
pub fn npy_bytes(t: &Tensor) -> Vec<u8> {
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in &t.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes `t` to `path` as a `.npy` file of `f32`.
pub fn write_npy(path: &Path, t: &Tensor) -> std::io::Result<()> {
    std::fs::write(path, npy_bytes(t))
}

/// A data set of NumPy arrays (`npy(x, y, test_x, test_y)`): samples `[n, ..]` and labels
/// `[n]` or `[n, ..]` of the same `n`; without a test pair, `test` of the rows (spread
/// evenly) are held out. Sample values are multiplied by `scale`.
pub fn load_npy_data(
    x: &Path,
    y: &Path,
    test_xy: Option<(&Path, &Path)>,
    scale: f32,
    test: f64,
) -> Result<super::Splits, DataError> {
    let pair = |x: &Path, y: &Path| -> Result<super::Dataset, DataError> {
        let xs = read_npy(x)?;
        let ys = read_npy(y)?;
        if xs.shape.len() < 2 {
            return Err(DataError::new(
                DataErrorKind::Shape,
                x,
                Location::File,
                format!(
                    "the samples have shape {}; they need [samples, ..sample shape]",
                    crate::tensor::format_shape(&xs.shape)
                ),
            ));
        }
        let (nx, ny) = (xs.shape[0], ys.shape.first().copied().unwrap_or(0));
        if nx != ny {
            return Err(DataError::new(
                DataErrorKind::Mismatch,
                y,
                Location::File,
                format!("{ny} labels, but `{}` has {nx} samples", x.display()),
            ));
        }
        let mut d = super::Dataset::from_tensors(&x.display().to_string(), xs, ys)?;
        super::scale(&mut d, scale);
        Ok(d)
    };
    let (train, test_set) = match test_xy {
        Some((tx, ty)) => {
            let train = pair(x, y)?;
            let t = pair(tx, ty)?;
            if t.sample_shape != train.sample_shape {
                return Err(DataError::new(
                    DataErrorKind::Mismatch,
                    tx,
                    Location::File,
                    format!(
                        "test samples have shape {}, training samples {}",
                        crate::tensor::format_shape(&t.sample_shape),
                        crate::tensor::format_shape(&train.sample_shape)
                    ),
                ));
            }
            (train, t)
        }
        None => {
            let all = pair(x, y)?;
            let mark = super::evenly_spread(all.len(), test);
            super::split_rows(&all, &mark)
        }
    };
    Ok(super::Splits {
        train,
        test: test_set,
        preprocess: super::Preprocess {
            scale,
            ..super::Preprocess::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_arrays_round_trip_and_bytes_and_doubles_are_read() {
        let t = Tensor::new(vec![2, 3], vec![0.0, 1.5, -2.0, 3.0, 4.0, 5.25]).unwrap();
        let p = Path::new("a.npy");
        assert_eq!(parse_npy(p, &npy_bytes(&t)).unwrap(), t);
        // A hand-made uint8 file of shape (3,).
        let mut u8s = npy_bytes(&Tensor::new(vec![3], vec![0.0; 3]).unwrap());
        let h = u8s.len() - 12;
        let header = String::from_utf8(u8s[10..h].to_vec())
            .unwrap()
            .replace("<f4", "|u1");
        u8s.truncate(10);
        u8s.extend_from_slice(header.as_bytes());
        u8s.extend_from_slice(&[0, 7, 255]);
        assert_eq!(parse_npy(p, &u8s).unwrap().data, vec![0.0, 7.0, 255.0]);
    }

    #[test]
    fn malformed_files_say_what_and_where() {
        let p = Path::new("bad.npy");
        let e = parse_npy(p, b"hello world").unwrap_err();
        assert!(e.to_string().contains("not a NumPy .npy file"), "{e}");
        let t = Tensor::new(vec![2, 2], vec![1.0; 4]).unwrap();
        let mut b = npy_bytes(&t);
        b.pop();
        let e = parse_npy(p, &b).unwrap_err();
        assert!(
            e.to_string()
                .contains("needs 16 bytes of elements, the file has 15"),
            "{e}"
        );
        let edited = |from: &[u8], to: &[u8]| {
            let mut b = npy_bytes(&t);
            let at = b.windows(from.len()).position(|w| w == from).unwrap();
            b[at..at + from.len()].copy_from_slice(to);
            b
        };
        let e = parse_npy(p, &edited(b"<f4", b"<i8")).unwrap_err();
        assert!(e.to_string().contains("`<i8` are not supported"), "{e}");
        let e = parse_npy(p, &edited(b"False", b"True ")).unwrap_err();
        assert!(e.to_string().contains("Fortran"), "{e}");
    }
}
