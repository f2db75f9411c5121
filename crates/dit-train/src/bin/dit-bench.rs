//! `dit-bench`: training-step and sampling throughput of the DiT of a config (and, with
//! `--autoencoder`, its autoencoder stage's training step), on every compiled backend. Prints one JSON line per measurement, the first the backend's
//! own 1024³ single-precision matrix product (`sgemm_1024`), against which every later
//! figure gives its fraction (`of_sgemm_peak`): the distance to what the machine can do.
//!
//! GFLOP/s use the analytic count of [`forward_flops`]: 2 FLOPs per
//! multiply-add of every matrix product (linear layers, attention scores and
//! weighted sums; the text encoder included), ×3 for a training step
//! (forward, and backward for inputs and weights). Element-wise work is not counted.

/// mimalloc, keeping freed memory for reuse (see `dit_infer::allocator`).
#[global_allocator]
static ALLOCATOR: dit_infer::allocator::Allocator = dit_infer::allocator::Allocator {};

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;
use dit_infer::pipeline::{GenerateOptions, TextToVideo, generate};
use dit_model::RunSpec;
use dit_model::{Backend, DitConfig, ModelConfig, Tokenizer};
use dit_train::checkpoint::{autoencoder_optimizer, optimizer};
use dit_train::config::ExperimentConfig;
use dit_train::data_parallel::Replicas;
use dit_train::latent_cache::LatentCache;
use dit_train::loss::{StepBatch, StepDraws};

/// Measure DiT training and sampling speed.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Experiment config (TOML).
    #[arg(long, default_value = "configs/tiny.toml")]
    config: PathBuf,
    /// Backends to measure (default: every compiled one).
    #[arg(long, value_delimiter = ',')]
    backend: Vec<Backend>,
    /// Timed repetitions per measurement (after warm-up).
    #[arg(long, default_value_t = 10)]
    repeats: usize,
    /// Training batch (default: the config's).
    #[arg(long)]
    batch: Option<usize>,
    /// Devices that share the training step's batch, one replica on each (as
    /// `dit-train --devices`): the step is then measured as `train_step_N_devices`.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Measure sampling only.
    #[arg(long)]
    sampling_only: bool,
    /// Measure the autoencoder stage's training step too (`autoencoder_step`: the
    /// config's batch of frames, or of its `crop` windows).
    #[arg(long)]
    autoencoder: bool,
    /// Clips generated together in the sampling measurements.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    sample_clips: Vec<usize>,
}

/// Multiply-add count ×2 of one forward pass for `batch` clips with `words`-word prompts.
pub fn forward_flops(c: &DitConfig, batch: usize, words: usize) -> f64 {
    let (h, n) = (c.hidden as f64, c.num_tokens() as f64);
    let mlp = c.mlp_hidden() as f64;
    let per_token_block = 4.0 * h * h + 2.0 * h * mlp + 2.0 * n * h; // qkv, proj, MLP, QKᵀ and AV
    let per_sample_block = 6.0 * h * h; // adaLN modulation
    let cross = if c.cross_attention {
        let w = c.text.width as f64;
        n * (2.0 * h * h + 2.0 * words as f64 * h) + words as f64 * 2.0 * w * h
    } else {
        0.0
    };
    let blocks = c.depth as f64 * (n * per_token_block + per_sample_block + cross);
    let ends = n * 2.0 * c.patch_dim() as f64 * h + 2.0 * h * h + 256.0 * h + h * h;
    let w = c.text.width as f64;
    let text = c.text.depth as f64 * words as f64 * (12.0 * w * w + 2.0 * words as f64 * w) + w * h;
    2.0 * batch as f64 * (blocks + ends + text)
}

/// The words of the config's built-in data set (Moving Fashion's, else Moving Shapes').
fn builtin_vocabulary(config: &ExperimentConfig) -> Vec<&'static str> {
    match config.data.fashion {
        Some(_) => dit_data::fashion::fashion_vocabulary(),
        None => dit_data::vocabulary(),
    }
}

/// CPU time (user + system, all threads) this process has used, in seconds,
/// from `/proc/self/stat`; `None` where that file does not exist.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) in parentheses;
    // utime and stime are fields 14 and 15, in clock ticks.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a system setting.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

/// Wall-clock times of the timed repetitions and the CPU time they used, and the time of
/// the very first repetition (on a GPU backend it includes compiling and autotuning the
/// kernels).
#[derive(Default)]
struct Timing {
    wall: Vec<f64>,
    cpu: Option<f64>,
    first: Option<f64>,
}

