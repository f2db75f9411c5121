//! `dit-train`: runs the stages of a config's recipe (the visual autoencoder, the
//! DiT on its frozen latents, decoder fine-tunings) into a run folder that
//! `dit-infer` loads.

/// mimalloc, keeping freed memory for reuse (see `dit_infer::allocator`).
#[global_allocator]
static ALLOCATOR: dit_infer::allocator::Allocator = dit_infer::allocator::Allocator {};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dit_model::Backend;
use dit_model::run::{
    self, AUTOENCODER_REPORT_FILE, CONFIG_FILE, LOCK_FILE, RECIPE_FILE, TRAIN_DIR,
    read_autoencoder_report,
};
use dit_train::autoencoder::{self, DecoderRound};
use dit_train::classifier;
use dit_train::config::{ExperimentConfig, Stage};
use dit_train::data::ClipSource;
use dit_train::lock::RunLock;
use dit_train::memory::{MemoryEstimate, human_bytes, machine_memory};
use dit_train::recipe;

/// Train a text-to-video Diffusion Transformer: every stage of the config's recipe, in order.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Experiment config (TOML).
    #[arg(long, default_value = "configs/tiny.toml")]
    config: PathBuf,
    /// Run folder to write (default: runs/<config name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this folder where it stopped (its config.toml is used).
    #[arg(long, conflicts_with_all = ["out", "config"])]
    resume: Option<PathBuf>,
    /// Override the config's seed (data, initialisation, noise, sampling).
    #[arg(long)]
    seed: Option<u64>,
    /// Override the number of DiT training steps (`dit_training.steps`); with --resume,
    /// a finished DiT stage continues to the new length.
    #[arg(long)]
    dit_steps: Option<usize>,
    /// Refuse configs whose memory estimate exceeds this many GiB (default: the machine's memory).
    #[arg(long)]
    max_memory: Option<f64>,
    /// Backend among those compiled in (flex, ndarray, wgpu, vulkan, cuda).
    #[arg(long)]
    backend: Option<Backend>,
    /// Devices that share each DiT step's batch, one replica on each (overrides
    /// `dit_training.devices`): GPUs 0..N; on a CPU backend the replicas share its cores.
    #[arg(long)]
    devices: Option<usize>,
    /// Something other than the recipe.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
enum Command {
    /// Fine-tune the decoder of a finished run's autoencoder with its encoder frozen
    /// (`--resume RUN`), outside its recipe: the latent space is unchanged, so the run's
    /// DiT stays valid and decodes more sharply.
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
        /// Largest diffusion step from which the run's DiT denoises the latents the
        /// decoder sees (SDEdit; 0: the encoder's latents): the decoder learns the DiT's
        /// own errors.
        #[arg(long, default_value_t = 0)]
        denoised_from: usize,
    },
    /// Train the photograph classifier that judges Moving Fashion clips, on Fashion-MNIST's
    /// training split, into a folder of its own (continued where it stopped when the folder
    /// holds its checkpoints).
    Classifier {
        /// Folder to write (`classifier.bpk`, `classifier.json`, checkpoints in `train/`).
        #[arg(long, default_value = "runs/classifier")]
        out: PathBuf,
        /// Where Fashion-MNIST's IDX files are.
        #[arg(long, default_value = dit_data::idx::FASHION_MNIST_DIR)]
        data: PathBuf,
        /// Passes over the 60,000 training photographs.
        #[arg(long, default_value_t = 15)]
        epochs: usize,
        /// Photographs per step.
        #[arg(long, default_value_t = 128)]
        batch_size: usize,
        /// Peak learning rate (cosine decay to a tenth of it).
        #[arg(long, default_value_t = 1e-3)]
        learning_rate: f64,
    },
}

