//! The GPU schedule on hand-built kernel programs (the samples and unusual shapes):
//! the simulator runs every scheduled kernel on its real grid and must agree with the
//! kernel interpreter. Whole compiled steps are checked in `pipeline`'s tests.

use nnc_kernels::ir::{BufId, BufferKind, Idx, Size, Stmt};
use nnc_kernels::print::print_program;

/// Inputs without repeated values (uniform in `[-1, 1)` from a hash of buffer and
/// element): the samples' periodic inputs tie in max-pooling windows, and which of two
/// tied elements wins depends on the last bit of sums taken in different orders.
pub(crate) fn tie_free_inputs(p: &nnc_kernels::ir::Program, n: usize) -> Vec<Vec<f32>> {
    let mut bufs = nnc_kernels::samples::inputs(p, n);
    for (b, (decl, buf)) in p.buffers.iter().zip(&mut bufs).enumerate() {
        if matches!(decl.kind, BufferKind::Input | BufferKind::InOut) {
            for (e, v) in buf.iter_mut().enumerate() {
                *v = 2.0 * nnc_kernels::ir::rand_uniform(7, b as u64, 0, e as u64) - 1.0;
            }
        }
    }
    bufs
}

/// The same on the hand-built samples (products in loops, batched and transposed
/// products, every operator, long and short reductions), at batch sizes that leave
/// partial tiles and blocks.
#[test]
fn gpu_schedule_of_every_sample_matches_the_kernel_interpreter() {
    for p in nnc_kernels::samples::all() {
        let gpu = super::gpu::schedule(&p).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        gpu.validate().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        for n in [1, 5, 70, 300] {
            let mut want = nnc_kernels::samples::inputs(&p, n);
            nnc_kernels::interp::run(&p, &mut want, n).unwrap();
            let mut got = nnc_kernels::samples::inputs(&p, n);
            nnc_kernels::gpu::simulate_program(&gpu, &mut got, n)
                .unwrap_or_else(|e| panic!("{} n={n}: {e}", p.name));
            for (b, (w, g)) in want.iter().zip(&got).enumerate() {
                for (i, (x, y)) in w.iter().zip(g).enumerate() {
                    let close = (x - y).abs() <= 1e-5 + 1e-5 * x.abs();
                    assert!(
                        close || x.to_bits() == y.to_bits(),
                        "{} n={n} b{b}[{i}]: {y} vs {x}",
                        p.name
                    );
                }
            }
        }
    }
}

/// Schedules `p` for the GPU and checks the simulation against the interpreter at the
/// batch sizes `ns` (within rounding).
fn check_gpu_schedule(p: &nnc_kernels::ir::Program, ns: &[usize]) {
    let gpu = super::gpu::schedule(p).unwrap_or_else(|e| panic!("{}: {e}", p.name));
    gpu.validate().unwrap_or_else(|e| panic!("{}: {e}", p.name));
    for &n in ns {
        let mut want = tie_free_inputs(p, n);
        nnc_kernels::interp::run(p, &mut want, n).unwrap();
        let mut got = tie_free_inputs(p, n);
        nnc_kernels::gpu::simulate_program(&gpu, &mut got, n)
            .unwrap_or_else(|e| panic!("{} n={n}: {e}\n{}", p.name, print_program(&gpu)));
        for (b, (w, g)) in want.iter().zip(&got).enumerate() {
            for (i, (x, y)) in w.iter().zip(g).enumerate() {
                let close = (x - y).abs() <= 1e-5 + 1e-4 * x.abs();
                assert!(
                    close,
                    "{} n={n} b{b}[{i}]: {y} on the GPU, {x} in the interpreter",
                    p.name
                );
            }
        }
    }
}

fn mat(buf: BufId, offset: Idx, rs: i64, cs: i64) -> nnc_kernels::ir::MatRef {
    nnc_kernels::ir::MatRef {
        buf,
        offset,
        row_stride: Idx::Const(rs),
        col_stride: Idx::Const(cs),
    }
}

