//! Stage 2's objective: one step's random draws, and the (min-SNR-weighted) MSE
//! between the DiT's output and its ε, v or flow-velocity target.
//!
//! Every random draw of step `s` (clip indices, diffusion steps, caption
//! dropout, noise) comes from the generator of `(seed, s)`, so a run resumed
//! from a checkpoint replays exactly the steps of an uninterrupted one.

use burn::tensor::{Device, Int, Tensor, TensorData};
use dit_model::flow;
use dit_model::frozen_text::{EncodedPrompt, FrozenText};
use dit_model::noise::gaussian;
use dit_model::seed::{Stream, rng_for};
use dit_model::{Dit, NoiseSchedule, Prediction, PromptInput};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::latent_cache::LatentCache;

/// One step's random draws, a pure function of `(seed, step)`.
pub struct StepDraws {
    /// Cached clip per batch element.
    pub clips: Vec<usize>,
    /// Diffusion step per batch element.
    pub timesteps: Vec<usize>,
    /// Whether the caption is replaced by the null prompt.
    pub dropped: Vec<bool>,
    /// The generator, positioned after the draws above (for the noise).
    pub rng: ChaCha8Rng,
}

impl StepDraws {
    /// Draws for `step`.
    pub fn new(
        seed: u64,
        step: usize,
        batch: usize,
        clips: usize,
        steps: usize,
        dropout: f64,
    ) -> Self {
        let mut rng = rng_for(seed, Stream::DitStep, step as u64);
        let clips = (0..batch).map(|_| rng.random_range(0..clips)).collect();
        let timesteps = (0..batch).map(|_| rng.random_range(0..steps)).collect();
        let dropped = (0..batch).map(|_| rng.random_bool(dropout)).collect();
        Self {
            clips,
            timesteps,
            dropped,
            rng,
        }
    }
}

/// Min-SNR-γ loss weight per diffusion step for `prediction` (1 when γ = 0).
pub(crate) fn loss_weights(
    schedule: &NoiseSchedule,
    prediction: Prediction,
    timesteps: &[usize],
    gamma: f64,
) -> Vec<f32> {
    timesteps
        .iter()
        .map(|&t| prediction.loss_weight(schedule.snr(t), gamma) as f32)
        .collect()
}

/// The min-SNR-weighted MSE between the DiT's output and the `prediction` target
/// (ε or v at the drawn diffusion steps; for a flow, the velocity at σ drawn
/// logit-normally, unweighted) of one batch.
pub fn diffusion_loss(
    dit: &Dit,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    cache: &LatentCache,
    draws: &mut StepDraws,
    gamma: f64,
    device: &Device,
) -> Tensor<1> {
    let batch = draws.clips.len();
    let [_, c, f, h, w] = cache.latents.dims();
    let index: Vec<i64> = draws.clips.iter().map(|&i| i as i64).collect();
    let x0 = cache.latents.clone().select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(index, [batch]), device),
    );
    let prompts = match &cache.frozen {
        // A dropped caption is the null prompt: a row without tokens.
        Some(frozen) => {
            let rows: Vec<Option<&EncodedPrompt>> = draws
                .clips
                .iter()
                .zip(&draws.dropped)
                .map(|(&i, &drop)| (!drop).then(|| &frozen.prompts[frozen.index[i]]))
                .collect();
            PromptInput::Frozen(FrozenText::batch(&rows, frozen.width, device))
        }
        None => {
            let words = cache.tokens[0].len();
            let ids: Vec<i64> = draws
                .clips
                .iter()
                .zip(&draws.dropped)
                .flat_map(|(&i, &drop)| {
                    cache.tokens[i]
                        .iter()
                        .map(move |&id| if drop { 0 } else { id as i64 })
                })
                .collect();
            PromptInput::Words(Tensor::<2, Int>::from_data(
                TensorData::new(ids, [batch, words]),
                device,
            ))
        }
    };
    // A flow draws its σ from the step's generator too, before the noise.
    let sigmas: Option<Vec<f64>> = (prediction == Prediction::Flow).then(|| {
        (0..batch)
            .map(|_| flow::logit_normal(&mut draws.rng))
            .collect()
    });
    let noise = gaussian(&mut draws.rng, [batch, c, f, h, w], device);
    let (x_t, t): (Tensor<5>, Vec<f32>) = match &sigmas {
        Some(sigmas) => (
            flow::interpolate(x0.clone(), noise.clone(), sigmas),
            sigmas
                .iter()
                .map(|&s| flow::timestep(s, schedule.len()) as f32)
                .collect(),
        ),
        None => (
            schedule.q_sample(x0.clone(), noise.clone(), &draws.timesteps),
            draws.timesteps.iter().map(|&t| t as f32).collect(),
        ),
    };
    let target = prediction.target(schedule, x0, noise, &draws.timesteps);
    let t = Tensor::<1>::from_data(TensorData::new(t, [batch]), device);
    let text = dit.encode_text(prompts);
    let predicted = dit.forward(x_t, t, &text);
    let per_sample = (predicted - target)
        .powi_scalar(2)
        .reshape([batch, c * f * h * w])
        .mean_dim(1)
        .reshape([batch]);
    let weights = Tensor::<1>::from_data(
        TensorData::new(
            loss_weights(schedule, prediction, &draws.timesteps, gamma),
            [batch],
        ),
        device,
    );
    (per_sample * weights).mean()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_snr_weights() {
        let s = NoiseSchedule::linear(1000, 1e-4, 0.02);
        let w = loss_weights(&s, Prediction::Epsilon, &[0, 500, 999], 5.0);
        // Early steps have SNR ≫ 5 and are down-weighted; late ones keep weight 1.
        assert!((w[0] as f64 - 5.0 / s.snr(0)).abs() < 1e-6);
        assert_eq!(w[2], 1.0);
        let v = loss_weights(&s, Prediction::Velocity, &[0, 999], 5.0);
        assert!((v[0] as f64 - 5.0 / (s.snr(0) + 1.0)).abs() < 1e-6);
        assert!((v[1] as f64 - s.snr(999) / (s.snr(999) + 1.0)).abs() < 1e-6);
        assert_eq!(
            loss_weights(&s, Prediction::Epsilon, &[0, 999], 0.0),
            vec![1.0, 1.0]
        );
    }

    #[test]
    fn step_draws_are_a_function_of_seed_and_step() {
        let a = StepDraws::new(3, 10, 8, 100, 1000, 0.1);
        let b = StepDraws::new(3, 10, 8, 100, 1000, 0.1);
        let c = StepDraws::new(3, 11, 8, 100, 1000, 0.1);
        assert_eq!(
            (a.clips.clone(), a.timesteps.clone(), a.dropped.clone()),
            (b.clips, b.timesteps, b.dropped)
        );
        assert_ne!(a.timesteps, c.timesteps);
    }
}
