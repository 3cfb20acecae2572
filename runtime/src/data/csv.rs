//! CSV files with a header row: every column but the target is a feature, the target
//! column is chosen by name.
//!
//! Format accepted: comma-separated, one header line, fields optionally in double quotes
//! (`""` inside quotes is a quote), surrounding spaces ignored, `\n` or `\r\n` line ends,
//! blank lines skipped. Every value must be a finite number; an error names the line and
//! the 1-based character column of the field.
//!
//! Splitting ([`TestSplit`]): a fraction `f` of the data rows forms the test split, spread
//! evenly ([`super::evenly_spread`]; the default 0.2 takes every fifth row, the 5th, 10th,
//! ...) — a fixed rule, independent of the seed, so the same file always splits the same
//! way. A file too small to hold a row out tests on its training rows. A test file
//! instead: the whole file trains, and the other file (the same columns, found by name,
//! in any order) tests.
//!
//! `standardize` takes each feature's mean and standard deviation from the training split
//! only and applies them to both splits; targets are never standardized.

use std::path::Path;

use super::{
    evenly_spread, excerpt, excerpt_list, split_rows, DataError, DataErrorKind, Dataset, Location,
    Preprocess, Source, Splits, Standardizer, TestSplit,
};
use crate::tensor::Tensor;

/// By default one data row in `TEST_EVERY` goes to the test split (`test = 0.2`).
pub const TEST_EVERY: usize = 5;

/// A field's text and its 1-based character column.
struct Field {
    text: String,
    column: usize,
}

/// Splits one line into fields; an unterminated quote is an error at its column.
fn split_fields(line: &str, path: &Path, line_no: usize) -> Result<Vec<Field>, DataError> {
    let chars: Vec<char> = line.chars().collect();
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        while matches!(chars.get(i), Some(' ' | '\t')) {
            i += 1;
        }
        let column = i + 1;
        let mut text = String::new();
        if i < chars.len() && chars[i] == '"' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => {
                        return Err(DataError::new(
                            DataErrorKind::Parse,
                            path,
                            Location::LineCol(line_no, column),
                            "this quoted field has no closing quote",
                        ))
                    }
                    Some('"') if chars.get(i + 1) == Some(&'"') => {
                        text.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        text.push(c);
                        i += 1;
                    }
                }
            }
            while i < chars.len() && chars[i] != ',' {
                if !chars[i].is_whitespace() {
                    return Err(DataError::new(
                        DataErrorKind::Parse,
                        path,
                        Location::LineCol(line_no, i + 1),
                        format!("unexpected `{}` after a quoted field", chars[i]),
                    ));
                }
                i += 1;
            }
        } else {
            while i < chars.len() && chars[i] != ',' {
                text.push(chars[i]);
                i += 1;
            }
            text = text.trim_end().to_string();
        }
        fields.push(Field { text, column });
        if i >= chars.len() {
            return Ok(fields);
        }
        i += 1; // the comma
    }
}

/// Loads `path`, using the column named `target` as the label or target and every other
/// column as a feature.
pub fn load_csv(
    path: &Path,
    target: &str,
    standardize: bool,
    split: &TestSplit,
) -> Result<Splits, DataError> {
    let text = csv_text(path)?;
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    load_csv_lines(path, &mut lines, target, standardize, split)
}

/// The file's text (UTF-8, without a byte-order mark).
fn csv_text(path: &Path) -> Result<String, DataError> {
    let bytes = super::read_file(path)?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            return Err(DataError::new(
                DataErrorKind::Parse,
                path,
                Location::Byte(e.valid_up_to() as u64),
                format!("line {line} is not valid UTF-8 text"),
            ));
        }
    };
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text).to_string())
}

