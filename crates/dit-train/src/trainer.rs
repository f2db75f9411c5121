//! Stage 2: the DiT, trained on latents of the frozen autoencoder.
//!
//! A custom loop on Burn's optimiser API rather than burn-train's `Learner`:
//! the autoencoder must stay outside the optimiser, latents are encoded once
//! and cached, and an EMA copy of the weights is kept for sampling.
//!
//! Every random draw of step `s` (clip indices, diffusion steps, caption
//! dropout, noise) comes from a generator seeded by `(seed, s)`, so a run
//! resumed from a checkpoint replays exactly the steps of an uninterrupted one.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, OptimizerRecord};
use burn::tensor::{Device, Int, Tensor, TensorData};
use dit_data::VideoBatcher;
use dit_data::moving_shapes::splitmix64;
use dit_infer::output::{write_png, write_sheet};
use dit_infer::pipeline::{GenerateOptions, generate};
use dit_infer::run::{
    DIT_FILE, RunSpec, TrainedModel, load_module, save_module, write_atomic, write_spec,
};
use dit_infer::sampler::SamplerKind;
use dit_model::noise::gaussian;
use dit_model::{Dit, DitConfig, NoiseSchedule, Prediction, VideoAutoencoder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::autoencoder::{cosine_lr, load_frozen};
use crate::config::ExperimentConfig;
use crate::data::ClipSource;
use crate::ema;
use crate::progress::{LossLog, Progress, plot_loss};

/// Folder of training checkpoints inside the run folder.
pub const TRAIN_DIR: &str = "train";
/// File naming the newest complete checkpoint.
pub const LATEST_FILE: &str = "latest";
/// Checkpoints kept on disk.
const KEEP_CHECKPOINTS: usize = 2;

/// Training state stored with the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Steps completed.
    pub step: usize,
    /// The run's seed (the per-step generators derive from it).
    pub seed: u64,
    /// Training seconds so far.
    pub seconds: f64,
}

/// Learning rate at `step`: linear warm-up, then constant or cosine decay.
pub fn learning_rate(config: &ExperimentConfig, step: usize) -> f64 {
    let d = &config.dit_training;
    if step < d.warmup_steps {
        return d.learning_rate * (step + 1) as f64 / d.warmup_steps as f64;
    }
    if d.cosine_decay {
        cosine_lr(
            d.learning_rate,
            step - d.warmup_steps,
            d.steps.saturating_sub(d.warmup_steps),
        )
    } else {
        d.learning_rate
    }
}

/// Latents and word ids of the fixed training set, encoded once.
pub struct LatentCache {
    /// Scaled latents `[clips, C, F, h, w]` on the training device.
    pub latents: Tensor<5>,
    /// Word ids, one padded row per clip.
    pub tokens: Vec<Vec<usize>>,
}

impl LatentCache {
    /// Encodes `count` training clips with the frozen autoencoder on `device`.
    pub fn encode(
        source: &ClipSource,
        batcher: &VideoBatcher,
        ae: &VideoAutoencoder,
        scale: f64,
        count: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut latents = Vec::new();
        let mut tokens = Vec::with_capacity(count);
        for start in (0..count).step_by(64) {
            let items: Vec<_> = (start..(start + 64).min(count))
                .map(|i| source.train_item(i, seed))
                .collect();
            for item in &items {
                tokens.push(batcher.tokenize(&item.caption)?);
            }
            let video = batcher.try_batch(items, device)?.videos;
            latents.push(ae.encode(video).mean * scale);
        }
        Ok(Self {
            latents: Tensor::cat(latents, 0),
            tokens,
        })
    }

    /// The cache on another device (the training device).
    pub fn to_device(self, device: &Device) -> Self {
        Self {
            latents: Tensor::from_data(self.latents.into_data(), device),
            tokens: self.tokens,
        }
    }

    /// Number of cached clips.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

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
        let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ splitmix64(step as u64 + 0xD17)));
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
pub fn loss_weights(
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
/// (ε or v) of one batch.
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
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, words]), device);
    let noise = gaussian(&mut draws.rng, [batch, c, f, h, w], device);
    let x_t = schedule.q_sample(x0.clone(), noise.clone(), &draws.timesteps);
    let target = prediction.target(schedule, x0, noise, &draws.timesteps);
    let t: Vec<f32> = draws.timesteps.iter().map(|&t| t as f32).collect();
    let t = Tensor::<1>::from_data(TensorData::new(t, [batch]), device);
    let text = dit.encode_text(tokens);
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

/// The optimiser of the recipe: AdamW with optional clipping by global norm.
pub fn optimizer(config: &ExperimentConfig) -> ModuleOptimizer {
    let d = &config.dit_training;
    let clip = (d.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(d.grad_clip as f32));
    AdamWConfig::new()
        .with_weight_decay(d.weight_decay as f32)
        .with_grad_clipping(clip)
        .init()
}

