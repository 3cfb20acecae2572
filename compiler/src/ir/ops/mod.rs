//! The op families. Each file holds, for its ops, the shape rule, the gradient rule and
//! the reference evaluation; printed names and attributes are routed through `op.rs`.
//! This file holds the attribute values shared by the printer and the parser.

pub mod conv;
pub mod elementwise;
pub mod layout;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod source;
pub mod window;

use std::fmt;

use super::graph::{Dim, Shape};
use super::{ir_bail, IrResult};

/// A printed attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Int(u64),
    Float(f32),
    Ints(Vec<usize>),
    Shape(Shape),
    Str(String),
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(i) => write!(f, "{i}"),
            // `{:?}` prints the shortest text that parses back to the same bits.
            Attr::Float(x) => write!(f, "{x:?}"),
            Attr::Ints(v) => {
                let parts: Vec<String> = v.iter().map(|x| x.to_string()).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Attr::Shape(s) => write!(f, "{s}"),
            Attr::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
        }
    }
}

/// Attributes as parsed from text: `key=value` pairs with the value kept as text until
/// the op asks for it with a type.
#[derive(Clone, Debug, Default)]
pub struct Attrs {
    pub pairs: Vec<(String, AttrText)>,
}

/// A value token: a string literal (unescaped), a bracketed list (its items), or a bare
/// token (a number).
#[derive(Clone, Debug, PartialEq)]
pub enum AttrText {
    Str(String),
    List(Vec<String>),
    Bare(String),
}

impl Attrs {
    fn get(&self, key: &str) -> IrResult<&AttrText> {
        match self.pairs.iter().find(|(k, _)| k == key) {
            Some((_, v)) => Ok(v),
            None => ir_bail!("missing attribute `{key}`"),
        }
    }

    fn bare(&self, key: &str) -> IrResult<&str> {
        match self.get(key)? {
            AttrText::Bare(s) => Ok(s),
            _ => ir_bail!("attribute `{key}` must be a number"),
        }
    }

    pub fn u64(&self, key: &str) -> IrResult<u64> {
        let s = self.bare(key)?;
        s.parse()
            .map_err(|_| super::IrError::new(format!("attribute `{key}`: `{s}` is not an integer")))
    }

    pub fn usize(&self, key: &str) -> IrResult<usize> {
        let s = self.bare(key)?;
        s.parse()
            .map_err(|_| super::IrError::new(format!("attribute `{key}`: `{s}` is not an integer")))
    }

    pub fn f32(&self, key: &str) -> IrResult<f32> {
        let s = self.bare(key)?;
        s.parse()
            .map_err(|_| super::IrError::new(format!("attribute `{key}`: `{s}` is not a number")))
    }

    pub fn string(&self, key: &str) -> IrResult<String> {
        match self.get(key)? {
            AttrText::Str(s) => Ok(s.clone()),
            _ => ir_bail!("attribute `{key}` must be a string"),
        }
    }

    fn list(&self, key: &str) -> IrResult<&[String]> {
        match self.get(key)? {
            AttrText::List(v) => Ok(v),
            _ => ir_bail!("attribute `{key}` must be a list"),
        }
    }

    pub fn usizes(&self, key: &str) -> IrResult<Vec<usize>> {
        self.list(key)?
            .iter()
            .map(|s| {
                s.parse().map_err(|_| {
                    super::IrError::new(format!("attribute `{key}`: `{s}` is not an integer"))
                })
            })
            .collect()
    }

    pub fn shape(&self, key: &str) -> IrResult<Shape> {
        parse_dims(self.list(key)?)
            .map_err(|e| super::IrError::new(format!("attribute `{key}`: {e}")))
    }

    /// Rejects attributes the op does not have (typos would otherwise pass silently).
    pub fn check_all_used(&self, known: &[&str]) -> IrResult<()> {
        for (i, (k, _)) in self.pairs.iter().enumerate() {
            if !known.contains(&k.as_str()) {
                ir_bail!("unknown attribute `{k}`");
            }
            if self.pairs[..i].iter().any(|(k2, _)| k2 == k) {
                ir_bail!("attribute `{k}` given twice");
            }
        }
        Ok(())
    }
}

/// Parses dims written as `N` or integers.
pub fn parse_dims(items: &[String]) -> IrResult<Shape> {
    items
        .iter()
        .map(|s| {
            if s == "N" {
                Ok(Dim::N)
            } else {
                s.parse::<usize>()
                    .map(Dim::K)
                    .map_err(|_| super::IrError::new(format!("`{s}` is not a dimension")))
            }
        })
        .collect::<IrResult<Vec<_>>>()
        .map(Shape)
}

/// Broadcast strides of `shape` (right-aligned) against an output of rank `rank`:
/// 0 where the dim is broadcast.
/// Advances a row-major multi-index over `dims` by one (the last axis fastest), wrapping
/// to all zeros after the last index.
pub(crate) fn next_index(idx: &mut [usize], dims: &[usize]) {
    for d in (0..idx.len()).rev() {
        idx[d] += 1;
        if idx[d] < dims[d] {
            return;
        }
        idx[d] = 0;
    }
}

pub(crate) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let rank = out.len();
    let own = super::tensor::strides(shape);
    let mut s = vec![0; rank];
    let off = rank - shape.len();
    for i in 0..shape.len() {
        if shape[i] != 1 || out[off + i] == 1 {
            s[off + i] = own[i];
        }
    }
    s
}
