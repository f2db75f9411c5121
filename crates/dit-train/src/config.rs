//! The experiment config: one TOML file (`configs/*.toml`) that fixes data,
//! networks, diffusion, the training settings and the stages of the recipe. Every
//! field must be given and unknown keys are rejected, so a config file is a
//! complete record of a run.

use std::path::Path;

use burn::config::Config;
use dit_data::fashion::MAX_FASHION_CAPTION_WORDS;
use dit_data::moving_fashion::MovingFashionConfig;
use dit_data::{MAX_CAPTION_WORDS, MovingShapesConfig};
use dit_model::frozen_text::PretrainedText;
use dit_model::validate::{ConfigError, require_in_range, require_positive};
use dit_model::{
    AutoencoderConfig, DiffusionConfig, DitConfig, ModelConfig, Prediction, TextEncoderConfig,
    TrainingData,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_path_to_error::Segment;

/// Where the training clips come from.
#[derive(Config, Debug)]
pub struct DataConfig {
    /// A folder with `captions.jsonl` and MP4 / GIF / PNG-frame clips; absent: Moving Shapes.
    pub folder: Option<String>,
    /// Keep every `n`-th frame of a folder's clips from the first, at the clip's own pace;
    /// absent: the config's frame count spread evenly over each whole clip.
    pub frame_stride: Option<usize>,
    /// Moving Shapes (`[data.shapes]`, the default data set): clip shape and rendering.
    /// Its frames and size apply to a folder's clips too.
    pub shapes: Option<MovingShapesConfig>,
    /// Moving Fashion (`[data.fashion]`, docs/moving-fashion.md) instead of Moving
    /// Shapes: Fashion-MNIST's photographs in motion.
    pub fashion: Option<MovingFashionConfig>,
}

impl DataConfig {
    /// Frames per clip, from the data set's section (0 when the config has none, which
    /// validation refuses).
    pub fn frames(&self) -> usize {
        match (&self.shapes, &self.fashion) {
            (Some(shapes), _) => shapes.frames,
            (None, Some(fashion)) => fashion.frames,
            (None, None) => 0,
        }
    }

    /// Side of the square frames, from the data set's section (0 when there is none).
    pub fn size(&self) -> usize {
        match (&self.shapes, &self.fashion) {
            (Some(shapes), _) => shapes.size,
            (None, Some(fashion)) => fashion.size,
            (None, None) => 0,
        }
    }

    /// The longest caption the built-in data set writes, in words (`None` for a folder,
    /// whose captions are read as they are).
    pub fn longest_caption(&self) -> Option<usize> {
        if self.folder.is_some() {
            None
        } else if self.fashion.is_some() {
            Some(MAX_FASHION_CAPTION_WORDS)
        } else {
            Some(MAX_CAPTION_WORDS)
        }
    }

    /// Which data this is, as a run's model spec records it.
    pub fn training_data(&self) -> TrainingData {
        if self.folder.is_some() {
            TrainingData::Folder
        } else if self.fashion.is_some() {
            TrainingData::MovingFashion
        } else {
            TrainingData::MovingShapes
        }
    }

    /// Exactly one data set section, each valid.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.frame_stride == Some(0) {
            return Err(ConfigError::new(
                "data.frame_stride",
                "must be positive, got 0",
            ));
        }
        match (&self.shapes, &self.fashion) {
            (Some(shapes), None) => shapes
                .validate()
                .map_err(|e| ConfigError::new("data.shapes", e.to_string())),
            (None, Some(fashion)) => fashion
                .validate()
                .map_err(|e| ConfigError::new("data.fashion", e.to_string())),
            (Some(_), Some(_)) => Err(ConfigError::new(
                "data",
                "has both [data.shapes] and [data.fashion]: give the one data set to train on",
            )),
            (None, None) => Err(ConfigError::new(
                "data",
                "needs [data.shapes] (Moving Shapes) or [data.fashion] (Moving Fashion)",
            )),
        }
    }
}

