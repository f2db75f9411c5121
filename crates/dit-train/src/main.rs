//! `dit-train`: trains the visual autoencoder (stage 1), then the DiT on its
//! frozen latents (stage 2), into a run folder that `dit-infer` loads.

/// mimalloc, keeping freed memory for reuse (see `dit_infer::allocator`).
#[global_allocator]
static ALLOCATOR: dit_infer::allocator::Allocator = dit_infer::allocator::Allocator {};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dit_model::Backend;
use dit_model::run::{self, CONFIG_FILE};
use dit_train::config::ExperimentConfig;
use dit_train::data::ClipSource;
use dit_train::memory::{MemoryEstimate, human_bytes, machine_memory};
use dit_train::{autoencoder, trainer};

/// Train a text-to-video Diffusion Transformer.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Experiment config (TOML).
    #[arg(long, default_value = "configs/tiny.toml")]
    config: PathBuf,
    /// Run folder to write (default: runs/<config name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder from its newest checkpoint (its config.toml is used).
    #[arg(long, conflicts_with_all = ["out", "config"])]
    resume: Option<PathBuf>,
    /// Override the config's seed (data, initialisation, noise, sampling).
    #[arg(long)]
    seed: Option<u64>,
    /// Override the number of DiT training steps (`dit_training.steps`).
    #[arg(long)]
    dit_steps: Option<usize>,
    /// Refuse configs whose memory estimate exceeds this many GiB (default: the machine's memory).
    #[arg(long)]
    max_memory: Option<f64>,
    /// Backend among those compiled in (flex, ndarray, wgpu, cuda).
    #[arg(long)]
    backend: Option<Backend>,
    /// Stage to run (default: both).
    #[command(subcommand)]
    stage: Option<Stage>,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// Stage 1: train the visual autoencoder.
    Autoencoder,
    /// Stage 2: train the DiT on the frozen autoencoder's latents.
    Dit,
    /// Fine-tune the decoder of a run's autoencoder with its encoder frozen (`--resume RUN`):
    /// the latent space is unchanged, so the run's DiT stays valid and decodes more sharply.
    Decoder {
        /// Optimiser steps of the decoder.
        #[arg(long)]
        steps: usize,
        /// Peak learning rate (cosine decay to a tenth of it).
        #[arg(long, default_value_t = 1e-3)]
        learning_rate: f64,
        /// Largest standard deviation of Gaussian noise added to the latents the decoder
        /// sees, in units of the DiT's normalised latent (0: clean latents only): makes
        /// the decoder robust to the DiT's sampling error.
        #[arg(long, default_value_t = 0.0)]
        latent_noise: f64,
    },
}

fn run(args: Args) -> Result<()> {
    let backend = args.backend.unwrap_or_else(Backend::default_compiled);
    let device = backend.device().map_err(anyhow::Error::msg)?;
    let (run_dir, config_path, resume) = match &args.resume {
        Some(dir) => {
            if !dir.join(CONFIG_FILE).is_file() {
                bail!(
                    "{} is not a run folder (it has no {CONFIG_FILE})",
                    dir.display()
                );
            }
            (dir.clone(), dir.join(CONFIG_FILE), true)
        }
        None => {
            let stem = args
                .config
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("run")
                .to_string();
            (
                args.out
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("runs").join(stem)),
                args.config.clone(),
                false,
            )
        }
    };
    let mut config = ExperimentConfig::load(&config_path)?;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(steps) = args.dit_steps {
        config.dit_training.steps = steps;
    }
    config.validate()?;
    check_memory(&config, args.max_memory)?;

    if let Some(Stage::Decoder {
        steps,
        learning_rate,
        latent_noise,
    }) = args.stage
    {
        if !resume {
            bail!("`decoder` fine-tunes an existing run: give it with --resume RUN");
        }
        let source = ClipSource::open(&config)?;
        let (before, report) = autoencoder::finetune_decoder(
            &config,
            &source,
            &run_dir,
            &device,
            steps,
            learning_rate,
            latent_noise,
        )?;
        eprintln!(
            "decoder: PSNR {:.2} → {:.2} dB after {steps} steps ({} in all), latent space unchanged",
            before.psnr, report.psnr, report.decoder_steps
        );
        return Ok(());
    }
    if !resume
        && args.stage != Some(Stage::Autoencoder)
        && run_dir.join(run::TRAIN_DIR).join(run::LATEST_FILE).exists()
    {
        bail!(
            "{} already holds DiT checkpoints: continue it with `--resume {}` or choose another --out",
            run_dir.display(),
            run_dir.display()
        );
    }
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run folder {}", run_dir.display()))?;
    run::write_atomic(&run_dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
    let source = ClipSource::open(&config)?;
    eprintln!(
        "run folder {} · backend {backend} · seed {}",
        run_dir.display(),
        config.seed
    );

    if args.stage != Some(Stage::Dit) && !resume {
        let report = autoencoder::train(&config, &source, &run_dir, &device)?;
        eprintln!(
            "autoencoder: PSNR {:.2} dB, latent scale {:.4}, {} steps in {:.0} s",
            report.psnr, report.latent_scale, report.steps, report.seconds
        );
    }
    if args.stage != Some(Stage::Autoencoder) {
        let report = trainer::train(&config, &source, &run_dir, &device, resume)?;
        eprintln!(
            "dit: {} steps, loss {:.4}, {:.0} s of training",
            report.steps, report.final_loss, report.seconds
        );
        eprintln!(
            "sample from it: cargo run --release -p dit-infer -- --checkpoint {} --prompt \"a red circle moving right\"",
            run_dir.display()
        );
    }
    Ok(())
}

/// Prints the run's memory estimate and refuses a config that cannot fit in `max_gib`
/// (default: the machine's memory).
fn check_memory(config: &ExperimentConfig, max_gib: Option<f64>) -> Result<()> {
    let estimate = MemoryEstimate::of(config);
    eprintln!("memory estimate: {estimate}");
    let limit = match max_gib {
        Some(gib) if !(gib.is_finite() && gib > 0.0) => {
            bail!("--max-memory must be a positive number of GiB, got {gib}")
        }
        Some(gib) => Some((gib * (1u64 << 30) as f64, "--max-memory")),
        None => machine_memory().map(|bytes| (bytes, "the machine's memory")),
    };
    if let Some((limit, what)) = limit
        && estimate.total() > limit
    {
        bail!(
            "this config needs about {} of memory, more than {what} ({}); make the model or \
             the batch smaller{}",
            human_bytes(estimate.total()),
            human_bytes(limit),
            if max_gib.is_some() {
                ""
            } else {
                ", or set --max-memory"
            }
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    dit_infer::allocator::keep_freed_memory();
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
