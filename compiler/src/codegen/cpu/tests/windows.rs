//! Matrix products over windows (implicit GEMMs, the convolutions' form) compiled and
//! compared with the interpreter: forward convolutions (LeNet's 5×5 with padding, a
//! strided one with asymmetric padding, a dilated one), a weight gradient (the transposed
//! view, windows as the reduction) and input gradients (the transposed convolution:
//! negative taps, negative padding, `div` = stride), with alpha and beta ≠ (1, 0), a
//! `first` window ≠ 0, and `first` computed from a parallel loop's variable (the form the
//! CPU schedule's row split gives).
//!
//! The compiled kernel calls the runtime's `sgemm_windows` (f32 sums in blocks); the
//! interpreter sums in f64: relative 1e-4 of the largest magnitude.

use nnc_kernels::build::*;
use nnc_kernels::ir::BufferKind::{InOut, Input, Output};
use nnc_kernels::ir::*;
use nnc_kernels::samples::gemm_program;

use super::{assert_relative, both, random};

/// One product over windows: sizes, the view, B's and C's (row, column) strides.
struct Case {
    name: &'static str,
    m: Idx,
    n: i64,
    k: Idx,
    w: Windows,
    b: (i64, i64),
    c: (i64, i64),
    alpha: f32,
    beta: f32,
    /// Buffer lengths: image, B, C.
    lens: [Size; 3],
}

impl Case {
    fn program(&self) -> Program {
        let (a, b, c) = (BufId(0), BufId(1), BufId(2));
        let g = Gemm {
            alpha: self.alpha,
            beta: self.beta,
            windows: Some(self.w.clone()),
            ..matmul(
                self.m.clone(),
                self.n,
                self.k.clone(),
                matrix(a, 0i64, 0i64, 0i64),
                matrix(b, 0i64, self.b.0, self.b.1),
                matrix(c, 0i64, self.c.0, self.c.1),
            )
        };
        let kind = if self.beta == 0.0 { Output } else { InOut };
        gemm_program(self.name, self.lens, kind, g)
    }

    /// Compiles the case, runs it and the interpreter at batch `n`; they must agree.
    fn check(&self, n: usize) {
        let p = self.program();
        p.validate()
            .unwrap_or_else(|e| panic!("{}: {e}", self.name));
        let bufs: Vec<Vec<f32>> = self
            .lens
            .iter()
            .enumerate()
            .map(|(i, len)| random(len.resolve(n), 11 + i as u64, -1.0, 1.0))
            .collect();
        let (want, got) = both(&p, bufs, n);
        assert_relative(&want, &got, 1e-4);
        assert!(
            got[2].iter().all(|v| v.is_finite()),
            "{}: every element of C written",
            self.name
        );
    }
}

#[test]
fn forward_convolutions_match_interpreter() {
    let n = Idx::N;
    // LeNet's conv1: 28×28×1, 5×5 pad 2, 6 filters; C = [N, 28, 28, 6].
    Case {
        name: "conv1",
        m: n.clone() * 784,
        n: 6,
        k: 25i64.into(),
        w: Windows::new(
            [28, 28, 1],
            [28, 28],
            [5, 5],
            [1, 1],
            [1, 1],
            [2, 2],
            [1, 1],
        ),
        b: (6, 1),
        c: (6, 1),
        alpha: 1.0,
        beta: 0.0,
        lens: [
            Size::per_batch(784),
            Size::fixed(150),
            Size::per_batch(784 * 6),
        ],
    }
    .check(3);
    // 3×3 stride 2 on 9×8×3, padding 1 above and none below, none left and 1 right
    // (4×4 windows); from window 7 of two samples on, B stored transposed ([5, 27]).
    Case {
        name: "strided",
        m: 25i64.into(),
        n: 5,
        k: 27i64.into(),
        w: Windows {
            first: Idx::Const(7),
            ..Windows::new([9, 8, 3], [4, 4], [3, 3], [2, 2], [1, 1], [1, 0], [1, 1])
        },
        b: (1, 27),
        c: (5, 1),
        alpha: 1.0,
        beta: 0.0,
        lens: [Size::fixed(2 * 216), Size::fixed(135), Size::fixed(125)],
    }
    .check(1);
    // Dilation 2, 3×3, pad 2 on 10×10×2: C = 0.5·A·B + 2·C.
    Case {
        name: "dilated",
        m: n * 100,
        n: 4,
        k: 18i64.into(),
        w: Windows::new(
            [10, 10, 2],
            [10, 10],
            [3, 3],
            [1, 1],
            [2, 2],
            [2, 2],
            [1, 1],
        ),
        b: (4, 1),
        c: (4, 1),
        alpha: 0.5,
        beta: 2.0,
        lens: [Size::per_batch(200), Size::fixed(72), Size::per_batch(400)],
    }
    .check(2);
}

