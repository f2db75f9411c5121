//! Burn modules of a text-to-video Diffusion Transformer (Peebles & Xie 2023).
//!
//! | pipeline step | module |
//! |---|---|
//! | pixels ↔ latent (frozen after stage 1) | [`autoencoder`] |
//! | latent video → spacetime patches → tokens | [`patch`] |
//! | fixed 3D sin-cos positions | [`pos_embed`] |
//! | diffusion step t → embedding | [`timestep`] |
//! | prompt → word features + pooled vector | [`tokenizer`], [`text`] |
//! | adaLN-Zero transformer block | [`block`], [`attention`], [`layers`] |
//! | adaLN + Linear to patch values | [`final_layer`] |
//! | the whole network | [`dit`] |
//! | forward noising process | [`schedule`] |
//! | configs, validation, published sizes | [`config`] |
//! | PyTorch-named safetensors import/export | [`weights`] |
//! | choosing a backend | [`backend`] |
//! | seeded host-side Gaussian noise | [`noise`] |

pub mod attention;
pub mod autoencoder;
pub mod backend;
pub mod block;
pub mod config;
pub mod dit;
pub mod final_layer;
pub mod layers;
pub mod noise;
pub mod patch;
pub mod pos_embed;
pub mod schedule;
pub mod text;
pub mod timestep;
pub mod tokenizer;
pub mod weights;

pub use autoencoder::{AutoencoderConfig, VideoAutoencoder};
pub use backend::Backend;
pub use config::{ConfigError, DitConfig, DitSize, ModelConfig};
pub use dit::Dit;
pub use schedule::{BetaSchedule, DiffusionConfig, NoiseSchedule, Prediction};
pub use text::{TextEncoder, TextEncoderConfig, TextFeatures};
pub use tokenizer::{TokenizeError, Tokenizer};
