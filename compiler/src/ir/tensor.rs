//! A plain row-major f32 tensor, the value type of the reference interpreter.
//!
//! Invariant: `data.len()` equals the product of `shape` (1 for a scalar, `shape == []`).

use super::{ir_bail, IrResult};

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// Builds a tensor, checking that the data fills the shape exactly.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> IrResult<Tensor> {
        let want: usize = shape.iter().product();
        if want != data.len() {
            ir_bail!(
                "tensor of shape {:?} needs {want} values, got {}",
                shape,
                data.len()
            );
        }
        Ok(Tensor { shape, data })
    }

    pub fn full(shape: Vec<usize>, value: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![value; n],
        }
    }

    pub fn zeros(shape: Vec<usize>) -> Tensor {
        Tensor::full(shape, 0.0)
    }

    pub fn scalar(value: f32) -> Tensor {
        Tensor {
            shape: Vec::new(),
            data: vec![value],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row-major strides of the shape.
    pub fn strides(&self) -> Vec<usize> {
        strides(&self.shape)
    }
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}
