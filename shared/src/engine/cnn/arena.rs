//! The activation arena of one image: every tensor gets an offset, planned from the tensors'
//! lifetimes so that tensors alive at the same op never overlap (greedy, largest first, first
//! gap that fits). Requested outputs stay alive to the end.

use super::kernels;
use super::lower::{Op, TensorId, TensorInfo};

/// Offsets are multiples of this many floats (64 bytes: a cache line, a full AVX-512 vector).
const ALIGN: usize = 16;

/// A tensor's life in op positions (the plan's input is made at 0, op `i` runs at `i + 1`) and
/// its size in floats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Life {
    pub first: usize,
    pub last: usize,
    pub len: usize,
}

/// Set every used tensor's offset; returns the arena's and the image-to-rows scratch's lengths.
pub(super) fn plan(
    tensors: &mut [TensorInfo],
    ops: &[Op],
    input: TensorId,
    outputs: &[TensorId],
) -> (usize, usize) {
    let mut lives: Vec<Option<Life>> = vec![None; tensors.len()];
    let mut touch = |tensor: TensorId, at: usize| {
        let len = tensors[tensor].dims.len();
        let life = lives[tensor].get_or_insert(Life {
            first: at,
            last: at,
            len,
        });
        life.first = life.first.min(at);
        life.last = life.last.max(at);
    };
    touch(input, 0);
    for (index, op) in ops.iter().enumerate() {
        for tensor in op.inputs() {
            touch(tensor, index + 1);
        }
        touch(op.output(), index + 1);
    }
    for &output in outputs {
        touch(output, ops.len() + 1);
    }
    let used: Vec<(TensorId, Life)> = lives
        .iter()
        .enumerate()
        .filter_map(|(id, life)| life.map(|l| (id, l)))
        .collect();
    let lifes: Vec<Life> = used.iter().map(|&(_, life)| life).collect();
    let (offsets, arena_len) = assign(&lifes);
    for ((id, _), offset) in used.iter().zip(offsets) {
        tensors[*id].offset = offset;
    }
    let scratch_len = ops
        .iter()
        .map(|op| match op {
            Op::Conv(conv) => kernels::conv_scratch(conv, tensors),
            Op::Expanded { expand, depthwise } => {
                kernels::expanded_scratch(expand, depthwise, tensors)
            }
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    (arena_len, scratch_len)
}

/// Offsets for `lives` such that two tensors alive at a common position never overlap; returns
/// them with the total length.
pub(super) fn assign(lives: &[Life]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..lives.len()).collect();
    order.sort_by(|&a, &b| lives[b].len.cmp(&lives[a].len).then(a.cmp(&b)));
    let mut offsets = vec![0; lives.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut total = 0;
    for index in order {
        let life = lives[index];
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&other| lives[other].first <= life.last && life.first <= lives[other].last)
            .map(|&other| (offsets[other], offsets[other] + lives[other].len))
            .collect();
        busy.sort_unstable();
        let mut offset = 0;
        for (start, end) in busy {
            if offset + life.len <= start {
                break;
            }
            offset = offset.max(end.next_multiple_of(ALIGN));
        }
        offsets[index] = offset;
        total = total.max(offset + life.len);
        placed.push(index);
    }
    (offsets, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random lifetimes and sizes from a fixed splitmix64 stream: no two tensors alive at the
    /// same position overlap, every offset is aligned, and the arena is no larger than the sum.
    #[test]
    fn live_tensors_never_overlap() {
        let mut state = 0x1234_5678_9ABC_DEF0u64;
        let mut next = move |bound: usize| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % bound as u64) as usize
        };
        for _ in 0..200 {
            let count = 1 + next(60);
            let lives: Vec<Life> = (0..count)
                .map(|_| {
                    let first = next(40);
                    Life {
                        first,
                        last: first + next(10),
                        len: 1 + next(5000),
                    }
                })
                .collect();
            let (offsets, total) = assign(&lives);
            let sum: usize = lives.iter().map(|l| l.len.next_multiple_of(ALIGN)).sum();
            assert!(total <= sum);
            for (i, a) in lives.iter().enumerate() {
                assert_eq!(offsets[i] % ALIGN, 0);
                assert!(offsets[i] + a.len <= total);
                for (j, b) in lives.iter().enumerate().skip(i + 1) {
                    let together = a.first <= b.last && b.first <= a.last;
                    let apart =
                        offsets[i] + a.len <= offsets[j] || offsets[j] + b.len <= offsets[i];
                    assert!(
                        !together || apart,
                        "{a:?} at {} and {b:?} at {}",
                        offsets[i],
                        offsets[j]
                    );
                }
            }
        }
    }

    /// Tensors that never live together share memory.
    #[test]
    fn dead_tensors_are_reused() {
        let lives = [
            Life {
                first: 0,
                last: 1,
                len: 100,
            },
            Life {
                first: 1,
                last: 2,
                len: 100,
            },
            Life {
                first: 2,
                last: 3,
                len: 100,
            },
        ];
        let (offsets, total) = assign(&lives);
        assert_eq!(offsets[0], offsets[2]);
        assert_ne!(offsets[0], offsets[1]);
        assert_eq!(total, 112 + 100);
    }
}
