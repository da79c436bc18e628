//! Fuzz target `evaluation`: `camlime::fuzzing::evaluation` on every input AFL makes.

fn main() {
    afl::fuzz!(|data: &[u8]| camlime::fuzzing::evaluation(data));
}