/// Kernel shapes the examples do not produce, which the schedule must still map
/// correctly (or refuse): stores to one buffer at two indices in a loop, an epilogue
/// carrying a local from element to element, products summed into one `C` (batched and
/// in a loop), two products in one kernel, a product inside a parallel loop, and a
/// parallel loop with no iterations at small batches.
#[test]
fn gpu_schedule_maps_unusual_kernels_correctly() {
    use nnc_kernels::build::*;
    use nnc_kernels::ir::{BinOp, Gemm, LocalId, VarId};
    let (i, j, v) = (VarId(0), VarId(1), VarId(2));
    let (x, y, o) = (BufId(0), BufId(1), BufId(2));
    let decls = |ox: usize, oy: usize, oo: usize| {
        vec![
            decl("x", Size::per_batch(ox), BufferKind::Input),
            decl("y", Size::per_batch(oy), BufferKind::Input),
            decl(
                "o",
                Size {
                    per_batch: oo,
                    fixed: 1,
                },
                BufferKind::Output,
            ),
        ]
    };
    // o[i] = x[i]; o[i + 1] = y[i]: neighbouring iterations write the same element.
    let body = vec![for_(
        i,
        Idx::N * 4,
        false,
        vec![
            store(o, Idx::Var(i), load(x, Idx::Var(i))),
            store(o, Idx::Var(i) + 1, load(y, Idx::Var(i))),
        ],
    )];
    let p = program(
        "two_stores",
        decls(4, 4, 4),
        vec![kernel("k0", vec![x, y, o], body, 3, 0)],
    );
    check_gpu_schedule(&p, &[1, 40, 100]);

    // C = A·B, then D[e] = C[e] + t; t = C[e]: the epilogue carries t along a row.
    let gemm = |batch, beta, c_off| Gemm {
        m: Idx::N,
        n: Idx::Const(24),
        k: Idx::Const(8),
        a: mat(x, Idx::Const(0), 8, 1),
        b: mat(y, Idx::Const(0), 24, 1),
        c: mat(o, c_off, 24, 1),
        alpha: 1.0,
        beta,
        batch,
        windows: None,
    };
    let t = LocalId(0);
    let at = Idx::Var(i) * 24 + Idx::Var(j);
    let carry = vec![
        Stmt::Gemm(gemm(None, 0.0, Idx::Const(0))),
        for_(
            i,
            Idx::N,
            false,
            vec![for_(
                j,
                24usize,
                false,
                vec![
                    store(
                        BufId(3),
                        at.clone(),
                        binary(BinOp::Add, load(o, at.clone()), local(t)),
                    ),
                    assign(t, load(o, at)),
                ],
            )],
        ),
    ];
    let mut ds = decls(40, 0, 24);
    ds[1] = decl("y", Size::fixed(8 * 24), BufferKind::Input);
    ds[2] = decl(
        "o",
        Size {
            per_batch: 24,
            fixed: 120,
        },
        BufferKind::Output,
    );
    ds.push(decl("d", Size::per_batch(24), BufferKind::Output));
    let p = program(
        "carry",
        ds.clone(),
        vec![kernel("k0", vec![x, y, o, BufId(3)], carry, 3, 1)],
    );
    check_gpu_schedule(&p, &[1, 33, 70]);

    // Σ_p A_p·B_p into one C (batch strides 0 for C, beta 1), and the same as a loop.
    let mut sum = gemm(None, 1.0, Idx::Const(0));
    sum.m = Idx::Const(5);
    sum.batch = Some((Idx::N, [Idx::Const(40), Idx::Const(0), Idx::Const(0)]));
    let p = program(
        "sum_batched",
        ds.clone(),
        vec![kernel(
            "k0",
            vec![x, y, o],
            vec![Stmt::Gemm(sum.clone())],
            3,
            0,
        )],
    );
    check_gpu_schedule(&p, &[1, 6]);
    let mut in_loop = sum.clone();
    in_loop.batch = None;
    in_loop.a.offset = Idx::Var(v) * 40;
    let body = vec![for_(v, 3usize, false, vec![Stmt::Gemm(in_loop.clone())])];
    let p = program(
        "sum_looped",
        ds.clone(),
        vec![kernel("k0", vec![x, y, o], body, 3, 0)],
    );
    check_gpu_schedule(&p, &[3, 6]);

    // Two products in one kernel; a product inside a parallel loop.
    let two = vec![
        Stmt::Gemm(in_loop.map_indices(&|i| i.map_vars(&|_| Idx::Const(1)))),
        Stmt::Gemm(sum.clone()),
    ];
    let p = program(
        "two_products",
        ds.clone(),
        vec![kernel("k0", vec![x, y, o], two, 3, 0)],
    );
    check_gpu_schedule(&p, &[3]);
    let mut per_row = in_loop.clone();
    per_row.c.offset = Idx::Var(v) * 120;
    let body = vec![for_(v, 3usize, true, vec![Stmt::Gemm(per_row)])];
    let mut ds_rows = ds.clone();
    ds_rows[2] = decl("o", Size::fixed(3 * 120), BufferKind::Output);
    let p = program(
        "parallel_products",
        ds_rows,
        vec![kernel("k0", vec![x, y, o], body, 3, 0)],
    );
    check_gpu_schedule(&p, &[3]);

    // A parallel loop over N - 300: no iterations at small batches.
    let body = vec![for_(
        i,
        Idx::N - Idx::Const(300),
        true,
        vec![store(o, Idx::Var(i), load(x, Idx::Var(i)))],
    )];
    let p = program(
        "empty",
        decls(4, 4, 4),
        vec![kernel("k0", vec![x, y, o], body, 3, 0)],
    );
    check_gpu_schedule(&p, &[1, 301]);
}