fn run(args: Args) -> Result<()> {
    let backend = args.backend.unwrap_or_else(Backend::default_compiled);
    let device = backend.device().map_err(anyhow::Error::msg)?;
    if let Some(Command::Classifier {
        out,
        data,
        epochs,
        batch_size,
        learning_rate,
    }) = &args.command
    {
        return train_classifier(
            &args,
            out,
            data,
            *epochs,
            *batch_size,
            *learning_rate,
            &device,
        );
    }
    let (run_dir, config_path) = match &args.resume {
        Some(dir) => {
            if !dir.join(CONFIG_FILE).is_file() {
                // A run that is starting holds the folder's lock before it writes its config:
                // name that process rather than call the folder empty.
                if dir.join(LOCK_FILE).is_file() {
                    RunLock::acquire(dir)?;
                }
                bail!(
                    "{} is not a run folder (it has no {CONFIG_FILE})",
                    dir.display()
                );
            }
            (dir.clone(), dir.join(CONFIG_FILE))
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
    if let Some(devices) = args.devices {
        config.dit_training.devices = Some(devices);
    }
    config.validate()?;
    check_memory(&config, args.max_memory)?;

    if args.command.is_some() && args.resume.is_none() {
        bail!("`decoder` fine-tunes an existing run: give it with --resume RUN");
    }
    // One writer per run folder, from here to the end of the run.
    if args.resume.is_none() {
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create run folder {}", run_dir.display()))?;
    }
    let _lock = RunLock::acquire(&run_dir)?;

    if let Some(Command::Decoder {
        steps,
        learning_rate,
        latent_noise,
        denoised_from,
    }) = args.command.clone()
    {
        let source = ClipSource::open(&config)?;
        let report = read_autoencoder_report(&run_dir)?;
        if denoised_from >= config.diffusion.steps {
            bail!(
                "--denoised-from must be below the {} diffusion steps, got {denoised_from}",
                config.diffusion.steps
            );
        }
        let round = DecoderRound {
            denoised_from,
            ..DecoderRound::after(&report, steps, learning_rate, latent_noise)
        };
        let (before, report) =
            autoencoder::finetune_decoder(&config, &source, &run_dir, &device, &round)?;
        eprintln!(
            "decoder: PSNR {:.2} → {:.2} dB after {steps} steps ({} in all), latent space unchanged",
            before.psnr, report.psnr, report.decoder_steps
        );
        return Ok(());
    }
    if args.resume.is_none()
        && [RECIPE_FILE, AUTOENCODER_REPORT_FILE, TRAIN_DIR]
            .iter()
            .any(|f| run_dir.join(f).exists())
    {
        bail!(
            "{} already holds a run: continue it with `--resume {}` or choose another --out",
            run_dir.display(),
            run_dir.display()
        );
    }
    run::write_atomic(&run_dir.join(CONFIG_FILE), config.to_toml().as_bytes())?;
    let source = ClipSource::open(&config)?;
    eprintln!(
        "run folder {} · backend {backend}{} · seed {} · {} stages",
        run_dir.display(),
        match config.dit_training.device_count() {
            1 => String::new(),
            n => format!(" on {n} devices"),
        },
        config.seed,
        config.stages.len()
    );
    let devices = backend
        .devices(config.dit_training.device_count())
        .map_err(anyhow::Error::msg)?;
    let state = recipe::run(&config, &source, &run_dir, &devices)?;
    eprintln!(
        "finished {} stages in {:.0} s of training",
        state.finished.len(),
        state.seconds()
    );
    if config.stages.contains(&Stage::Dit)
        && let Some(prompt) = source.preview_prompts().first()
    {
        // A caption of the run's own data, so every word is in its vocabulary.
        eprintln!(
            "sample from it: cargo run --release -p dit-infer -- --checkpoint {} --prompt {}",
            run_dir.display(),
            shell_quoted(prompt)
        );
    }
    Ok(())
}

/// `dit-train classifier`: trains the judge of Moving Fashion clips and prints its accuracy.
fn train_classifier(
    args: &Args,
    out: &std::path::Path,
    data: &std::path::Path,
    epochs: usize,
    batch_size: usize,
    learning_rate: f64,
    device: &burn::tensor::Device,
) -> Result<()> {
    if args.resume.is_some()
        || args.out.is_some()
        || args.dit_steps.is_some()
        || args.devices.is_some()
    {
        bail!(
            "`classifier` takes --out after the word `classifier`, and no --resume, --dit-steps or --devices"
        );
    }
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create classifier folder {}", out.display()))?;
    let _lock = RunLock::acquire(out)?;
    let options = classifier::ClassifierTraining {
        epochs,
        batch_size,
        learning_rate,
        seed: args.seed.unwrap_or(0),
        ..Default::default()
    };
    let report = classifier::train(&options, data, out, device)?;
    eprintln!(
        "classifier: {:.2}% top-1 on the 10,000 test photographs after {} steps ({:.0} s) → {}",
        100.0 * report.test_accuracy,
        report.steps,
        report.seconds,
        out.display()
    );
    Ok(())
}

/// `text` as one word of a POSIX shell command: in double quotes where nothing in it is
/// special there, else in single quotes.
fn shell_quoted(text: &str) -> String {
    if text
        .chars()
        .any(|c| matches!(c, '"' | '\\' | '$' | '`' | '!'))
    {
        format!("'{}'", text.replace('\'', r"'\''"))
    } else {
        format!("\"{text}\"")
    }
}

/// Prints the run's memory estimate and refuses a config that cannot fit in `max_gib`
/// (default: the machine's memory).
fn check_memory(config: &ExperimentConfig, max_gib: Option<f64>) -> Result<()> {
    let estimate = MemoryEstimate::of(config)?;
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

#[cfg(test)]
mod tests {
    use super::shell_quoted;

    #[test]
    fn prompts_are_quoted_for_the_shell() {
        assert_eq!(
            shell_quoted("a red ball rolling right"),
            "\"a red ball rolling right\""
        );
        assert_eq!(shell_quoted("it's $5"), r"'it'\''s $5'");
        assert_eq!(shell_quoted("say \"hi\""), "'say \"hi\"'");
    }
}
