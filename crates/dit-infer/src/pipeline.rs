//! Text → video: tokenize, encode the prompt, denoise a latent from pure
//! noise with guidance, decode it with the frozen decoder, and turn it into
//! 8-bit frames.

use burn::tensor::{Device, Tensor, TensorData};
use dit_data::{Clip, video_to_clips};
use dit_model::frozen_text::FrozenText;
use dit_model::minilm::MiniLmPrompts;
use dit_model::noise::gaussian;
use dit_model::sampler::{SamplerKind, guide};
use dit_model::seed::{Stream, rng_for};
use dit_model::tokenizer::TokenizeError;
use dit_model::{
    Dit, ForwardProcess, PromptInput, RunSpec, Tokenizer, TrainedModel, VideoAutoencoder,
};

/// What generation reads of a trained model, borrowed: training previews pass
/// the EMA DiT they are training without copying it.
#[derive(Debug, Clone, Copy)]
pub struct TextToVideo<'a> {
    /// The run's spec (latent shape, schedule, latent scale).
    pub spec: &'a RunSpec,
    /// The tokenizer of the training captions' words (what a trained text encoder reads).
    pub tokenizer: &'a Tokenizer,
    /// The frozen pretrained text encoder, for a DiT that conditions on one.
    pub frozen_text: Option<&'a MiniLmPrompts>,
    /// The frozen autoencoder (its decoder).
    pub autoencoder: &'a VideoAutoencoder,
    /// The DiT.
    pub dit: &'a Dit,
}

impl<'a> From<&'a TrainedModel> for TextToVideo<'a> {
    fn from(model: &'a TrainedModel) -> Self {
        Self {
            spec: &model.spec,
            tokenizer: &model.tokenizer,
            frozen_text: model.frozen_text.as_ref(),
            autoencoder: &model.autoencoder,
            dit: &model.dit,
        }
    }
}

/// How to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Denoising steps (respaced from the training schedule).
    pub steps: usize,
    /// DDPM or DDIM.
    pub sampler: SamplerKind,
    /// Classifier-free guidance scale (1 = no guidance).
    pub guidance: f64,
    /// Seed of the initial noise and of the stochastic samplers.
    pub seed: u64,
    /// Position of the first prompt in the whole run: prompt `i` of a call starts from the
    /// noise of `(seed, prompt_offset + i)`, so prompts generated in chunks get the noise
    /// they would get in one batch.
    pub prompt_offset: u64,
}

/// Why a clip could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A prompt cannot be tokenized.
    #[error("prompt {index} ({prompt:?})")]
    Prompt {
        /// Position of the prompt in the batch.
        index: usize,
        /// The prompt, shortened.
        prompt: String,
        /// The tokenizer's complaint.
        source: TokenizeError,
    },
    /// The pretrained text encoder failed.
    #[error("the text encoder: {0}")]
    TextEncoder(String),
    /// Sampling settings that cannot work.
    #[error("{0}")]
    Options(String),
}

fn shorten(prompt: &str) -> String {
    if prompt.chars().count() > 60 {
        format!("{}…", prompt.chars().take(60).collect::<String>())
    } else {
        prompt.to_string()
    }
}

impl GenerateOptions {
    /// Checks the settings against the model's forward process (its steps, and the
    /// samplers that can walk it back).
    pub fn validate(&self, process: &ForwardProcess) -> Result<(), GenerateError> {
        process
            .check_sampler(self.sampler)
            .map_err(GenerateError::Options)?;
        let total_steps = process.steps();
        if self.steps == 0 || self.steps > total_steps {
            return Err(GenerateError::Options(format!(
                "--steps must be between 1 and {total_steps} (the model's diffusion steps), got {}",
                self.steps
            )));
        }
        if !(self.guidance.is_finite() && self.guidance >= 0.0) {
            return Err(GenerateError::Options(format!(
                "--cfg must be a finite number ≥ 0, got {}",
                self.guidance
            )));
        }
        if let SamplerKind::Ddim { eta } = self.sampler
            && !(0.0..=1.0).contains(&eta)
        {
            return Err(GenerateError::Options(format!(
                "--eta must be in [0, 1], got {eta}"
            )));
        }
        Ok(())
    }
}

