//! `nnc predict`: a trained model on new samples. The samples are read as they are in
//! the data (pixel bytes, raw CSV values), the preprocessing recorded with the weights
//! is applied (or, for weights without it, the one the `train` block's data source
//! implies), the compiled evaluation step runs over them a batch at a time, and one row
//! per sample is written: `index,source,prediction,p0,…` for a classifier (`prediction`
//! is the arg-max class), `index,source,y0,…` otherwise; CSV, or JSON lines for an
//! output file ending in `.jsonl`.
//!
//! Inputs: an IDX file (`.gz` or not), a CSV file with the training columns (others,
//! the target among them, are ignored), a NumPy `.npy` array `[n, …input shape]`, a PNG
//! or JPEG image, or a folder of them (in name order). `source` is the image's file name,
//! the CSV line number, or the sample's index in an IDX or `.npy` array.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nnc_runtime::data::{
    image_files, image_geometry, is_image_file, load_csv, load_images, read_csv_columns, read_idx,
    read_npy, Dataset, Preprocess,
};
use nnc_runtime::executor::{Executor, TaskKind};
use nnc_runtime::tensor::{format_shape, Tensor};
use serde_json::json;

use super::train::{make_executor, select_train, task_kind, Target};
use super::weights::load_weights;
use super::DriverError;
use crate::sema::typed::{DataSpec, Program};

/// The settings of `nnc predict`.
#[derive(Clone, Debug)]
pub struct PredictOptions {
    pub model: Option<String>,
    pub target: Target,
    pub weights: PathBuf,
    pub input: PathBuf,
    /// `None`: CSV on stdout.
    pub output: Option<PathBuf>,
    pub batch: Option<usize>,
    /// Scale images of another size to the input's.
    pub resize: bool,
}

/// What `nnc predict` did, for the line it prints on stderr.
#[derive(Clone, Debug)]
pub struct PredictSummary {
    pub samples: usize,
    pub seconds: f64,
    pub written_to: Option<PathBuf>,
}

/// Samples read from an input, as they are in the data, and where each came from.
struct Samples {
    x: Tensor,
    sources: Vec<String>,
}

/// Runs `nnc predict`.
pub fn run_predict(
    program: &Program,
    opts: &PredictOptions,
) -> Result<PredictSummary, DriverError> {
    let started = Instant::now();
    let train = select_train(program, opts.model.as_deref())?;
    let model = &program.models[train.model];
    let format = OutputFormat::of(opts.output.as_deref())?;
    let batch = opts.batch.unwrap_or(train.batch.max(256)).max(1);
    // The executor holds the compiled training step too.
    super::resources::check(model, Some(train), train.batch, None)?;
    super::resources::check(model, None, batch, None)?;
    let mut exec = make_executor(opts.target, model, train, train.seed)?;
    let weights = load_weights(exec.as_mut(), &opts.weights, model, train)?;
    let preprocess = match weights.preprocess(&opts.weights)? {
        Some(p) => p,
        None => implied_preprocess(&train.data)?,
    };
    let input_shape = exec.input_shape();
    let samples = read_samples(&opts.input, &input_shape, &preprocess, opts.resize)?;
    let n = samples.sources.len();
    let mut data = Dataset::from_tensors(
        &opts.input.display().to_string(),
        samples.x,
        Tensor::new(vec![n], vec![0.0; n]).map_err(|e| DriverError::Message(e.to_string()))?,
    )
    .map_err(|e| DriverError::Message(e.to_string()))?;
    data.fit_input(&input_shape)
        .map_err(|e| DriverError::Message(e.to_string()))?;
    preprocess
        .apply(&mut data.x)
        .map_err(|e| DriverError::Message(format!("`{}`: {e}", opts.input.display())))?;
    let task = task_kind(model, train.loss);
    let outputs = predict_all(exec.as_mut(), &data.x, task, batch)?;
    let per = exec.output_shape().iter().product();
    let classes = preprocess.classes.as_deref();
    let text = format.render(task, classes, &samples.sources, &outputs, per);
    match &opts.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| DriverError::Message(format!("cannot write `{}`: {e}", path.display())))?,
        None => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error of the model's.
            let _ = out.write_all(text.as_bytes());
        }
    }
    Ok(PredictSummary {
        samples: n,
        seconds: started.elapsed().as_secs_f64(),
        written_to: opts.output.clone(),
    })
}

