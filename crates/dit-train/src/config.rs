//! The experiment config: one TOML file (`configs/*.toml`) that fixes data,
//! networks, diffusion and both training stages. Every field must be given and
//! unknown keys are rejected, so a config file is a complete record of a run.

use std::path::Path;

use burn::config::Config;
use dit_data::MovingShapesConfig;
use dit_model::config::{ConfigError, from_toml, require_positive};
use dit_model::{DiffusionConfig, ModelConfig};

/// Where the training clips come from.
#[derive(Config, Debug)]
pub struct DataConfig {
    /// A folder with `captions.jsonl` and GIF / PNG-frame clips; absent: Moving Shapes.
    pub folder: Option<String>,
    /// Clip shape and Moving Shapes settings (frames and size apply to folder clips too).
    pub shapes: MovingShapesConfig,
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
    /// Training clips encoded once and cached as latents.
    pub train_clips: usize,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
    /// Steps between preview sheets (0 = none).
    pub preview_every: usize,
    /// Steps between loss log lines.
    pub log_every: usize,
}

/// A complete training recipe.
#[derive(Config, Debug)]
pub struct ExperimentConfig {
    /// Seed of data, initialisation, noise and sampling.
    pub seed: u64,
    /// Training clips.
    pub data: DataConfig,
    /// Autoencoder and DiT (`model.dit.text.vocab_size = 0`: from the data's vocabulary).
    pub model: ModelConfig,
    /// Noise schedule.
    pub diffusion: DiffusionConfig,
    /// Stage 1 settings.
    pub autoencoder_training: AutoencoderTrainingConfig,
    /// Stage 2 settings.
    pub dit_training: DitTrainingConfig,
    /// Guidance scale for previews and the default of `dit-infer`.
    pub guidance: f64,
}

fn in_range(field: &str, value: f64, low: f64, high: f64) -> Result<(), ConfigError> {
    if !(value.is_finite() && value >= low && value <= high) {
        return Err(ConfigError::new(
            field,
            format!("must be in [{low}, {high}], got {value}"),
        ));
    }
    Ok(())
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
        let config: Self = from_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("configs serialise to TOML")
    }

    /// Checks every section.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let shapes = &self.data.shapes;
        shapes
            .validate()
            .map_err(|e| ConfigError::new("data.shapes", e.to_string()))?;
        let mut model = self.model.clone();
        if model.dit.text.vocab_size == 0 {
            model.dit.text.vocab_size = 2; // resolved from the data later
        }
        model
            .validate(shapes.frames, shapes.size)
            .map_err(|e| e.within("model"))?;
        self.diffusion
            .validate()
            .map_err(|e| e.within("diffusion"))?;

        let ae = &self.autoencoder_training;
        require_positive("autoencoder_training.batch_size", ae.batch_size)?;
        require_positive("autoencoder_training.eval_clips", ae.eval_clips)?;
        require_positive("autoencoder_training.log_every", ae.log_every)?;
        in_range(
            "autoencoder_training.learning_rate",
            ae.learning_rate,
            1e-8,
            1.0,
        )?;
        in_range("autoencoder_training.kl_weight", ae.kl_weight, 0.0, 1e3)?;

        let d = &self.dit_training;
        require_positive("dit_training.batch_size", d.batch_size)?;
        require_positive("dit_training.train_clips", d.train_clips)?;
        require_positive("dit_training.checkpoint_every", d.checkpoint_every)?;
        require_positive("dit_training.log_every", d.log_every)?;
        in_range("dit_training.learning_rate", d.learning_rate, 1e-8, 1.0)?;
        in_range("dit_training.weight_decay", d.weight_decay, 0.0, 1.0)?;
        in_range("dit_training.grad_clip", d.grad_clip, 0.0, 1e6)?;
        in_range("dit_training.ema_decay", d.ema_decay, 0.0, 1.0)?;
        in_range("dit_training.caption_dropout", d.caption_dropout, 0.0, 1.0)?;
        in_range("dit_training.min_snr_gamma", d.min_snr_gamma, 0.0, 1e6)?;
        in_range("guidance", self.guidance, 0.0, 100.0)
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
    }

    #[test]
    fn round_trips_through_toml() {
        let c = ExperimentConfig::load(&configs_dir().join("tiny.toml")).unwrap();
        let back: ExperimentConfig = from_toml(&c.to_toml()).unwrap();
        assert_eq!(back.to_toml(), c.to_toml());
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
                "dit_training.batch_size",
            ),
            (
                "caption_dropout = 0.1\n",
                "caption_dropout = 1.5\n",
                "dit_training.caption_dropout",
            ),
            ("seed = 0\n", "seed = 0\nsede = 1\n", "sede"),
        ];
        for (from, to, field) in cases {
            assert!(text.contains(from), "tiny.toml has no `{from}`");
            let bad = text.replacen(from, to, 1);
            let err = from_toml::<ExperimentConfig>(&bad)
                .and_then(|c| c.validate())
                .unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }
}
