//! Sampling from a trained text-to-video DiT.
//!
//! - [`pipeline`]: prompt → tokens → denoised latent → decoded frames (the samplers and the
//!   forward process they walk back are `dit_model::sampler` and `dit_model::process`);
//! - [`eval`]: prompt fidelity over all Moving Shapes compositions, judged from pixels;
//! - [`fashion_eval`]: prompt fidelity over all Moving Fashion compositions, judged by the
//!   photograph classifier;
//! - [`trace`]: one prompt through every step of the pipeline, as a page of pictures.

pub mod allocator;
pub mod eval;
pub mod fashion_eval;
pub mod pipeline;
pub mod trace;

use std::path::{Path, PathBuf};

/// The shipped checkpoint: `checkpoints/tiny` of the working folder when there is one,
/// else that of this repository.
pub fn default_checkpoint() -> PathBuf {
    shipped("checkpoints/tiny")
}

/// The shipped judge of Moving Fashion: `checkpoints/fashion-classifier`, found as
/// [`default_checkpoint`] is.
pub fn default_classifier() -> PathBuf {
    shipped(fashion_eval::CLASSIFIER_DIR)
}

/// `path` in the working folder when it is there, else in this repository: where the
/// shipped checkpoints and networks (`checkpoints/…`) are found from any folder.
pub fn shipped(path: &str) -> PathBuf {
    let local = PathBuf::from(path);
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path)
    }
}
