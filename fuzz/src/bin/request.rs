//! Fuzz target `request`: `camlime::fuzzing::request` on every input AFL makes.

fn main() {
    afl::fuzz!(|data: &[u8]| camlime::fuzzing::request(data));
}
