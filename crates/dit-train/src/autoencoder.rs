//! Stage 1: train the visual autoencoder on reconstruction, measure its PSNR,
//! and compute the latent scale factor. The result is saved into the run
//! folder and frozen for stage 2.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use dit_data::moving_shapes::splitmix64;
use dit_data::{Clip, VideoBatcher, psnr, video_to_clips};
use dit_infer::run::{AUTOENCODER_FILE, load_module, save_module, write_atomic};
use dit_model::VideoAutoencoder;
use serde::{Deserialize, Serialize};

use crate::config::ExperimentConfig;
use crate::data::ClipSource;
use crate::progress::{LossLog, Progress, plot_loss};

/// Stage 1's report, saved as `autoencoder.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoencoderReport {
    /// Reconstruction PSNR (dB) of the 8-bit decoded evaluation clips.
    pub psnr: f64,
    /// 1 / standard deviation of the latents of the evaluation clips.
    pub latent_scale: f64,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Training seconds.
    pub seconds: f64,
}

/// File of [`AutoencoderReport`] in the run folder.
pub const REPORT_FILE: &str = "autoencoder.json";

/// Learning rate at `step`: cosine decay from `peak` to 10% of it.
pub fn cosine_lr(peak: f64, step: usize, total: usize) -> f64 {
    let progress = step as f64 / total.max(1) as f64;
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

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
pub fn train(
    config: &ExperimentConfig,
    source: &ClipSource,
    run_dir: &Path,
    device: &Device,
) -> Result<AutoencoderReport> {
    let settings = &config.autoencoder_training;
    let train_device = device.clone().autodiff();
    train_device.seed(config.seed);
    let batcher = VideoBatcher::new(source.tokenizer(), config.model.dit.text.max_words);
    let mut ae = config.model.autoencoder.init(&train_device)?;
    let mut optim = AdamConfig::new().init();
    let log = LossLog::open(&run_dir.join("autoencoder_loss.csv"), 0)?;
    let progress = Progress::new("autoencoder", 0, settings.steps);
    let eval_items = source.eval_items(settings.eval_clips);

    for step in 0..settings.steps {
        // One random frame from each of `batch_size` clips: the autoencoder codes
        // frames independently, and frames of one clip are nearly the same image.
        let items = (0..settings.batch_size)
            .map(|j| {
                let index = step * settings.batch_size + j;
                let mut item = source.train_item(index, config.seed);
                let frame =
                    (splitmix64(config.seed ^ index as u64) % item.clip.frames as u64) as usize;
                item.clip = Clip {
                    frames: 1,
                    pixels: item.clip.frame(frame).to_vec(),
                    ..item.clip
                };
                item
            })
            .collect();
        let video = videos(&batcher, items, &train_device)?; // [batch, 3, 1, H, W]
        let moments = ae.encode(video.clone());
        let recon = ae.decode(moments.sample());
        let mse = (recon - video).powi_scalar(2).mean();
        let loss = mse.clone() + moments.kl() * settings.kl_weight;
        let lr = cosine_lr(settings.learning_rate, step, settings.steps);
        let grads = GradientsParams::from_grads(loss.backward(), &ae);
        ae = optim.step(lr, ae, grads);
        let done = step + 1;
        if done % settings.log_every == 0 || done == settings.steps {
            let value: f64 = mse.into_scalar::<f32>() as f64;
            if !value.is_finite() {
                bail!(
                    "autoencoder loss became {value} at step {done}; lower autoencoder_training.learning_rate"
                );
            }
            log.append(done, value, lr, progress.elapsed())?;
            progress.update(done, &format!("mse {value:.5}"), true);
        }
    }
    progress.finish();

    let ae = ae.valid();
    let (psnr, latent_scale) = evaluate(&ae, &batcher, &eval_items, device)?;
    let report = AutoencoderReport {
        psnr,
        latent_scale,
        steps: settings.steps,
        seconds: progress.elapsed(),
    };
    save_module(&ae, &run_dir.join(AUTOENCODER_FILE))?;
    write_atomic(
        &run_dir.join(REPORT_FILE),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    let (w, h) = (640, 320);
    dit_infer::output::write_png(
        &run_dir.join("autoencoder_loss.png"),
        w,
        h,
        &plot_loss(&log.points(), w, h),
    )?;
    Ok(report)
}

/// Loads the frozen autoencoder and its report from a run folder.
pub fn load_frozen(
    config: &ExperimentConfig,
    run_dir: &Path,
    device: &Device,
) -> Result<(VideoAutoencoder, AutoencoderReport)> {
    let report_path = run_dir.join(REPORT_FILE);
    let text = std::fs::read_to_string(&report_path).with_context(|| {
        format!(
            "{} is missing: train the autoencoder first (`dit-train autoencoder`)",
            report_path.display()
        )
    })?;
    let report: AutoencoderReport = serde_json::from_str(&text)
        .with_context(|| format!("{} is corrupt", report_path.display()))?;
    let ae = config.model.autoencoder.init(device)?;
    let ae = load_module(ae, &run_dir.join(AUTOENCODER_FILE))?.no_grad();
    Ok((ae, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_endpoints() {
        assert_eq!(cosine_lr(1.0, 0, 100), 1.0);
        assert!((cosine_lr(1.0, 100, 100) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(1.0, 50, 100) - 0.55).abs() < 1e-12);
    }

    #[test]
    fn psnr_of_clips_closed_form() {
        let mut a = dit_data::Clip::black(1, 1, 2);
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
