//! Stage 1: train the visual autoencoder on reconstruction, measure its PSNR,
//! and compute the latent scale factor. The result is saved into the run
//! folder and frozen for stage 2.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::module::Module;
use burn::optim::{GradientsParams, OptimizerRecord};
use burn::tensor::{Device, Tensor};
use dit_data::idx::fashion_mnist_dir;
use dit_data::{Clip, VideoBatcher, psnr, video_to_clips};
use dit_infer::default_classifier;
use dit_infer::fashion_eval::judge_real_clips;
use dit_model::VideoAutoencoder;
use dit_model::noise::gaussian;
use dit_model::run::{
    AUTOENCODER_FILE, AUTOENCODER_REPORT_FILE, AutoencoderReport, CHECKPOINT_OPTIMIZER_FILE,
    CLASSIFIER_FILE, ClassOnReconstructions, RunError, load_classifier, load_module, loss_paths,
    read_autoencoder_report, save_module, write_autoencoder,
};
use dit_model::schedule::per_sample;
use dit_model::seed::{Stream, rng_for, seed_for};
use rand::Rng;

use crate::checkpoint::{
    TrainState, autoencoder_optimizer, latest_checkpoint, save_checkpoint, save_optimizer,
};
use crate::config::ExperimentConfig;
use crate::data::ClipSource;
use crate::denoised::DenoisedFrames;
use crate::lr_schedule::cosine_lr;
use crate::perceptual::PerceptualLoss;
use crate::progress::{LossChart, LossLog, Progress};

/// Video tensor `[n, 3, F, H, W]` of `n` clips, with their captions tokenized.
fn videos(
    batcher: &VideoBatcher,
    items: Vec<dit_data::VideoItem>,
    device: &Device,
) -> Result<Tensor<5>> {
    Ok(batcher.try_batch(items, device)?.videos)
}

/// Reconstruction PSNR and latent scale of `ae` on `items`.
pub fn evaluate(
    ae: &VideoAutoencoder,
    batcher: &VideoBatcher,
    items: &[dit_data::VideoItem],
    device: &Device,
) -> Result<(f64, f64)> {
    let mut originals = Vec::new();
    let mut decoded = Vec::new();
    let (mut sum, mut sum_sq, mut count) = (0.0f64, 0.0f64, 0usize);
    for chunk in items.chunks(16) {
        let video = videos(batcher, chunk.to_vec(), device)?;
        let latent = ae.encode(video).mean;
        let values: Vec<f32> = latent
            .to_data()
            .convert::<f32>()
            .try_into_vec()
            .expect("f32 latents");
        for v in values {
            sum += v as f64;
            sum_sq += (v as f64).powi(2);
            count += 1;
        }
        decoded.extend(video_to_clips(ae.decode(latent)));
        originals.extend(chunk.iter().map(|i| i.clip.clone()));
    }
    let mean = sum / count as f64;
    let std = (sum_sq / count as f64 - mean * mean).max(1e-12).sqrt();
    Ok((psnr(&originals, &decoded), 1.0 / std))
}

/// Trains the autoencoder and writes `autoencoder.bpk` and `autoencoder.json` into `run_dir`.
/// With `checkpoints`, it saves its state into that folder every
/// `autoencoder_training.checkpoint_every` steps and continues from the newest one there.
pub fn train(
    config: &ExperimentConfig,
    source: &ClipSource,
    run_dir: &Path,
    device: &Device,
    checkpoints: Option<&Path>,
) -> Result<AutoencoderReport> {
    let train_device = device.clone().autodiff();
    train_device.seed(config.seed);
    let ae = config.model.autoencoder.init(&train_device)?;
    let settings = &config.autoencoder_training;
    let schedule = Schedule {
        first_step: 0,
        steps: settings.steps,
        learning_rate: settings.learning_rate,
        log: LossChart::Autoencoder,
        log_offset: 0,
        begins: None,
        latent_noise: 0.0,
        denoised: None,
        frozen_encoder: false,
        checkpoints: checkpoints.map(Path::to_path_buf),
    };
    let (ae, seconds) = fit(config, source, ae, &schedule, run_dir, &train_device)?;
    let (psnr, latent_scale) = evaluate_on_eval_clips(config, source, &ae, device)?;
    let report = AutoencoderReport {
        psnr,
        latent_scale,
        steps: settings.steps,
        seconds,
        decoder_steps: 0,
        decoder_latent_noise: 0.0,
        reconstructed_class: class_on_reconstructions(source, &ae, device)?,
    };
    write_autoencoder(run_dir, &ae, &report)?;
    Ok(report)
}

