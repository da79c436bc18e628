//! The `camlime` binary's end-to-end tests as one test binary (each links tract): the command
//! line, detection, evaluations, explanations, the thread split and the server on loopback.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

mod auth;
mod cli;
mod detect;
mod eval;
mod explain;
mod faces;
mod fuzz_corpus;
mod parallel;
mod segment;
mod serve;