/// Word ids of `prompt` padded to `max_words`, or why it cannot be read; `index` is the
/// prompt's position in its batch, for the message.
pub fn check_prompt(
    tokenizer: &Tokenizer,
    max_words: usize,
    prompt: &str,
    index: usize,
) -> Result<Vec<usize>, GenerateError> {
    tokenizer
        .encode_padded(prompt, max_words)
        .map_err(|source| GenerateError::Prompt {
            index,
            prompt: shorten(prompt),
            source,
        })
}

/// `prompts` as the model's DiT reads them: word ids `[batch, max_words]` for a trained text
/// encoder (unknown words are an error), or the frozen encoder's outputs, which take any
/// text (cut at its longest input: see [`truncated_prompts`]).
pub fn prompt_input(
    model: TextToVideo<'_>,
    prompts: &[String],
    device: &Device,
) -> Result<PromptInput, GenerateError> {
    if let Some(encoder) = model.frozen_text {
        check_prompts(model.spec, model.tokenizer, prompts)?;
        let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let encoded = encoder
            .encode(&texts)
            .map_err(|e| GenerateError::TextEncoder(e.to_string()))?;
        let rows: Vec<_> = encoded.iter().map(Some).collect();
        let width = encoded.first().map_or(0, |p| p.pooled.len());
        return Ok(PromptInput::Frozen(FrozenText::batch(&rows, width, device)));
    }
    let max_words = model.spec.model.dit.text.max_words;
    let mut ids = Vec::with_capacity(prompts.len() * max_words);
    for (index, prompt) in prompts.iter().enumerate() {
        let row = check_prompt(model.tokenizer, max_words, prompt, index)?;
        ids.extend(row.into_iter().map(|i| i as i64));
    }
    Ok(PromptInput::Words(Tensor::from_data(
        TensorData::new(ids, [prompts.len(), max_words]),
        device,
    )))
}

/// Checks that the model can read every one of `prompts`, without encoding them (so that a
/// long prompts file is checked in bounded memory before the first clip is made): a trained
/// encoder's vocabulary and length, or, for a frozen encoder, which reads any text, that each
/// prompt has a word (an empty one is refused as the trained encoder refuses it).
pub fn check_prompts(
    spec: &RunSpec,
    tokenizer: &Tokenizer,
    prompts: &[String],
) -> Result<(), GenerateError> {
    let text = &spec.model.dit.text;
    for (index, prompt) in prompts.iter().enumerate() {
        if text.pretrained.is_none() {
            check_prompt(tokenizer, text.max_words, prompt, index)?;
        } else if Tokenizer::split_words(prompt).is_empty() {
            return Err(GenerateError::Prompt {
                index,
                prompt: shorten(prompt),
                source: TokenizeError::Empty,
            });
        }
    }
    Ok(())
}

/// Indices of the `prompts` the model's frozen text encoder cuts to its longest input (none
/// for a trained encoder, which refuses long prompts instead).
pub fn truncated_prompts(
    model: TextToVideo<'_>,
    prompts: &[String],
) -> Result<Vec<usize>, GenerateError> {
    let Some(encoder) = model.frozen_text else {
        return Ok(Vec::new());
    };
    let mut cut = Vec::new();
    for (index, prompt) in prompts.iter().enumerate() {
        if encoder
            .is_truncated(prompt)
            .map_err(|e| GenerateError::TextEncoder(e.to_string()))?
        {
            cut.push(index);
        }
    }
    Ok(cut)
}

/// Frames of latents in the DiT's (normalised) units `[batch, C, F, h, w]`, through the
/// frozen decoder.
pub fn decode_latent(model: TextToVideo<'_>, latent: Tensor<5>) -> Vec<Clip> {
    let video = model.autoencoder.decode(latent / model.spec.latent_scale); // [B, 3, F, H, W]
    video_to_clips(video)
}

/// One denoising step, as the sampler took it: what the model saw and what it made of it.
pub struct DenoisingStep<'a> {
    /// Steps done, counting this one (1 to `total`).
    pub done: usize,
    /// Steps of the whole run.
    pub total: usize,
    /// The timestep the model read (a diffusion step, or σ·T for a flow).
    pub timestep: f64,
    /// The noisy latent the model saw `[batch, C, F, h, w]` (normalised units).
    pub latent: &'a Tensor<5>,
    /// The clean latent the model's (guided) output implies, x̂₀ `[batch, C, F, h, w]`.
    pub predicted_clean: Tensor<5>,
}

