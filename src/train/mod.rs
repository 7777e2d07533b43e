//! Training: configuration, participation schedules, AdamW, the training loop and learned
//! curves between two adapters.

pub mod config;
pub mod curve;
pub mod divergence;
pub mod grid;
pub mod optim;
pub mod schedule;
pub mod trainer;

pub use config::{AdaptedEncoders, TrainConfig};
pub use grid::train_grid;
pub use schedule::{Method, Rescale, Schedule};
pub use trainer::{train_adapter, train_adapter_snapshots, StepRecord, TrainOutput};
