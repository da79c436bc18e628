//! Fuzz target `record`: `camlime::fuzzing::record` on every input AFL makes.

fn main() {
    afl::fuzz!(|data: &[u8]| camlime::fuzzing::record(data));
}
