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

/// A scratch folder, removed when dropped.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty scratch folder named after the test process and `name`. The tests of this
/// binary run in one process, in parallel: a name used twice would let one test delete the
/// other's files, so it panics.
pub fn scratch(name: &str) -> Scratch {
    static NAMES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap();
    assert!(
        !names.iter().any(|n| n == name),
        "two tests use the scratch folder `{name}`"
    );
    names.push(name.to_owned());
    drop(names);
    let dir = std::env::temp_dir().join(format!("camlime-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}