/// Stage 1: the visual autoencoder.
#[derive(Config, Debug)]
pub struct AutoencoderTrainingConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Frames per step, each from a different clip.
    pub batch_size: usize,
    /// Adam learning rate (cosine-decayed to 10% over the run).
    pub learning_rate: f64,
    /// Weight of the KL term (VAE only).
    pub kl_weight: f64,
    /// Held-out clips on which reconstruction PSNR is measured.
    pub eval_clips: usize,
    /// Steps between progress lines.
    pub log_every: usize,
    /// Steps between checkpoints (of the autoencoder and of each decoder stage).
    pub checkpoint_every: usize,
    /// Train stage 1 on square windows of this side instead of whole frames, at offsets
    /// that are multiples of the autoencoder's downsampling factor (the networks are
    /// convolutional: windows teach the same filters at a fraction of the cost). Absent:
    /// whole frames.
    pub crop: Option<usize>,
    /// Clips the gradient's global norm to this before each Adam step (wide autoencoders
    /// without normalisation layers can blow up without it). Absent: no clipping.
    pub grad_clip: Option<f64>,
    /// Weight of an edge term added to the reconstruction MSE: the mean absolute error of
    /// the horizontal and vertical pixel differences (the gradient difference loss of
    /// Mathieu et al. 2016), which penalises the blurred edges and textures that MSE
    /// tolerates. Absent: MSE alone.
    pub edge_weight: Option<f64>,
    /// Weight of a perceptual term added to the reconstruction MSE: the squared distance
    /// between the features a frozen Fashion-MNIST classifier sees in the reconstruction
    /// and in the original ([`crate::perceptual`]). Needs `perceptual_network`.
    pub perceptual_weight: Option<f64>,
    /// Folder of that classifier (as `dit-train classifier` writes it): in the working
    /// folder when it is there, else in this repository (`checkpoints/fashion-features` is
    /// shipped); never the judge's own.
    pub perceptual_network: Option<String>,
}

/// Stage 2: the DiT on cached latents.
#[derive(Config, Debug)]
pub struct DitTrainingConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Clips per step.
    pub batch_size: usize,
    /// Peak AdamW learning rate.
    pub learning_rate: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Cosine decay of the learning rate to 10% after warm-up (else constant).
    pub cosine_decay: bool,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Gradient clipping by global norm (0 = off).
    pub grad_clip: f64,
    /// Decay of the exponential moving average of the weights used for sampling.
    pub ema_decay: f64,
    /// Probability of replacing a caption by the null prompt (for guidance).
    pub caption_dropout: f64,
    /// Min-SNR-γ loss weighting (Hang et al. 2023); 0 = plain MSE.
    pub min_snr_gamma: f64,
    /// Timestep shift of the training noise levels
    /// ([`dit_model::ForwardProcess::draw_level_shifted`]): above 1, the noisy levels are
    /// drawn more often. Absent: 1, the plain draw.
    pub level_shift: Option<f64>,
    /// Training clips encoded once and cached as latents.
    pub train_clips: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Steps between preview sheets (0 = none).
    pub preview_every: usize,
    /// Steps between loss log lines.
    pub log_every: usize,
    /// Steps between evaluations of the EMA model's prompt fidelity into `fidelity.csv`
    /// (0 = only at the end of the stage).
    pub fidelity_every: usize,
    /// Denoising steps (DDIM) of those evaluations.
    pub fidelity_sampling_steps: usize,
    /// Devices that share each step's batch, one replica of the DiT on each
    /// ([`crate::data_parallel`]); `batch_size` must be a multiple of it. Absent: one.
    pub devices: Option<usize>,
}

impl DitTrainingConfig {
    /// Devices that share each step's batch (`devices`, or one).
    pub fn device_count(&self) -> usize {
        self.devices.unwrap_or(1)
    }

    /// The timestep shift of the noise levels (`level_shift`, or 1).
    pub fn level_shift(&self) -> f64 {
        self.level_shift.unwrap_or(1.0)
    }
}