/// One fine-tuning of the decoder: its settings, and where it stands among the run's
/// decoder steps.
#[derive(Debug, Clone)]
pub struct DecoderRound {
    /// Optimiser steps.
    pub steps: usize,
    /// Peak learning rate (cosine decay to a tenth of it).
    pub learning_rate: f64,
    /// Largest latent noise, in units of the DiT's normalised latent (0: clean latents).
    pub latent_noise: f64,
    /// Largest diffusion step from which the run's DiT denoises the latents the decoder
    /// sees (0: the encoder's latents; see [`DenoisedFrames`]).
    pub denoised_from: usize,
    /// Decoder steps of the run before this round (its frames and log lines follow them).
    pub decoder_steps_before: usize,
    /// Autoencoder training seconds of the run before this round.
    pub seconds_before: f64,
    /// Folder of this round's checkpoints (none: it is not checkpointed).
    pub checkpoints: Option<PathBuf>,
}

impl DecoderRound {
    /// A round that continues the fine-tunings `report` records, without checkpoints.
    pub fn after(
        report: &AutoencoderReport,
        steps: usize,
        learning_rate: f64,
        latent_noise: f64,
    ) -> Self {
        Self {
            steps,
            learning_rate,
            latent_noise,
            denoised_from: 0,
            decoder_steps_before: report.decoder_steps,
            seconds_before: report.seconds,
            checkpoints: None,
        }
    }
}

/// Fine-tunes the decoder of the run's autoencoder with the encoder frozen, and saves
/// the result over `autoencoder.bpk`. Returns the reports before and after.
///
/// The encoder, and so the latent space and its scale, stay exactly as they were: a DiT
/// already trained on this autoencoder's latents stays valid, and decodes more sharply.
///
/// With `latent_noise` σ > 0 the decoder learns to map latents perturbed by Gaussian
/// noise of a standard deviation drawn uniformly from [0, σ] (in units of the
/// normalised latent the DiT generates) to the clean frame: a generated latent is off
/// the encoder's latents by the DiT's error, and this decoder turns small errors into
/// clean shapes instead of ragged edges. With `denoised_from` > 0 it learns from the
/// DiT's own denoised latents ([`DenoisedFrames`]), with the white noise on top.
pub fn finetune_decoder(
    config: &ExperimentConfig,
    source: &ClipSource,
    run_dir: &Path,
    device: &Device,
    round: &DecoderRound,
) -> Result<(AutoencoderReport, AutoencoderReport)> {
    let DecoderRound {
        steps,
        learning_rate,
        latent_noise,
        denoised_from,
        ..
    } = *round;
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    if !(learning_rate.is_finite() && learning_rate > 0.0 && learning_rate <= 1.0) {
        bail!("--learning-rate must be in (0, 1], got {learning_rate}");
    }
    if !(latent_noise.is_finite() && (0.0..=10.0).contains(&latent_noise)) {
        bail!("--latent-noise must be in [0, 10], got {latent_noise}");
    }
    let train_device = device.clone().autodiff();
    let denoised = if denoised_from > 0 {
        let set = DenoisedFrames::build(config, source, run_dir, denoised_from, device)?;
        Some(set.into_device(&train_device))
    } else {
        None
    };
    let (ae, before) = load(config, run_dir, &train_device)?;
    let source_words = match denoised_from {
        0 => String::new(),
        t => format!("DiT-denoised latents from step ≤ {t}, "),
    };
    let schedule = Schedule {
        // Continue the frame sequence past the frames stage 1 and earlier rounds saw.
        first_step: before.steps + round.decoder_steps_before,
        steps,
        learning_rate,
        log: LossChart::Decoder,
        // Earlier fine-tunings stay in the log; this one continues their step count.
        log_offset: round.decoder_steps_before,
        begins: Some(if latent_noise > 0.0 {
            format!("{source_words}latent noise σ ≤ {latent_noise}, lr {learning_rate:e}")
        } else if denoised_from > 0 {
            format!("{source_words}lr {learning_rate:e}")
        } else {
            format!("clean latents, lr {learning_rate:e}")
        }),
        // The DiT's latent is the encoder's times `latent_scale`.
        latent_noise: latent_noise / before.latent_scale,
        denoised,
        frozen_encoder: true,
        checkpoints: round.checkpoints.clone(),
    };
    let (ae, seconds) = fit(config, source, ae, &schedule, run_dir, &train_device)?;
    let (psnr, _) = evaluate_on_eval_clips(config, source, &ae, device)?;
    let report = AutoencoderReport {
        psnr,
        seconds: round.seconds_before + seconds,
        decoder_steps: round.decoder_steps_before + steps,
        decoder_latent_noise: latent_noise,
        reconstructed_class: class_on_reconstructions(source, &ae, device)?,
        ..before
    };
    write_autoencoder(run_dir, &ae, &report)?;
    Ok((before, report))
}