/// Denoising steps a clip is generated with unless told otherwise (`dit-infer --steps`,
/// the studio's default).
pub const DEFAULT_STEPS: usize = 50;

/// Generates one clip per prompt, denoising all prompts as one batch; `on_step` sees
/// each [`DenoisingStep`].
///
/// Prompt `i` starts from noise seeded by `(seed, prompt_offset + i)`, so with a
/// deterministic sampler its clip does not depend on the other prompts of the batch.
pub fn generate(
    model: TextToVideo<'_>,
    prompts: &[String],
    options: &GenerateOptions,
    device: &Device,
    on_step: impl FnMut(&DenoisingStep),
) -> Result<Vec<Clip>, GenerateError> {
    options.validate(&model.spec.diffusion.process())?;
    if prompts.is_empty() {
        return Err(GenerateError::Options("no prompt given".into()));
    }
    let text = prompt_input(model, prompts, device)?;
    let dit_config = &model.spec.model.dit;
    let per_item: Vec<Tensor<5>> = (0..prompts.len())
        .map(|i| {
            let index = options.prompt_offset + i as u64;
            let mut rng = rng_for(options.seed, Stream::InitialNoise, index);
            let shape = [
                1,
                dit_config.latent_channels,
                dit_config.latent_frames,
                dit_config.latent_size,
                dit_config.latent_size,
            ];
            gaussian(&mut rng, shape, device)
        })
        .collect();
    let x_t = Tensor::cat(per_item, 0); // [B, C, F, h, w]
    let latent = denoise(
        model,
        &model.spec.diffusion.process(),
        text,
        x_t,
        0,
        options,
        on_step,
    );
    Ok(decode_latent(model, latent))
}

/// SDEdit (Meng et al. 2022): noises the clean latents `x0` `[B, C, F, h, w]` (normalised
/// units) with `noise` to the noise level of step `start` of the sampling grid of
/// `options.steps` steps, and denoises them from there with the prompts `text` (from
/// [`prompt_input`]). `start = 0` starts at the grid's noisiest step (almost pure
/// noise); `start = options.steps` returns `x0` unchanged. The result keeps what the noise level leaves
/// of `x0` (at low levels: position, shape, colour) and has the model's own errors, as a
/// generated latent has them.
///
/// # Panics
/// If `options` do not [validate](GenerateOptions::validate) or `start > options.steps`.
pub fn sdedit(
    model: TextToVideo<'_>,
    text: PromptInput,
    x0: Tensor<5>,
    noise: Tensor<5>,
    start: usize,
    options: &GenerateOptions,
) -> Tensor<5> {
    let process = model.spec.diffusion.process();
    options.validate(&process).expect("valid sampling options");
    assert!(
        start <= options.steps,
        "start {start} past the {} steps",
        options.steps
    );
    if start == options.steps {
        return x0;
    }
    let x_start = process.noise_at(x0, noise, process.sampling_levels(options.steps)[start]);
    denoise(model, &process, text, x_start, start, options, |_| {})
}

