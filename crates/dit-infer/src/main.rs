//! `dit-infer`: generate videos from prompts with a trained DiT.

/// mimalloc, keeping freed memory for reuse (see `dit_infer::allocator`).
#[global_allocator]
static ALLOCATOR: dit_infer::allocator::Allocator = dit_infer::allocator::Allocator {};

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dit_data::figure::write_prompt_sheet;
use dit_data::idx::fashion_mnist_dir;
use dit_data::video::{ClipFormat, FRAMES_PER_SECOND, write_clip, write_frames};
use dit_infer::eval::{
    EvalOptions, evaluate, evaluate_unseen, table, unseen_table, write_report, write_unseen_report,
};
use dit_infer::fashion_eval::{
    FashionEvalOptions, evaluate_fashion, fashion_table, write_fashion_report,
};
use dit_infer::pipeline::{
    DEFAULT_STEPS, GenerateOptions, check_prompts, generate, truncated_prompts,
};
use dit_infer::trace::{TraceOptions, trace};
use dit_infer::{default_checkpoint, default_classifier};
use dit_model::sampler::SamplerKind;
use dit_model::{Backend, TrainedModel, TrainingData};
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
    /// Output clip (single prompt): `.gif` (animated), `.mp4` (H.264) or `.png` (the frames
    /// side by side).
    #[arg(long, default_value = "out.gif", conflicts_with = "prompts_file")]
    out: PathBuf,
    /// Output folder for batch mode: 000.gif, 001.gif, … in prompt order.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Format of the clips of batch mode: gif, mp4 or png.
    #[arg(long, default_value = "gif", requires = "out_dir")]
    format: ClipFormat,
    /// Prompts denoised, decoded and written together in batch mode; memory grows with it,
    /// not with the length of the prompts file.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Run folder of a trained model (default: the shipped checkpoint).
    #[arg(long, global = true)]
    checkpoint: Option<PathBuf>,
    /// Denoising steps.
    #[arg(long, global = true, default_value_t = DEFAULT_STEPS)]
    steps: usize,
    /// Sampler: ddim, ddpm or euler (default: euler for a rectified-flow checkpoint, else ddim).
    #[arg(long, global = true)]
    sampler: Option<SamplerKind>,
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
    /// Frames a second of GIF and MP4 outputs.
    #[arg(long, default_value_t = FRAMES_PER_SECOND)]
    fps: u16,
    /// Pixel magnification of the outputs.
    #[arg(long, default_value_t = 4)]
    scale: usize,
    /// Backend among those compiled in (flex, ndarray, wgpu, vulkan, cuda).
    #[arg(long, global = true)]
    backend: Option<Backend>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate clips for every composition of the checkpoint's data set (Moving Shapes'
    /// 72, Moving Fashion's 240; the canonical caption and three paraphrases each), judge
    /// them from their pixels, and report prompt fidelity.
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
        /// The photograph classifier that judges a Moving Fashion checkpoint's clips
        /// (default: the shipped checkpoints/fashion-classifier).
        #[arg(long)]
        classifier: Option<PathBuf>,
        /// Judge prompts in words no training caption has instead (Moving Shapes models on
        /// a pretrained text encoder): writes unseen.json and unseen-failures.png.
        #[arg(long)]
        unseen_words: bool,
    },
    /// Follow one prompt through every step of the pipeline, from the model's real tensors:
    /// writes OUT/index.html (self-contained), a PNG per picture and OUT/trace.json.
    Trace {
        /// The prompt, e.g. "a red circle moving right".
        #[arg(long)]
        prompt: String,
        /// Output folder (replaced when the trace is complete).
        #[arg(long, default_value = "trace")]
        out: PathBuf,
        /// Trace this clip (GIF, MP4 or a folder of PNG frames) instead of a training clip
        /// of the prompt's composition.
        #[arg(long)]
        video: Option<PathBuf>,
        /// The diffusion step of the training view (default: the middle one).
        #[arg(long)]
        t: Option<usize>,
        /// The query token of the attention maps as FRAME,ROW,COLUMN of the patch grid
        /// (default: the middle one).
        #[arg(long, value_parser = parse_token)]
        token: Option<[usize; 3]>,
    },
}

/// Reads `F,R,C`.
fn parse_token(text: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let numbers: Result<Vec<usize>, _> = parts.iter().map(|p| p.parse::<usize>()).collect();
    match numbers.ok().as_deref() {
        Some(&[f, r, c]) => Ok([f, r, c]),
        _ => Err(format!(
            "expected FRAME,ROW,COLUMN of the patch grid, e.g. 3,2,2, got {text:?}"
        )),
    }
}

/// The sampler the options ask for, or the model's default
/// ([`dit_model::ForwardProcess::default_sampler`]), with `--eta` for DDIM.
fn sampler(args: &Args, model: &TrainedModel) -> SamplerKind {
    args.sampler
        .unwrap_or_else(|| model.spec.diffusion.process().default_sampler())
        .with_eta(args.eta)
}

