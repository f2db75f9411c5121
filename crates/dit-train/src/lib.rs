//! Training of the text-to-video DiT: the visual autoencoder, then the DiT on the
//! frozen autoencoder's cached latents, and decoder fine-tunings, as the stages of
//! one recipe.
//!
//! - [`recipe`]: runs the config's stages in order into a run folder, resumably;
//! - [`lock`]: one writer per run folder;
//! - [`config`]: the experiment config (`configs/*.toml`);
//! - [`data`]: Moving Shapes or a folder of captioned clips;
//! - [`autoencoder`]: stage 1 and decoder fine-tuning, PSNR and the latent scale factor;
//! - [`denoised`]: the DiT's own denoised latents, for a decoder stage;
//! - [`lr_schedule`]: warm-up and cosine decay of the learning rate;
//! - [`latent_cache`]: stage 2's training latents, encoded once;
//! - [`loss`]: one step's random draws, its batch and the diffusion loss;
//! - [`data_parallel`]: a step's batch shared between replicas on several devices;
//! - [`checkpoint`]: saving and restoring stage 2's training state;
//! - [`ema`]: the exponential moving average of the weights;
//! - [`memory`]: the memory a run needs, estimated from its config;
//! - [`preview`]: sample sheets during training;
//! - [`trainer`]: the stage-2 loop;
//! - [`progress`]: progress bar, loss CSV and loss plot;
//! - [`fidelity`]: prompt fidelity against training time (`fidelity.csv`, `fidelity.png`);
//! - [`classifier`]: the photograph classifier that judges Moving Fashion clips.

pub mod autoencoder;
pub mod checkpoint;
pub mod classifier;
pub mod config;
pub mod data;
pub mod data_parallel;
pub mod denoised;
pub mod ema;
pub mod fidelity;
pub mod latent_cache;
pub mod lock;
pub mod loss;
pub mod lr_schedule;
pub mod memory;
pub mod perceptual;
pub mod preview;
pub mod progress;
pub mod recipe;
pub mod trainer;
