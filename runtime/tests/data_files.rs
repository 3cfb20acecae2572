//! Loading real and malformed IDX and CSV files. Malformed files are written into
//! temporary folders (copies); the data files in the repository are never modified.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::temp_dir;
use nnc_runtime::data::{load_csv, load_idx, DataErrorKind, Location, Source, TestSplit};
use nnc_runtime::TaskKind;

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/mnist-10k")
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A copy of the MNIST folder with the four files uncompressed (plain IDX), so a test can
/// damage one of them.
fn plain_copy(name: &str) -> common::TempDir {
    let dir = temp_dir(name);
    for stem in [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        fs::write(
            dir.join(stem),
            gunzip(&mnist_dir().join(format!("{stem}.gz"))),
        )
        .unwrap();
    }
    dir
}

#[test]
fn real_mnist_loads_with_counts_shapes_and_scale() {
    let splits = load_idx(&mnist_dir(), 1.0 / 255.0).unwrap();
    assert_eq!(splits.train.x.shape, vec![8000, 28, 28]);
    assert_eq!(splits.test.x.shape, vec![2000, 28, 28]);
    assert_eq!(splits.train.sample_shape, vec![28, 28]);
    assert_eq!(splits.train.y.shape, vec![8000]);
    let max = splits.train.x.data.iter().cloned().fold(0.0f32, f32::max);
    assert_eq!(max, 1.0);
    // Class counts over all 10,000 digits, from the data folder's README.
    let mut counts = [0usize; 10];
    for &l in splits.train.y.data.iter().chain(&splits.test.y.data) {
        counts[l as usize] += 1;
    }
    assert_eq!(
        counts,
        [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    );
}

#[test]
fn plain_and_gzip_files_load_the_same() {
    let plain = plain_copy("plain");
    assert_eq!(
        load_idx(&plain, 1.0).unwrap().train.x,
        load_idx(&mnist_dir(), 1.0).unwrap().train.x
    );
}

#[test]
fn mnist_fits_a_channel_input_and_refuses_a_flat_one() {
    let mut splits = load_idx(&mnist_dir(), 1.0).unwrap();
    splits.train.fit_input(&[28, 28, 1]).unwrap();
    let err = splits.test.fit_input(&[784]).unwrap_err();
    assert_eq!(err.kind, DataErrorKind::Shape);
    let msg = err.to_string();
    assert!(
        msg.contains(
            "t10k-images-idx3-ubyte.gz`: samples have shape [28, 28], the model input is [784]"
        ),
        "{msg}"
    );
}

#[test]
fn a_label_outside_the_model_classes_names_the_byte() {
    let mut splits = load_idx(&mnist_dir(), 1.0).unwrap();
    let err = splits
        .train
        .fit_labels(TaskKind::Classification { classes: 5 }, &[5])
        .unwrap_err();
    let first = splits.train.y.data.iter().position(|&l| l >= 5.0).unwrap();
    assert_eq!(err.location, Location::Byte(8 + first as u64));
    assert!(
        err.to_string()
            .contains("train-labels-idx1-ubyte.gz` at byte"),
        "{err}"
    );
    assert!(matches!(
        splits.train.source,
        Source::Idx {
            label_offset: 8,
            label_size: 1,
            ..
        }
    ));
}

#[test]
fn a_wrong_magic_number_is_an_error_at_byte_0() {
    let dir = plain_copy("magic");
    let path = dir.join("train-images-idx3-ubyte");
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] = 0x1f; // not gzip either: the second byte is 0
    fs::write(&path, &bytes).unwrap();
    let err = load_idx(&dir, 1.0).unwrap_err();
    assert_eq!(err.kind, DataErrorKind::Format);
    assert_eq!(err.location, Location::Byte(0));
    assert!(
        err.to_string()
            .contains("train-images-idx3-ubyte` at byte 0: wrong magic number 0x1f000803"),
        "{err}"
    );
}

