//! Compiled steps are checked against the graph interpreter: every example and every
//! `tests/golden/ir` program, train step and eval step, on random inputs, through the
//! same pipeline functions a build uses (target-independent kernels, the CPU schedule
//! and the GPU schedule).
//!
//! Tolerance: `|kernel − oracle| ≤ 1e-4·|oracle| + 1e-4`. The oracle accumulates sums
//! and products in f64; kernels accumulate in f32 in a different order (and the
//! simplifier re-associates multi-axis sums), so agreement is to a few f32 ulps per
//! accumulated term, not bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::ir::graph::Graph;
use crate::ir::{interp, verify::verify, Tensor};
use crate::lower::tests::tie_free_inputs;
use crate::pipeline::{compile_step, cpu_program, gpu_program, step_graphs, StepKind};

use nnc_kernels::ir::{BufId, Idx, Program, Size, Stmt};
use nnc_kernels::print::{print_kernel, print_program};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let z = crate::ir::ops::source::mix64(self.0);
        (z >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every example and every golden program (op families and small models).
pub(super) fn files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["examples", "tests/golden/ir", "tests/golden/models"] {
        let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
            .expect("folder exists")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "nn"))
            .collect();
        v.sort();
        out.extend(v);
    }
    out
}

/// Random inputs for a step graph: labels are valid class indices for cross-entropy
/// (`y` of shape `[N]`), optimizer state and buffers are non-negative (some are
/// variances), `step` is a small count.
fn random_inputs(
    g: &Graph,
    batch: usize,
    classes: usize,
    rng: &mut Rng,
) -> HashMap<String, Tensor> {
    let mut m = HashMap::new();
    for (name, id) in g.inputs() {
        let shape = g.shape(id).resolve(batch);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n)
            .map(|_| {
                let u = rng.next();
                if name == "y" && shape.len() == 1 {
                    (u * classes as f32).floor()
                } else if name == "step" {
                    3.0
                } else if name == "x" || name == "y" || g.output_id(&name).is_none() {
                    u * 2.0 - 1.0
                } else if name.matches('.').count() >= 2 || name.contains("running") {
                    u + 0.1
                } else {
                    u - 0.5
                }
            })
            .collect();
        m.insert(name, Tensor::new(shape, data).expect("sized"));
    }
    m
}

fn check_graph(label: &str, g: &Graph, batch: usize, classes: usize) -> Result<usize, String> {
    check_scheduled(label, g, batch, classes, None)
}

/// [`check_graph`] with the CPU schedule's row split applied for a batch-size hint.
fn check_scheduled(
    label: &str,
    g: &Graph,
    batch: usize,
    classes: usize,
    split_hint: Option<usize>,
) -> Result<usize, String> {
    let step = compile_step(g, batch, None).map_err(|e| format!("{label}: {e}"))?;
    verify(&step.graph).map_err(|e| format!("{label}: {e}"))?;
    let scheduled;
    let p = match split_hint {
        Some(hint) => {
            scheduled =
                cpu_program(&step, hint, StepKind::Train).map_err(|e| format!("{label}: {e}"))?;
            &scheduled
        }
        None => step.program(),
    };
    let mut rng = Rng(0x5eed ^ label.len() as u64);
    let inputs = random_inputs(g, batch, classes, &mut rng);
    let want = interp::run(g, &inputs, batch).map_err(|e| format!("{label}: oracle: {e}"))?;
    let mut bufs: Vec<Vec<f32>> = p
        .buffers
        .iter()
        .map(|b| match inputs.get(&b.name) {
            Some(t) => t.data.clone(),
            None => vec![f32::NAN; b.len.resolve(batch)],
        })
        .collect();
    // Temporaries live in one arena: simulate it so that overlapping offsets are caught.
    let arena_len = p.arena.resolve(batch);
    let mut arena = vec![f32::NAN; arena_len];
    let temps: Vec<(usize, usize, usize)> = p
        .buffers
        .iter()
        .enumerate()
        .filter_map(|(i, b)| match b.kind {
            nnc_kernels::ir::BufferKind::Temp { offset } => {
                Some((i, offset.resolve(batch), b.len.resolve(batch)))
            }
            _ => None,
        })
        .collect();
    for (ki, k) in p.kernels.iter().enumerate() {
        for &(i, off, len) in &temps {
            bufs[i].copy_from_slice(&arena[off..off + len]);
        }
        nnc_kernels::interp::run_kernel(k, &mut bufs, batch)
            .map_err(|e| format!("{label}: kernel {ki}: {e}"))?;
        for &(i, off, len) in &temps {
            if k.params.contains(&nnc_kernels::ir::BufId(i as u32)) {
                arena[off..off + len].copy_from_slice(&bufs[i]);
            }
        }
    }
    for (name, t) in &want {
        let b = p
            .buffers
            .iter()
            .position(|b| &b.name == name)
            .ok_or_else(|| format!("{label}: no buffer for output `{name}`"))?;
        for (i, (&got, &w)) in bufs[b].iter().zip(&t.data).enumerate() {
            let ok = (got - w).abs() <= 1e-4 * w.abs() + 1e-4 || (got.is_nan() && w.is_nan());
            if !ok {
                return Err(format!("{label}: output `{name}`[{i}] = {got}, oracle {w}"));
            }
        }
    }
    Ok(p.kernels.len())
}

