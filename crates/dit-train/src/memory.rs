//! How much memory a training run needs, estimated from its config alone, so that a
//! config that cannot fit is refused before anything is allocated.
//!
//! The estimate counts, in `f32`:
//! - stage 2's training state: the DiT's weights, their gradients, AdamW's two moments and
//!   the EMA copy, 5 × the parameter count ([`DitConfig::num_params`]);
//! - the activations one training step keeps for the backward pass: per block and clip
//!   about `(14·D + 6·M)·N + 4·H·N²` values (D hidden, M MLP width, N tokens, H heads),
//!   plus the cross-attention's when it is on. Measured on `configs/tiny.toml` with
//!   `dit-bench` (peak resident memory at batch 8, 32 and 64: 138, 454 and 880 MB, so
//!   13.3 MB a clip), this gives 14.1 MB a clip;
//! - the latent cache of `train_clips` clips;
//! - stage 1: the autoencoder's weights and Adam state (4 × its parameters) and the
//!   activations of a batch of frames, about 20 values per channel and pixel at each
//!   resolution, in the encoder and in the decoder;
//! - a decoder stage on the DiT's denoised latents: its set of frames and latents and the
//!   DiT's weights, beside stage 1's count;
//! - a fixed 128 MiB for the program, its data and Burn's buffers.
//!
//! Stages run one after the other, so the largest of them counts.

use std::fmt;

use dit_model::DitConfig;
use dit_model::validate::ConfigError;

use crate::config::{ExperimentConfig, Stage};

/// Bytes of one `f32`.
const F32: f64 = 4.0;
/// Memory besides tensors: the program, clips, Burn's buffers.
const BASE_BYTES: f64 = 128.0 * 1024.0 * 1024.0;
/// Vocabulary assumed for the estimate: the data's is read later (a word embedding is a
/// small part of any DiT).
const ASSUMED_VOCABULARY: usize = 1000;

/// The estimated peak memory of a training run, by part, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryEstimate {
    /// DiT parameters.
    pub dit_parameters: u64,
    /// Stage 2's weights, gradients, AdamW moments and EMA.
    pub dit_state: f64,
    /// Activations of one stage-2 training step.
    pub dit_activations: f64,
    /// The cached training latents.
    pub latent_cache: f64,
    /// Stage 1: autoencoder weights, Adam state and activations of one step.
    pub autoencoder: f64,
    /// A decoder stage on the DiT's denoised latents: the set of frames and latents it
    /// holds, and the DiT's weights (0 when no stage has `denoised_from`).
    pub denoised_set: f64,
}

impl MemoryEstimate {
    /// The estimate for `config` (an error only where its networks cannot be built, which
    /// validation refuses first).
    pub fn of(config: &ExperimentConfig) -> Result<Self, ConfigError> {
        let dit = config.networks(ASSUMED_VOCABULARY)?.dit;
        let d = &config.dit_training;
        let latent_values =
            (dit.latent_channels * dit.latent_frames) as f64 * (dit.latent_size as f64).powi(2);
        let parameters = dit.num_params();
        Ok(Self {
            dit_parameters: parameters,
            dit_state: 5.0 * parameters as f64 * F32,
            dit_activations: d.batch_size as f64 * activations_per_clip(&dit) * F32,
            latent_cache: d.train_clips as f64 * latent_values * F32,
            autoencoder: autoencoder_bytes(config),
            denoised_set: denoised_set_bytes(config, latent_values, parameters),
        })
    }

    /// The peak: the larger of stage 1 and stage 2, plus the program's own memory.
    pub fn total(&self) -> f64 {
        let stage2 = self.dit_state + self.dit_activations + self.latent_cache;
        BASE_BYTES + stage2.max(self.autoencoder + self.denoised_set)
    }
}

/// Values one clip's forward pass keeps for the backward pass.
fn activations_per_clip(dit: &DitConfig) -> f64 {
    let (d, m) = (dit.hidden as f64, dit.mlp_hidden() as f64);
    let (n, h) = (dit.num_tokens() as f64, dit.heads as f64);
    let words = dit.text.max_words as f64;
    let mut block = (14.0 * d + 6.0 * m) * n + 4.0 * h * n * n;
    if dit.cross_attention {
        block += 6.0 * d * n + 3.0 * h * n * words;
    }
    dit.depth as f64 * block
}

/// A decoder stage with `denoised_from`: its frames (3 values a pixel) and denoised latents
/// ([`crate::denoised::DenoisedFrames`]) and the DiT's weights, beside the decoder's training.
fn denoised_set_bytes(config: &ExperimentConfig, latent_values: f64, dit_parameters: u64) -> f64 {
    let denoised = config
        .stages
        .iter()
        .any(|s| matches!(s, Stage::Decoder { denoised_from, .. } if *denoised_from > 0));
    if !denoised {
        return 0.0;
    }
    let clips = crate::denoised::clip_count(config.dit_training.train_clips) as f64;
    let data = &config.data;
    let pixels = (data.frames() * data.size() * data.size()) as f64;
    (clips * (3.0 * pixels + latent_values) + dit_parameters as f64) * F32
}

