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

/// `camlime` with `args`, which must succeed: its standard output.
pub fn success(args: &[&str]) -> String {
    let output = camlime(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Each command fails with one line on standard error that contains its message.
pub fn fails_with_one_line<'a, A: AsRef<[&'a str]>>(cases: &[(A, &str)]) {
    for (args, message) in cases {
        let args = args.as_ref();
        let output = camlime(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
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