/// The preprocessing of weights that do not record one: what the `train` block's data
/// source does (for a standardized CSV, its statistics from the training file).
pub(super) fn implied_preprocess(data: &DataSpec) -> Result<Preprocess, DriverError> {
    match data {
        DataSpec::Idx { scale, .. } => Ok(Preprocess {
            scale: *scale as f32,
            ..Preprocess::default()
        }),
        DataSpec::Images { scale, .. } | DataSpec::Npy { scale, .. } => Ok(Preprocess {
            scale: *scale as f32,
            ..Preprocess::default()
        }),
        DataSpec::Csv {
            path,
            target,
            standardize,
            test,
        } => load_csv(path, target, *standardize, &super::train::test_split(test))
            .map(|s| s.preprocess)
            .map_err(|e| {
                DriverError::Message(format!(
                    "the weights record no preprocessing (written by an older nnc?) and the training data it must come from cannot be read: {e}\nhelp: train again with this nnc, which records it"
                ))
            }),
    }
}

/// Reads the samples at `path`, by its kind (see the module doc).
fn read_samples(
    path: &Path,
    input: &[usize],
    preprocess: &Preprocess,
    resize: bool,
) -> Result<Samples, DriverError> {
    let data_err = |e: nnc_runtime::data::DataError| DriverError::Message(e.to_string());
    let images = |paths: Vec<PathBuf>| -> Result<Samples, DriverError> {
        let geometry = image_geometry(input).ok_or_else(|| {
            DriverError::Message(format!(
                "`{}`: images cannot fill the model input {}; it takes [height, width], [height, width, 1] or [height, width, 3]",
                path.display(),
                format_shape(input)
            ))
        })?;
        let x = load_images(&paths, geometry, resize).map_err(data_err)?;
        let sources = paths
            .iter()
            .map(|p| {
                p.file_name()
                    .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
            })
            .collect();
        Ok(Samples { x, sources })
    };
    let indexed = |x: Tensor| {
        let n = x.shape.first().copied().unwrap_or(0);
        Samples {
            x,
            sources: (0..n).map(|i| i.to_string()).collect(),
        }
    };
    if path.is_dir() {
        return images(image_files(path).map_err(data_err)?);
    }
    if !path.exists() {
        return Err(DriverError::Message(format!(
            "`{}` does not exist\nhelp: pass an IDX, CSV, .npy, PNG or JPEG file, or a folder of images",
            path.display()
        )));
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if is_image_file(path) {
        return images(vec![path.to_path_buf()]);
    }
    match ext.as_str() {
        "npy" => {
            let x = read_npy(path).map_err(data_err)?;
            if x.shape.len() < 2 {
                return Err(DriverError::Message(format!(
                    "`{}`: the array has shape {}; it needs [samples, …input shape] (the input is {})",
                    path.display(),
                    format_shape(&x.shape),
                    format_shape(input)
                )));
            }
            Ok(indexed(x))
        }
        "csv" => {
            let Some(columns) = &preprocess.columns else {
                return Err(DriverError::Message(format!(
                    "`{}`: the model was not trained on CSV data, so there are no columns to read\nhelp: pass the samples as the data it was trained on (IDX, .npy or images)",
                    path.display()
                )));
            };
            let (x, lines) = read_csv_columns(path, columns).map_err(data_err)?;
            Ok(Samples {
                x,
                sources: lines.iter().map(|l| l.to_string()).collect(),
            })
        }
        _ => {
            let arr = read_idx(path).map_err(|e| {
                DriverError::Message(format!(
                    "{e}\nhelp: `nnc predict` reads IDX (`.gz` or not), CSV, NumPy `.npy`, PNG and JPEG files and folders of images"
                ))
            })?;
            let x = Tensor::new(arr.dims.clone(), arr.data.clone())
                .map_err(|e| DriverError::Message(e.to_string()))?;
            Ok(indexed(x))
        }
    }
}

/// The model's outputs for every row of `x`, `[n, outputs]` flattened.
fn predict_all(
    exec: &mut dyn Executor,
    x: &Tensor,
    task: TaskKind,
    batch: usize,
) -> Result<Vec<f32>, DriverError> {
    let n = x.shape[0];
    let output_shape = exec.output_shape();
    let per = output_shape.iter().product::<usize>();
    let label_shape = |rows: usize| match task {
        TaskKind::Classification { .. } => vec![rows],
        _ => {
            let mut s = vec![rows];
            s.extend(&output_shape);
            s
        }
    };
    let zeros = |rows: usize| {
        let shape = label_shape(rows);
        let len = shape.iter().product();
        Tensor::new(shape, vec![0.0; len]).expect("shape and length agree")
    };
    let exec_err = |e: nnc_runtime::executor::ExecError| DriverError::Message(e.to_string());
    if let Some(run) = exec.eval_all(x, &zeros(n), batch) {
        let run = run.map_err(exec_err)?;
        if let Some(out) = run.outputs {
            return Ok(out.data);
        }
    }
    let mut out = Vec::with_capacity(n * per);
    let mut start = 0;
    while start < n {
        let rows: Vec<usize> = (start..(start + batch).min(n)).collect();
        let xb = x.gather_rows(&rows);
        let r = exec.eval_batch(&xb, &zeros(rows.len())).map_err(exec_err)?;
        out.extend_from_slice(&r.output.data);
        start += batch;
    }
    Ok(out)
}

/// How predictions are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutputFormat {
    Csv,
    JsonLines,
}