fn load_csv_lines<'a>(
    path: &Path,
    lines: &mut impl Iterator<Item = (usize, &'a str)>,
    target: &str,
    standardize: bool,
    split: &TestSplit,
) -> Result<Splits, DataError> {
    let lines_left = lines.by_ref().filter(|(_, l)| !l.trim().is_empty());
    let mut lines_left = lines_left.peekable();
    let Some((header_line, header_text)) = lines_left.next() else {
        return Err(DataError::new(
            DataErrorKind::Parse,
            path,
            Location::File,
            "the file is empty; a CSV file needs a header line",
        ));
    };
    let header = split_fields(header_text, path, header_line)?;
    for (i, f) in header.iter().enumerate() {
        if let Some(prev) = header[..i].iter().find(|p| p.text == f.text) {
            return Err(DataError::new(
                DataErrorKind::Parse,
                path,
                Location::LineCol(header_line, f.column),
                format!(
                    "the column name `{}` appears twice (also at column {})",
                    excerpt(&f.text),
                    prev.column
                ),
            ));
        }
    }
    let names: Vec<&str> = header.iter().map(|f| f.text.as_str()).collect();
    let Some(target_index) = names.iter().position(|n| *n == target) else {
        return Err(DataError::new(
            DataErrorKind::Parse,
            path,
            Location::Line(header_line),
            format!("the header has no column named `{}`", excerpt(target)),
        )
        .with_help(format!("the columns are: {}", excerpt_list(&names))));
    };
    if header.len() < 2 {
        return Err(DataError::new(
            DataErrorKind::Parse,
            path,
            Location::Line(header_line),
            format!("the only column is the target `{target}`; there are no feature columns"),
        ));
    }
    let features = header.len() - 1;
    let mut xs: Vec<f32> = Vec::new();
    let mut ys: Vec<f32> = Vec::new();
    let mut line_numbers = Vec::new();
    let mut target_cols = Vec::new();
    for (line_no, line) in lines_left {
        let fields = split_fields(line, path, line_no)?;
        if fields.len() != header.len() {
            let column = fields
                .get(header.len())
                .or(fields.last())
                .map_or(1, |f| f.column);
            return Err(DataError::new(
                DataErrorKind::Parse,
                path,
                Location::LineCol(line_no, column),
                format!(
                    "this row has {} fields, the header has {}",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        for (j, f) in fields.iter().enumerate() {
            let value = parse_value(f, names[j], path, line_no)?;
            if j == target_index {
                ys.push(value);
                target_cols.push(f.column);
            } else {
                xs.push(value);
            }
        }
        line_numbers.push(line_no);
    }
    let n = ys.len();
    if n == 0 {
        return Err(DataError::new(
            DataErrorKind::Parse,
            path,
            Location::Line(header_line),
            "the file has a header but no data rows",
        ));
    }
    let all = csv_dataset(path, xs, ys, features, line_numbers, target_cols);
    let (mut train, mut test) = match split {
        TestSplit::Fraction(f) => split_rows(&all, &evenly_spread(n, *f)),
        TestSplit::File(other) => {
            // The other file's columns by name, in this file's order, the target last.
            let features: Vec<String> = names
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != target_index)
                .map(|(_, n)| n.to_string())
                .collect();
            let test = read_csv_dataset(other, &features, target)?;
            (all, test)
        }
    };
    let mut preprocess = Preprocess {
        columns: Some(
            names
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != target_index)
                .map(|(_, n)| n.to_string())
                .collect(),
        ),
        target: Some(target.to_string()),
        ..Preprocess::default()
    };
    if standardize {
        let s = Standardizer::fit(&train);
        s.apply(&mut train);
        s.apply(&mut test);
        preprocess.standardize = Some(s);
    }
    Ok(Splits {
        train,
        test,
        preprocess,
    })
}

/// The columns `columns` (by name, in that order) of every data row of the CSV file at
/// `path`, as `[rows, columns.len()]`, and each row's line number; other columns (a
/// target, identifiers) are skipped unread. For `nnc predict` on a CSV file.
pub fn read_csv_columns(
    path: &Path,
    columns: &[String],
) -> Result<(Tensor, Vec<usize>), DataError> {
    let text = csv_text(path)?;
    let mut lines = text
        .split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((header_line, header_text)) = lines.next() else {
        return Err(DataError::new(
            DataErrorKind::Parse,
            path,
            Location::File,
            "the file is empty; a CSV file needs a header line",
        ));
    };
    let header = split_fields(header_text, path, header_line)?;
    let names: Vec<&str> = header.iter().map(|f| f.text.as_str()).collect();
    let missing: Vec<&str> = columns
        .iter()
        .filter(|c| !names.contains(&c.as_str()))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(DataError::new(
            DataErrorKind::Mismatch,
            path,
            Location::Line(header_line),
            format!(
                "the header has no column{} {}; the model was trained on the columns {}",
                if missing.len() > 1 { "s" } else { "" },
                quoted(&missing),
                quoted(&columns.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        )
        .with_help(format!("the file's columns are: {}", excerpt_list(&names))));
    }
    let picks: Vec<usize> = columns
        .iter()
        .map(|c| names.iter().position(|n| n == c).unwrap_or(0))
        .collect();
    let mut xs = Vec::new();
    let mut line_numbers = Vec::new();
    for (line_no, line) in lines {
        let fields = split_fields(line, path, line_no)?;
        if fields.len() != header.len() {
            return Err(DataError::new(
                DataErrorKind::Parse,
                path,
                Location::LineCol(line_no, fields.last().map_or(1, |f| f.column)),
                format!(
                    "this row has {} fields, the header has {}",
                    fields.len(),
                    header.len()
                ),
            ));
        }
        for &j in &picks {
            xs.push(parse_value(&fields[j], names[j], path, line_no)?);
        }
        line_numbers.push(line_no);
    }
    if line_numbers.is_empty() {
        return Err(DataError::new(
            DataErrorKind::Parse,
            path,
            Location::Line(header_line),
            "the file has a header but no data rows",
        ));
    }
    let x = Tensor::new(vec![line_numbers.len(), columns.len()], xs)
        .map_err(|e| DataError::new(DataErrorKind::Parse, path, Location::File, e.to_string()))?;
    Ok((x, line_numbers))
}

/// The samples of the CSV file at `path` as a data set: the feature `columns` and the
/// `target` column found by name (in any order; other columns skipped), every row.
pub fn read_csv_dataset(
    path: &Path,
    columns: &[String],
    target: &str,
) -> Result<Dataset, DataError> {
    let mut names = columns.to_vec();
    names.push(target.to_string());
    let (xy, lines) = read_csv_columns(path, &names)?;
    let (width, features, rows) = (names.len(), columns.len(), lines.len());
    let mut xs = Vec::with_capacity(rows * features);
    let mut ys = Vec::with_capacity(rows);
    for r in xy.data.chunks(width) {
        xs.extend_from_slice(&r[..features]);
        ys.push(r[features]);
    }
    Ok(csv_dataset(path, xs, ys, features, lines, vec![0; rows]))
}

/// Rows of `features` values and one target each, read from `path` at `lines` (the
/// target's column on each line, for messages, in `target_cols`).
fn csv_dataset(
    path: &Path,
    xs: Vec<f32>,
    ys: Vec<f32>,
    features: usize,
    lines: Vec<usize>,
    target_cols: Vec<usize>,
) -> Dataset {
    let n = ys.len();
    Dataset {
        x: Tensor {
            shape: vec![n, features],
            data: xs,
        },
        y: Tensor {
            shape: vec![n, 1],
            data: ys,
        },
        sample_shape: vec![features],
        source: Source::Csv {
            path: path.to_path_buf(),
            lines,
            target_cols,
        },
    }
}

fn quoted(names: &[&str]) -> String {
    excerpt_list(names)
}

fn parse_value(f: &Field, name: &str, path: &Path, line_no: usize) -> Result<f32, DataError> {
    let at = Location::LineCol(line_no, f.column);
    let text = f.text.trim();
    let name = excerpt(name);
    if text.is_empty() {
        return Err(DataError::new(
            DataErrorKind::Parse,
            path,
            at,
            format!("empty value in column `{name}`"),
        ));
    }
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(DataError::new(
            DataErrorKind::Parse,
            path,
            at,
            format!(
                "`{}` in column `{name}` is not a finite number",
                excerpt(text)
            ),
        )),
        Err(_) => Err(DataError::new(
            DataErrorKind::Parse,
            path,
            at,
            format!(
                "cannot read `{}` in column `{name}` as a number",
                excerpt(text)
            ),
        )),
    }
}
