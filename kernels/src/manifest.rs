//! The artifact manifest: what the runtime needs to run a compiled step without the
//! compiler — the buffers (names, sizes, roles, arena offsets) and, for each kernel, its
//! exported symbol, its buffer arguments and the extent of its parallel loop.
//!
//! Text format, one record per line, written by the compiler and parsed by the runtime:
//! ```text
//! nnc-artifact 1
//! program Mnist_train_step
//! arena 448*N+0
//! buffer x input 784*N+0
//! buffer dense_0.w inout 0*N+100352
//! buffer t3 temp 128*N+0 @ 0*N+0
//! kernel k0 parallel 1*N+0 params 0 1 2
//! kernel k1 serial params 3 4
//! ```
//! Names never contain whitespace (checked when writing).

use std::fmt::Write;

use crate::ir::{BufferDecl, BufferKind, Idx, Program, Size, Stmt};

pub const MAGIC: &str = "nnc-artifact 1";

/// One kernel as the runtime sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelEntry {
    /// The exported symbol.
    pub symbol: String,
    /// Buffer indices, in argument order.
    pub params: Vec<usize>,
    /// The extent of the top-level parallel loop, if the kernel has one.
    pub parallel: Option<Size>,
}

/// Everything the runtime needs to bind and run one compiled program.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    pub program: String,
    pub arena: Size,
    pub buffers: Vec<BufferDecl>,
    pub kernels: Vec<KernelEntry>,
}

/// Why a manifest cannot be written or read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError(pub String);

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ManifestError {}

/// The parallel-loop extent of a kernel as a `Size` (`N`, a constant, or `c·N`).
fn parallel_extent(body: &[Stmt]) -> Result<Option<Size>, ManifestError> {
    for s in body {
        if let Stmt::Loop {
            extent,
            parallel: true,
            ..
        } = s
        {
            return size_of_idx(extent).map(Some).ok_or_else(|| {
                ManifestError(format!(
                    "parallel loop extent `{}` is not of the form a·N + b",
                    crate::print::idx(extent)
                ))
            });
        }
    }
    Ok(None)
}

/// `a·N + b` for index expressions of that form.
pub fn size_of_idx(i: &Idx) -> Option<Size> {
    match i {
        Idx::Const(c) => Some(Size::fixed(usize::try_from(*c).ok()?)),
        Idx::N => Some(Size::per_batch(1)),
        Idx::Mul(a, b) => match (a.as_ref(), b.as_ref()) {
            (Idx::N, Idx::Const(c)) | (Idx::Const(c), Idx::N) => {
                Some(Size::per_batch(usize::try_from(*c).ok()?))
            }
            _ => None,
        },
        Idx::Add(a, b) => {
            let (a, b) = (size_of_idx(a)?, size_of_idx(b)?);
            Some(Size {
                per_batch: a.per_batch + b.per_batch,
                fixed: a.fixed + b.fixed,
            })
        }
        _ => None,
    }
}

impl Manifest {
    /// The manifest of a program whose kernels are exported under their own names.
    pub fn of(program: &Program) -> Result<Manifest, ManifestError> {
        let kernels = program
            .kernels
            .iter()
            .map(|k| {
                Ok(KernelEntry {
                    symbol: k.name.clone(),
                    params: k.params.iter().map(|b| b.0 as usize).collect(),
                    parallel: parallel_extent(&k.body)?,
                })
            })
            .collect::<Result<_, ManifestError>>()?;
        Ok(Manifest {
            program: program.name.clone(),
            arena: program.arena,
            buffers: program.buffers.clone(),
            kernels,
        })
    }

