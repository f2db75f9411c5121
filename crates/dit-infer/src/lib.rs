//! Sampling from a trained text-to-video DiT.
//!
//! - [`sampler`]: DDPM and DDIM reverse processes, respacing, classifier-free guidance;
//! - [`run`]: the run folder that `dit-train` writes and this crate loads;
//! - [`pipeline`]: prompt → tokens → denoised latent → decoded frames;
//! - [`output`]: GIF, PNG frames and contact sheets;
//! - [`eval`]: prompt fidelity over all Moving Shapes compositions, judged from pixels.

pub mod eval;
pub mod output;
pub mod pipeline;
pub mod run;
pub mod sampler;