/// [`evaluate`] on the config's `eval_clips` evaluation clips.
fn evaluate_on_eval_clips(
    config: &ExperimentConfig,
    source: &ClipSource,
    ae: &VideoAutoencoder,
    device: &Device,
) -> Result<(f64, f64)> {
    let batcher = VideoBatcher::new(source.tokenizer(), config.model.dit.text.max_words);
    let items = source.eval_items(config.autoencoder_training.eval_clips);
    evaluate(ae, &batcher, &items, device)
}

/// For Moving Fashion, with the photograph classifier at hand: the judge's class accuracy
/// on `ae`'s reconstructions of real clips of test photographs, and on the clips (what
/// `dit-infer eval` reports against the bar of 0.95 × the ceiling, known before the DiT
/// trains). `None` for other data, or when the classifier is missing (a note says so).
fn class_on_reconstructions(
    source: &ClipSource,
    ae: &VideoAutoencoder,
    device: &Device,
) -> Result<Option<ClassOnReconstructions>> {
    let ClipSource::MovingFashion { eval, .. } = source else {
        return Ok(None);
    };
    let dir = default_classifier();
    if !dir.join(CLASSIFIER_FILE).is_file() {
        eprintln!(
            "note: no photograph classifier in {}: the autoencoder's reconstructions are not judged",
            dir.display()
        );
        return Ok(None);
    }
    let (classifier, _) = load_classifier(&dir, device)?;
    let scores = judge_real_clips(ae, eval.config(), &fashion_mnist_dir(), &classifier, device)?;
    Ok(Some(ClassOnReconstructions {
        class: scores.reconstructed_class,
        ceiling: scores.ceiling,
    }))
}

/// Steps and learning rate of one [`fit`].
struct Schedule {
    /// Index of the first step (selects the training frames).
    first_step: usize,
    /// Optimiser steps to take.
    steps: usize,
    /// Peak learning rate of the cosine decay.
    learning_rate: f64,
    /// The loss CSV and chart in the run folder.
    log: LossChart,
    /// Steps already in that log (kept; this fit's steps are numbered after them).
    log_offset: usize,
    /// What the log notes at `log_offset`, where this fit begins (drawn as a mark).
    begins: Option<String>,
    /// Largest standard deviation of the Gaussian noise added to the latents before
    /// decoding (encoder units; drawn per frame uniformly from [0, this]).
    latent_noise: f64,
    /// Learn from these frames of DiT-denoised latents instead of encoding training frames.
    denoised: Option<DenoisedFrames>,
    /// Train the decoder only.
    frozen_encoder: bool,
    /// Folder of this fit's checkpoints (none: it is not checkpointed).
    checkpoints: Option<PathBuf>,
}