/// Runs the sampler from `x` `[B, C, F, h, w]`, the latent at step `start` of the grid of
/// `options.steps` steps, to a clean latent, guided by the prompts `text`.
fn denoise(
    model: TextToVideo<'_>,
    process: &ForwardProcess,
    text: PromptInput,
    x: Tensor<5>,
    start: usize,
    options: &GenerateOptions,
    mut on_step: impl FnMut(&DenoisingStep),
) -> Tensor<5> {
    let device = x.device();
    let batch = x.dims()[0];
    let guided = options.guidance != 1.0;
    // Conditional and null prompts are denoised in one batch of 2B.
    let text = model
        .dit
        .encode_text(if guided { text.with_null_half() } else { text });
    let mut rng = rng_for(options.seed, Stream::SamplerNoise, options.prompt_offset);

    // The DiT's output at `x` and timestep `t`, guided: ε, v or a flow's velocity.
    let guided_output = |x: Tensor<5>, t: f64| {
        let n = if guided { 2 * batch } else { batch };
        let steps = Tensor::<1>::full([n], t as f32, &device);
        let input = if guided {
            Tensor::cat(vec![x.clone(), x], 0)
        } else {
            x
        };
        let out = model.dit.forward(input, steps, &text);
        // Guidance is affine, so guiding v and converting equals guiding ε.
        if guided {
            let cond = out.clone().narrow(0, 0, batch);
            let uncond = out.narrow(0, batch, batch);
            guide(cond, uncond, options.guidance)
        } else {
            out
        }
    };
    let total = options.steps - start;
    let mut done = 0;
    process.sample(
        options.sampler,
        options.steps,
        start,
        x,
        &mut rng,
        guided_output,
        |timestep, latent, predicted_clean| {
            done += 1;
            on_step(&DenoisingStep {
                done,
                total,
                timestep,
                latent,
                predicted_clean,
            });
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dit_data::{
        CaptionMode, Composition, MovingShapes, MovingShapesConfig, clip_to_tensor_data, judge_clip,
    };
    use dit_model::Prediction;

    #[test]
    fn sdedit_keeps_the_clip_and_redraws_more_from_more_noise() {
        let device = Device::default();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checkpoints/tiny");
        let model = TrainedModel::load(&dir, &device).unwrap();
        let (f, s) = (model.spec.frames, model.spec.size);
        let shapes = MovingShapesConfig::new().with_frames(f).with_size(s);
        let composition = Composition::all()[5];
        let item = MovingShapes::clip_for(&shapes, composition, 3, 0, CaptionMode::Canonical);
        let video = Tensor::<5>::from_data(
            TensorData::new(clip_to_tensor_data(&item.clip), [1, 3, f, s, s]),
            &device,
        );
        let x0 = model.autoencoder.encode(video).mean * model.spec.latent_scale;
        let noise = gaussian(&mut rng_for(0, Stream::InitialNoise, 0), x0.dims(), &device);
        let text = prompt_input(
            (&model).into(),
            std::slice::from_ref(&item.caption),
            &device,
        )
        .unwrap();
        let options = GenerateOptions {
            steps: 50,
            sampler: SamplerKind::Ddim { eta: 0.0 },
            guidance: 3.0,
            seed: 0,
            prompt_offset: 0,
        };
        let redraw = |start| {
            sdedit(
                (&model).into(),
                text.clone(),
                x0.clone(),
                noise.clone(),
                start,
                &options,
            )
        };
        // The last grid position is the clean latent itself.
        assert_eq!(redraw(50).into_data(), x0.to_data());
        let variance: f32 = x0.clone().var(1).mean().into_scalar();
        let change = |start| {
            let out = redraw(start);
            let clip = decode_latent((&model).into(), out.clone()).remove(0);
            let mse: f32 = (out - x0.clone()).powi_scalar(2).mean().into_scalar();
            (
                mse / variance,
                judge_clip(&clip).matches(&composition).all(),
            )
        };
        // Grid position 46 is diffusion step 61, 40 is step 183.
        let process = model.spec.diffusion.process();
        let levels = process.sampling_levels(50);
        assert_eq!(process.timestep(levels[46]), 61.0);
        assert_eq!(process.timestep(levels[40]), 183.0);
        let (low, low_right) = change(46);
        let (high, high_right) = change(40);
        eprintln!("relative change from step 61: {low}, from step 183: {high}");
        assert!(low_right && high_right, "the clip's composition is kept");
        assert!(
            low > 0.0 && low < high && high < 0.2,
            "relative change {low} < {high}"
        );
    }

    #[test]
    fn a_flow_is_sampled_with_euler_only_and_euler_samples_only_flows() {
        let options = |sampler| GenerateOptions {
            steps: 10,
            sampler,
            guidance: 3.0,
            seed: 0,
            prompt_offset: 0,
        };
        let process = |prediction| {
            dit_model::DiffusionConfig::new()
                .with_prediction(prediction)
                .process()
        };
        let flow = process(Prediction::Flow);
        let err = options(SamplerKind::Ddim { eta: 0.0 })
            .validate(&flow)
            .unwrap_err();
        assert!(err.to_string().contains("--sampler euler"), "{err}");
        assert!(options(SamplerKind::Ddpm).validate(&flow).is_err());
        options(SamplerKind::Euler).validate(&flow).unwrap();
        for prediction in [Prediction::Velocity, Prediction::Epsilon] {
            let err = options(SamplerKind::Euler)
                .validate(&process(prediction))
                .unwrap_err();
            assert!(err.to_string().contains("--sampler ddim or ddpm"), "{err}");
            options(SamplerKind::Ddpm)
                .validate(&process(prediction))
                .unwrap();
        }
    }
}
