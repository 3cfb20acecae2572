//! The cuda executor's data kernels, written directly in PTX: they index one array by
//! values loaded from another (the epoch's shuffled row order), which kernel IR cannot
//! express (its indices are affine in loop variables). Loaded once per executor, next to
//! the step programs. The compiler's PTX tests assemble this text with `ptxas` for
//! `sm_80` and `sm_90` (`.target sm_80` PTX is JIT-compiled for newer GPUs).
//!
//! Every kernel reads the step number `cursor[0]` from device memory instead of taking it
//! as a launch parameter, so a step's launches are the same from step to step and can be
//! captured once as a CUDA graph:
//! - `nnc_gather_rows(src, order, cursor, dst, row_len, rows, batch)`: for each element
//!   `e < rows·row_len`, `dst[e] = src[order[cursor·batch + e / row_len]·row_len +
//!   e % row_len]` (`order` holds `u32` row numbers);
//! - `nnc_record_step(loss, output, cursor, losses, outputs, out_len, batch_out)`:
//!   `losses[cursor] = loss[0]` and `outputs[cursor·batch_out + e] = output[e]` for
//!   `e < out_len`;
//! - `nnc_advance(cursor)`: `cursor[0] += 1` (one thread), launched after the others.
//!
//! Launch with [`DATA_THREADS`] threads per block and [`data_blocks`] blocks.

/// Threads per block of the data kernels.
pub const DATA_THREADS: u32 = 256;

/// The kernels' entry names, in the order [`DATA_PTX`] defines them.
pub const DATA_KERNELS: [&str; 3] = ["nnc_gather_rows", "nnc_record_step", "nnc_advance"];

/// The PTX text of the data kernels.
pub const DATA_PTX: &str = r#".version 7.0
.target sm_80
.address_size 64

.visible .entry nnc_gather_rows(
	.param .u64 p_src,
	.param .u64 p_order,
	.param .u64 p_cursor,
	.param .u64 p_dst,
	.param .u64 p_row_len,
	.param .u64 p_rows,
	.param .u64 p_batch
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<5>;
	.reg .b64 	%rd<20>;
	.reg .f32 	%f<2>;
	ld.param.u64 	%rd1, [p_src];
	ld.param.u64 	%rd2, [p_order];
	ld.param.u64 	%rd3, [p_cursor];
	ld.param.u64 	%rd4, [p_dst];
	ld.param.u64 	%rd5, [p_row_len];
	ld.param.u64 	%rd6, [p_rows];
	ld.param.u64 	%rd7, [p_batch];
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mul.wide.u32 	%rd8, %r1, %r2;
	cvt.u64.u32 	%rd9, %r3;
	add.s64 	%rd8, %rd8, %rd9;
	mul.lo.s64 	%rd10, %rd5, %rd6;
	setp.ge.u64 	%p1, %rd8, %rd10;
	@%p1 bra 	$GATHER_DONE;
	cvta.to.global.u64 	%rd3, %rd3;
	ld.global.u64 	%rd11, [%rd3];
	mul.lo.s64 	%rd11, %rd11, %rd7;
	div.u64 	%rd12, %rd8, %rd5;
	mul.lo.s64 	%rd13, %rd12, %rd5;
	sub.s64 	%rd13, %rd8, %rd13;
	add.s64 	%rd14, %rd11, %rd12;
	shl.b64 	%rd14, %rd14, 2;
	cvta.to.global.u64 	%rd2, %rd2;
	add.s64 	%rd14, %rd2, %rd14;
	ld.global.u32 	%r4, [%rd14];
	cvt.u64.u32 	%rd15, %r4;
	mul.lo.s64 	%rd15, %rd15, %rd5;
	add.s64 	%rd15, %rd15, %rd13;
	shl.b64 	%rd15, %rd15, 2;
	cvta.to.global.u64 	%rd1, %rd1;
	add.s64 	%rd15, %rd1, %rd15;
	ld.global.f32 	%f1, [%rd15];
	shl.b64 	%rd16, %rd8, 2;
	cvta.to.global.u64 	%rd4, %rd4;
	add.s64 	%rd16, %rd4, %rd16;
	st.global.f32 	[%rd16], %f1;
$GATHER_DONE:
	ret;
}

