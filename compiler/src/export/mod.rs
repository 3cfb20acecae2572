//! Exports of a checked model for other runtimes: [`onnx`] writes an ONNX model, built
//! with the small protocol-buffer writer of [`proto`].

pub mod onnx;
mod proto;

pub use onnx::{export_onnx, ExportError, OPSET};
