//! Sampling from a trained text-to-video DiT.
//!
//! - [`sampler`]: DDPM, DDIM and Euler reverse processes, respacing, classifier-free guidance;
//! - [`pipeline`]: prompt → tokens → denoised latent → decoded frames;
//! - [`eval`]: prompt fidelity over all Moving Shapes compositions, judged from pixels;
//! - [`trace`]: one prompt through every step of the pipeline, as a page of pictures.

pub mod allocator;
pub mod eval;
pub mod pipeline;
pub mod sampler;
pub mod trace;

use std::path::{Path, PathBuf};

/// The shipped checkpoint: `checkpoints/tiny` of the working folder when there is one,
/// else that of this repository.
pub fn default_checkpoint() -> PathBuf {
    let local = PathBuf::from("checkpoints/tiny");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checkpoints/tiny")
    }
}
