//! Stage 2's objective: one step's random draws, and the (min-SNR-weighted) MSE
//! between the DiT's output and its ε, v or flow-velocity target.
//!
//! Every random draw of step `s` (clip indices, noise levels, caption
//! dropout, noise) comes from the generator of `(seed, s)`, so a run resumed
//! from a checkpoint replays exactly the steps of an uninterrupted one.

use burn::tensor::{Device, Int, Tensor, TensorData};
use dit_model::frozen_text::{EncodedPrompt, FrozenText};
use dit_model::noise::gaussian;
use dit_model::seed::{Stream, rng_for};
use dit_model::{Dit, ForwardProcess, NoiseLevel, PromptInput};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::latent_cache::LatentCache;

/// One step's random draws, a pure function of `(seed, step)`.
pub struct StepDraws {
    /// Cached clip per batch element.
    pub clips: Vec<usize>,
    /// Noise level per batch element ([`ForwardProcess::draw_level`]).
    pub levels: Vec<NoiseLevel>,
    /// Whether the caption is replaced by the null prompt.
    pub dropped: Vec<bool>,
    /// The generator, positioned after the draws above (for the noise).
    pub rng: ChaCha8Rng,
}

impl StepDraws {
    /// Draws for `step` of training on `clips` cached clips with `process`, the noise
    /// levels drawn uniformly.
    pub fn new(
        seed: u64,
        step: usize,
        batch: usize,
        clips: usize,
        process: &ForwardProcess,
        dropout: f64,
    ) -> Self {
        Self::shifted(seed, step, batch, clips, process, dropout, 1.0)
    }

    /// As [`Self::new`], the noise levels drawn with a timestep shift
    /// ([`ForwardProcess::draw_level_shifted`]).
    pub fn shifted(
        seed: u64,
        step: usize,
        batch: usize,
        clips: usize,
        process: &ForwardProcess,
        dropout: f64,
        level_shift: f64,
    ) -> Self {
        let mut rng = rng_for(seed, Stream::DitStep, step as u64);
        let clips = (0..batch).map(|_| rng.random_range(0..clips)).collect();
        let levels = (0..batch)
            .map(|_| process.draw_level_shifted(&mut rng, level_shift))
            .collect();
        let dropped = (0..batch).map(|_| rng.random_bool(dropout)).collect();
        Self {
            clips,
            levels,
            dropped,
            rng,
        }
    }
}

/// One step's batch as the DiT reads it: noised latents, targets, diffusion steps,
/// loss weights and prompts, built from the step's draws. A data-parallel step
/// [`split`](Self::split)s it into contiguous shares, so that every sample's draws
/// depend on its index in the whole batch and not on how many devices share it.
pub struct StepBatch<'a> {
    /// Noised latents `[B, C, F, h, w]`.
    x_t: Tensor<5>,
    /// The objective's target, shaped as `x_t`.
    target: Tensor<5>,
    /// Diffusion step (or flow time) per sample, as the DiT embeds it.
    t: Vec<f32>,
    /// Min-SNR loss weight per sample.
    weights: Vec<f32>,
    /// Prompts per sample (host-side; a dropped caption is the null prompt).
    prompts: BatchPrompts<'a>,
}

/// A batch's prompts before they become tensors on a replica's device.
#[derive(Clone)]
enum BatchPrompts<'a> {
    /// Word ids, `words` per sample (all 0 for a dropped caption).
    Words { ids: Vec<i64>, words: usize },
    /// Frozen-encoder outputs (`None`: the null prompt), `width` wide.
    Frozen {
        rows: Vec<Option<&'a EncodedPrompt>>,
        width: usize,
    },
}

impl<'a> StepBatch<'a> {
    /// The batch of `draws`: latents from `cache` (on `device`), noised by `process` at
    /// the drawn levels with noise from the step's generator. Training builds it on the
    /// device without autodiff, so that no replica's graph shares a node with another's;
    /// [`Self::loss`] moves it.
    pub fn new(
        process: &ForwardProcess,
        cache: &'a LatentCache,
        draws: &mut StepDraws,
        gamma: f64,
        device: &Device,
    ) -> Self {
        let batch = draws.clips.len();
        let [_, c, f, h, w] = cache.latents.dims();
        let index: Vec<i64> = draws.clips.iter().map(|&i| i as i64).collect();
        let x0 = cache.latents.clone().select(
            0,
            Tensor::<1, Int>::from_data(TensorData::new(index, [batch]), device),
        );
        let prompts = match &cache.frozen {
            Some(frozen) => BatchPrompts::Frozen {
                rows: draws
                    .clips
                    .iter()
                    .zip(&draws.dropped)
                    .map(|(&i, &drop)| (!drop).then(|| &frozen.prompts[frozen.index[i]]))
                    .collect(),
                width: frozen.width,
            },
            None => BatchPrompts::Words {
                ids: draws
                    .clips
                    .iter()
                    .zip(&draws.dropped)
                    .flat_map(|(&i, &drop)| {
                        cache.tokens[i]
                            .iter()
                            .map(move |&id| if drop { 0 } else { id as i64 })
                    })
                    .collect(),
                words: cache.tokens[0].len(),
            },
        };
        let noise = gaussian(&mut draws.rng, [batch, c, f, h, w], device);
        let levels = &draws.levels;
        Self {
            x_t: process.noise(x0.clone(), noise.clone(), levels),
            target: process.target(x0, noise, levels),
            t: levels.iter().map(|&l| process.timestep(l) as f32).collect(),
            weights: levels
                .iter()
                .map(|&l| process.loss_weight(l, gamma) as f32)
                .collect(),
            prompts,
        }
    }

