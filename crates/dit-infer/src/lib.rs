//! Sampling from a trained text-to-video DiT.
//!
//! - [`sampler`]: DDPM and DDIM reverse processes, respacing, classifier-free guidance;
//! - [`pipeline`]: prompt → tokens → denoised latent → decoded frames;
//! - [`eval`]: prompt fidelity over all Moving Shapes compositions, judged from pixels.

pub mod allocator;
pub mod eval;
pub mod pipeline;
pub mod sampler;
