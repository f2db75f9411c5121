//! Stage 2: the DiT, trained on latents of the frozen autoencoder.
//!
//! A custom loop on Burn's optimiser API rather than burn-train's `Learner`:
//! the autoencoder must stay outside the optimiser, latents are encoded once
//! and cached ([`crate::latent_cache`]), an EMA copy of the weights is kept for
//! sampling ([`crate::ema`]), and every step's random draws are a function of
//! `(seed, step)` ([`crate::loss`]) so that resuming is exact.

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use dit_data::VideoBatcher;
use dit_infer::pipeline::TextToVideo;
use dit_model::RunSpec;
use dit_model::run::{DIT_FILE, TRAIN_DIR, load_frozen_text, loss_paths, save_module, write_spec};

use crate::autoencoder::load_frozen;
use crate::checkpoint::Checkpoint;
use crate::config::ExperimentConfig;
use crate::data::ClipSource;
use crate::data_parallel::Replicas;
use crate::ema;
use crate::fidelity::{FidelityLog, FidelityPoint, measure, measures_fidelity};
use crate::latent_cache::LatentCache;
use crate::loss::{StepBatch, StepDraws};
use crate::lr_schedule::learning_rate;
use crate::preview::write_preview;
use crate::progress::{LossChart, LossLog, Progress};

/// The run folder's model spec.
pub(crate) fn run_spec(
    config: &ExperimentConfig,
    vocab_size: usize,
    latent_scale: f64,
) -> Result<RunSpec> {
    Ok(RunSpec::new(
        config.networks(vocab_size)?,
        config.diffusion.clone(),
        config.data.frames(),
        config.data.size(),
        latent_scale,
    )
    .with_guidance(config.guidance)
    .with_data(Some(config.data.training_data())))
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
    /// Seconds spent encoding the training clips into the latent cache.
    pub encode_seconds: f64,
}

/// Where stage 2 stands in the recipe: what its fidelity measurements are labelled with.
#[derive(Debug, Clone, Copy)]
pub struct StageClock {
    /// The stage's number (1-based).
    pub stage: usize,
    /// Training seconds of the stages before it.
    pub seconds_before: f64,
}

/// Trains the DiT, continuing from the run folder's newest checkpoint if it has one:
/// on the first of `devices`, each step's batch shared among all of them
/// ([`crate::data_parallel`]).
pub fn train(
    config: &ExperimentConfig,
    source: &ClipSource,
    run_dir: &Path,
    devices: &[Device],
    clock: StageClock,
) -> Result<DitReport> {
    let d = &config.dit_training;
    let Some(device) = devices.first() else {
        bail!("training needs a device");
    };
    let replicas = Replicas::new(devices.iter().map(|d| d.clone().autodiff()).collect());
    let train_device = replicas.main().clone();
    let tokenizer = source.tokenizer();
    let (ae, ae_report) = load_frozen(config, run_dir, device)?;
    let spec = run_spec(config, tokenizer.num_ids(), ae_report.latent_scale)?;
    write_spec(run_dir, &spec, &tokenizer)?;

    let batcher = VideoBatcher::new(tokenizer.clone(), config.model.dit.text.max_words);
    let frozen_text = load_frozen_text(&spec, device)?;
    let encode_start = std::time::Instant::now();
    let cache = LatentCache::encode(
        source,
        &batcher,
        &ae,
        frozen_text.as_ref(),
        ae_report.latent_scale,
        d.train_clips,
        config.seed,
        device,
    )?;
    let encode_seconds = encode_start.elapsed().as_secs_f64();
    eprintln!(
        "encoded {} training clips into latents in {encode_seconds:.1} s",
        cache.len()
    );

    let loaded = Checkpoint::load_latest(run_dir, d, &spec.model.dit, config.seed, &train_device)?;
    let mut ckpt = match loaded {
        Some(ckpt) => {
            eprintln!("resuming from step {}", ckpt.state.step);
            ckpt
        }
        None => Checkpoint::fresh(&spec.model.dit, d, config.seed, &train_device)?,
    };
    let fidelity = FidelityLog::open(run_dir, clock.stage, ckpt.state.step)?;

    let process = config.diffusion.process();
    let (log_path, _) = loss_paths(run_dir, LossChart::Dit.log_name());
    let resumed = (ckpt.state.step > 0).then_some("resumed");
    let log = LossLog::open(&log_path, ckpt.state.step, resumed)?;
    let progress = Progress::new("dit", ckpt.state.step, d.steps);
    let seconds_before = ckpt.state.seconds;
    let (mut window_sum, mut window_len, mut final_loss) = (0.0, 0usize, f64::NAN);
    let preview_prompts = source.preview_prompts();

    while ckpt.state.step < d.steps {
        let step = ckpt.state.step;
        let mut draws = StepDraws::shifted(
            config.seed,
            step,
            d.batch_size,
            cache.len(),
            &process,
            d.caption_dropout,
            d.level_shift(),
        );
        // Built off the autodiff graph; each replica takes its share onto its own device.
        let batch = StepBatch::new(&process, &cache, &mut draws, d.min_snr_gamma, device);
        let (value, grads) = replicas.gradients(&ckpt.dit, &batch)?;
        if !value.is_finite() {
            bail!(
                "the loss became {value} at step {}; training stopped, the last good checkpoint is kept in {}",
                step + 1,
                run_dir.join(TRAIN_DIR).display()
            );
        }
        let lr = learning_rate(d, step);
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
        let ema_model = TextToVideo {
            spec: &spec,
            tokenizer: &tokenizer,
            frozen_text: frozen_text.as_ref(),
            autoencoder: &ae,
            dit: &ckpt.ema,
        };
        // Measured before the checkpoint of the same step is saved, so that a run
        // interrupted in between measures it again when it resumes.
        if measures_fidelity(config)
            && ((d.fidelity_every > 0 && done % d.fidelity_every == 0) || done == d.steps)
        {
            let scores = measure(
                ema_model,
                d.fidelity_sampling_steps,
                config.guidance,
                config.seed,
                device,
            )?;
            let seconds =
                clock.seconds_before + encode_seconds + seconds_before + progress.elapsed();
            let point = FidelityPoint::new(seconds, clock.stage, "dit", done, scores);
            fidelity.append(&point)?;
            progress.println(&format!("step {done}: {}", point.summary()));
        }
        if done % d.checkpoint_every == 0 || done == d.steps {
            ckpt.state.seconds = seconds_before + progress.elapsed();
            ckpt.save(run_dir)?;
            save_module(&ckpt.ema, &run_dir.join(DIT_FILE))?;
            LossChart::Dit.write(run_dir)?;
        }
        if d.preview_every > 0 && (done % d.preview_every == 0 || done == d.steps) {
            let path = write_preview(
                ema_model,
                &preview_prompts,
                config.guidance,
                config.seed,
                run_dir,
                done,
                device,
            )?;
            progress.println(&format!("step {done}: preview {}", path.display()));
        }
    }
    progress.finish();
    if final_loss.is_nan() {
        // Nothing left to train (a finished run): the last logged loss.
        final_loss = log.record().points.last().map_or(f64::NAN, |p| p.1);
    }
    Ok(DitReport {
        steps: ckpt.state.step,
        final_loss,
        seconds: ckpt.state.seconds,
        encode_seconds,
    })
}
