//! How copra-lab spreads work over CPU cores: coarse-grained, never inside a small op.
//!
//! On the built-in backbone a training step is thousands of small ops; a GEMM there is
//! below a million multiply-adds, and splitting one over threads costs more in
//! synchronisation than it saves (measured: one thread trains faster than two). copra-lab
//! therefore parallelises over independent work (runs of a grid, evaluation batches,
//! subtrees of the coalition walk) and lets only large GEMMs (the real backbones') use
//! several threads. Neither choice changes a result: a GEMM's sum over its inner
//! dimension runs in the same order on any number of threads, element-wise maps are
//! per element, and parallel work items are combined in a fixed order.

/// GEMMs with fewer than this many multiply-adds (`m·n·k`) run on one thread.
pub const GEMM_THREADING_MIN_FLOPS: usize = 1 << 24;

/// Sets the process-wide threading policy; the binary calls it first thing, before any
/// tensor op:
/// - the `gemm` crate (candle's CPU matmul) threads only GEMMs of at least
///   [`GEMM_THREADING_MIN_FLOPS`];
/// - candle's element-wise maps run on the calling thread (`CANDLE_NUM_THREADS=1`, unless
///   the environment sets it): candle splits maps of 64 Ki elements and more over a pool of
///   spinning workers, which on two cores fight the rayon threads that run copra-lab's own
///   parallel work (measured: plain coalition evaluation 1.9× faster without them).
pub fn use_coarse_parallelism() {
    gemm_common::gemm::set_threading_threshold(GEMM_THREADING_MIN_FLOPS);
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// copra-lab's own element-wise kernels (the fused layer norm, GELU) split arrays of at least
/// this many elements over threads; smaller ones run on the calling thread, as candle's maps do.
pub const ELEMENTWISE_THREADING_MIN: usize = 1 << 20;

/// The chunk length a parallel pass over `len` elements uses: `piece` for arrays of at least
/// [`ELEMENTWISE_THREADING_MIN`] elements, else the whole array (one chunk, the calling thread).
/// `piece` must be a multiple of whatever unit the pass works on (a row).
pub fn elementwise_chunk(len: usize, piece: usize) -> usize {
    if len >= ELEMENTWISE_THREADING_MIN {
        piece.max(1)
    } else {
        len.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_arrays_are_one_chunk_and_large_ones_split() {
        assert_eq!(elementwise_chunk(1000, 64), 1000);
        assert_eq!(elementwise_chunk(0, 64), 1);
        assert_eq!(elementwise_chunk(ELEMENTWISE_THREADING_MIN, 64), 64);
    }
}