/// The geometry of one convolution-shaped windows view (see `nnc_kernels::ir::Windows`).
#[derive(Clone, Copy)]
struct Geometry {
    image: [i64; 3],
    grid: [i64; 2],
    taps: [i64; 2],
    step: [i64; 2],
    tap: [i64; 2],
    pad: [i64; 2],
    div: [i64; 2],
}

impl Geometry {
    /// A convolution's forward geometry: `stride`, `dilation`, front padding `pad`.
    fn conv(
        image: [i64; 3],
        grid: [i64; 2],
        taps: [i64; 2],
        stride: [i64; 2],
        dilation: [i64; 2],
        pad: [i64; 2],
    ) -> Geometry {
        Geometry {
            image,
            grid,
            taps,
            step: stride,
            tap: dilation,
            pad,
            div: [1, 1],
        }
    }

    fn view(self, first: Idx, transposed: bool) -> nnc_kernels::ir::Windows {
        nnc_kernels::ir::Windows {
            image: self.image,
            grid: self.grid,
            taps: self.taps,
            step: self.step,
            tap: self.tap,
            pad: self.pad,
            div: self.div,
            first,
            transposed,
        }
    }

    fn image_len(self) -> usize {
        (self.image[0] * self.image[1] * self.image[2]) as usize
    }

    fn windows(self) -> i64 {
        self.grid[0] * self.grid[1]
    }

    fn cols(self) -> i64 {
        self.taps[0] * self.taps[1] * self.image[2]
    }
}