    pub fn to_text(&self) -> Result<String, ManifestError> {
        let word = |s: &str| {
            if s.is_empty() || s.chars().any(char::is_whitespace) {
                Err(ManifestError(format!(
                    "name `{s}` is empty or has whitespace"
                )))
            } else {
                Ok(())
            }
        };
        let size = |s: Size| format!("{}*N+{}", s.per_batch, s.fixed);
        let mut out = format!("{MAGIC}\n");
        word(&self.program)?;
        let _ = writeln!(out, "program {}", self.program);
        let _ = writeln!(out, "arena {}", size(self.arena));
        for b in &self.buffers {
            word(&b.name)?;
            let kind = match b.kind {
                BufferKind::Input => "input".to_string(),
                BufferKind::InOut => "inout".to_string(),
                BufferKind::Output => "output".to_string(),
                BufferKind::Temp { .. } => "temp".to_string(),
            };
            let _ = write!(out, "buffer {} {kind} {}", b.name, size(b.len));
            if let BufferKind::Temp { offset } = b.kind {
                let _ = write!(out, " @ {}", size(offset));
            }
            out.push('\n');
        }
        for k in &self.kernels {
            word(&k.symbol)?;
            match k.parallel {
                Some(e) => {
                    let _ = write!(out, "kernel {} parallel {} params", k.symbol, size(e));
                }
                None => {
                    let _ = write!(out, "kernel {} serial params", k.symbol);
                }
            }
            for p in &k.params {
                let _ = write!(out, " {p}");
            }
            out.push('\n');
        }
        Ok(out)
    }

    /// Parses [`Manifest::to_text`]'s format; every malformed line is an error naming it.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, MAGIC)) => {}
            _ => {
                return Err(ManifestError(format!(
                    "not an nnc artifact (expected `{MAGIC}`)"
                )))
            }
        }
        let mut m = Manifest {
            program: String::new(),
            arena: Size::default(),
            buffers: Vec::new(),
            kernels: Vec::new(),
        };
        for (i, line) in lines {
            let bad = || ManifestError(format!("manifest line {}: cannot read `{line}`", i + 1));
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                [] => {}
                ["program", name] => m.program = name.to_string(),
                ["arena", s] => m.arena = parse_size(s).ok_or_else(bad)?,
                ["buffer", name, kind, len, rest @ ..] => {
                    let len = parse_size(len).ok_or_else(bad)?;
                    let kind = match (*kind, rest) {
                        ("input", []) => BufferKind::Input,
                        ("inout", []) => BufferKind::InOut,
                        ("output", []) => BufferKind::Output,
                        ("temp", ["@", off]) => BufferKind::Temp {
                            offset: parse_size(off).ok_or_else(bad)?,
                        },
                        _ => return Err(bad()),
                    };
                    m.buffers.push(BufferDecl {
                        name: name.to_string(),
                        len,
                        kind,
                    });
                }
                ["kernel", sym, mode, rest @ ..] => {
                    let (parallel, rest) = match (*mode, rest) {
                        ("parallel", [e, rest @ ..]) => {
                            (Some(parse_size(e).ok_or_else(bad)?), rest)
                        }
                        ("serial", rest) => (None, rest),
                        _ => return Err(bad()),
                    };
                    let ["params", params @ ..] = rest else {
                        return Err(bad());
                    };
                    let params = params
                        .iter()
                        .map(|p| p.parse::<usize>().ok().filter(|&p| p < m.buffers.len()))
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(bad)?;
                    m.kernels.push(KernelEntry {
                        symbol: sym.to_string(),
                        params,
                        parallel,
                    });
                }
                _ => return Err(bad()),
            }
        }
        Ok(m)
    }
}

fn parse_size(s: &str) -> Option<Size> {
    let (a, b) = s.split_once("*N+")?;
    Some(Size {
        per_batch: a.parse().ok()?,
        fixed: b.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_through_text() {
        let m = Manifest {
            program: "p".into(),
            arena: Size {
                per_batch: 448,
                fixed: 3,
            },
            buffers: vec![
                BufferDecl {
                    name: "x".into(),
                    len: Size::per_batch(784),
                    kind: BufferKind::Input,
                },
                BufferDecl {
                    name: "t0".into(),
                    len: Size::per_batch(128),
                    kind: BufferKind::Temp {
                        offset: Size::fixed(4),
                    },
                },
            ],
            kernels: vec![
                KernelEntry {
                    symbol: "k0".into(),
                    params: vec![0, 1],
                    parallel: Some(Size::per_batch(1)),
                },
                KernelEntry {
                    symbol: "k1".into(),
                    params: vec![1],
                    parallel: None,
                },
            ],
        };
        let text = m.to_text().unwrap();
        assert_eq!(Manifest::parse(&text).unwrap(), m);
    }

    #[test]
    fn malformed_manifests_are_errors_naming_the_line() {
        assert!(Manifest::parse("garbage").is_err());
        let e = Manifest::parse(&format!("{MAGIC}\nkernel k0 serial params 5\n")).unwrap_err();
        assert!(e.0.contains("line 2"), "{e}");
    }
}