impl Timing {
    /// Times one repetition of `run` and adds it when `timed`.
    fn measure<T>(&mut self, timed: bool, run: impl FnOnce() -> Result<T>) -> Result<T> {
        let (start, cpu_start) = (Instant::now(), process_cpu_seconds());
        let out = run()?;
        self.first.get_or_insert(start.elapsed().as_secs_f64());
        if timed {
            self.wall.push(start.elapsed().as_secs_f64());
            self.cpu = match (self.cpu.or(Some(0.0)), cpu_start, process_cpu_seconds()) {
                (Some(total), Some(a), Some(b)) => Some(total + b - a),
                _ => None,
            };
        }
        Ok(out)
    }

    fn median(&self) -> f64 {
        let mut xs = self.wall.clone();
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    }

    /// Average number of cores busy while timed (CPU time over wall-clock time).
    fn cores_busy(&self) -> Option<f64> {
        self.cpu.map(|cpu| cpu / self.wall.iter().sum::<f64>())
    }
}

/// Side of the square single-precision matrix product that measures a backend's peak.
const PEAK_SIDE: usize = 1024;

/// GFLOP/s of the backend's own `PEAK_SIDE`³ f32 matrix product (the median of `repeats`
/// after two warm-up products): the peak the model's figures are read against.
fn sgemm_peak(device: &Device, repeats: usize) -> Result<Timing> {
    let a = Tensor::<2>::random([PEAK_SIDE, PEAK_SIDE], Distribution::Default, device);
    let b = Tensor::<2>::random([PEAK_SIDE, PEAK_SIDE], Distribution::Default, device);
    let mut timing = Timing::default();
    for i in 0..repeats + 2 {
        timing.measure(i >= 2, || {
            let _ = a.clone().matmul(b.clone()).into_data(); // wait for the product
            Ok(())
        })?;
    }
    Ok(timing)
}

/// Prints one measurement as a JSON line: time, throughput, GFLOP/s and, where the
/// backend's sgemm peak is known, the fraction of it.
fn line(
    config: &str,
    backend: Backend,
    what: &str,
    batch: usize,
    timing: &Timing,
    flops: f64,
    peak_gflops: Option<f64>,
) -> f64 {
    let median_s = timing.median();
    let gflops = flops / median_s / 1e9;
    let record = serde_json::json!({
        "config": config,
        "backend": backend.name(),
        "what": what,
        "batch": batch,
        "median_s": median_s,
        "samples_per_s": batch as f64 / median_s,
        "gflops": gflops,
        "of_sgemm_peak": peak_gflops.map(|p| gflops / p),
        "cores_busy": timing.cores_busy(),
        "first_s": timing.first,
    });
    println!("{record}");
    gflops
}

fn bench_train(
    config: &ExperimentConfig,
    dit_config: &DitConfig,
    devices: &[Device],
    batch: usize,
    repeats: usize,
) -> Result<Timing> {
    if let Some(pretrained) = dit_config.text.pretrained {
        anyhow::bail!(
            "the training benchmark feeds word ids; this config conditions on {}",
            pretrained.name()
        );
    }
    let replicas = Replicas::new(devices.iter().map(|d| d.clone().autodiff()).collect());
    let train_device = replicas.main().clone();
    let mut dit = dit_config.init(&train_device)?;
    let mut optim = optimizer(&config.dit_training);
    let c = dit_config;
    let words = c.text.max_words;
    let cache = LatentCache {
        latents: Tensor::random(
            [
                256,
                c.latent_channels,
                c.latent_frames,
                c.latent_size,
                c.latent_size,
            ],
            Distribution::Normal(0.0, 1.0),
            &devices[0],
        ),
        tokens: (0..256)
            .map(|i| {
                (0..words)
                    .map(|w| {
                        if w < 6 {
                            1 + (i + w) % (c.text.vocab_size - 1)
                        } else {
                            0
                        }
                    })
                    .collect()
            })
            .collect(),
        frozen: None,
    };
    let process = config.diffusion.process();
    let mut timing = Timing::default();
    for step in 0..repeats + 3 {
        dit = timing.measure(step >= 3, || {
            let mut draws = StepDraws::new(0, step, batch, cache.len(), &process, 0.1);
            let batch = StepBatch::new(&process, &cache, &mut draws, 5.0, &devices[0]);
            let (_, grads) = replicas.gradients(&dit, &batch)?;
            let dit = optim.step(1e-4, dit, grads);
            let _ = dit.x_embedder.proj.weight.val().into_data(); // wait for the step to finish
            Ok(dit)
        })?;
    }
    Ok(timing)
}