#[test]
fn a_truncated_images_file_names_where_it_ends() {
    let dir = plain_copy("trunc");
    let path = dir.join("t10k-images-idx3-ubyte");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..100_000]).unwrap();
    let err = load_idx(&dir, 1.0).unwrap_err();
    assert_eq!(err.location, Location::Byte(100_000));
    let msg = err.to_string();
    assert!(
        msg.contains("it ends at byte 100000") && msg.contains("end at byte 1568016"),
        "{msg}"
    );
}

#[test]
fn a_truncated_gzip_file_is_an_error_not_a_short_dataset() {
    let dir = temp_dir("gztrunc");
    for name in [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ] {
        fs::copy(mnist_dir().join(name), dir.join(name)).unwrap();
    }
    let path = dir.join("train-labels-idx1-ubyte.gz");
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_idx(&dir, 1.0).unwrap_err();
    assert_eq!(err.kind, DataErrorKind::Format);
    assert!(
        err.to_string()
            .contains("train-labels-idx1-ubyte.gz` at byte"),
        "{err}"
    );
    assert!(
        err.message.contains("gzip stream is corrupt or truncated"),
        "{err}"
    );
}

#[test]
fn a_header_count_that_disagrees_with_the_file_size_is_an_error() {
    let dir = plain_copy("count");
    let path = dir.join("train-labels-idx1-ubyte");
    let mut bytes = fs::read(&path).unwrap();
    bytes[4..8].copy_from_slice(&7999u32.to_be_bytes());
    fs::write(&path, &bytes).unwrap();
    let err = load_idx(&dir, 1.0).unwrap_err();
    assert_eq!(err.location, Location::Byte(8 + 7999));
    assert!(
        err.message
            .starts_with("1 unexpected bytes after the [7999] elements of u8"),
        "{err}"
    );
}

#[test]
fn images_and_labels_of_different_lengths_are_an_error_naming_both_files() {
    let dir = plain_copy("lengths");
    let path = dir.join("train-labels-idx1-ubyte");
    let mut bytes = fs::read(&path).unwrap();
    bytes[4..8].copy_from_slice(&7999u32.to_be_bytes());
    bytes.pop();
    fs::write(&path, &bytes).unwrap();
    let err = load_idx(&dir, 1.0).unwrap_err();
    assert_eq!(err.kind, DataErrorKind::Mismatch);
    let msg = err.to_string();
    assert!(
        msg.contains("train-labels-idx1-ubyte` at byte 4: 7999 labels, but `"),
        "{msg}"
    );
    assert!(
        msg.contains("train-images-idx3-ubyte` has 8000 images"),
        "{msg}"
    );
}

#[test]
fn test_samples_of_another_shape_are_an_error() {
    let dir = plain_copy("shape");
    let path = dir.join("t10k-images-idx3-ubyte");
    let mut bytes = fs::read(&path).unwrap();
    bytes[8..12].copy_from_slice(&56u32.to_be_bytes()); // 2000 × 56 × 14: same size
    bytes[12..16].copy_from_slice(&14u32.to_be_bytes());
    fs::write(&path, &bytes).unwrap();
    let err = load_idx(&dir, 1.0).unwrap_err();
    assert!(
        err.message
            .starts_with("test samples have shape [56, 14], training samples in `"),
        "{err}"
    );
}

#[test]
fn a_missing_file_says_what_the_folder_needs() {
    let dir = plain_copy("missing");
    fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let err = load_idx(&dir, 1.0).unwrap_err();
    assert_eq!(err.kind, DataErrorKind::Io);
    assert!(
        err.to_string()
            .contains("looked for `t10k-labels-idx1-ubyte` and `t10k-labels-idx1-ubyte.gz`"),
        "{err}"
    );
    assert!(err.help.is_some());
}

