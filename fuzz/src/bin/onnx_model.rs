//! Fuzz target `onnx_model`: `camlime::fuzzing::onnx_model` on every input AFL makes.

fn main() {
    afl::fuzz!(|data: &[u8]| camlime::fuzzing::onnx_model(data));
}
