//! Burn modules of a text-to-video Diffusion Transformer (Peebles & Xie 2023).
//!
//! | pipeline step | module |
//! |---|---|
//! | pixels ↔ latent (frozen after stage 1) | [`autoencoder`] |
//! | latent video → spacetime patches → tokens | [`patch`] |
//! | fixed 3D sin-cos positions | [`pos_embed`] |
//! | diffusion step t → embedding | [`timestep`] |
//! | prompt → word features + pooled vector | [`tokenizer`], [`text`] |
//! | a pretrained, frozen sentence encoder (all-MiniLM-L6-v2), and conditioning on it | [`minilm`], [`frozen_text`] |
//! | adaLN-Zero transformer block | [`block`], [`attention`], [`layers`] |
//! | LayerNorm, modulation, GELU, attention: routed to fused kernels, or Burn's ops | [`fused`], [`ops`] |
//! | adaLN + Linear to patch values | [`final_layer`] |
//! | the whole network and its config, published sizes | [`dit`] |
//! | the photograph classifier that judges Moving Fashion clips | [`classifier`] |
//! | the forward process: noising, targets, what a sampler reads back | [`process`] |
//! | its two kinds: the β schedule of diffusion, a straight line (rectified flow) | [`schedule`], [`flow`] |
//! | walking back: DDPM, DDIM, Euler, classifier-free guidance | [`sampler`] |
//! | config errors and shared checks | [`validate`] |
//! | the run folder: layout, spec, checkpoints, atomic writes | [`run`] |
//! | named random streams (one home for every seed) | [`seed`] |
//! | PyTorch-named safetensors import/export | [`weights`] |
//! | choosing a backend | [`backend`] |
//! | seeded host-side Gaussian noise | [`noise`] |
//! | parameter ids from parameter paths (reproducible weights files) | [`param_ids`] |

pub mod attention;
pub mod autoencoder;
pub mod backend;
pub mod block;
pub mod classifier;
pub mod dit;
pub mod final_layer;
pub mod flow;
pub mod frozen_text;
pub mod fused;
pub mod layers;
pub mod minilm;
pub mod noise;
pub mod ops;
pub mod param_ids;
pub mod patch;
pub mod pos_embed;
pub mod process;
pub mod run;
pub mod sampler;
pub mod schedule;
pub mod seed;
pub mod text;
pub mod timestep;
pub mod tokenizer;
pub mod validate;
pub mod weights;

pub use autoencoder::{AutoencoderConfig, VideoAutoencoder};
pub use backend::Backend;
pub use dit::{Dit, DitConfig, DitSize, DitTrace, PromptInput};
pub use process::{DiffusionConfig, ForwardProcess, NoiseLevel, Prediction};
pub use run::{ModelConfig, RunSpec, TrainedModel, TrainingData};
pub use schedule::{BetaSchedule, NoiseSchedule};
pub use text::{TextEncoder, TextEncoderConfig, TextFeatures};
pub use tokenizer::{TokenizeError, Tokenizer};
pub use validate::ConfigError;
