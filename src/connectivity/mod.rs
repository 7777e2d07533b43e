//! Mode connectivity between adapters: interpolation paths in factor or delta space, gauge
//! alignment of factors before interpolating (`gauge`), distances,
//! and barrier heights of evaluated curves.

pub mod barrier;
pub mod gauge;
pub mod interpolate;