/// The autoencoder's weights in a fit's checkpoint.
const CHECKPOINT_AUTOENCODER_FILE: &str = "autoencoder.bpk";

/// Minimises reconstruction MSE (plus KL) over the parameters of `ae` that require
/// gradients (the decoder's only, with `frozen_encoder`), continuing from the newest
/// checkpoint of the schedule's folder; returns the trained autoencoder and the seconds
/// the fit took (including the runs it continues).
fn fit(
    config: &ExperimentConfig,
    source: &ClipSource,
    mut ae: VideoAutoencoder,
    schedule: &Schedule,
    run_dir: &Path,
    train_device: &Device,
) -> Result<(VideoAutoencoder, f64)> {
    let settings = &config.autoencoder_training;
    let factor = config.model.autoencoder.factor();
    let batcher = VideoBatcher::new(source.tokenizer(), config.model.dit.text.max_words);
    let mut optim = autoencoder_optimizer(settings);
    let perceptual = match (&settings.perceptual_network, settings.perceptual_weight) {
        (Some(dir), Some(weight)) if weight > 0.0 => {
            Some((PerceptualLoss::load(dir, train_device)?, weight))
        }
        _ => None,
    };
    let mut state = TrainState {
        step: 0,
        seed: config.seed,
        seconds: 0.0,
    };
    let resumed = match &schedule.checkpoints {
        Some(dir) => latest_checkpoint(dir)?,
        None => None,
    };
    if let Some((dir, saved)) = resumed {
        if saved.seed != config.seed || saved.step > schedule.steps {
            bail!(
                "checkpoint {} (seed {}, step {}) does not belong to this stage (seed {}, {} steps)",
                dir.display(),
                saved.seed,
                saved.step,
                config.seed,
                schedule.steps
            );
        }
        ae = load_module(ae, &dir.join(CHECKPOINT_AUTOENCODER_FILE))?;
        let path = dir.join(CHECKPOINT_OPTIMIZER_FILE);
        let record =
            OptimizerRecord::load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        optim = optim.load_record(record);
        state = saved;
    }
    if schedule.frozen_encoder {
        ae.encoder = ae.encoder.no_grad();
    }
    let (log_path, _) = loss_paths(run_dir, schedule.log.log_name());
    let begins = if state.step > 0 {
        Some("resumed")
    } else {
        schedule.begins.as_deref()
    };
    let log = LossLog::open(&log_path, schedule.log_offset + state.step, begins)?;
    let name = match schedule.log {
        LossChart::Decoder => "decoder",
        _ => "autoencoder",
    };
    let progress = Progress::new(name, state.step, schedule.steps);
    let seconds_before = state.seconds;
    for step in state.step..schedule.steps {
        // Draw `index` of the stage picks the frame.
        let indices = (0..settings.batch_size)
            .map(|j| (schedule.first_step + step) * settings.batch_size + j);
        let frame_of = |index: usize, frames: usize| {
            (seed_for(config.seed, Stream::AutoencoderFrame, index as u64) % frames as u64) as usize
        };
        let (video, latent, kl) = match &schedule.denoised {
            None => {
                // One random frame from each of `batch_size` clips: the autoencoder codes
                // frames independently, and frames of one clip are nearly the same image.
                let items = indices
                    .map(|index| {
                        let mut item = source.train_item(index, config.seed);
                        let frame = frame_of(index, item.clip.frames);
                        item.clip = Clip {
                            frames: 1,
                            pixels: item.clip.frame(frame).to_vec(),
                            ..item.clip
                        };
                        if let Some(side) = settings.crop {
                            item.clip = crop_window(&item.clip, side, factor, config.seed, index);
                        }
                        item
                    })
                    .collect();
                let video = videos(&batcher, items, train_device)?; // [batch, 3, 1, H, W]
                let moments = ae.encode(video.clone());
                let latent = moments.sample(); // [batch, C, 1, h, w]
                (video, latent, Some(moments.kl()))
            }
            Some(set) => {
                let picks: Vec<usize> = indices.map(|index| frame_of(index, set.len())).collect();
                let (latent, video) = set.select(&picks);
                (video, latent, None)
            }
        };
        let latent = if schedule.latent_noise > 0.0 {
            let step = (schedule.first_step + step) as u64;
            let mut rng = rng_for(config.seed, Stream::AutoencoderStep, step);
            let dims = latent.dims();
            let sigma = per_sample::<5>(
                (0..dims[0]).map(|_| (rng.random::<f32>() * schedule.latent_noise as f32) as f64),
                train_device,
            );
            latent + gaussian(&mut rng, dims, train_device) * sigma
        } else {
            latent
        };
        let recon = ae.decode(latent);
        let mse = (recon.clone() - video.clone()).powi_scalar(2).mean();
        let mut loss = mse.clone();
        if let Some(weight) = settings.edge_weight.filter(|&w| w > 0.0) {
            loss = loss + edge_error(recon.clone(), video.clone()) * weight;
        }
        if let Some((network, weight)) = &perceptual {
            loss = loss + network.error(recon, video) * *weight;
        }
        if let Some(kl) = kl {
            loss = loss + kl * settings.kl_weight;
        }
        let lr = cosine_lr(schedule.learning_rate, step, schedule.steps);
        let grads = GradientsParams::from_grads(loss.backward(), &ae);
        ae = optim.step(lr, ae, grads);
        let done = step + 1;
        if done % settings.log_every == 0 || done == schedule.steps {
            let value: f64 = mse.into_scalar::<f32>() as f64;
            if !value.is_finite() {
                bail!("autoencoder loss became {value} at step {done}; lower the learning rate");
            }
            log.append(
                schedule.log_offset + done,
                value,
                lr,
                seconds_before + progress.elapsed(),
            )?;
            let mut line = format!("mse {value:.5}");
            if settings.edge_weight.is_some() || perceptual.is_some() {
                line += &format!(", loss {:.5}", loss.into_scalar::<f32>());
            }
            progress.update(done, &line, true);
        }
        if let Some(dir) = &schedule.checkpoints
            && (done % settings.checkpoint_every == 0 || done == schedule.steps)
        {
            state.step = done;
            state.seconds = seconds_before + progress.elapsed();
            save_checkpoint(dir, &state, |path| {
                save_module(&ae, &path.join(CHECKPOINT_AUTOENCODER_FILE))?;
                save_optimizer(&optim, &path.join(CHECKPOINT_OPTIMIZER_FILE))
            })?;
        }
    }
    progress.finish();
    schedule.log.write(run_dir)?;
    Ok((ae.valid(), seconds_before + progress.elapsed()))
}