/// One stage of the recipe: `[[stages]]` entries, run in the order the config lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case", deny_unknown_fields)]
pub enum Stage {
    /// Train the visual autoencoder, encoder and decoder (`[autoencoder_training]`).
    Autoencoder,
    /// Fine-tune the decoder with the encoder frozen: the latent space stays as it is,
    /// so it can come before or after the DiT.
    Decoder {
        /// Optimiser steps.
        steps: usize,
        /// Peak learning rate (cosine decay to a tenth of it).
        learning_rate: f64,
        /// Largest standard deviation of the Gaussian noise added to the latents the
        /// decoder sees, in units of the DiT's normalised latent (0: clean latents):
        /// makes the decoder robust to the DiT's sampling error.
        latent_noise: f64,
        /// Largest diffusion step from which the trained DiT denoises the latents the
        /// decoder sees (SDEdit; 0: the encoder's latents). The decoder then learns the
        /// DiT's own errors, as a generated latent has them, instead of white noise.
        /// Needs the DiT: the stage comes after it.
        #[serde(default, skip_serializing_if = "is_zero")]
        denoised_from: usize,
    },
    /// Train the DiT on the frozen encoder's latents (`[dit_training]`).
    Dit,
}

/// Whether a count is 0 (such fields are left out of a written config).
fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Stage {
    /// Its name in the config and in messages.
    pub fn name(&self) -> &'static str {
        match self {
            Stage::Autoencoder => "autoencoder",
            Stage::Decoder { .. } => "decoder",
            Stage::Dit => "dit",
        }
    }
}

/// `[model]`: the autoencoder, and the DiT's architecture. What follows from the data (the
/// DiT's latent shape, its vocabulary) is not written here: [`ExperimentConfig::networks`]
/// builds the networks' [`ModelConfig`] from this section and the data.
#[derive(Config, Debug, PartialEq)]
pub struct ModelSection {
    /// The visual autoencoder.
    pub autoencoder: AutoencoderConfig,
    /// The Diffusion Transformer's architecture.
    pub dit: DitSection,
}

/// `[model.dit]`: the DiT's settings that a config chooses (see [`DitConfig`] for each).
#[derive(Config, Debug, PartialEq)]
pub struct DitSection {
    /// Frames per spacetime patch.
    pub patch_frames: usize,
    /// Rows and columns per spacetime patch.
    pub patch_size: usize,
    /// Token width.
    pub hidden: usize,
    /// Number of blocks.
    pub depth: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// MLP width as a multiple of `hidden`.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Cross-attention to the text tokens in every block.
    #[config(default = false)]
    pub cross_attention: bool,
    /// The prompt encoder.
    pub text: TextSection,
}

/// `[model.dit.text]`: the prompt encoder's settings that a config chooses (see
/// [`TextEncoderConfig`] for each).
#[derive(Config, Debug, PartialEq)]
pub struct TextSection {
    /// Longest prompt, in words.
    #[config(default = 16)]
    pub max_words: usize,
    /// Width of the word features.
    #[config(default = 64)]
    pub width: usize,
    /// Transformer encoder layers.
    #[config(default = 2)]
    pub depth: usize,
    /// Attention heads per layer.
    #[config(default = 4)]
    pub heads: usize,
    /// A frozen pretrained encoder to condition on instead.
    #[config(default = "None")]
    pub pretrained: Option<PretrainedText>,
}

impl DitSection {
    /// The DiT's config for latents of `[channels, frames, size]` and `vocab_size` token ids.
    pub fn dit_config(&self, [channels, frames, size]: [usize; 3], vocab_size: usize) -> DitConfig {
        let t = &self.text;
        DitConfig {
            latent_channels: channels,
            latent_frames: frames,
            latent_size: size,
            patch_frames: self.patch_frames,
            patch_size: self.patch_size,
            hidden: self.hidden,
            depth: self.depth,
            heads: self.heads,
            mlp_ratio: self.mlp_ratio,
            cross_attention: self.cross_attention,
            text: TextEncoderConfig {
                vocab_size,
                max_words: t.max_words,
                width: t.width,
                depth: t.depth,
                heads: t.heads,
                pretrained: t.pretrained,
            },
        }
    }
}

/// The vocabulary [`ExperimentConfig::validate`] checks the networks with before the data
/// is read: padding and one word, the fewest any data set has (the checks do not depend on
/// its size).
const SMALLEST_VOCABULARY: usize = 2;

