//! `dit-infer`: generate videos from prompts with a trained DiT.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dit_data::video::{write_frames, write_gif, write_sheet};
use dit_infer::eval::{EvalOptions, evaluate, table, write_report};
use dit_infer::pipeline::{GenerateOptions, generate};
use dit_infer::sampler::SamplerKind;
use dit_model::{Backend, TrainedModel};
use indicatif::{ProgressBar, ProgressStyle};

/// Generate a video from a text prompt with a trained text-to-video DiT.
#[derive(Parser, Debug)]
#[command(version, about, subcommand_negates_reqs = true)]
struct Args {
    /// `eval`: measure prompt fidelity instead of generating one prompt.
    #[command(subcommand)]
    command: Option<Command>,
    /// The prompt, e.g. "a red circle moving right".
    #[arg(
        long,
        conflicts_with = "prompts_file",
        required_unless_present = "prompts_file"
    )]
    prompt: Option<String>,
    /// A file with one prompt per line (batch mode; needs --out-dir).
    #[arg(long, requires = "out_dir")]
    prompts_file: Option<PathBuf>,
    /// Output GIF (single prompt).
    #[arg(long, default_value = "out.gif", conflicts_with = "prompts_file")]
    out: PathBuf,
    /// Output folder for batch mode: 000.gif, 001.gif, … in prompt order.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Run folder of a trained model (default: the shipped checkpoint).
    #[arg(long, global = true)]
    checkpoint: Option<PathBuf>,
    /// Denoising steps.
    #[arg(long, global = true, default_value_t = 50)]
    steps: usize,
    /// Sampler: ddim or ddpm.
    #[arg(long, global = true, default_value = "ddim")]
    sampler: SamplerKind,
    /// DDIM stochasticity η in [0, 1] (0 is deterministic).
    #[arg(long, global = true, default_value_t = 0.0)]
    eta: f64,
    /// Classifier-free guidance scale (default: the checkpoint's).
    #[arg(long, global = true, allow_negative_numbers = true)]
    cfg: Option<f64>,
    /// Seed of the noise.
    #[arg(long, global = true, default_value_t = 0)]
    seed: u64,
    /// Also write each frame as PNG into this folder (single prompt).
    #[arg(long)]
    frames: Option<PathBuf>,
    /// Also write a contact sheet (all clips, frames side by side) to this PNG.
    #[arg(long)]
    sheet: Option<PathBuf>,
    /// Pixel magnification of the outputs.
    #[arg(long, default_value_t = 4)]
    scale: usize,
    /// Backend among those compiled in (flex, ndarray, wgpu, cuda).
    #[arg(long, global = true)]
    backend: Option<Backend>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate clips for all 72 Moving Shapes compositions (canonical caption and a
    /// paraphrase each), judge them from their pixels, and report prompt fidelity.
    Eval {
        /// Seeds per prompt.
        #[arg(long, default_value_t = 2)]
        seeds: usize,
        /// Folder for eval.json and failures.png (default: <checkpoint>/eval).
        #[arg(long)]
        report_dir: Option<PathBuf>,
        /// Prompts denoised together.
        #[arg(long, default_value_t = 48)]
        batch: usize,
    },
}

/// The shipped checkpoint: `checkpoints/tiny` of this repository.
fn default_checkpoint() -> PathBuf {
    let local = PathBuf::from("checkpoints/tiny");
    if local.is_dir() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../checkpoints/tiny")
    }
}

/// Fails early (before sampling) when `path` cannot be written.
fn check_writable(path: &Path) -> Result<()> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!(
            "cannot write {}: folder {} does not exist",
            path.display(),
            parent.display()
        );
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn read_prompts(args: &Args) -> Result<Vec<String>> {
    match (&args.prompt, &args.prompts_file) {
        (Some(p), _) => Ok(vec![p.clone()]),
        (None, Some(file)) => {
            let text = fs::read_to_string(file)
                .with_context(|| format!("cannot read prompts file {}", file.display()))?;
            let prompts: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            if prompts.is_empty() {
                bail!("prompts file {} has no prompt", file.display());
            }
            Ok(prompts)
        }
        (None, None) => bail!("give --prompt or --prompts-file"),
    }
}