.visible .entry nnc_record_step(
	.param .u64 p_loss,
	.param .u64 p_output,
	.param .u64 p_cursor,
	.param .u64 p_losses,
	.param .u64 p_outputs,
	.param .u64 p_out_len,
	.param .u64 p_batch_out
)
{
	.reg .pred 	%p<3>;
	.reg .b32 	%r<4>;
	.reg .b64 	%rd<20>;
	.reg .f32 	%f<3>;
	ld.param.u64 	%rd1, [p_loss];
	ld.param.u64 	%rd2, [p_output];
	ld.param.u64 	%rd3, [p_cursor];
	ld.param.u64 	%rd4, [p_losses];
	ld.param.u64 	%rd5, [p_outputs];
	ld.param.u64 	%rd6, [p_out_len];
	ld.param.u64 	%rd7, [p_batch_out];
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %ntid.x;
	mov.u32 	%r3, %tid.x;
	mul.wide.u32 	%rd8, %r1, %r2;
	cvt.u64.u32 	%rd9, %r3;
	add.s64 	%rd8, %rd8, %rd9;
	cvta.to.global.u64 	%rd3, %rd3;
	ld.global.u64 	%rd10, [%rd3];
	setp.ne.s64 	%p1, %rd8, 0;
	@%p1 bra 	$RECORD_OUTPUT;
	cvta.to.global.u64 	%rd1, %rd1;
	ld.global.f32 	%f1, [%rd1];
	shl.b64 	%rd11, %rd10, 2;
	cvta.to.global.u64 	%rd4, %rd4;
	add.s64 	%rd11, %rd4, %rd11;
	st.global.f32 	[%rd11], %f1;
$RECORD_OUTPUT:
	setp.ge.u64 	%p2, %rd8, %rd6;
	@%p2 bra 	$RECORD_DONE;
	shl.b64 	%rd12, %rd8, 2;
	cvta.to.global.u64 	%rd2, %rd2;
	add.s64 	%rd12, %rd2, %rd12;
	ld.global.f32 	%f2, [%rd12];
	mul.lo.s64 	%rd13, %rd10, %rd7;
	add.s64 	%rd13, %rd13, %rd8;
	shl.b64 	%rd13, %rd13, 2;
	cvta.to.global.u64 	%rd5, %rd5;
	add.s64 	%rd13, %rd5, %rd13;
	st.global.f32 	[%rd13], %f2;
$RECORD_DONE:
	ret;
}

.visible .entry nnc_advance(
	.param .u64 p_cursor
)
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<4>;
	.reg .b64 	%rd<4>;
	mov.u32 	%r1, %ctaid.x;
	mov.u32 	%r2, %tid.x;
	or.b32 	%r3, %r1, %r2;
	setp.ne.s32 	%p1, %r3, 0;
	@%p1 bra 	$ADVANCE_DONE;
	ld.param.u64 	%rd1, [p_cursor];
	cvta.to.global.u64 	%rd1, %rd1;
	ld.global.u64 	%rd2, [%rd1];
	add.s64 	%rd2, %rd2, 1;
	st.global.u64 	[%rd1], %rd2;
$ADVANCE_DONE:
	ret;
}
"#;

/// Blocks of [`DATA_THREADS`] covering `elements` (at least one); `None` past CUDA's
/// grid limit (the kernels do not loop, so every element needs its own thread).
pub fn data_blocks(elements: usize) -> Option<u32> {
    let blocks = elements.div_ceil(DATA_THREADS as usize).max(1);
    (blocks as i64 <= nnc_kernels::gpu::MAX_GRID[0]).then_some(blocks as u32)
}