/// The gradient difference loss (Mathieu et al. 2016): the mean absolute error between
/// the horizontal pixel differences of `recon` and `target`, plus that of the vertical
/// ones. A blurred edge has smaller differences than a sharp one, so this term, unlike the
/// MSE, does not let a reconstruction average a detail away.
///
/// # Shapes
/// - recon, target: `[batch, channels, frames, height, width]`
pub(crate) fn edge_error(recon: Tensor<5>, target: Tensor<5>) -> Tensor<1> {
    let [_, _, _, h, w] = recon.dims();
    let along = |x: Tensor<5>, dim: usize, len: usize| {
        x.clone().narrow(dim, 1, len - 1) - x.narrow(dim, 0, len - 1)
    };
    let error = |dim: usize, len: usize| {
        (along(recon.clone(), dim, len) - along(target.clone(), dim, len))
            .abs()
            .mean()
    };
    error(4, w) + error(3, h)
}

/// The `side × side` window of `clip` that training clip `index` shows stage 1, at a
/// random offset that is a multiple of `factor` (so the window's latent grid is the
/// frame's).
fn crop_window(clip: &Clip, side: usize, factor: usize, seed: u64, index: usize) -> Clip {
    let mut rng = rng_for(seed, Stream::AutoencoderCrop, index as u64);
    let mut offset = |extent: usize| {
        let positions = (extent - side) / factor + 1;
        rng.random_range(0..positions as u32) as usize * factor
    };
    let (top, left) = (offset(clip.height), offset(clip.width));
    clip.window(top, left, side, side)
        .expect("validation keeps the window inside the frame")
}