    /// Samples in the batch.
    pub fn len(&self) -> usize {
        self.t.len()
    }

    /// Whether the batch has no sample.
    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }

    /// The batch cut into `parts` contiguous shares of equal size, in order.
    ///
    /// # Panics
    /// If `parts` does not divide the batch ([`crate::data_parallel::Replicas::gradients`]
    /// refuses such a batch before splitting it).
    pub fn split(&self, parts: usize) -> Vec<StepBatch<'a>> {
        let batch = self.len();
        assert!(
            parts > 0 && batch.is_multiple_of(parts),
            "a batch of {batch} does not split into {parts} equal shares"
        );
        let share = batch / parts;
        (0..parts)
            .map(|part| {
                let samples = part * share..(part + 1) * share;
                let prompts = match &self.prompts {
                    BatchPrompts::Words { ids, words } => BatchPrompts::Words {
                        ids: ids[samples.start * words..samples.end * words].to_vec(),
                        words: *words,
                    },
                    BatchPrompts::Frozen { rows, width } => BatchPrompts::Frozen {
                        rows: rows[samples.clone()].to_vec(),
                        width: *width,
                    },
                };
                StepBatch {
                    x_t: self.x_t.clone().narrow(0, samples.start, share),
                    target: self.target.clone().narrow(0, samples.start, share),
                    t: self.t[samples.clone()].to_vec(),
                    weights: self.weights[samples].to_vec(),
                    prompts,
                }
            })
            .collect()
    }

    /// The min-SNR-weighted MSE between `dit`'s output and the target, averaged over
    /// this batch, computed on `device` (where `dit` lives).
    pub fn loss(&self, dit: &Dit, device: &Device) -> Tensor<1> {
        let batch = self.len();
        let [_, c, f, h, w] = self.x_t.dims();
        let prompts = match &self.prompts {
            BatchPrompts::Frozen { rows, width } => {
                PromptInput::Frozen(FrozenText::batch(rows, *width, device))
            }
            BatchPrompts::Words { ids, words } => PromptInput::Words(Tensor::<2, Int>::from_data(
                TensorData::new(ids.clone(), [batch, *words]),
                device,
            )),
        };
        let target = self.target.clone().to_device(device);
        let t = Tensor::<1>::from_data(TensorData::new(self.t.clone(), [batch]), device);
        let text = dit.encode_text(prompts);
        let predicted = dit.forward(self.x_t.clone().to_device(device), t, &text);
        let per_sample = (predicted - target)
            .powi_scalar(2)
            .reshape([batch, c * f * h * w])
            .mean_dim(1)
            .reshape([batch]);
        let weights =
            Tensor::<1>::from_data(TensorData::new(self.weights.clone(), [batch]), device);
        (per_sample * weights).mean()
    }
}

/// The min-SNR-weighted MSE between the DiT's output and `process`'s target (ε, v or a
/// flow's velocity at the drawn levels) of one batch, on one device.
pub fn diffusion_loss(
    dit: &Dit,
    process: &ForwardProcess,
    cache: &LatentCache,
    draws: &mut StepDraws,
    gamma: f64,
    device: &Device,
) -> Tensor<1> {
    StepBatch::new(process, cache, draws, gamma, device).loss(dit, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_draws_are_a_function_of_seed_and_step() {
        let process = dit_model::DiffusionConfig::new().process();
        let a = StepDraws::new(3, 10, 8, 100, &process, 0.1);
        let b = StepDraws::new(3, 10, 8, 100, &process, 0.1);
        let c = StepDraws::new(3, 11, 8, 100, &process, 0.1);
        assert_eq!(
            (a.clips.clone(), a.levels.clone(), a.dropped.clone()),
            (b.clips, b.levels, b.dropped)
        );
        assert_ne!(a.levels, c.levels);
    }
}
