//! How copra-lab spreads work over CPU cores: coarse-grained, never inside a small op.
//!
//! On the built-in backbone a training step is thousands of small ops; a GEMM there is
//! below a million multiply-adds, and splitting one over threads costs more in
//! synchronisation than it saves (measured: one thread trains faster than two). copra-lab
//! therefore parallelises over independent work (runs of a grid, evaluation batches,
//! subtrees of the coalition walk) and lets only large GEMMs (the real backbones') use
//! several threads. Neither choice changes a result: a GEMM's sum over its inner
//! dimension runs in the same order on any number of threads, and parallel work items
//! are combined in a fixed order.

/// GEMMs with fewer than this many multiply-adds (`m·n·k`) run on one thread.
pub const GEMM_THREADING_MIN_FLOPS: usize = 1 << 24;

/// Sets the GEMM threading threshold of the `gemm` crate (candle's CPU matmul) to
/// [`GEMM_THREADING_MIN_FLOPS`]. Process-wide; the binary calls it at start-up.
pub fn use_coarse_parallelism() {
    gemm_common::gemm::set_threading_threshold(GEMM_THREADING_MIN_FLOPS);
}
