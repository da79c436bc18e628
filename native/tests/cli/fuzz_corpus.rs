//! Every fuzz target (`camlime::fuzzing`) on its committed seeds (`fuzz/corpus/<target>/`) and on
//! each input that once made it fail (`fuzz/regressions/<target>/`): none may panic, so a fixed
//! crash stays fixed without running the fuzzer.

use crate::common::repo;

#[test]
fn every_fuzz_target_takes_its_seeds_and_past_failures() {
    for (name, target) in camlime::fuzzing::TARGETS {
        let mut seeds = 0;
        for folder in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(repo("fuzz").join(folder).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name} fails on {}", path.display());
                seeds += 1;
            }
        }
        assert!(seeds >= 2, "{name} has {seeds} seeds");
    }
}

/// The ONNX files that made tract panic are refused before tract reads them, each with an error
/// saying what is malformed (the page's worker, in WebAssembly, could not survive the panic).
#[test]
fn onnx_files_tract_panicked_on_are_refused_as_malformed() {
    let folder = repo("fuzz").join("regressions").join("onnx_model");
    let mut files = 0;
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let spec = camlime_core::ModelSpec::user_model("fuzz");
        let error = camlime_core::Classifier::new(&data, spec)
            .err()
            .unwrap_or_else(|| panic!("{} loaded", path.display()));
        assert!(
            error.to_string().contains("malformed ONNX graph"),
            "{}: {error}",
            path.display()
        );
        files += 1;
    }
    assert!(files >= 14, "{files} regressions");
}
