//! Tests of the graph IR (and `models`, the typed-model builder the step tests share).

mod graph_tests;
pub(crate) mod models;
