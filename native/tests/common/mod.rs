//! Shared helpers of the binary's end-to-end tests: the repository and the `camlime` executable.

#![allow(dead_code, clippy::unwrap_used)]

pub mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A path inside the repository.
pub fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// Run the `camlime` binary from the repository root.
pub fn camlime(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_camlime"))
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap()
}
