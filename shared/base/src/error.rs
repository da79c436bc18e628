//! The core's one error type: every fallible operation on user input returns it.

/// What went wrong, split by kind so callers can map it (exit codes, HTTP status).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes are not an image in a supported format, or they are corrupt.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// The image declares more pixels than the configured limit (decompression bombs).
    #[error("image is {width}×{height} = {pixels} pixels, over the limit of {limit} pixels")]
    ImageTooLarge {
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// width × height.
        pixels: u64,
        /// The limit in force.
        limit: u64,
    },
    /// The bytes are not an ONNX model tract can load, or the model does not fit the role.
    #[error("invalid model: {0}")]
    Model(String),
    /// A layer name that the model does not have.
    #[error("unknown layer `{name}`; available layers: {available}")]
    UnknownLayer {
        /// The name asked for.
        name: String,
        /// The names the model offers, comma-separated.
        available: String,
    },
    /// An engine that does not cover this graph (an op it lacks, a shape it cannot run).
    #[error("unsupported by the engine: {0}")]
    Unsupported(String),
    /// A parameter outside its valid range.
    #[error("invalid parameter: {0}")]
    Parameter(String),
    /// The model failed while running.
    #[error("inference failed: {0}")]
    Inference(String),
    /// The caller cancelled the work.
    #[error("cancelled")]
    Cancelled,
    /// A manifest that does not parse or does not describe its models consistently.
    #[error("invalid manifest: {0}")]
    Manifest(String),
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