fn run_eval(args: &Args, seeds: usize, report_dir: Option<PathBuf>, batch: usize) -> Result<()> {
    if seeds == 0 || batch == 0 {
        bail!("--seeds and --batch must be positive");
    }
    let backend = args.backend.unwrap_or_else(Backend::default_compiled);
    let device = backend.device().map_err(anyhow::Error::msg)?;
    let checkpoint = args.checkpoint.clone().unwrap_or_else(default_checkpoint);
    let report_dir = report_dir.unwrap_or_else(|| checkpoint.join("eval"));
    let model = TrainedModel::load(&checkpoint, &device)?;
    let sampling = GenerateOptions {
        steps: args.steps,
        sampler: match args.sampler {
            SamplerKind::Ddim { .. } => SamplerKind::Ddim { eta: args.eta },
            other => other,
        },
        guidance: args.cfg.unwrap_or(model.spec.guidance),
        seed: args.seed,
    };
    sampling.validate(model.spec.diffusion.steps)?;
    let options = EvalOptions {
        seeds,
        sampling,
        batch,
    };
    let bar = progress_bar("judged {bar:30} {pos}/{len} clips [{elapsed_precise}]");
    let (report, results) = evaluate(&model, &options, &device, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done.min(total) as u64);
    })?;
    bar.finish_and_clear();
    write_report(&report, &results, &report_dir)?;
    print!("{}", table(&report));
    println!("wrote {}", report_dir.join("eval.json").display());
    Ok(())
}

fn run(args: Args) -> Result<()> {
    if let Some(Command::Eval {
        seeds,
        report_dir,
        batch,
    }) = &args.command
    {
        return run_eval(&args, *seeds, report_dir.clone(), *batch);
    }
    if args.scale == 0 || args.scale > 64 {
        bail!("--scale must be between 1 and 64, got {}", args.scale);
    }
    let prompts = read_prompts(&args)?;
    let outputs: Vec<PathBuf> = match &args.out_dir {
        Some(dir) => {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create output folder {}", dir.display()))?;
            (0..prompts.len())
                .map(|i| dir.join(format!("{i:03}.gif")))
                .collect()
        }
        None => vec![args.out.clone()],
    };
    for path in outputs.iter().chain(&args.sheet) {
        check_writable(path)?;
    }
    let sampler = match args.sampler {
        SamplerKind::Ddim { .. } => SamplerKind::Ddim { eta: args.eta },
        other => other,
    };

    let backend = args.backend.unwrap_or_else(Backend::default_compiled);
    let device = backend.device().map_err(anyhow::Error::msg)?;
    let checkpoint = args.checkpoint.clone().unwrap_or_else(default_checkpoint);
    let model = TrainedModel::load(&checkpoint, &device)?;
    let options = GenerateOptions {
        steps: args.steps,
        sampler,
        guidance: args.cfg.unwrap_or(model.spec.guidance),
        seed: args.seed,
    };

    let bar = progress_bar("denoising {bar:30} {pos}/{len} [{elapsed_precise}]");
    bar.set_length(args.steps as u64);
    let start = Instant::now();
    let clips = generate((&model).into(), &prompts, &options, &device, |_| bar.inc(1))?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    for (clip, path) in clips.iter().zip(&outputs) {
        write_gif(clip, path, args.scale, 12)?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &args.frames {
        write_frames(&clips[0], dir, args.scale)?;
        println!("wrote {} frames to {}", clips[0].frames, dir.display());
    }
    if let Some(sheet) = &args.sheet {
        write_sheet(&clips, sheet, args.scale)?;
        println!("wrote {}", sheet.display());
    }
    println!(
        "sampled {} clip(s) with {} {sampler} steps, guidance {} on {backend} in {seconds:.2} s",
        clips.len(),
        options.steps,
        options.guidance
    );
    Ok(())
}

/// A progress bar on standard error when it is a terminal (hidden otherwise, so logs
/// and tests read clean lines).
fn progress_bar(template: &str) -> ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
