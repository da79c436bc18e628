//! The `camlime` command line and its building blocks.
//!
//! `main.rs` only parses arguments and maps errors to exit codes; this library turns arguments into
//! ready objects (a loaded [`models::LoadedModel`], decoded images) and runs the commands, so that
//! benchmarks and tests use exactly what the binary uses.
//!
//! **Boundary:** all file system access of the project happens here (and in the server and web
//! crates), never in `camlime-core`.

pub mod bench;
pub mod commands;
pub mod cuda;
pub mod eval;
pub mod explain;
pub mod flags;
pub mod fuzzing;
pub mod models;
pub mod parallel;
pub mod serve;