/// The target-independent kernel program of a step graph.
fn lowered(g: &Graph, batch: usize) -> Program {
    compile_step(g, batch, None)
        .expect("compiles")
        .lowered
        .program
}

/// The CPU program of a step graph, scheduled for batch size `batch`.
fn cpu_scheduled(g: &Graph, batch: usize) -> Program {
    let step = compile_step(g, batch, None).expect("compiles");
    cpu_program(&step, batch, StepKind::Train).expect("valid after the split")
}

fn steps_of(path: &Path) -> Vec<(String, Graph, usize, usize)> {
    let src = std::fs::read_to_string(path).expect("readable");
    let base = path.parent().expect("folder");
    let program = crate::check_source(&src, base).expect("example checks");
    let stem = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let mut out = Vec::new();
    for train in &program.trains {
        let model = &program.models[train.model];
        let sg = step_graphs(model, train).expect("step graphs build");
        let classes = model
            .nodes
            .get(model.output.0 as usize)
            .and_then(|n| n.shape.dims.last().copied())
            .unwrap_or(1);
        out.push((format!("{stem} train"), sg.train, 5, classes));
        out.push((format!("{stem} eval"), sg.eval, 5, classes));
    }
    out
}

#[test]
fn every_compiled_step_matches_the_interpreter() {
    let mut failures = Vec::new();
    for path in files() {
        for (label, g, batch, classes) in steps_of(&path) {
            if let Err(e) = check_graph(&label, &g, batch, classes) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every example with every eligible matrix product split into two row halves (the hint
/// makes them all eligible; batch 5 splits rows 3 + 2, fixed dimensions unevenly too).
#[test]
fn split_steps_match_the_interpreter() {
    let mut failures = Vec::new();
    let mut split = 0;
    for path in files() {
        for (label, g, batch, classes) in steps_of(&path) {
            // A huge batch hint splits products by rows, a tiny one by columns.
            for hint in [1 << 20, 8] {
                match check_scheduled(&label, &g, batch, classes, Some(hint)) {
                    Ok(_) => split += 1,
                    Err(e) => failures.push(format!("hint {hint}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(split > 0);
}

/// The split applies to the big products of the MNIST MLP and leaves one kernel per
/// product, with a two-part parallel loop.
#[test]
fn mnist_products_are_split_in_two() {
    let path = repo().join("examples/mnist_mlp.nn");
    let (_, g, _, _) = steps_of(&path).remove(0);
    let before = lowered(&g, 128).kernels.len();
    let program = cpu_scheduled(&g, 128);
    assert_eq!(program.kernels.len(), before);
    let k0 = &program.kernels[0];
    assert!(
        matches!(
            &k0.body[..],
            [nnc_kernels::ir::Stmt::Loop {
                parallel: true,
                extent: nnc_kernels::ir::Idx::Const(2),
                ..
            }]
        ),
        "{}",
        print_program(&program)
    );
}

/// Adam's bias corrections (two `exp`s) in the bias updates, which live in parallel loops
/// that hoisting cannot leave, are computed once per part after the split, not per element.
#[test]
fn adam_bias_corrections_run_once_per_part() {
    use nnc_kernels::ir::{Expr, Stmt, UnOp};
    fn has_exp(e: &Expr) -> bool {
        match e {
            Expr::Unary(UnOp::Exp, _) => true,
            Expr::Unary(_, a) => has_exp(a),
            Expr::Binary(_, a, b) => has_exp(a) || has_exp(b),
            Expr::Fma(a, b, c) => has_exp(a) || has_exp(b) || has_exp(c),
            Expr::Select {
                a,
                b,
                then,
                otherwise,
                ..
            } => has_exp(a) || has_exp(b) || has_exp(then) || has_exp(otherwise),
            _ => false,
        }
    }
    fn exp_in_loops(s: &Stmt) -> bool {
        match s {
            Stmt::Loop { body, .. } => body.iter().any(|s| match s {
                Stmt::Assign { value, .. } | Stmt::Store { value, .. } => has_exp(value),
                s => exp_in_loops(s),
            }),
            _ => false,
        }
    }
    let path = repo().join("examples/fashion_mlp.nn");
    let (_, g, _, _) = steps_of(&path).remove(0);
    let biases: Vec<String> = lowered(&g, 128)
        .kernels
        .iter()
        .filter(|k| k.name.contains("reduce_sum") && k.body.iter().any(exp_in_loops))
        .map(|k| format!("{}{}", StepKind::Train.symbol_prefix(), k.name))
        .collect();
    assert_eq!(biases.len(), 3, "three bias updates, exp per element");
    let program = cpu_scheduled(&g, 128);
    let text = print_program(&program);
    for k in program.kernels.iter().filter(|k| biases.contains(&k.name)) {
        let [Stmt::Loop { body, .. }] = &k.body[..] else {
            panic!("{text}");
        };
        // Inside the two-part loop: the corrections, then the loop over the part.
        assert!(
            !body.iter().any(exp_in_loops),
            "exp left inside a loop of {}:\n{text}",
            k.name
        );
    }
}

/// At a small batch the forward products (few rows, many columns) are split by columns:
/// each part multiplies all rows by its half of the weight's columns.
#[test]
fn small_batch_products_are_split_by_columns() {
    let path = repo().join("examples/mnist_mlp.nn");
    let (_, g, _, _) = steps_of(&path).remove(0);
    let program = cpu_scheduled(&g, 32);
    let text = print_program(&program);
    let [Stmt::Loop { body, .. }] = &program.kernels[0].body[..] else {
        panic!("k0 is not split:\n{text}");
    };
    let Some(Stmt::Gemm(part)) = body.first() else {
        panic!("no product first in k0's parts:\n{text}");
    };
    assert_eq!(part.m, Idx::N, "all rows in each part:\n{text}");
    assert!(matches!(part.n, Idx::Min(..)), "half the columns:\n{text}");
}

/// The MNIST MLP train step: 3 forward `Gemm` + bias/ReLU epilogue kernels (the last one
/// without epilogue, its bias add joins the row kernel); softmax / log-softmax /
/// cross-entropy forward and backward as 1 row kernel and 1 batch reduction (the loss);
/// 2 backward `Gemm` kernels with the ReLU-gradient epilogue; 3 weight-gradient `Gemm`
/// kernels and 3 bias-gradient reductions, each with its parameter's whole momentum-SGD
/// update as epilogue; `step + 1`. Transposes feeding products are strides (no kernel).
#[test]
fn mnist_mlp_train_step_has_at_most_14_kernels() {
    let path = repo().join("examples/mnist_mlp.nn");
    let (label, g, batch, classes) = steps_of(&path).remove(0);
    let kernels = check_graph(&label, &g, batch, classes).expect("lowers and agrees");
    assert!(kernels <= 14, "{kernels} kernels");
}

/// Buffers a statement stores to.
fn stores(s: &Stmt, out: &mut Vec<BufId>) {
    s.visit(&mut |s| match s {
        Stmt::Store { buf, .. } => out.push(*buf),
        Stmt::Gemm(g) => out.push(g.c.buf),
        _ => {}
    });
}

/// The softmax + cross-entropy of the MNIST steps is one row kernel, parallel over the
/// batch: per row, the max, the exp-sum, the softmax output, the per-row loss term and
/// (train step) the gradient row, which the backward products read; `exp` is evaluated
/// once per element. Only the loss's batch mean is a kernel of its own.
#[test]
fn mnist_softmax_cross_entropy_is_one_row_kernel() {
    let path = repo().join("examples/mnist_mlp.nn");
    for (label, g, _, _) in steps_of(&path) {
        let p = &lowered(&g, 64);
        let listing = print_program(p);
        let with_exp: Vec<usize> = (0..p.kernels.len())
            .filter(|&i| print_kernel(&p.kernels[i]).contains("exp("))
            .collect();
        let [row] = with_exp[..] else {
            panic!("{label}: softmax in kernels {with_exp:?}\n{listing}");
        };
        let k = &p.kernels[row];
        let [Stmt::Loop {
            parallel: true,
            extent: Idx::N,
            body,
            ..
        }] = &k.body[..]
        else {
            panic!(
                "{label}: {} is not one parallel loop over rows\n{listing}",
                k.name
            );
        };
        // max, Σ exp, then the loss term with the stores of the full rows.
        let passes = body
            .iter()
            .filter(|s| matches!(s, Stmt::Loop { .. }))
            .count();
        assert_eq!(passes, 3, "{label}\n{listing}");
        let text = print_kernel(k);
        assert!(
            text.contains("max(") && text.contains("log("),
            "{label}\n{text}"
        );
        // exp(x − max) once per element: pass 2 keeps it in a scratch row for pass 3.
        assert_eq!(text.matches("exp(").count(), 1, "{label}\n{text}");
        let mut written = Vec::new();
        k.body.iter().for_each(|s| stores(s, &mut written));
        written.sort();
        written.dedup();
        let len = |b: &BufId| p.buffers[b.0 as usize].len;
        let name = |b: &BufId| p.buffers[b.0 as usize].name.as_str();
        assert!(
            written.iter().any(|b| name(b) == "output"),
            "{label}\n{text}"
        );
        let loss_rows: Vec<&BufId> = written
            .iter()
            .filter(|b| len(b) == Size::per_batch(1))
            .collect();
        assert_eq!(loss_rows.len(), 1, "{label}\n{text}");
        // The loss: one more kernel, reading the per-row terms.
        let loss = p
            .kernels
            .iter()
            .position(|k| k.params.iter().any(|b| name(b) == "loss"))
            .expect("a loss kernel");
        assert!(loss > row && p.kernels[loss].params.contains(loss_rows[0]));
        let grads: Vec<&BufId> = written
            .iter()
            .filter(|b| {
                name(b) != "output" && !name(b).ends_with(".row") && len(b) == Size::per_batch(10)
            })
            .collect();
        if label.ends_with("train") {
            assert_eq!(grads.len(), 1, "{label}\n{text}");
            let read_by_gemm = p.kernels[row + 1..].iter().any(|k| {
                k.body.iter().any(|s| {
                    let (mut l, mut st, mut gemm) = (Vec::new(), Vec::new(), false);
                    crate::lower::kernel::accesses(s, *grads[0], &mut l, &mut st, &mut gemm);
                    gemm
                })
            });
            assert!(
                read_by_gemm,
                "{label}: the gradient rows feed no product\n{listing}"
            );
        } else {
            assert!(grads.is_empty(), "{label}\n{text}");
        }
    }
}

/// The GPU schedule (`lower::gpu`: tiled products, block reductions, elementwise grids)
/// computes what the kernel interpreter computes on the programs lowering produces for
/// every example and `tests/golden/ir` program: the simulator runs every GPU kernel on
/// its real grid, block by block, with shared memory, barriers and shuffles (and fails on
/// uninitialised shared reads and missing barriers). Products accumulate in f32 with
/// fused multiply-adds (the interpreter in f64) and reductions add in a tree, so values
/// agree to rounding (0.1 %, through up to a dozen layers of sums).
#[test]
fn gpu_schedule_of_every_compiled_step_matches_the_kernel_interpreter() {
    let mut failures = Vec::new();
    let mut kernels = 0;
    for path in files() {
        for (label, g, batch, _) in steps_of(&path) {
            let step = compile_step(&g, batch, None).expect("compiles");
            let p = step.program();
            let gpu = match gpu_program(&step) {
                Ok(gpu) => gpu,
                Err(e) => {
                    failures.push(format!("{label}: {e}"));
                    continue;
                }
            };
            kernels += gpu.kernels.len();
            let mut want = tie_free_inputs(p, batch);
            nnc_kernels::interp::run(p, &mut want, batch).expect("interprets");
            let mut got = tie_free_inputs(p, batch);
            if let Err(e) = nnc_kernels::gpu::simulate_program(&gpu, &mut got, batch) {
                failures.push(format!("{label}: {e}"));
                continue;
            }
            for (b, (w, g)) in want.iter().zip(&got).enumerate() {
                let bad = w.iter().zip(g).position(|(x, y)| {
                    let close = (x - y).abs() <= 1e-5 + 1e-3 * x.abs();
                    !(close || x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
                });
                if let Some(i) = bad {
                    let name = &p.buffers[b].name;
                    failures.push(format!(
                        "{label}: `{name}`[{i}] is {} on the GPU, {} in the interpreter",
                        g[i], w[i]
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(kernels > 100, "{kernels} kernels");
}