/// A complete training recipe.
#[derive(Config, Debug)]
pub struct ExperimentConfig {
    /// Seed of data, initialisation, noise and sampling.
    pub seed: u64,
    /// Training clips.
    pub data: DataConfig,
    /// Autoencoder and DiT, without what follows from the data ([`Self::networks`]).
    pub model: ModelSection,
    /// Noise schedule.
    pub diffusion: DiffusionConfig,
    /// Stage 1 settings.
    pub autoencoder_training: AutoencoderTrainingConfig,
    /// Stage 2 settings.
    pub dit_training: DitTrainingConfig,
    /// Guidance scale for previews and the default of `dit-infer`.
    pub guidance: f64,
    /// What `dit-train` runs, in order: the autoencoder first, then decoder
    /// fine-tunings and the DiT in any order.
    pub stages: Vec<Stage>,
}

impl ExperimentConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("(file)", format!("{} cannot be read: {e}", path.display()))
        })?;
        Self::parse(&text).map_err(|e| ConfigError {
            reason: format!("{} (in {})", e.reason, path.display()),
            ..e
        })
    }

    /// Parses and validates the text of a config file.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = from_table(parse_table(text)?)?;
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML, as a user writes it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configs serialise to TOML")
    }

    /// The shape `[channels, frames, size]` of the autoencoder's latents of the data's clips.
    pub fn latent_shape(&self) -> Result<[usize; 3], ConfigError> {
        self.model
            .autoencoder
            .latent_shape(self.data.frames(), self.data.size())
            .map_err(|e| e.within("model.autoencoder"))
    }

    /// The networks' config for the data's vocabulary of `vocab_size` token ids: the
    /// config's autoencoder, and its DiT on the autoencoder's latents.
    pub fn networks(&self, vocab_size: usize) -> Result<ModelConfig, ConfigError> {
        Ok(ModelConfig {
            autoencoder: self.model.autoencoder.clone(),
            dit: self.model.dit.dit_config(self.latent_shape()?, vocab_size),
        })
    }

    /// Checks every section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.data.validate()?;
        self.networks(SMALLEST_VOCABULARY)?
            .validate(self.data.frames(), self.data.size())
            .map_err(|e| e.within("model"))?;
        if let Some(longest) = self.data.longest_caption()
            && self.model.dit.text.max_words < longest
        {
            return Err(ConfigError::new(
                "model.dit.text.max_words",
                format!(
                    "is {}, but the data set's captions run to {longest} words",
                    self.model.dit.text.max_words
                ),
            ));
        }
        self.diffusion
            .validate()
            .map_err(|e| e.within("diffusion"))?;

        let ae = &self.autoencoder_training;
        require_positive("autoencoder_training.batch_size", ae.batch_size)?;
        require_positive("autoencoder_training.eval_clips", ae.eval_clips)?;
        require_positive("autoencoder_training.log_every", ae.log_every)?;
        require_positive("autoencoder_training.checkpoint_every", ae.checkpoint_every)?;
        require_in_range(
            "autoencoder_training.learning_rate",
            ae.learning_rate,
            1e-8,
            1.0,
        )?;
        require_in_range("autoencoder_training.kl_weight", ae.kl_weight, 0.0, 1e3)?;
        if let Some(clip) = ae.grad_clip {
            require_in_range("autoencoder_training.grad_clip", clip, 1e-6, 1e6)?;
        }
        if let Some(weight) = ae.edge_weight {
            require_in_range("autoencoder_training.edge_weight", weight, 0.0, 1e3)?;
        }
        if let Some(weight) = ae.perceptual_weight {
            require_in_range("autoencoder_training.perceptual_weight", weight, 0.0, 1e3)?;
        }
        if ae.perceptual_weight.is_some() != ae.perceptual_network.is_some() {
            return Err(ConfigError::new(
                "autoencoder_training.perceptual_weight",
                "and autoencoder_training.perceptual_network go together: set both or neither"
                    .to_string(),
            ));
        }
        if let Some(side) = ae.crop {
            let factor = self.model.autoencoder.factor();
            if side == 0 || !side.is_multiple_of(factor) || side > self.data.size() {
                return Err(ConfigError::new(
                    "autoencoder_training.crop",
                    format!(
                        "is {side}: it must be a positive multiple of the autoencoder's factor {factor}, at most the frame size {}",
                        self.data.size()
                    ),
                ));
            }
        }

        let d = &self.dit_training;
        require_positive("dit_training.batch_size", d.batch_size)?;
        require_positive("dit_training.train_clips", d.train_clips)?;
        require_positive("dit_training.checkpoint_every", d.checkpoint_every)?;
        require_positive("dit_training.log_every", d.log_every)?;
        require_positive(
            "dit_training.fidelity_sampling_steps",
            d.fidelity_sampling_steps,
        )?;
        require_positive("dit_training.devices", d.device_count())?;
        if !d.batch_size.is_multiple_of(d.device_count()) {
            return Err(ConfigError::new(
                "dit_training.batch_size",
                format!(
                    "is {}: it must split evenly between the {} devices (dit_training.devices)",
                    d.batch_size,
                    d.device_count()
                ),
            ));
        }
        require_in_range("dit_training.learning_rate", d.learning_rate, 1e-8, 1.0)?;
        require_in_range("dit_training.weight_decay", d.weight_decay, 0.0, 1.0)?;
        require_in_range("dit_training.grad_clip", d.grad_clip, 0.0, 1e6)?;
        require_in_range("dit_training.ema_decay", d.ema_decay, 0.0, 1.0)?;
        require_in_range("dit_training.caption_dropout", d.caption_dropout, 0.0, 1.0)?;
        require_in_range("dit_training.min_snr_gamma", d.min_snr_gamma, 0.0, 1e6)?;
        require_in_range("dit_training.level_shift", d.level_shift(), 0.1, 100.0)?;
        if self.diffusion.prediction == Prediction::Flow && d.min_snr_gamma > 0.0 {
            return Err(ConfigError::new(
                "dit_training.min_snr_gamma",
                "weights the β schedule's steps; a flow (prediction = \"Flow\") needs 0",
            ));
        }
        require_in_range("guidance", self.guidance, 0.0, 100.0)?;
        self.validate_stages()
    }

    /// The recipe starts with the autoencoder and trains the DiT at most once.
    fn validate_stages(&self) -> Result<(), ConfigError> {
        if self.stages.first() != Some(&Stage::Autoencoder) {
            return Err(ConfigError::new(
                "stages",
                "must begin with the autoencoder: `[[stages]]` then `stage = \"autoencoder\"`",
            ));
        }
        for (i, stage) in self.stages.iter().enumerate() {
            let field = format!("stages[{}]", i + 1);
            match stage {
                Stage::Autoencoder if i > 0 => {
                    return Err(ConfigError::new(
                        field,
                        "the autoencoder is trained once, as the first stage",
                    ));
                }
                Stage::Dit if self.stages[..i].contains(&Stage::Dit) => {
                    return Err(ConfigError::new(field, "the DiT is trained in one stage"));
                }
                Stage::Decoder {
                    steps,
                    learning_rate,
                    latent_noise,
                    denoised_from,
                } => {
                    require_positive(&format!("{field}.steps"), *steps)?;
                    require_in_range(&format!("{field}.learning_rate"), *learning_rate, 1e-8, 1.0)?;
                    require_in_range(&format!("{field}.latent_noise"), *latent_noise, 0.0, 10.0)?;
                    if *denoised_from > 0 && !self.stages[..i].contains(&Stage::Dit) {
                        return Err(ConfigError::new(
                            format!("{field}.denoised_from"),
                            "needs the trained DiT: list this stage after the `dit` stage",
                        ));
                    }
                    if *denoised_from >= self.diffusion.steps {
                        return Err(ConfigError::new(
                            format!("{field}.denoised_from"),
                            format!(
                                "must be below the {} diffusion steps, got {denoised_from}",
                                self.diffusion.steps
                            ),
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Parses TOML text into a table; a syntax error names its line.
fn parse_table(text: &str) -> Result<toml::Table, ConfigError> {
    text.parse().map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|span| format!(" (line {})", text[..span.start].matches('\n').count() + 1))
            .unwrap_or_default();
        ConfigError::new(
            "(file)",
            format!(
                "is not valid TOML{line}: {}",
                e.message().replace('\n', "; ")
            ),
        )
    })
}

/// Keys that configs once had and that now follow from the data.
const DERIVED: [&str; 4] = [
    "model.dit.latent_channels",
    "model.dit.latent_frames",
    "model.dit.latent_size",
    "model.dit.text.vocab_size",
];

/// Reads `T` from a TOML table. Every field must be given (a config file is the
/// complete record of a run) and unknown keys, such as typos, are rejected; an
/// error names the dotted path of its key, as `serde_path_to_error` tracks it.
fn from_table<T: DeserializeOwned>(table: toml::Table) -> Result<T, ConfigError> {
    let mut unknown = None;
    let mut note_unknown = |path: serde_ignored::Path| {
        unknown.get_or_insert_with(|| path.to_string());
    };
    let ignored = serde_ignored::Deserializer::new(toml::Value::Table(table), &mut note_unknown);
    let parsed: Result<T, serde_path_to_error::Error<toml::de::Error>> =
        serde_path_to_error::deserialize(ignored);
    let parsed = parsed.map_err(|e| {
        // The key's path as the config's own messages write it: `stages[3].steps` counts
        // `[[stages]]` entries from 1.
        let mut path = String::new();
        for segment in e.path() {
            match segment {
                Segment::Seq { index } => path += &format!("[{}]", index + 1),
                Segment::Map { key } | Segment::Enum { variant: key } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path += key;
                }
                Segment::Unknown => {}
            }
        }
        let path = (!path.is_empty()).then_some(path);
        // The deserializer's own message, without any location it appends.
        let text = e.into_inner().to_string();
        let message = text.lines().next().unwrap_or_default().to_string();
        // A missing field is reported at its parent: serde names it as "missing field `x`".
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (path, missing) {
            (Some(path), Some(name)) => format!("{path}.{name}"),
            (None, Some(name)) => name.to_string(),
            (Some(path), None) => path,
            (None, None) => "(file)".to_string(),
        };
        ConfigError::new(field, format!("cannot be read: {message}"))
    })?;
    match unknown {
        Some(path) if DERIVED.contains(&path.as_str()) => Err(ConfigError::new(
            path,
            "is not a setting: the DiT's latent shape follows from the autoencoder and the \
             clips, its vocabulary from the data (delete the line)",
        )),
        Some(path) => Err(ConfigError::new(path, "is not a known setting (a typo?)")),
        None => Ok(parsed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
    }

    #[test]
    fn every_shipped_config_loads() {
        let mut count = 0;
        for entry in std::fs::read_dir(configs_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                ExperimentConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                count += 1;
            }
        }
        assert!(count >= 14, "found {count} configs");
        // The shipped checkpoints' records too: `dit-train --resume` reads them.
        for name in ["tiny", "minilm"] {
            let path = configs_dir().join(format!("../checkpoints/{name}/config.toml"));
            ExperimentConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let c = ExperimentConfig::load(&configs_dir().join("tiny.toml")).unwrap();
        let back = ExperimentConfig::parse(&c.to_toml()).unwrap();
        assert_eq!(back.to_toml(), c.to_toml());
        assert_eq!(back.model, c.model);
    }

    #[test]
    fn the_dit_is_built_from_its_section_the_autoencoder_and_the_datas_vocabulary() {
        let text = std::fs::read_to_string(configs_dir().join("tiny.toml")).unwrap();
        assert!(!text.contains("latent_frames") && !text.contains("vocab_size"));
        let c = ExperimentConfig::parse(&text).unwrap();
        let model = c.networks(20).unwrap();
        let dit = &model.dit;
        // 8 frames of 32×32 through 2 downsamplings into 4 channels.
        assert_eq!(
            [dit.latent_channels, dit.latent_frames, dit.latent_size],
            [4, 8, 8]
        );
        assert_eq!(dit.text.vocab_size, 20);
        assert_eq!(
            (dit.hidden, dit.depth, dit.text.max_words),
            (
                c.model.dit.hidden,
                c.model.dit.depth,
                c.model.dit.text.max_words
            )
        );
        assert_eq!(model.autoencoder, c.model.autoencoder);
        model.validate(c.data.frames(), c.data.size()).unwrap();
        let wider = text.replacen(
            "size = 32
",
            "size = 64
",
            1,
        );
        let wider = ExperimentConfig::parse(&wider).unwrap();
        assert_eq!(wider.networks(20).unwrap().dit.latent_size, 16);
        // What follows from the data is not a setting; old files that wrote it are told so.
        for (line, field) in [
            ("[model.dit]\nlatent_size = 8\n", "model.dit.latent_size"),
            (
                "[model.dit.text]\nvocab_size = 0\n",
                "model.dit.text.vocab_size",
            ),
        ] {
            let header = &line[..line.find('\n').unwrap() + 1];
            let old = text.replacen(header, line, 1);
            let err = ExperimentConfig::parse(&old).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.to_string().contains("follows from"), "{err}");
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let text = std::fs::read_to_string(configs_dir().join("tiny.toml")).unwrap();
        let cases = [
            ("heads = 4\n", "heads = 3\n", "model.dit.heads"),
            (
                "patch_size = 2\n",
                "patch_size = 3\n",
                "model.dit.patch_size",
            ),
            (
                "batch_size = 32\n",
                "batch_size = 0\n",
                "autoencoder_training.batch_size",
            ),
            (
                "[dit_training]\nsteps = 8000\nbatch_size = 32\n",
                "[dit_training]\nsteps = 8000\nbatch_size = 0\n",
                "dit_training.batch_size",
            ),
            (
                "caption_dropout = 0.1\n",
                "caption_dropout = 1.5\n",
                "dit_training.caption_dropout",
            ),
            ("seed = 0\n", "seed = 0\nsede = 1\n", "sede"),
            (
                "checkpoint_every = 250\n",
                "checkpoint_every = 250\ncrop = 10\n",
                "autoencoder_training.crop",
            ),
            (
                "checkpoint_every = 250\n",
                "checkpoint_every = 250\ngrad_clip = -1.0\n",
                "autoencoder_training.grad_clip",
            ),
            (
                "checkpoint_every = 250\n",
                "checkpoint_every = 250\nperceptual_weight = 1.0\n",
                "autoencoder_training.perceptual_weight",
            ),
            (
                "checkpoint_every = 250\n",
                "checkpoint_every = 250\nperceptual_weight = -1.0\nperceptual_network = \"n\"\n",
                "autoencoder_training.perceptual_weight",
            ),
            (
                "[data.shapes]\n",
                "[data]\nframe_stride = 0\n\n[data.shapes]\n",
                "data.frame_stride",
            ),
        ];
        for (from, to, field) in cases {
            check(&text, from, to, field);
        }
    }

    /// `text` with `from` replaced by `to` is refused, naming `field`.
    fn check(text: &str, from: &str, to: &str, field: &str) {
        assert!(text.contains(from), "the config has no `{from}`");
        let bad = text.replacen(from, to, 1);
        let err = ExperimentConfig::parse(&bad).unwrap_err();
        assert_eq!(err.field, field, "{err}");
    }

    #[test]
    fn bad_recipes_name_their_stage() {
        let text = std::fs::read_to_string(configs_dir().join("tiny.toml")).unwrap();
        let stages = text.find("[[stages]]").unwrap();
        let with = |recipe: &str| format!("{}{recipe}", &text[..stages]);
        let good = with(
            "[[stages]]\nstage = \"autoencoder\"\n\n[[stages]]\nstage = \"decoder\"\n\
             steps = 10\nlearning_rate = 0.001\nlatent_noise = 0.3\n\n[[stages]]\nstage = \"dit\"\n",
        );
        let config = ExperimentConfig::parse(&good).unwrap();
        assert_eq!(
            config.stages[1],
            Stage::Decoder {
                steps: 10,
                learning_rate: 0.001,
                latent_noise: 0.3,
                denoised_from: 0,
            }
        );
        assert_eq!(
            ExperimentConfig::parse(&config.to_toml()).unwrap().stages,
            config.stages
        );
        let cases = [
            ("stage = \"autoencoder\"", "stage = \"dit\"", "stages"),
            (
                "latent_noise = 0.3",
                "latent_noise = -0.3",
                "stages[2].latent_noise",
            ),
            ("steps = 10\n", "steps = 0\n", "stages[2].steps"),
            ("stage = \"dit\"", "stage = \"autoencoder\"", "stages[3]"),
            ("stage = \"dit\"", "stage = \"dti\"", "stages[3].stage"),
            (
                "latent_noise = 0.3",
                "latent_noise = 0.3\nlatent_nosie = 1",
                "stages[2]",
            ),
        ];
        for (from, to, field) in cases {
            check(&good, from, to, field);
        }
        // A decoder stage on the DiT's denoised latents comes after the DiT.
        check(
            &good,
            "latent_noise = 0.3",
            "latent_noise = 0.3\ndenoised_from = 300",
            "stages[2].denoised_from",
        );
        let denoised = format!(
            "{good}\n[[stages]]\nstage = \"decoder\"\nsteps = 10\nlearning_rate = 0.001\n\
             latent_noise = 0.1\ndenoised_from = 300\n"
        );
        let config = ExperimentConfig::parse(&denoised).unwrap();
        assert_eq!(
            config.stages[3],
            Stage::Decoder {
                steps: 10,
                learning_rate: 0.001,
                latent_noise: 0.1,
                denoised_from: 300,
            }
        );
        assert_eq!(
            ExperimentConfig::parse(&config.to_toml()).unwrap().stages,
            config.stages
        );
        check(
            &denoised,
            "denoised_from = 300",
            "denoised_from = 1000",
            "stages[4].denoised_from",
        );
        let twice = format!("{good}\n[[stages]]\nstage = \"dit\"\n");
        assert_eq!(
            ExperimentConfig::parse(&twice).unwrap_err().field,
            "stages[4]"
        );
        let none = text[..stages].to_string();
        assert_eq!(ExperimentConfig::parse(&none).unwrap_err().field, "stages");
    }
}

#[cfg(test)]
mod toml_tests {
    use super::*;

    /// Parses a complete TOML config into `T`, as [`ExperimentConfig::parse`] does.
    fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
        from_table(parse_table(text)?)
    }
    use dit_model::{DitConfig, DitSize, TextEncoderConfig};

    fn text(vocab_size: usize) -> TextEncoderConfig {
        TextEncoderConfig::new(vocab_size)
    }

    const TINY: &str = r#"
patch_frames = 1
patch_size = 2
hidden = 128
depth = 4
heads = 4
mlp_ratio = 4.0
cross_attention = false
[text]
max_words = 16
width = 64
depth = 2
heads = 4
"#;

    #[test]
    fn reads_a_complete_config() {
        let c: DitSection = from_toml(TINY).unwrap();
        // DiT-S's layout (patch 1×2×2) at the tiny recipe's width and depth.
        let small = DitConfig::preset(DitSize::S, 2, 4, 8, 8, text(20));
        let expected = DitConfig {
            hidden: 128,
            depth: 4,
            heads: 4,
            ..small
        };
        assert_eq!(c.dit_config([4, 8, 8], 20), expected);
    }

    #[test]
    fn names_the_problem() {
        let typo = TINY.replace("heads = 4", "heads = 4\nhedas = 2");
        assert_eq!(from_toml::<DitSection>(&typo).unwrap_err().field, "hedas");
        let nested = TINY.replace("max_words = 16", "max_words = 16\nwidht = 3");
        assert_eq!(
            from_toml::<DitSection>(&nested).unwrap_err().field,
            "text.widht"
        );
        let missing = TINY.replace("hidden = 128\n", "");
        assert_eq!(
            from_toml::<DitSection>(&missing).unwrap_err().field,
            "hidden"
        );
        let wrong_type = TINY.replace("depth = 4", "depth = \"four\"");
        assert!(
            from_toml::<DitSection>(&wrong_type)
                .unwrap_err()
                .to_string()
                .contains("invalid type")
        );
        let negative = TINY.replace("depth = 4", "depth = -4");
        assert_eq!(
            from_toml::<DitSection>(&negative).unwrap_err().field,
            "depth"
        );
        assert_eq!(
            from_toml::<DitSection>("hidden = [").unwrap_err().field,
            "(file)"
        );
    }
}