/// A checkpoint being saved or restored.
pub struct Checkpoint {
    /// The DiT being trained.
    pub dit: Dit,
    /// Its EMA copy.
    pub ema: Dit,
    /// Optimiser state.
    pub optim: ModuleOptimizer,
    /// Step, seed, time.
    pub state: TrainState,
}

fn step_dir_name(step: usize) -> String {
    format!("step-{step:07}")
}

/// Writes a checkpoint atomically: into a temporary folder renamed when
/// complete, then `latest` is replaced by a renamed file. A crash at any point
/// leaves the previous checkpoint as `latest`.
pub fn save_checkpoint(run_dir: &Path, ckpt: &Checkpoint) -> Result<PathBuf> {
    let train_dir = run_dir.join(TRAIN_DIR);
    fs::create_dir_all(&train_dir)?;
    let name = step_dir_name(ckpt.state.step);
    let tmp = train_dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    save_module(&ckpt.dit, &tmp.join("dit.bpk"))?;
    save_module(&ckpt.ema, &tmp.join("ema.bpk"))?;
    ckpt.optim
        .save(tmp.join("optim.bpk"))
        .map_err(|e| anyhow::anyhow!("saving optimiser state: {e}"))?;
    write_atomic(
        &tmp.join("state.json"),
        serde_json::to_string_pretty(&ckpt.state)?.as_bytes(),
    )?;
    let done = train_dir.join(&name);
    let _ = fs::remove_dir_all(&done);
    fs::rename(&tmp, &done)?;
    fs::File::open(&train_dir).and_then(|d| d.sync_all()).ok();
    write_atomic(&train_dir.join(LATEST_FILE), name.as_bytes())?;
    // Keep the newest checkpoints only.
    let mut old: Vec<PathBuf> = fs::read_dir(&train_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
                && *p != done
        })
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(KEEP_CHECKPOINTS - 1);
    for path in old.into_iter().take(excess) {
        let _ = fs::remove_dir_all(path);
    }
    Ok(done)
}

/// Loads the newest complete checkpoint of a run folder, if any; `dit_config`
/// is the run's DiT config with its vocabulary size resolved.
pub fn load_checkpoint(
    run_dir: &Path,
    config: &ExperimentConfig,
    dit_config: &DitConfig,
    train_device: &Device,
) -> Result<Option<Checkpoint>> {
    let train_dir = run_dir.join(TRAIN_DIR);
    let latest = match fs::read_to_string(train_dir.join(LATEST_FILE)) {
        Ok(name) => train_dir.join(name.trim()),
        Err(_) => return Ok(None),
    };
    let state: TrainState = serde_json::from_str(
        &fs::read_to_string(latest.join("state.json"))
            .with_context(|| format!("{} has no state.json", latest.display()))?,
    )
    .with_context(|| format!("{}/state.json is corrupt", latest.display()))?;
    if state.seed != config.seed {
        bail!(
            "checkpoint {} was trained with seed {}, the config says {}",
            latest.display(),
            state.seed,
            config.seed
        );
    }
    let dit = load_module(dit_config.init(train_device)?, &latest.join("dit.bpk"))?;
    let ema = load_module(
        dit_config.init(&train_device.clone().inner())?,
        &latest.join("ema.bpk"),
    )?;
    let record = OptimizerRecord::load(latest.join("optim.bpk"))
        .map_err(|e| anyhow::anyhow!("{}/optim.bpk: {e}", latest.display()))?;
    let optim = optimizer(config).load_record(record);
    Ok(Some(Checkpoint {
        dit,
        ema,
        optim,
        state,
    }))
}

/// The run folder's model spec.
pub fn run_spec(config: &ExperimentConfig, vocab_size: usize, latent_scale: f64) -> RunSpec {
    let mut model = config.model.clone();
    model.dit.text.vocab_size = vocab_size;
    let shapes = &config.data.shapes;
    RunSpec::new(
        model,
        config.diffusion.clone(),
        shapes.frames,
        shapes.size,
        latent_scale,
    )
    .with_guidance(config.guidance)
}

/// What stage 2 did.
#[derive(Debug, Clone)]
pub struct DitReport {
    /// Steps completed.
    pub steps: usize,
    /// Mean loss of the last logged window.
    pub final_loss: f64,
    /// Training seconds (including earlier runs when resumed).
    pub seconds: f64,
}