/// The autoencoder stage's training step: `batch` random frames of `side × side`,
/// encoded, decoded, MSE, backward and an Adam step (with the stage's gradient clipping).
fn bench_autoencoder(
    config: &ExperimentConfig,
    device: &Device,
    batch: usize,
    side: usize,
    repeats: usize,
) -> Result<Timing> {
    let train_device = device.clone().autodiff();
    let mut ae = config.model.autoencoder.init(&train_device)?;
    let mut optim = autoencoder_optimizer(&config.autoencoder_training);
    let video = Tensor::<5>::random(
        [
            batch,
            config.model.autoencoder.image_channels,
            1,
            side,
            side,
        ],
        Distribution::Uniform(-1.0, 1.0),
        &train_device,
    );
    let mut timing = Timing::default();
    for step in 0..repeats + 3 {
        ae = timing.measure(step >= 3, || {
            let recon = ae.decode(ae.encode(video.clone()).sample());
            let loss = (recon - video.clone()).powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &ae);
            let ae = optim.step(1e-4, ae, grads);
            let _ = ae.encoder.conv_in.weight.val().into_data(); // wait for the step to finish
            Ok(ae)
        })?;
    }
    Ok(timing)
}

fn bench_sample(
    config: &ExperimentConfig,
    dit_config: &DitConfig,
    device: &Device,
    batch: usize,
    repeats: usize,
) -> Result<Timing> {
    let tokenizer = Tokenizer::new(&builtin_vocabulary(config));
    let model_config = ModelConfig {
        autoencoder: config.model.autoencoder.clone(),
        dit: dit_config.clone(),
    };
    let spec = RunSpec::new(
        model_config.clone(),
        config.diffusion.clone(),
        config.data.frames(),
        config.data.size(),
        1.0,
    );
    let autoencoder = model_config.autoencoder.init(device)?;
    let dit = dit_config.init(device)?;
    let frozen_text = dit_model::run::load_frozen_text(&spec, device)?;
    let model = TextToVideo {
        spec: &spec,
        tokenizer: &tokenizer,
        frozen_text: frozen_text.as_ref(),
        autoencoder: &autoencoder,
        dit: &dit,
    };
    let prompts: Vec<String> = (0..batch)
        .map(|_| "a red circle moving right".to_string())
        .collect();
    let options = GenerateOptions {
        steps: 50,
        sampler: config.diffusion.process().default_sampler(),
        guidance: config.guidance,
        seed: 0,
        prompt_offset: 0,
    };
    let mut timing = Timing::default();
    for i in 0..repeats.div_ceil(2) + 1 {
        timing.measure(i >= 1, || {
            Ok(generate(model, &prompts, &options, device, |_| {})?)
        })?;
    }
    Ok(timing)
}

fn main() -> Result<()> {
    dit_infer::allocator::keep_freed_memory();
    let args = Args::parse();
    let config = ExperimentConfig::load(&args.config)?;
    let name = args
        .config
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("config")
        .to_string();
    let vocab_size = Tokenizer::new(&builtin_vocabulary(&config)).num_ids();
    let dit_config = config.networks(vocab_size)?.dit;
    let backends = if args.backend.is_empty() {
        Backend::compiled()
    } else {
        args.backend.clone()
    };
    let batch = args.batch.unwrap_or(config.dit_training.batch_size);
    let words = dit_config.text.max_words;
    for backend in backends {
        let device = backend.device().map_err(anyhow::Error::msg)?;
        device.seed(0);
        let peak_flops = 2.0 * (PEAK_SIDE as f64).powi(3);
        let timing = sgemm_peak(&device, args.repeats)?;
        let peak = line(&name, backend, "sgemm_1024", 1, &timing, peak_flops, None);
        if !args.sampling_only {
            let devices = backend.devices(args.devices).map_err(anyhow::Error::msg)?;
            let s = bench_train(&config, &dit_config, &devices, batch, args.repeats)?;
            let what = match args.devices {
                1 => "train_step".to_string(),
                n => format!("train_step_{n}_devices"),
            };
            line(
                &name,
                backend,
                &what,
                batch,
                &s,
                3.0 * forward_flops(&dit_config, batch, words),
                Some(peak),
            );
        }
        if args.autoencoder && !args.sampling_only {
            let ae_batch = config.autoencoder_training.batch_size;
            let side = config
                .autoencoder_training
                .crop
                .unwrap_or_else(|| config.data.size());
            let s = bench_autoencoder(&config, &device, ae_batch, side, args.repeats)?;
            line(
                &name,
                backend,
                "autoencoder_step",
                ae_batch,
                &s,
                3.0 * ae_batch as f64 * config.model.autoencoder.forward_flops(side),
                Some(peak),
            );
        }
        for &clips in &args.sample_clips {
            let s = bench_sample(&config, &dit_config, &device, clips, args.repeats)?;
            let guided = if config.guidance != 1.0 { 2 } else { 1 };
            line(
                &name,
                backend,
                "sample_clip",
                clips,
                &s,
                50.0 * forward_flops(&dit_config, guided * clips, words),
                Some(peak),
            );
        }
    }
    Ok(())
}
