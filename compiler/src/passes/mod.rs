//! Graph-to-graph passes and the fusion partition, run by a straight-line driver.
//!
//! [`run_passes`] applies the graph passes in a fixed order ([`PASSES`]), verifying the
//! graph after each one when asked (tests always ask), and keeps a copy of the graph
//! after the pass named by `--dump-after`. Fusion ([`fuse::partition`]) does not rewrite
//! the graph: it groups nodes into kernels, and `lower/` turns each group into one kernel.

pub mod dce;
pub mod fuse;
pub mod simplify;

use crate::ir::{verify::verify, Graph, IrResult};

/// The graph passes in the order they run; each name works with `--dump-after`.
pub const PASSES: [&str; 2] = ["simplify", "dce"];

/// Every name `--dump-after` accepts (the graph passes, then `fuse`).
pub const DUMPABLE: [&str; 3] = ["simplify", "dce", "fuse"];

/// What the driver does besides running the passes.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    /// Run the verifier after every pass (and fail on the first broken invariant).
    pub verify: bool,
    /// Keep a snapshot of the graph after this pass.
    pub dump_after: Option<String>,
}

/// Runs every graph pass; returns the final graph and the requested snapshots.
pub fn run_passes(graph: &Graph, opts: &PassOptions) -> IrResult<(Graph, Vec<(String, Graph)>)> {
    let mut g = graph.clone();
    let mut dumps = Vec::new();
    for name in PASSES {
        g = match name {
            "simplify" => simplify::simplify(&g)?,
            _ => dce::dce(&g),
        };
        if opts.verify {
            verify(&g).map_err(|e| {
                crate::ir::IrError::new(format!("after pass `{name}`: {}", e.message))
            })?;
        }
        if opts.dump_after.as_deref() == Some(name) {
            dumps.push((name.to_string(), g.clone()));
        }
    }
    Ok((g, dumps))
}