/// Fails early (before sampling) when `path` cannot be written, without creating it: its
/// folder must exist and take a new file.
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
    if path.is_dir() {
        bail!("cannot write {}: it is a folder", path.display());
    }
    tempfile::NamedTempFile::new_in(parent)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Largest prompts file read (50,000 prompts of 12 words take about 3 MB).
const MAX_PROMPTS_FILE_BYTES: u64 = 64 << 20;
/// Most clips one `--sheet` draws (it holds them all in memory).
const MAX_SHEET_CLIPS: usize = 256;

fn read_prompts(args: &Args) -> Result<Vec<String>> {
    match (&args.prompt, &args.prompts_file) {
        (Some(p), _) => Ok(vec![p.clone()]),
        (None, Some(file)) => {
            let bytes = fs::metadata(file)
                .with_context(|| format!("cannot read prompts file {}", file.display()))?
                .len();
            if bytes > MAX_PROMPTS_FILE_BYTES {
                bail!(
                    "prompts file {} has {bytes} bytes, over the limit of {MAX_PROMPTS_FILE_BYTES}",
                    file.display()
                );
            }
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

fn run_eval(
    args: &Args,
    seeds: usize,
    report_dir: Option<PathBuf>,
    batch: usize,
    classifier: Option<PathBuf>,
    unseen_words: bool,
) -> Result<()> {
    if seeds == 0 || batch == 0 {
        bail!("--seeds and --batch must be positive");
    }
    let backend = args.backend.unwrap_or_else(Backend::default_compiled);
    let device = backend.device().map_err(anyhow::Error::msg)?;
    let checkpoint = args.checkpoint.clone().unwrap_or_else(default_checkpoint);
    let report_dir = report_dir.unwrap_or_else(|| checkpoint.join(dit_model::run::EVAL_DIR));
    let model = TrainedModel::load(&checkpoint, &device)?;
    let sampling = GenerateOptions {
        steps: args.steps,
        sampler: sampler(args, &model),
        guidance: args.cfg.unwrap_or(model.spec.guidance),
        seed: args.seed,
        prompt_offset: 0,
    };
    sampling.validate(&model.spec.diffusion.process())?;
    let bar = progress_bar("judged {bar:30} {pos}/{len} clips [{elapsed_precise}]");
    match model.spec.training_data() {
        TrainingData::MovingShapes => {}
        TrainingData::MovingFashion if unseen_words => {
            bail!(
                "--unseen-words judges Moving Shapes prompts; this checkpoint learned Moving Fashion"
            )
        }
        TrainingData::MovingFashion => {
            let options = FashionEvalOptions {
                seeds,
                sampling,
                batch,
                photos: fashion_mnist_dir(),
                classifier: classifier.unwrap_or_else(default_classifier),
            };
            let (report, results) = evaluate_fashion(&model, &options, &device, |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done.min(total) as u64);
            })?;
            bar.finish_and_clear();
            write_fashion_report(&report, &results, &report_dir)?;
            print!("{}", fashion_table(&report));
            println!("wrote {}", report_dir.join("eval.json").display());
            return Ok(());
        }
        TrainingData::Folder => bail!(
            "{} was trained on a folder of clips: `eval` judges the built-in data sets' compositions, which its captions need not name",
            checkpoint.display()
        ),
    }
    let options = EvalOptions {
        seeds,
        sampling,
        batch,
    };
    if unseen_words {
        let (report, results) = evaluate_unseen(&model, &options, &device, |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done.min(total) as u64);
        })?;
        bar.finish_and_clear();
        write_unseen_report(&report, &results, &report_dir)?;
        print!("{}", unseen_table(&report));
        println!("wrote {}", report_dir.join("unseen.json").display());
        return Ok(());
    }
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