/// Stage 1: weights, Adam's moments and gradients, and the activations of a batch of frames.
fn autoencoder_bytes(config: &ExperimentConfig) -> f64 {
    let ae = &config.model.autoencoder;
    let size = config.data.size() as f64;
    let per_frame: f64 = (0..=ae.downsamplings)
        .map(|level| {
            let channels = ae.channels(level) as f64;
            let pixels = (size / 2f64.powi(level as i32)).powi(2);
            2.0 * 20.0 * channels * pixels
        })
        .sum();
    let state = 4.0 * ae.num_params() as f64;
    (state + config.autoencoder_training.batch_size as f64 * per_frame) * F32
}

/// `value` divided by `step` until it is below `step` (at most to the last unit), and the
/// index of the unit it is then in.
fn scaled(mut value: f64, step: f64, units: usize) -> (f64, usize) {
    let mut unit = 0;
    while value >= step && unit + 1 < units {
        value /= step;
        unit += 1;
    }
    (value, unit)
}

/// Bytes as a short reading, e.g. `1.3 GiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (value, unit) = scaled(bytes, 1024.0, UNITS.len());
    format!("{value:.1} {}", UNITS[unit])
}

/// A count as a short reading, e.g. `1.4 M`, `3.3 T`.
pub fn human_count(count: f64) -> String {
    const UNITS: [&str; 5] = ["", " k", " M", " G", " T"];
    match scaled(count, 1000.0, UNITS.len()) {
        (value, 0) => format!("{value}"),
        (value, unit) => format!("{value:.1}{}", UNITS[unit]),
    }
}

impl fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (DiT: {} parameters, {} of weights, gradients, AdamW and EMA, {} of \
             activations a step, {} of cached latents; stage 1: {}{})",
            human_bytes(self.total()),
            human_count(self.dit_parameters as f64),
            human_bytes(self.dit_state),
            human_bytes(self.dit_activations),
            human_bytes(self.latent_cache),
            human_bytes(self.autoencoder),
            if self.denoised_set > 0.0 {
                format!(
                    "; a decoder stage's denoised set: {}",
                    human_bytes(self.denoised_set)
                )
            } else {
                String::new()
            },
        )
    }
}

/// The machine's memory in bytes (`MemTotal` of `/proc/meminfo`), where the system says.
pub fn machine_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// The CPU's model name (`model name` of `/proc/cpuinfo`) and its logical core count, for
/// the reports that record where a number was measured; `unknown CPU` where the system
/// does not say.
pub fn cpu_model() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{name}, {cores} cores")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(name: &str) -> ExperimentConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs")
            .join(name);
        ExperimentConfig::load(&path).unwrap()
    }

    #[test]
    fn the_tiny_recipe_matches_its_measured_memory() {
        let c = config("tiny.toml");
        let e = MemoryEstimate::of(&c).unwrap();
        // 128 tokens, hidden 128, MLP 512, 4 heads, depth 4: 3.53 M values a block and clip.
        let per_clip = 4.0 * ((14.0 * 128.0 + 6.0 * 512.0) * 128.0 + 4.0 * 4.0 * 128.0 * 128.0);
        assert_eq!(e.dit_activations, 32.0 * per_clip * 4.0);
        // Measured: 454 MB peak for a training step of batch 32 (dit-bench); the estimate
        // must neither miss it nor exceed it by more than half.
        let measured = 454e6;
        let stage2 = BASE_BYTES + e.dit_state + e.dit_activations;
        assert!((measured..1.5 * measured).contains(&stage2), "{stage2}");
        assert!(e.total() < 2e9, "{e}");
    }

    #[test]
    fn a_huge_dit_is_counted_as_huge() {
        let mut c = config("tiny.toml");
        c.model.dit.hidden = 65536;
        c.model.dit.depth = 64;
        let e = MemoryEstimate::of(&c).unwrap();
        // 64 blocks of 12·D² weights each: 3.3 T parameters.
        assert!(e.dit_parameters > 3_000_000_000_000, "{}", e.dit_parameters);
        assert!(e.total() > 1e13);
        assert!(e.to_string().contains("TiB"), "{e}");
    }

    #[test]
    fn a_denoised_decoder_stage_counts_its_set() {
        let c = config("tiny.toml");
        let e = MemoryEstimate::of(&c).unwrap();
        // 1,024 clips of 8 frames: 3·32·32 pixel values and 4·8·8 latent values a frame.
        let set = 1024.0 * 8.0 * (3.0 * 32.0 * 32.0 + 4.0 * 8.0 * 8.0);
        assert_eq!(e.denoised_set, (set + e.dit_parameters as f64) * F32);
        assert!(e.to_string().contains("denoised set"), "{e}");
        // Clips of 256×256 pixels and 64 frames: the frames alone are 1,024·64·3·256² values, 48 GiB.
        let mut big = config("tiny.toml");
        let shapes = big.data.shapes.as_mut().unwrap();
        shapes.size = 256;
        shapes.frames = 64;
        let e = MemoryEstimate::of(&big).unwrap();
        assert!(e.denoised_set > 51e9 && e.total() > e.denoised_set, "{e}");
        let mut without = config("tiny.toml");
        without.stages.pop();
        assert_eq!(MemoryEstimate::of(&without).unwrap().denoised_set, 0.0);
    }

    #[test]
    fn bytes_read_as_units() {
        assert_eq!(human_bytes(512.0), "512.0 B");
        assert_eq!(human_bytes(1536.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(human_count(950.0), "950");
        assert_eq!(human_count(1_420_000.0), "1.4 M");
        assert_eq!(human_count(4.96e12), "5.0 T");
    }
}