impl OutputFormat {
    fn of(path: Option<&Path>) -> Result<OutputFormat, DriverError> {
        let Some(path) = path else {
            return Ok(OutputFormat::Csv);
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(OutputFormat::Csv),
            Some("jsonl") => Ok(OutputFormat::JsonLines),
            _ => Err(DriverError::Message(format!(
                "`--output {}`: the file must end in `.csv` or `.jsonl`",
                path.display()
            ))),
        }
    }

    /// One row per sample (after a header for CSV); with class names (an image-folder
    /// source), the predicted class's name follows its index.
    fn render(
        self,
        task: TaskKind,
        classes: Option<&[String]>,
        sources: &[String],
        outputs: &[f32],
        per: usize,
    ) -> String {
        let classifier = matches!(task, TaskKind::Classification { .. } | TaskKind::Binary);
        let column = if classifier { "p" } else { "y" };
        let mut s = String::new();
        if self == OutputFormat::Csv {
            s.push_str("index,source");
            if classifier {
                s.push_str(",prediction");
                if classes.is_some() {
                    s.push_str(",class");
                }
            }
            for j in 0..per {
                let _ = write!(s, ",{column}{j}");
            }
            s.push('\n');
        }
        for (i, (source, row)) in sources.iter().zip(outputs.chunks(per.max(1))).enumerate() {
            let prediction = classifier.then(|| predicted_class(task, row));
            let name = prediction.and_then(|p| classes.and_then(|c| c.get(p)));
            match self {
                OutputFormat::Csv => {
                    let _ = write!(s, "{i},{}", csv_field(source));
                    if let Some(p) = prediction {
                        let _ = write!(s, ",{p}");
                    }
                    if let Some(n) = name {
                        let _ = write!(s, ",{}", csv_field(n));
                    }
                    for v in row {
                        let _ = write!(s, ",{}", number(*v));
                    }
                    s.push('\n');
                }
                OutputFormat::JsonLines => {
                    let mut v = json!({"index": i, "source": source});
                    if let Some(p) = prediction {
                        v["prediction"] = json!(p);
                    }
                    if let Some(n) = name {
                        v["class"] = json!(n);
                    }
                    v[column] = json!(row);
                    let _ = writeln!(s, "{v}");
                }
            }
        }
        s
    }
}

/// The arg-max class (the first on ties), or for one binary output whether it is ≥ 0.5.
fn predicted_class(task: TaskKind, row: &[f32]) -> usize {
    if task == TaskKind::Binary {
        return usize::from(row.first().is_some_and(|p| *p >= 0.5));
    }
    let mut best = 0;
    for (j, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = j;
        }
    }
    best
}

/// `v` in the shortest form that reads back as the same `f32`: plain, or with an
/// exponent when it is tiny or huge (`8.969737e-12`, not 0.000000000008969737).
fn number(v: f32) -> String {
    if v != 0.0 && (v.abs() < 1e-4 || v.abs() >= 1e7) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// A CSV field: quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifier_rows_have_the_argmax_and_regressions_their_outputs() {
        let task = TaskKind::Classification { classes: 3 };
        let out = OutputFormat::Csv.render(
            task,
            None,
            &["a,b.png".into(), "2".into()],
            &[0.1, 0.7, 0.2, 0.5, 0.2, 0.3],
            3,
        );
        assert_eq!(
            out,
            "index,source,prediction,p0,p1,p2\n0,\"a,b.png\",1,0.1,0.7,0.2\n1,2,0,0.5,0.2,0.3\n"
        );
        let names = ["cat".to_string(), "dog".to_string()];
        let out = OutputFormat::Csv.render(
            TaskKind::Classification { classes: 2 },
            Some(&names),
            &["x.png".into()],
            &[0.25, 0.75],
            2,
        );
        assert_eq!(
            out,
            "index,source,prediction,class,p0,p1\n0,x.png,1,dog,0.25,0.75\n"
        );
        let out = OutputFormat::JsonLines.render(
            TaskKind::Regression { outputs: 1 },
            None,
            &["7".into()],
            &[2.5],
            1,
        );
        assert_eq!(out, "{\"index\":0,\"source\":\"7\",\"y\":[2.5]}\n");
        assert_eq!(predicted_class(TaskKind::Binary, &[0.5]), 1);
        assert_eq!(number(8.969737e-12), "8.969737e-12");
        assert_eq!(number(0.25), "0.25");
        assert!(OutputFormat::of(Some(Path::new("out.txt"))).is_err());
    }
}
