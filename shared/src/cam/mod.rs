//! The CAM family on a classifier: the methods (in `methods`) over the model-free types of
//! [`camlime_base::cam`] — which CAM, its parameters, [`CamMap`] and its post-processing —
//! re-exported here so callers see one `cam` module.

mod methods;
mod stability;

pub use camlime_base::cam::*;
pub use methods::{attribute, compute, compute_tensor};
