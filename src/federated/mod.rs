//! Federated-learning utilities.

pub mod split;
