//! Fuzz target `manifest`: `camlime::fuzzing::manifest` on every input AFL makes.

fn main() {
    afl::fuzz!(|data: &[u8]| camlime::fuzzing::manifest(data));
}
