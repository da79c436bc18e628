//! Fuzz target `image`: `camlime::fuzzing::image` on every input AFL makes.

fn main() {
    afl::fuzz!(|data: &[u8]| camlime::fuzzing::image(data));
}
