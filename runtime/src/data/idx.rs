//! IDX files (the MNIST distribution format), plain or gzip-compressed, and the
//! MNIST folder layout: `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each optionally ending in `.gz`.
//!
//! An IDX file is `00 00 <type> <ndims>`, `ndims` big-endian `u32` dimensions, then the
//! elements big-endian. The file must hold exactly the elements its header announces:
//! a short file or trailing bytes are errors naming the byte offset (in the decompressed
//! stream for `.gz`). A file is treated as gzip when it starts with the gzip magic
//! `1f 8b`, whatever its name.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Preprocess;
use super::{scale, DataError, DataErrorKind, Dataset, Location, Source, Splits};
use crate::tensor::{format_shape, Tensor};

/// The elements of one IDX file as `f32`, with its dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<f32>,
    /// Byte offset of the first element (the header length).
    pub data_offset: usize,
    /// Bytes per element.
    pub element_size: usize,
}

/// The element types of the IDX format: (type byte, size, name).
const TYPES: [(u8, usize, &str); 6] = [
    (0x08, 1, "u8"),
    (0x09, 1, "i8"),
    (0x0B, 2, "i16"),
    (0x0C, 4, "i32"),
    (0x0D, 4, "f32"),
    (0x0E, 8, "f64"),
];

/// Reads a whole file, decompressing it when it starts with the gzip magic.
fn read_bytes(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = super::read_file(path)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::MultiGzDecoder::new(&raw[..]).read_to_end(&mut out) {
            return Err(DataError::new(
                DataErrorKind::Format,
                path,
                Location::Byte(out.len() as u64),
                format!(
                    "the gzip stream is corrupt or truncated after {} decompressed bytes: {e}",
                    out.len()
                ),
            )
            .with_help("download the file again, or decompress it with `gunzip -t` to check it"));
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Reads one IDX file. `what` names its role in messages ("images", "labels").
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let bytes = read_bytes(path)?;
    parse_idx(path, &bytes)
}

fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray, DataError> {
    let err = |offset: usize, msg: String| {
        DataError::new(
            DataErrorKind::Format,
            path,
            Location::Byte(offset as u64),
            msg,
        )
    };
    if bytes.len() < 4 {
        return Err(err(
            bytes.len(),
            format!(
                "the file ends after {} bytes, inside the 4-byte IDX magic number",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(
            0,
            format!(
                "wrong magic number 0x{:08x}: an IDX file starts with two zero bytes",
                be_u32(&bytes[..4])
            ),
        )
        .with_help("is this an IDX file (MNIST format)? compressed files must be gzip"));
    }
    let Some(&(_, element_size, type_name)) = TYPES.iter().find(|t| t.0 == bytes[2]) else {
        return Err(err(
            2,
            format!("unknown IDX element type 0x{:02x} (magic 0x{:08x}); known types are 0x08 u8, 0x09 i8, 0x0b i16, 0x0c i32, 0x0d f32, 0x0e f64", bytes[2], be_u32(&bytes[..4])),
        ));
    };
    let ndims = usize::from(bytes[3]);
    if ndims == 0 {
        return Err(err(3, "the IDX header declares 0 dimensions".to_string()));
    }
    let data_offset = 4 + 4 * ndims;
    if bytes.len() < data_offset {
        return Err(err(
            bytes.len(),
            format!("the file ends after {} bytes, inside the header of {ndims} dimensions ({data_offset} bytes)", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| be_u32(&bytes[4 + 4 * i..]) as usize)
        .collect();
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let needed = count
        .and_then(|c| c.checked_mul(element_size))
        .and_then(|b| b.checked_add(data_offset));
    let Some(end) = needed else {
        return Err(err(
            4,
            format!("the dimensions {} are too large", format_shape(&dims)),
        ));
    };
    if bytes.len() < end {
        return Err(err(
            bytes.len(),
            format!(
                "the file is truncated: it ends at byte {}, but {} elements of {type_name} from the header need it to end at byte {end}",
                bytes.len(),
                format_shape(&dims)
            ),
        ));
    }
    if bytes.len() > end {
        return Err(err(
            end,
            format!(
                "{} unexpected bytes after the {} elements of {type_name} the header announces",
                bytes.len() - end,
                format_shape(&dims)
            ),
        ));
    }
    let body = &bytes[data_offset..end];
    let data: Vec<f32> = match bytes[2] {
        0x08 => body.iter().map(|&b| f32::from(b)).collect(),
        0x09 => body.iter().map(|&b| f32::from(b as i8)).collect(),
        0x0B => body
            .chunks_exact(2)
            .map(|c| f32::from(i16::from_be_bytes([c[0], c[1]])))
            .collect(),
        0x0C => body
            .chunks_exact(4)
            .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        0x0D => body
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => body
            .chunks_exact(8)
            .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
    };
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        return Err(err(
            data_offset + i * element_size,
            format!("element {i} is not a finite number"),
        ));
    }
    Ok(IdxArray {
        dims,
        data,
        data_offset,
        element_size,
    })
}

/// The first of the accepted names for `stem` (e.g. `train-images-idx3-ubyte`) that
/// exists in `dir`. When both a plain and a gzip copy exist, the plain one is read and a
/// warning says so; a folder where a file is expected is an error of its own.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    if dir.is_file() {
        return Err(DataError::new(
            DataErrorKind::Io,
            dir,
            Location::File,
            "this is a file; an IDX data source is the folder that holds the four IDX files",
        )
        .with_help(format!(
            "give its folder: `idx(\"{}\")`",
            dir.parent().unwrap_or(Path::new(".")).display()
        )));
    }
    // The original distribution names, then the `name.idx3-ubyte` spelling some mirrors use.
    let dotted = stem.replacen("-idx", ".idx", 1);
    let candidates = [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ];
    for (k, name) in candidates.iter().enumerate() {
        let path = dir.join(name);
        if path.is_dir() {
            return Err(DataError::new(
                DataErrorKind::Io,
                &path,
                Location::File,
                "this is a folder, not an IDX file",
            )
            .with_help("an archive tool may have unpacked the file into a folder of its name: move the file inside it up into the data folder"));
        }
        if path.is_file() {
            if k % 2 == 0 && dir.join(&candidates[k + 1]).is_file() {
                eprintln!(
                    "warning: both `{}` and `{}` exist; reading `{}`",
                    path.display(),
                    candidates[k + 1],
                    name
                );
            }
            return Ok(path);
        }
    }
    Err(DataError::new(
        DataErrorKind::Io,
        &dir.join(stem),
        Location::File,
        format!("no such file (looked for `{}` and `{}.gz` in `{}`)", stem, stem, dir.display()),
    )
    .with_help("an IDX data folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each plain or .gz"))
}

/// One split: an images file and a labels file of the same length.
fn load_split(dir: &Path, prefix: &str) -> Result<Dataset, DataError> {
    let images_path = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx(&images_path)?;
    let labels = read_idx(&labels_path)?;
    if images.dims.len() < 2 {
        return Err(DataError::new(
            DataErrorKind::Mismatch,
            &images_path,
            Location::Byte(3),
            format!("an images file needs at least 2 dimensions (count, sample dims...), the header has {}", format_shape(&images.dims)),
        ));
    }
    if labels.dims.len() != 1 {
        return Err(DataError::new(
            DataErrorKind::Mismatch,
            &labels_path,
            Location::Byte(3),
            format!(
                "a labels file has 1 dimension (the count), the header has {}",
                format_shape(&labels.dims)
            ),
        ));
    }
    let n = images.dims[0];
    if labels.dims[0] != n {
        return Err(DataError::new(
            DataErrorKind::Mismatch,
            &labels_path,
            Location::Byte(4),
            format!(
                "{} labels, but `{}` has {} images",
                labels.dims[0],
                images_path.display(),
                n
            ),
        ));
    }
    if n == 0 {
        return Err(DataError::new(
            DataErrorKind::Mismatch,
            &images_path,
            Location::Byte(4),
            "the file holds no samples",
        ));
    }
    let sample_shape = images.dims[1..].to_vec();
    let x = Tensor {
        shape: images.dims.clone(),
        data: images.data,
    };
    let y = Tensor {
        shape: vec![n],
        data: labels.data,
    };
    Ok(Dataset {
        x,
        y,
        sample_shape,
        source: Source::Idx {
            images: images_path,
            labels: labels_path,
            label_offset: labels.data_offset,
            label_size: labels.element_size,
        },
    })
}

/// Loads the `train-*` and `t10k-*` IDX files of `dir`, multiplying every sample value
/// by `scale_factor`. Labels stay raw (class indices); fit them to the task with
/// [`Dataset::fit_labels`].
pub fn load_idx(dir: &Path, scale_factor: f32) -> Result<Splits, DataError> {
    let mut train = load_split(dir, "train")?;
    let mut test = load_split(dir, "t10k")?;
    if train.sample_shape != test.sample_shape {
        return Err(DataError::new(
            DataErrorKind::Mismatch,
            &test.source.samples_path(),
            Location::Byte(8),
            format!(
                "test samples have shape {}, training samples in `{}` have {}",
                format_shape(&test.sample_shape),
                train.source.samples_path().display(),
                format_shape(&train.sample_shape)
            ),
        ));
    }
    scale(&mut train, scale_factor);
    scale(&mut test, scale_factor);
    Ok(Splits {
        train,
        test,
        preprocess: Preprocess {
            scale: scale_factor,
            ..Preprocess::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ty: u8, dims: &[u32]) -> Vec<u8> {
        let mut v = vec![0, 0, ty, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn every_element_type_is_read_big_endian() {
        let mut b = header(0x0B, &[2]);
        b.extend_from_slice(&(-3i16).to_be_bytes());
        b.extend_from_slice(&300i16.to_be_bytes());
        assert_eq!(
            parse_idx(Path::new("f"), &b).unwrap().data,
            vec![-3.0, 300.0]
        );
        let mut b = header(0x0D, &[1]);
        b.extend_from_slice(&1.5f32.to_be_bytes());
        assert_eq!(parse_idx(Path::new("f"), &b).unwrap().data, vec![1.5]);
        let mut b = header(0x09, &[1]);
        b.push(0xFF);
        assert_eq!(parse_idx(Path::new("f"), &b).unwrap().data, vec![-1.0]);
    }

    #[test]
    fn a_truncated_body_names_the_byte_where_the_file_ends() {
        let mut b = header(0x08, &[2, 2]);
        b.extend_from_slice(&[1, 2, 3]);
        let err = parse_idx(Path::new("f"), &b).unwrap_err();
        assert_eq!(err.location, Location::Byte(15));
        assert!(
            err.message.contains("it ends at byte 15") && err.message.contains("end at byte 16"),
            "{err}"
        );
    }

    #[test]
    fn trailing_bytes_are_an_error_not_ignored() {
        let mut b = header(0x08, &[1]);
        b.extend_from_slice(&[1, 2]);
        let err = parse_idx(Path::new("f"), &b).unwrap_err();
        assert_eq!(err.location, Location::Byte(9));
        assert!(err.message.starts_with("1 unexpected bytes"), "{err}");
    }

    #[test]
    fn huge_dimensions_do_not_allocate_or_overflow() {
        let b = header(0x0E, &[u32::MAX, u32::MAX, u32::MAX]);
        let err = parse_idx(Path::new("f"), &b).unwrap_err();
        assert!(
            err.message.contains("too large") || err.message.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn a_nan_in_a_float_file_is_an_error() {
        let mut b = header(0x0D, &[2]);
        b.extend_from_slice(&1.0f32.to_be_bytes());
        b.extend_from_slice(&f32::NAN.to_be_bytes());
        let err = parse_idx(Path::new("f"), &b).unwrap_err();
        assert_eq!(err.location, Location::Byte(12));
    }
}
