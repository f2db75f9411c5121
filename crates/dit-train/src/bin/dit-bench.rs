//! `dit-bench`: training-step and sampling throughput of the DiT of a config,
//! on every compiled backend. Prints one JSON line per measurement.
//!
//! GFLOP/s use the analytic count of [`forward_flops`]: 2 FLOPs per
//! multiply-add of every matrix product (linear layers, attention scores and
//! weighted sums; the text encoder included), ×3 for a training step
//! (forward, and backward for inputs and weights). Element-wise work is not counted.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;
use dit_infer::pipeline::{GenerateOptions, TextToVideo, generate};
use dit_infer::sampler::SamplerKind;
use dit_model::RunSpec;
use dit_model::{Backend, DitConfig, Tokenizer};
use dit_train::checkpoint::optimizer;
use dit_train::config::ExperimentConfig;
use dit_train::latent_cache::LatentCache;
use dit_train::loss::{StepDraws, diffusion_loss};

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
    /// Measure sampling only.
    #[arg(long)]
    sampling_only: bool,
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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn line(config: &str, backend: Backend, what: &str, batch: usize, median_s: f64, flops: f64) {
    let record = serde_json::json!({
        "config": config,
        "backend": backend.name(),
        "what": what,
        "batch": batch,
        "median_s": median_s,
        "samples_per_s": batch as f64 / median_s,
        "gflops": flops / median_s / 1e9,
    });
    println!("{record}");
}

fn bench_train(
    config: &ExperimentConfig,
    dit_config: &DitConfig,
    device: &Device,
    batch: usize,
    repeats: usize,
) -> Result<f64> {
    let train_device = device.clone().autodiff();
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
            &train_device,
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
    };
    let schedule = config.diffusion.build();
    let mut times = Vec::new();
    for step in 0..repeats + 3 {
        let start = Instant::now();
        let mut draws = StepDraws::new(0, step, batch, cache.len(), schedule.len(), 0.1);
        let loss = diffusion_loss(
            &dit,
            &schedule,
            config.diffusion.prediction,
            &cache,
            &mut draws,
            5.0,
            &train_device,
        );
        let grads = GradientsParams::from_grads(loss.backward(), &dit);
        dit = optim.step(1e-4, dit, grads);
        let _ = dit.x_embedder.proj.weight.val().into_data(); // wait for the step to finish
        if step >= 3 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(median(times))
}

fn bench_sample(
    config: &ExperimentConfig,
    dit_config: &DitConfig,
    device: &Device,
    batch: usize,
    repeats: usize,
) -> Result<f64> {
    let shapes = &config.data.shapes;
    let tokenizer = Tokenizer::new(&dit_data::vocabulary());
    let mut model_config = config.model.clone();
    model_config.dit = dit_config.clone();
    let spec = RunSpec::new(
        model_config.clone(),
        config.diffusion.clone(),
        shapes.frames,
        shapes.size,
        1.0,
    );
    let autoencoder = model_config.autoencoder.init(device)?;
    let dit = dit_config.init(device)?;
    let model = TextToVideo {
        spec: &spec,
        tokenizer: &tokenizer,
        autoencoder: &autoencoder,
        dit: &dit,
    };
    let prompts: Vec<String> = (0..batch)
        .map(|_| "a red circle moving right".to_string())
        .collect();
    let options = GenerateOptions {
        steps: 50,
        sampler: SamplerKind::Ddim { eta: 0.0 },
        guidance: config.guidance,
        seed: 0,
        prompt_offset: 0,
    };
    let mut times = Vec::new();
    for i in 0..repeats.div_ceil(2) + 1 {
        let start = Instant::now();
        generate(model, &prompts, &options, device, |_| {})?;
        if i >= 1 {
            times.push(start.elapsed().as_secs_f64());
        }
    }
    Ok(median(times))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = ExperimentConfig::load(&args.config)?;
    let name = args
        .config
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("config")
        .to_string();
    let mut dit_config = config.model.dit.clone();
    dit_config.text.vocab_size = Tokenizer::new(&dit_data::vocabulary()).num_ids();
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
        if !args.sampling_only {
            let s = bench_train(&config, &dit_config, &device, batch, args.repeats)?;
            line(
                &name,
                backend,
                "train_step",
                batch,
                s,
                3.0 * forward_flops(&dit_config, batch, words),
            );
        }
        for clips in [1, 16] {
            let s = bench_sample(&config, &dit_config, &device, clips, args.repeats)?;
            let guided = if config.guidance != 1.0 { 2 } else { 1 };
            line(
                &name,
                backend,
                "sample_clip",
                clips,
                s,
                50.0 * forward_flops(&dit_config, guided * clips, words),
            );
        }
    }
    Ok(())
}