#[test]
fn gzip_is_recognised_by_content_not_name() {
    let dir = plain_copy("gzname");
    let plain = fs::read(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    fs::write(dir.join("t10k-labels-idx1-ubyte"), gzip(&plain)).unwrap();
    assert_eq!(load_idx(&dir, 1.0).unwrap().test.y.len(), 2000);
}

fn write_csv(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("data.csv");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn csv_splits_every_fifth_row_into_the_test_set() {
    let dir = temp_dir("csv-split");
    let mut text = String::from("a, \"y\" ,b\r\n");
    for i in 1..=10 {
        text.push_str(&format!("{i}, {} ,{}\r\n", i * 10, -i));
    }
    text.push('\n');
    let s = load_csv(
        &write_csv(&dir, &text),
        "y",
        false,
        &TestSplit::Fraction(0.2),
    )
    .unwrap();
    assert_eq!(s.train.x.shape, vec![8, 2]);
    assert_eq!(s.test.x.data, vec![5.0, -5.0, 10.0, -10.0]);
    assert_eq!(s.test.y.data, vec![50.0, 100.0]);
    assert_eq!(s.train.y.shape, vec![8, 1]);
}

#[test]
fn csv_with_fewer_than_five_rows_evaluates_on_the_training_rows() {
    let dir = temp_dir("csv-small");
    let s = load_csv(
        &write_csv(&dir, "x,y\n1,2\n3,4\n"),
        "y",
        false,
        &TestSplit::Fraction(0.2),
    )
    .unwrap();
    assert_eq!(s.train, s.test);
}

#[test]
fn csv_standardizes_with_training_statistics_only() {
    let dir = temp_dir("csv-std");
    // Training rows (1-4, 6-9) have x mean 5; the test rows are 5 and 10.
    let mut text = String::from("x,y\n");
    for i in 1..=10 {
        text.push_str(&format!("{i},{i}\n"));
    }
    let s = load_csv(
        &write_csv(&dir, &text),
        "y",
        true,
        &TestSplit::Fraction(0.2),
    )
    .unwrap();
    let train_mean: f32 = s.train.x.data.iter().sum::<f32>() / 8.0;
    assert!(train_mean.abs() < 1e-6);
    assert_eq!(s.test.x.data[0], 0.0); // x = 5 is the training mean
    assert_eq!(s.test.y.data, vec![5.0, 10.0]); // targets are not standardized
}

#[test]
fn csv_parse_errors_name_line_and_column() {
    let dir = temp_dir("csv-parse");
    let cases = [
        (
            "x,y\n1,2\n3, abc\n",
            "line 3, column 4: cannot read `abc` in column `y` as a number",
        ),
        (
            "x,y\n1,2\n\n3,4,5\n",
            "line 4, column 5: this row has 3 fields, the header has 2",
        ),
        ("x,y\n1,\n", "line 2, column 3: empty value in column `y`"),
        (
            "x,y\n1,inf\n",
            "line 2, column 3: `inf` in column `y` is not a finite number",
        ),
        (
            "x,y\n\"1,2\n",
            "line 2, column 1: this quoted field has no closing quote",
        ),
        (
            "x,x\n1,2\n",
            "line 1, column 3: the column name `x` appears twice",
        ),
        ("x,y\n", "line 1: the file has a header but no data rows"),
        ("", "the file is empty"),
    ];
    for (text, expected) in cases {
        let err = load_csv(
            &write_csv(&dir, text),
            "y",
            false,
            &TestSplit::Fraction(0.2),
        )
        .unwrap_err();
        assert!(err.to_string().contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn csv_without_the_target_column_lists_the_columns() {
    let dir = temp_dir("csv-target");
    let err = load_csv(
        &write_csv(&dir, "x,z\n1,2\n"),
        "y",
        false,
        &TestSplit::Fraction(0.2),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "`{}` line 1: the header has no column named `y`\nhelp: the columns are: `x`, `z`",
            dir.join("data.csv").display()
        )
    );
}

#[test]
fn csv_class_labels_out_of_range_name_line_and_column() {
    let dir = temp_dir("csv-label");
    let mut s = load_csv(
        &write_csv(&dir, "x,label\n1,0\n2,1\n3,7\n"),
        "label",
        false,
        &TestSplit::Fraction(0.2),
    )
    .unwrap();
    let err = s
        .train
        .fit_labels(TaskKind::Classification { classes: 2 }, &[2])
        .unwrap_err();
    assert_eq!(err.location, Location::LineCol(4, 3));
    assert_eq!(s.test.y.len(), 3);
}
