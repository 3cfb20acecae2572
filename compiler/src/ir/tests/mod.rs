//! Tests of the graph IR, autodiff, optimizers and the training step.

mod gradcheck;
mod graph_tests;
mod models;
mod train_tests;