/// Loads the frozen autoencoder and its report from a run folder.
pub(crate) fn load_frozen(
    config: &ExperimentConfig,
    run_dir: &Path,
    device: &Device,
) -> Result<(VideoAutoencoder, AutoencoderReport)> {
    let (ae, report) = load(config, run_dir, device)?;
    Ok((ae.no_grad(), report))
}

/// Loads the autoencoder and its report from a run folder.
fn load(
    config: &ExperimentConfig,
    run_dir: &Path,
    device: &Device,
) -> Result<(VideoAutoencoder, AutoencoderReport)> {
    let report = match read_autoencoder_report(run_dir) {
        Err(RunError::MissingFile { .. } | RunError::MissingFolder(_)) => bail!(
            "{} is missing: train the autoencoder first (`dit-train autoencoder`)",
            run_dir.join(AUTOENCODER_REPORT_FILE).display()
        ),
        report => report?,
    };
    let ae = config.model.autoencoder.init(device)?;
    let ae = load_module(ae, &run_dir.join(AUTOENCODER_FILE))?;
    Ok((ae, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edge_error_is_zero_for_a_shifted_copy_and_counts_a_blurred_step() {
        let device = Device::default();
        // A vertical step edge 0 → 1 between columns 1 and 2 of a 4-wide picture.
        let step = Tensor::<5>::from_floats([[[[[0.0, 0.0, 1.0, 1.0]; 3]]]], &device);
        // Adding a constant changes no difference.
        let error = |a: Tensor<5>, b: Tensor<5>| edge_error(a, b).into_scalar::<f32>();
        assert_eq!(error(step.clone() + 0.25, step.clone()), 0.0);
        // Blurred to 0, 0.5, 0.5, 1: horizontal differences 0.5, 0, 0.5 against 0, 1, 0, so
        // the mean absolute error is (0.5 + 1 + 0.5) / 3; no vertical difference changes.
        let blurred = Tensor::<5>::from_floats([[[[[0.0, 0.5, 0.5, 1.0]; 3]]]], &device);
        assert!((error(blurred, step.clone()) - 2.0 / 3.0).abs() < 1e-6);
        // Its gradient reaches the reconstruction.
        let device = device.autodiff();
        let recon = Tensor::<5>::zeros([1, 1, 1, 3, 4], &device).require_grad();
        let grads = edge_error(recon.clone(), step.to_device(&device)).backward();
        let grad = recon.grad(&grads).unwrap();
        assert!(grad.abs().sum().into_scalar::<f32>() > 0.0);
    }

    #[test]
    fn psnr_of_clips_closed_form() {
        let mut a = Clip::black(1, 1, 2);
        let b = a.clone();
        assert_eq!(
            psnr(std::slice::from_ref(&a), std::slice::from_ref(&b)),
            f64::INFINITY
        );
        a.set_pixel(0, 0, 0, [255, 255, 255]);
        // MSE = 3·255² / 6 = 255²/2 → PSNR = 10·log10(2).
        assert!((psnr(&[a], &[b]) - 10.0 * 2f64.log10()).abs() < 1e-12);
    }
}