#[test]
fn weight_gradient_matches_interpreter() {
    // dW += 0.5·im2col(x)ᵀ·dY for a 3×3 pad-1 conv of 12×12×3 with 5 filters: A is
    // 27 taps × N·144 windows, dY is [N·144, 5], dW stored [5, 27] (C transposed).
    Case {
        name: "wgrad",
        m: 27i64.into(),
        n: 5,
        k: Idx::N * 144,
        w: Windows {
            transposed: true,
            ..Windows::new(
                [12, 12, 3],
                [12, 12],
                [3, 3],
                [1, 1],
                [1, 1],
                [1, 1],
                [1, 1],
            )
        },
        b: (5, 1),
        c: (1, 27),
        alpha: 0.5,
        beta: 1.0,
        lens: [Size::per_batch(432), Size::per_batch(720), Size::fixed(135)],
    }
    .check(3);
    // LeNet's conv2 (14×14×6, 5×5 valid, 16 filters): 150 × N·100.
    Case {
        name: "wgrad2",
        m: 150i64.into(),
        n: 16,
        k: Idx::N * 100,
        w: Windows {
            transposed: true,
            ..Windows::new(
                [14, 14, 6],
                [10, 10],
                [5, 5],
                [1, 1],
                [1, 1],
                [0, 0],
                [1, 1],
            )
        },
        b: (16, 1),
        c: (16, 1),
        alpha: 1.0,
        beta: 0.0,
        lens: [
            Size::per_batch(1176),
            Size::per_batch(1600),
            Size::fixed(2400),
        ],
    }
    .check(2);
}

#[test]
fn input_gradients_match_interpreter() {
    // A 3×3 stride-2 pad-1 conv of 11×9×3 into 6×5×4: dX = windows(dY)·B with step 1,
    // tap −1, pad −1, div 2 (each dX pixel reads the dY pixels whose windows cover it).
    Case {
        name: "dgrad_strided",
        m: Idx::N * 99,
        n: 3,
        k: 36i64.into(),
        w: Windows::new(
            [6, 5, 4],
            [11, 9],
            [3, 3],
            [1, 1],
            [-1, -1],
            [-1, -1],
            [2, 2],
        ),
        b: (3, 1),
        c: (3, 1),
        alpha: 1.0,
        beta: 0.0,
        lens: [Size::per_batch(120), Size::fixed(108), Size::per_batch(297)],
    }
    .check(2);
    // LeNet's conv2 (5×5 valid, 16 filters into 6 channels): dY 10×10×16 into 14×14.
    Case {
        name: "dgrad_valid",
        m: Idx::N * 196,
        n: 6,
        k: 400i64.into(),
        w: Windows::new(
            [10, 10, 16],
            [14, 14],
            [5, 5],
            [1, 1],
            [-1, -1],
            [0, 0],
            [1, 1],
        ),
        b: (6, 1),
        c: (6, 1),
        alpha: 1.0,
        beta: 0.0,
        lens: [
            Size::per_batch(1600),
            Size::fixed(2400),
            Size::per_batch(1176),
        ],
    }
    .check(2);
    // Dilation 2, stride 1, pad 2, accumulated: C = −A·B + C.
    Case {
        name: "dgrad_dilated",
        m: Idx::N * 64,
        n: 2,
        k: 27i64.into(),
        w: Windows::new(
            [8, 8, 3],
            [8, 8],
            [3, 3],
            [1, 1],
            [-2, -2],
            [-2, -2],
            [1, 1],
        ),
        b: (2, 1),
        c: (2, 1),
        alpha: -1.0,
        beta: 1.0,
        lens: [Size::per_batch(192), Size::fixed(54), Size::per_batch(128)],
    }
    .check(2);
}

/// The CPU schedule's row split of a product over windows: two parts of a parallel loop,
/// each from its own first window (`first = lo(p)`), into its own rows of C.
#[test]
fn windows_from_a_loop_variable_match_interpreter() {
    let (a, b, c, p) = (BufId(0), BufId(1), BufId(2), VarId(0));
    let half = (Idx::N * 64 + 1).div(2);
    let lo = Idx::Min(Box::new(Idx::Var(p) * half.clone()), Box::new(Idx::N * 64));
    let rows = Idx::Min(Box::new(half), Box::new(Idx::N * 64 - lo.clone()));
    let g = Gemm {
        windows: Some(Windows {
            first: lo.clone(),
            ..Windows::new([8, 8, 2], [8, 8], [3, 3], [1, 1], [1, 1], [1, 1], [1, 1])
        }),
        ..matmul(
            rows,
            3i64,
            18i64,
            matrix(a, 0i64, 0i64, 0i64),
            matrix(b, 0i64, 3i64, 1i64),
            matrix(c, lo * 3, 3i64, 1i64),
        )
    };
    let prog = program(
        "split",
        vec![
            decl("x", Size::per_batch(128), Input),
            decl("w", Size::fixed(54), Input),
            decl("y", Size::per_batch(192), Output),
        ],
        vec![kernel(
            "split",
            vec![a, b, c],
            vec![for_(p, 2i64, true, vec![Stmt::Gemm(g)])],
            1,
            0,
        )],
    );
    prog.validate().expect("valid");
    let n = 3;
    let bufs = vec![
        random(128 * n, 1, -1.0, 1.0),
        random(54, 2, -1.0, 1.0),
        vec![f32::NAN; 192 * n],
    ];
    let (want, got) = both(&prog, bufs, n);
    assert_relative(&want, &got, 1e-4);
    assert!(got[2].iter().all(|v| v.is_finite()));
}
