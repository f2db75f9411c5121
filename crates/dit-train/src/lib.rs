//! Training of the text-to-video DiT: stage 1 trains the visual autoencoder,
//! stage 2 trains the DiT on the frozen autoencoder's cached latents.
//!
//! - [`config`]: the experiment config (`configs/*.toml`);
//! - [`data`]: Moving Shapes or a folder of captioned clips;
//! - [`autoencoder`]: stage 1, PSNR and the latent scale factor;
//! - [`trainer`]: stage 2, with EMA, checkpoints and exact resumption;
//! - [`ema`]: the exponential moving average of the weights;
//! - [`progress`]: progress bar, loss CSV and loss plot.

pub mod autoencoder;
pub mod config;
pub mod data;
pub mod ema;
pub mod progress;
pub mod trainer;