/// Trains the DiT; resumes from the run folder's newest checkpoint when `resume` is set.
pub fn train(
    config: &ExperimentConfig,
    source: &ClipSource,
    run_dir: &Path,
    device: &Device,
    resume: bool,
) -> Result<DitReport> {
    let d = &config.dit_training;
    let train_device = device.clone().autodiff();
    let tokenizer = source.tokenizer();
    if config.model.dit.text.vocab_size != 0
        && config.model.dit.text.vocab_size != tokenizer.num_ids()
    {
        bail!(
            "model.dit.text.vocab_size is {}, but the data's vocabulary has {} ids (set it to 0 to take it from the data)",
            config.model.dit.text.vocab_size,
            tokenizer.num_ids()
        );
    }
    let (ae, ae_report) = load_frozen(config, run_dir, device)?;
    let spec = run_spec(config, tokenizer.num_ids(), ae_report.latent_scale);
    write_spec(run_dir, &spec, &tokenizer)?;

    let batcher = VideoBatcher::new(tokenizer.clone(), config.model.dit.text.max_words);
    let encode_start = std::time::Instant::now();
    let cache = LatentCache::encode(
        source,
        &batcher,
        &ae,
        ae_report.latent_scale,
        d.train_clips,
        config.seed,
        device,
    )?
    .to_device(&train_device);
    eprintln!(
        "encoded {} training clips into latents in {:.1} s",
        cache.len(),
        encode_start.elapsed().as_secs_f64()
    );

    let loaded = if resume {
        load_checkpoint(run_dir, config, &spec.model.dit, &train_device)?
    } else {
        None
    };
    let mut ckpt = match loaded {
        Some(ckpt) => {
            eprintln!("resuming from step {}", ckpt.state.step);
            ckpt
        }
        None => {
            if resume {
                eprintln!(
                    "no checkpoint in {}: starting from step 0",
                    run_dir.join(TRAIN_DIR).display()
                );
            }
            train_device.seed(config.seed);
            let dit = spec.model.dit.init(&train_device)?;
            let ema = dit.valid();
            Checkpoint {
                dit,
                ema,
                optim: optimizer(config),
                state: TrainState {
                    step: 0,
                    seed: config.seed,
                    seconds: 0.0,
                },
            }
        }
    };

    let schedule = config.diffusion.build();
    let log = LossLog::open(&run_dir.join("loss.csv"), ckpt.state.step)?;
    let progress = Progress::new("dit", ckpt.state.step, d.steps);
    let seconds_before = ckpt.state.seconds;
    let (mut window_sum, mut window_len, mut final_loss) = (0.0, 0usize, f64::NAN);
    let previews = run_dir.join("previews");

    while ckpt.state.step < d.steps {
        let step = ckpt.state.step;
        let mut draws = StepDraws::new(
            config.seed,
            step,
            d.batch_size,
            cache.len(),
            schedule.len(),
            d.caption_dropout,
        );
        let loss = diffusion_loss(
            &ckpt.dit,
            &schedule,
            config.diffusion.prediction,
            &cache,
            &mut draws,
            d.min_snr_gamma,
            &train_device,
        );
        let value = loss.clone().into_scalar::<f32>() as f64;
        if !value.is_finite() {
            bail!(
                "the loss became {value} at step {}; training stopped, the last good checkpoint is kept in {}",
                step + 1,
                run_dir.join(TRAIN_DIR).display()
            );
        }
        let lr = learning_rate(config, step);
        let grads = GradientsParams::from_grads(loss.backward(), &ckpt.dit);
        ckpt.dit = ckpt.optim.step(lr, ckpt.dit, grads);
        ckpt.ema = ema::update(ckpt.ema, &ckpt.dit.valid(), d.ema_decay);
        ckpt.state.step += 1;
        ckpt.state.seconds = seconds_before + progress.elapsed();
        let done = ckpt.state.step;

        window_sum += value;
        window_len += 1;
        if done % d.log_every == 0 || done == d.steps {
            final_loss = window_sum / window_len as f64;
            log.append(done, final_loss, lr, ckpt.state.seconds)?;
            progress.update(done, &format!("loss {final_loss:.4}"), true);
            (window_sum, window_len) = (0.0, 0);
        }
        if done % d.checkpoint_every == 0 || done == d.steps {
            save_checkpoint(run_dir, &ckpt)?;
            save_module(&ckpt.ema, &run_dir.join(DIT_FILE))?;
            let (w, h) = (640, 320);
            write_png(
                &run_dir.join("loss.png"),
                w,
                h,
                &plot_loss(&log.points(), w, h),
            )?;
        }
        if d.preview_every > 0 && (done % d.preview_every == 0 || done == d.steps) {
            fs::create_dir_all(&previews)?;
            let model = TrainedModel {
                spec: spec.clone(),
                tokenizer: tokenizer.clone(),
                autoencoder: ae.clone(),
                dit: ckpt.ema.clone(),
            };
            let options = GenerateOptions {
                steps: 25,
                sampler: SamplerKind::Ddim { eta: 0.0 },
                guidance: config.guidance,
                seed: config.seed,
            };
            let clips = generate(&model, &source.preview_prompts(), &options, device, |_| {})?;
            let path = previews.join(format!("{}.png", step_dir_name(done)));
            write_sheet(&clips, &path, 2)?;
            progress.println(&format!("step {done}: preview {}", path.display()));
        }
    }
    progress.finish();
    Ok(DitReport {
        steps: ckpt.state.step,
        final_loss,
        seconds: ckpt.state.seconds,
    })
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
