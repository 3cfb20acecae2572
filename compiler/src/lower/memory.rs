//! Memory planning: every `Temp` buffer gets an offset in one arena. A temporary lives
//! from the first kernel that touches it to the last; at each kernel, the temporaries
//! it first touches are placed (first fit among freed blocks whose size is at least
//! theirs for every batch size, else at the end of the arena), then those it touches for
//! the last time are freed. Sizes and offsets are `per_batch·N + fixed`, so one plan
//! serves every batch size. A block is reused whole (never split), which keeps offsets
//! exact for every `N` at the price of some slack.

use nnc_kernels::ir::{BufferKind, Program, Size};

use super::kernel::collect_bufs;

pub fn plan_arena(p: &mut Program) {
    let nb = p.buffers.len();
    let mut first = vec![usize::MAX; nb];
    let mut last = vec![0usize; nb];
    for (k, kernel) in p.kernels.iter().enumerate() {
        let mut bufs = Vec::new();
        for s in &kernel.body {
            collect_bufs(s, &mut bufs);
        }
        for b in bufs {
            let b = b.0 as usize;
            first[b] = first[b].min(k);
            last[b] = last[b].max(k);
        }
    }
    let mut end = Size::default();
    let mut free: Vec<(Size, Size)> = Vec::new(); // (offset, capacity)
    let mut held: Vec<Option<(Size, Size)>> = vec![None; nb];
    for k in 0..p.kernels.len() {
        for b in 0..nb {
            if first[b] != k || !matches!(p.buffers[b].kind, BufferKind::Temp { .. }) {
                continue;
            }
            let need = p.buffers[b].len;
            let fit = free
                .iter()
                .position(|(_, cap)| cap.per_batch >= need.per_batch && cap.fixed >= need.fixed);
            let block = match fit {
                Some(i) => free.remove(i),
                None => {
                    let at = end;
                    end = Size {
                        per_batch: end.per_batch + need.per_batch,
                        fixed: end.fixed + need.fixed,
                    };
                    (at, need)
                }
            };
            p.buffers[b].kind = BufferKind::Temp { offset: block.0 };
            held[b] = Some(block);
        }
        for b in 0..nb {
            if last[b] == k && first[b] != usize::MAX {
                if let Some(block) = held[b].take() {
                    free.push(block);
                }
            }
        }
    }
    p.arena = end;
}