/// `dit-infer trace`.
fn run_trace(
    args: &Args,
    prompt: &str,
    out: &Path,
    video: Option<PathBuf>,
    t: Option<usize>,
    token: Option<[usize; 3]>,
) -> Result<()> {
    let backend = args.backend.unwrap_or_else(Backend::default_compiled);
    let device = backend.device().map_err(anyhow::Error::msg)?;
    let checkpoint = args.checkpoint.clone().unwrap_or_else(default_checkpoint);
    let model = TrainedModel::load(&checkpoint, &device)?;
    let options = TraceOptions {
        prompt: prompt.to_string(),
        video,
        t,
        token,
        sampling: GenerateOptions {
            steps: args.steps,
            sampler: sampler(args, &model),
            guidance: args.cfg.unwrap_or(model.spec.guidance),
            seed: args.seed,
            prompt_offset: 0,
        },
    };
    let start = Instant::now();
    trace(&model, &options, &device)?.write(out)?;
    println!(
        "wrote {} in {:.1} s",
        out.join("index.html").display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run(args: Args) -> Result<()> {
    if let Some(Command::Trace {
        prompt,
        out,
        video,
        t,
        token,
    }) = &args.command
    {
        return run_trace(&args, prompt, out, video.clone(), *t, *token);
    }
    if let Some(Command::Eval {
        seeds,
        report_dir,
        batch,
        classifier,
        unseen_words,
    }) = &args.command
    {
        return run_eval(
            &args,
            *seeds,
            report_dir.clone(),
            *batch,
            classifier.clone(),
            *unseen_words,
        );
    }
    if args.scale == 0 || args.scale > 64 {
        bail!("--scale must be between 1 and 64, got {}", args.scale);
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be positive");
    }
    if !(1..=120).contains(&args.fps) {
        bail!("--fps must be between 1 and 120, got {}", args.fps);
    }
    let prompts = read_prompts(&args)?;
    let outputs: Vec<PathBuf> = match &args.out_dir {
        Some(dir) => {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create output folder {}", dir.display()))?;
            let digits = (prompts.len() - 1).to_string().len().max(3);
            let extension = args.format.extension();
            (0..prompts.len())
                .map(|i| dir.join(format!("{i:0digits$}.{extension}")))
                .collect()
        }
        None => vec![args.out.clone()],
    };
    ClipFormat::of_path(&outputs[0])?;
    check_writable(&outputs[0])?;
    if let Some(sheet) = &args.sheet {
        if ClipFormat::of_path(sheet)? != ClipFormat::Png {
            bail!("--sheet {} must be a .png file", sheet.display());
        }
        if prompts.len() > MAX_SHEET_CLIPS {
            bail!(
                "--sheet draws at most {MAX_SHEET_CLIPS} clips, the prompts file has {}",
                prompts.len()
            );
        }
        check_writable(sheet)?;
    }
    let backend = args.backend.unwrap_or_else(Backend::default_compiled);
    let device = backend.device().map_err(anyhow::Error::msg)?;
    let checkpoint = args.checkpoint.clone().unwrap_or_else(default_checkpoint);
    let model = TrainedModel::load(&checkpoint, &device)?;
    let sampler = sampler(&args, &model);
    let options = GenerateOptions {
        steps: args.steps,
        sampler,
        guidance: args.cfg.unwrap_or(model.spec.guidance),
        seed: args.seed,
        prompt_offset: 0,
    };
    // Every option and every prompt is checked before the first clip is made.
    options.validate(&model.spec.diffusion.process())?;
    check_prompts(&model.spec, &model.tokenizer, &prompts)?;
    for index in truncated_prompts((&model).into(), &prompts)? {
        eprintln!(
            "note: prompt {index} is longer than {} tokens, the most all-MiniLM-L6-v2 reads; the rest is left out",
            dit_model::minilm::MAX_TOKENS
        );
    }

    let chunks = prompts.len().div_ceil(args.batch_size);
    let bar = progress_bar("denoising {bar:30} {pos}/{len} [{elapsed_precise}]");
    bar.set_length((args.steps * chunks) as u64);
    let start = Instant::now();
    let mut sheet_clips = Vec::new();
    let mut first_clip = None;
    for (chunk, (prompts, outputs)) in prompts
        .chunks(args.batch_size)
        .zip(outputs.chunks(args.batch_size))
        .enumerate()
    {
        let first = chunk * args.batch_size;
        let options = GenerateOptions {
            prompt_offset: first as u64,
            ..options.clone()
        };
        let clips = generate((&model).into(), prompts, &options, &device, |_| bar.inc(1))?;
        for (i, (clip, path)) in clips.iter().zip(outputs).enumerate() {
            write_clip(clip, path, args.scale, args.fps).with_context(|| {
                format!(
                    "prompt {} ({} clips before it were written)",
                    first + i,
                    first + i
                )
            })?;
            bar.println(format!("wrote {}", path.display()));
        }
        if args.sheet.is_some() {
            sheet_clips.extend_from_slice(&clips);
        }
        if first_clip.is_none() {
            first_clip = clips.into_iter().next();
        }
    }
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();

    if let (Some(dir), Some(clip)) = (&args.frames, &first_clip) {
        write_frames(clip, dir, args.scale)?;
        println!("wrote {} frames to {}", clip.frames, dir.display());
    }
    if let Some(sheet) = &args.sheet {
        let header = format!(
            "seed {} · {} {sampler} steps · guidance {}",
            args.seed, options.steps, options.guidance
        );
        write_prompt_sheet(sheet, &header, &sheet_clips, &prompts, args.scale)?;
        println!("wrote {}", sheet.display());
    }
    println!(
        "sampled {} clip(s) with {} {sampler} steps, guidance {} on {backend} in {seconds:.2} s",
        prompts.len(),
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
    dit_infer::allocator::keep_freed_memory();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