/// Products over windows views, as convolutions use them, with sizes that fill no tile
/// exactly: forward passes (5×5 pad 2 on 28×28×1; 3×3 stride 2 with padding only on the
/// columns, c = 3; dilation 2 with a column stride, alpha 0.5 and beta 1), a forward pass
/// per sample in a loop (`first` moving with the loop folded into the grid), weight
/// gradients (the transposed view over the whole batch; from window 5 on with alpha 2 and
/// beta 1; summed sample by sample in a loop, which a block runs in order) and input
/// gradients of stride-2 convolutions (step 1, tap −1, pad −p, div 2; 3×3 pad 1 and 4×4
/// pad 1).
pub(crate) fn windows_programs() -> Vec<nnc_kernels::ir::Program> {
    use nnc_kernels::build::*;
    use nnc_kernels::ir::{Gemm, Program, VarId};
    let (img, other, out) = (BufId(0), BufId(1), BufId(2));
    let lenet = Geometry::conv([28, 28, 1], [28, 28], [5, 5], [1, 1], [1, 1], [2, 2]);
    let strided = Geometry::conv([10, 9, 3], [5, 5], [3, 3], [2, 2], [1, 1], [0, 1]);
    let dilated = Geometry::conv([12, 11, 2], [12, 6], [3, 3], [1, 2], [2, 2], [2, 2]);
    // The input gradients of 3×3 stride 2 pad 1 on 9×9×4 → 5×5×6 and of 4×4 stride 2
    // pad 1 on 8×8×2 → 4×4×3: views of the output gradient, one window per input pixel.
    let transposed = |image, grid, taps, pad: i64| Geometry {
        image,
        grid,
        taps,
        step: [1, 1],
        tap: [-1, -1],
        pad: [-pad, -pad],
        div: [2, 2],
    };
    let grad_3x3 = transposed([5, 5, 6], [9, 9], [3, 3], 1);
    let grad_4x4 = transposed([4, 4, 3], [8, 8], [4, 4], 1);
    let kind = |beta: f32| {
        if beta == 0.0 {
            BufferKind::Output
        } else {
            BufferKind::InOut
        }
    };
    // `out[rows, n] = alpha·windows(img)·other[cols, n] + beta·out` over the whole batch,
    // rows starting at window `first`.
    let forward = |name: &str, geo: Geometry, n: i64, first: i64, alpha: f32, beta: f32| {
        let g = Gemm {
            m: Idx::N * geo.windows() - Idx::Const(first),
            n: Idx::Const(n),
            k: Idx::Const(geo.cols()),
            a: mat(img, Idx::Const(0), 0, 0),
            b: mat(other, Idx::Const(0), n, 1),
            c: mat(out, Idx::Const(0), n, 1),
            alpha,
            beta,
            batch: None,
            windows: Some(geo.view(Idx::Const(first), false)),
        };
        let decls = vec![
            decl("img", Size::per_batch(geo.image_len()), BufferKind::Input),
            decl(
                "w",
                Size::fixed((geo.cols() * n) as usize),
                BufferKind::Input,
            ),
            decl(
                "out",
                Size::per_batch((geo.windows() * n) as usize),
                kind(beta),
            ),
        ];
        program(
            name,
            decls,
            vec![kernel(
                "k0",
                vec![img, other, out],
                vec![Stmt::Gemm(g)],
                0,
                0,
            )],
        )
    };
    // `out[taps, n] = alpha·windows(img)ᵀ·other[windows, n] + beta·out`, the reduction
    // over the batch's windows from `first` on.
    let weight_grad = |name: &str, geo: Geometry, n: i64, first: i64, alpha: f32, beta: f32| {
        let g = Gemm {
            m: Idx::Const(geo.cols()),
            n: Idx::Const(n),
            k: Idx::N * geo.windows() - Idx::Const(first),
            a: mat(img, Idx::Const(0), 0, 0),
            b: mat(other, Idx::Const(first * n), n, 1),
            c: mat(out, Idx::Const(0), n, 1),
            alpha,
            beta,
            batch: None,
            windows: Some(geo.view(Idx::Const(first), true)),
        };
        let decls = vec![
            decl("img", Size::per_batch(geo.image_len()), BufferKind::Input),
            decl(
                "dy",
                Size::per_batch((geo.windows() * n) as usize),
                BufferKind::Input,
            ),
            decl("dw", Size::fixed((geo.cols() * n) as usize), kind(beta)),
        ];
        program(
            name,
            decls,
            vec![kernel(
                "k0",
                vec![img, other, out],
                vec![Stmt::Gemm(g)],
                0,
                0,
            )],
        )
    };
    let v = VarId(0);
    let per_sample = |p: Program, transposed: bool| {
        let mut p = p;
        p.name = format!("{}_per_sample", p.name);
        let Stmt::Gemm(g) = &p.kernels[0].body[0] else {
            unreachable!()
        };
        let mut g = g.clone();
        let w = g.windows.as_mut().unwrap();
        let windows = w.grid[0] * w.grid[1];
        w.first = Idx::Var(v) * windows;
        let n = match g.n {
            Idx::Const(n) => n,
            _ => unreachable!(),
        };
        if transposed {
            g.k = Idx::Const(windows);
            g.b.offset = Idx::Var(v) * (windows * n);
        } else {
            g.m = Idx::Const(windows);
            g.c.offset = Idx::Var(v) * (windows * n);
        }
        p.kernels[0].body = vec![for_(v, Idx::N, false, vec![Stmt::Gemm(g)])];
        p.kernels[0].num_vars = 1;
        p
    };
    vec![
        forward("conv_5x5_pad2", lenet, 6, 0, 1.0, 0.0),
        forward("conv_3x3_stride2", strided, 7, 0, 1.0, 0.0),
        forward("conv_dilated_alpha_beta", dilated, 5, 0, 0.5, 1.0),
        per_sample(forward("conv_3x3_stride2", strided, 7, 0, 1.0, 0.0), false),
        weight_grad("conv_weight_grad", strided, 7, 0, 1.0, 0.0),
        weight_grad("conv_weight_grad_from_5", dilated, 5, 5, 2.0, 1.0),
        per_sample(weight_grad("conv_weight_grad", lenet, 6, 0, 1.0, 1.0), true),
        forward("conv_input_grad_3x3", grad_3x3, 4, 0, 1.0, 0.0),
        forward("conv_input_grad_4x4", grad_4x4, 2, 0, 1.0, 0.0),
    ]
}

/// Products over windows views (implicit GEMMs: `windows_programs`) load their `A`
/// tiles from the image through the window geometry: the simulated schedule agrees with
/// the interpreter at batch sizes that leave partial tiles.
#[test]
fn gpu_schedule_of_windows_products_matches_the_kernel_interpreter() {
    for p in windows_programs() {
        check_gpu_schedule(&p, &[1, 3, 17]);
    }
}
