//! Tests of the step graphs: gradients against finite differences for every op, layer
//! and loss, and the training step's contract, optimizers and convergence.

mod gradcheck;
mod graph_text;
mod shaping;
mod train_tests;
