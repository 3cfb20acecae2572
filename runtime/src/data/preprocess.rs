//! What a data source does to every sample before the model sees it ([`Preprocess`]):
//! recorded in the weights' metadata by `nnc train` and applied again by `nnc predict`
//! (and every artifact), so that prediction takes samples as they are in the data.
//!
//! The order is fixed: values are first multiplied by `scale` (IDX `scale = 1/255`), then,
//! for a standardized CSV source, each feature is centred and divided by the training
//! split's statistics. The JSON form (`nnc.preprocess` in `weights.safetensors`) is
//! `{"scale": s, "standardize": {"mean": [...], "std": [...]}, "columns": [...],
//! "target": "name"}`, the last three optional.

use serde_json::{json, Value};

use super::Standardizer;
use crate::tensor::Tensor;

/// The preprocessing of a data source, and for CSV sources the feature columns in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// Every value is multiplied by this first (1 for none).
    pub scale: f32,
    /// Then each feature `j` becomes `(v - mean[j]) / std[j]`.
    pub standardize: Option<Standardizer>,
    /// The feature columns of a CSV source, in the order of the model input.
    pub columns: Option<Vec<String>>,
    /// The target column of a CSV source (ignored when a file to predict has it).
    pub target: Option<String>,
    /// The class names of an image-folder source, by class index.
    pub classes: Option<Vec<String>>,
}

impl Default for Preprocess {
    fn default() -> Preprocess {
        Preprocess {
            scale: 1.0,
            standardize: None,
            columns: None,
            target: None,
            classes: None,
        }
    }
}

impl Preprocess {
    /// Applies the preprocessing to raw samples `[n, ..]` (each sample's values in the
    /// order the model input flattens them).
    pub fn apply(&self, x: &mut Tensor) -> Result<(), String> {
        if self.scale != 1.0 {
            for v in &mut x.data {
                *v *= self.scale;
            }
        }
        if let Some(s) = &self.standardize {
            let width = x.row_len();
            if width != s.mean.len() {
                return Err(format!(
                    "the recorded standardization has {} features, the samples have {width}",
                    s.mean.len()
                ));
            }
            s.apply_rows(&mut x.data);
        }
        Ok(())
    }

    /// The JSON form stored with the weights.
    pub fn to_json(&self) -> String {
        let mut v = json!({ "scale": self.scale });
        if let Some(s) = &self.standardize {
            v["standardize"] = json!({ "mean": s.mean, "std": s.std });
        }
        if let Some(c) = &self.columns {
            v["columns"] = json!(c);
        }
        if let Some(t) = &self.target {
            v["target"] = json!(t);
        }
        if let Some(c) = &self.classes {
            v["classes"] = json!(c);
        }
        v.to_string()
    }

    /// Reads the JSON form; the message says what is malformed.
    pub fn from_json(text: &str) -> Result<Preprocess, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let scale = v
            .get("scale")
            .and_then(Value::as_f64)
            .ok_or("no number `scale`")? as f32;
        let floats = |x: &Value, key: &str| -> Result<Vec<f64>, String> {
            x.get(key)
                .and_then(Value::as_array)
                .and_then(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
                .ok_or(format!("`standardize.{key}` is not a list of numbers"))
        };
        let standardize = match v.get("standardize") {
            None => None,
            Some(s) => {
                let (mean, std) = (floats(s, "mean")?, floats(s, "std")?);
                if mean.len() != std.len() || std.iter().any(|d| d.is_nan() || *d <= 0.0) {
                    return Err("`standardize` has mismatched or non-positive statistics".into());
                }
                Some(Standardizer { mean, std })
            }
        };
        let names = |key: &str| -> Result<Option<Vec<String>>, String> {
            match v.get(key) {
                None => Ok(None),
                Some(c) => c
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|s| s.as_str().map(String::from))
                            .collect::<Option<Vec<String>>>()
                    })
                    .map(Some)
                    .ok_or(format!("`{key}` is not a list of names")),
            }
        };
        let columns = names("columns")?;
        let classes = names("classes")?;
        let target = v.get("target").and_then(Value::as_str).map(String::from);
        Ok(Preprocess {
            scale,
            standardize,
            columns,
            target,
            classes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_form_round_trips_and_applies_scale_then_standardization() {
        let p = Preprocess {
            scale: 0.5,
            standardize: Some(Standardizer {
                mean: vec![1.0, 2.0],
                std: vec![2.0, 4.0],
            }),
            columns: Some(vec!["a".into(), "b".into()]),
            target: Some("y".into()),
            classes: Some(vec!["cat".into(), "dog".into()]),
        };
        let back = Preprocess::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
        let mut x = Tensor::new(vec![1, 2], vec![4.0, 12.0]).unwrap();
        p.apply(&mut x).unwrap();
        assert_eq!(x.data, vec![0.5, 1.0]);
        let err = p
            .apply(&mut Tensor::new(vec![1, 3], vec![0.0; 3]).unwrap())
            .unwrap_err();
        assert!(err.contains("2 features, the samples have 3"), "{err}");
        assert!(Preprocess::from_json("{}").unwrap_err().contains("scale"));
    }
}
