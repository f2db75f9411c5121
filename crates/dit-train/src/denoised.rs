//! The DiT's own latents, for a decoder stage: fresh training clips, encoded, noised to a
//! low noise level and denoised back by the trained DiT (SDEdit, Meng et al. 2022), each
//! paired with the clip it came from.
//!
//! A decoder fine-tuned on latents with white noise learns to tolerate errors in general;
//! the latents the DiT generates have errors of their own shape (a square's corner drawn a
//! little round, an edge a little ragged). From a low noise level the DiT redraws those
//! details and keeps what the clip shows (position, shape, colour), so the pair (denoised
//! latent, original frame) teaches the decoder to turn the DiT's errors into clean shapes.

use anyhow::Result;
use burn::tensor::{Device, Int, Tensor, TensorData};
use dit_data::{VideoBatcher, VideoItem};
use dit_infer::pipeline::{DEFAULT_STEPS, GenerateOptions, prompt_input, sdedit};
use dit_model::TrainedModel;
use dit_model::noise::gaussian;
use dit_model::seed::{Stream, rng_for};
use rand::Rng;

use crate::config::ExperimentConfig;
use crate::data::ClipSource;

/// Clips denoised together: they share one start step.
const BATCH: usize = 32;

/// Clips a decoder stage denoises: a quarter of the DiT's `train_clips`, at least one.
pub fn clip_count(train_clips: usize) -> usize {
    (train_clips / 4).max(1)
}

/// Frames of DiT-denoised latents and the frames they came from.
pub struct DenoisedFrames {
    /// The denoised latents, one frame each, in the encoder's units: `[n, C, 1, h, w]`.
    pub latents: Tensor<5>,
    /// The original frames in `[-1, 1]`: `[n, 3, 1, H, W]`.
    pub frames: Tensor<5>,
}

impl DenoisedFrames {
    /// Denoises [`clip_count`] training clips (1,024 for `tiny`) that the DiT of `run_dir`
    /// was not trained on (for Moving Shapes: the clips after its `train_clips`), with their
    /// captions; each batch starts from a step of the sampling grid of [`DEFAULT_STEPS`]
    /// steps drawn uniformly among those at or below diffusion step `denoised_from` (the
    /// clean latent included), with the config's guidance, as `dit-infer` samples.
    pub fn build(
        config: &ExperimentConfig,
        source: &ClipSource,
        run_dir: &std::path::Path,
        denoised_from: usize,
        device: &Device,
    ) -> Result<Self> {
        let model = TrainedModel::load(run_dir, device)?;
        let spec = &model.spec;
        let process = spec.diffusion.process();
        let options = GenerateOptions {
            steps: DEFAULT_STEPS,
            sampler: process.default_sampler(),
            guidance: config.guidance,
            seed: config.seed,
            prompt_offset: 0,
        };
        // Grid positions 0..=steps; position `steps` is the clean latent.
        let levels = process.sampling_levels(DEFAULT_STEPS);
        let starts: Vec<usize> = (0..=DEFAULT_STEPS)
            .filter(|&i| i == DEFAULT_STEPS || process.timestep(levels[i]) <= denoised_from as f64)
            .collect();
        let batcher = VideoBatcher::new(source.tokenizer(), config.model.dit.text.max_words);
        let (mut latents, mut frames) = (Vec::new(), Vec::new());
        let train_clips = config.dit_training.train_clips;
        let count = clip_count(train_clips);
        for (number, first) in (0..count).step_by(BATCH).enumerate() {
            let items: Vec<VideoItem> = (first..(first + BATCH).min(count))
                .map(|i| source.train_item(train_clips + i, config.seed))
                .collect();
            let batch = batcher.try_batch(items, device)?;
            let x0 = model.autoencoder.encode(batch.videos.clone()).mean * spec.latent_scale;
            let mut rng = rng_for(config.seed, Stream::DecoderDenoising, number as u64);
            let start = starts[rng.random_range(0..starts.len())];
            let noise = gaussian(&mut rng, x0.dims(), device);
            let text = prompt_input((&model).into(), &batch.captions, device)?;
            let denoised = sdedit((&model).into(), text, x0, noise, start, &options);
            latents.push(frames_of(denoised / spec.latent_scale));
            frames.push(frames_of(batch.videos));
        }
        Ok(Self {
            latents: Tensor::cat(latents, 0),
            frames: Tensor::cat(frames, 0),
        })
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.dims()[0]
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The set on another device (the training device).
    pub fn into_device(self, device: &Device) -> Self {
        Self {
            latents: Tensor::from_data(self.latents.into_data(), device),
            frames: Tensor::from_data(self.frames.into_data(), device),
        }
    }

    /// Latents and frames `indices`: `([b, C, 1, h, w], [b, 3, 1, H, W])`.
    pub fn select(&self, indices: &[usize]) -> (Tensor<5>, Tensor<5>) {
        let device = self.frames.device();
        let ids: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [indices.len()]), &device);
        (
            self.latents.clone().select(0, ids.clone()),
            self.frames.clone().select(0, ids),
        )
    }
}

/// `[B, C, F, h, w]` → `[B·F, C, 1, h, w]`: every frame on its own.
fn frames_of(video: Tensor<5>) -> Tensor<5> {
    let [b, c, f, h, w] = video.dims();
    video
        .swap_dims(1, 2)
        .reshape([b * f, 1, c, h, w])
        .swap_dims(1, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_keeps_every_frame_in_order() {
        let device = Device::default();
        // Value = 100·b + 10·f + c at every pixel.
        let values: Vec<f32> = (0..2)
            .flat_map(|b| {
                (0..3).flat_map(move |c| {
                    (0..4).flat_map(move |f| {
                        std::iter::repeat_n((100 * b + 10 * f + c) as f32, 2 * 2)
                    })
                })
            })
            .collect();
        let video = Tensor::<5>::from_data(TensorData::new(values, [2, 3, 4, 2, 2]), &device);
        let frames = frames_of(video);
        assert_eq!(frames.dims(), [8, 3, 1, 2, 2]);
        let data: Vec<f32> = frames.into_data().convert::<f32>().try_into_vec().unwrap();
        for (i, chunk) in data.chunks(3 * 2 * 2).enumerate() {
            let (b, f) = (i / 4, i % 4);
            for c in 0..3 {
                let expected = (100 * b + 10 * f + c) as f32;
                assert!(chunk[c * 4..(c + 1) * 4].iter().all(|&v| v == expected));
            }
        }
    }
}
