//! Mode connectivity between adapters: interpolation paths in factor or delta space, distances,
//! and barrier heights of evaluated curves.

pub mod barrier;
pub mod interpolate;
