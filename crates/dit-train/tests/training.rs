//! Stage 1 and stage 2 on the `micro` recipe: the loss falls on a fixed batch,
//! checkpoints reload bit-identically, resumption is exact, and the frozen
//! autoencoder neither receives gradient nor changes.

use std::path::Path;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};

use dit_data::{Composition, VideoBatcher, judge_clip, video_to_clips};
use dit_model::run::{
    AUTOENCODER_FILE, AUTOENCODER_REPORT_FILE as REPORT_FILE, AutoencoderReport, DIT_FILE,
    load_module, save_module,
};
use dit_model::weights::named_parameters;
use dit_model::{Prediction, PromptInput};
use dit_train::autoencoder::{self, DecoderRound};
use dit_train::checkpoint::optimizer;
use dit_train::config::ExperimentConfig;
use dit_train::data::ClipSource;
use dit_train::latent_cache::LatentCache;
use dit_train::loss::{StepDraws, diffusion_loss};
use dit_train::trainer;

fn micro() -> ExperimentConfig {
    ExperimentConfig::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/micro.toml"),
    )
    .unwrap()
}

fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("dit-train-{name}-"))
        .tempdir()
        .unwrap()
}

fn dit_config(config: &ExperimentConfig, source: &ClipSource) -> dit_model::DitConfig {
    config.networks(source.tokenizer().num_ids()).unwrap().dit
}

#[test]
fn loss_falls_when_overfitting_one_batch() {
    for prediction in [Prediction::Epsilon, Prediction::Velocity, Prediction::Flow] {
        let config = micro();
        let source = ClipSource::open(&config).unwrap();
        let device = Device::default().autodiff();
        device.seed(1);
        let mut dit = dit_config(&config, &source).init(&device).unwrap();
        let cache = LatentCache {
            latents: Tensor::random([4, 4, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device),
            tokens: (0..4)
                .map(|i| vec![1 + i, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .collect(),
            frozen: None,
        };
        let process = config
            .diffusion
            .clone()
            .with_prediction(prediction)
            .process();
        let mut optim = optimizer(&config.dit_training);
        let mut losses = Vec::new();
        for _ in 0..60 {
            // The same clips, levels and noise every time: step 0's draws.
            let mut draws = StepDraws::new(0, 0, 4, 4, &process, 0.0);
            let loss = diffusion_loss(&dit, &process, &cache, &mut draws, 0.0, &device);
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &dit);
            dit = optim.step(3e-3, dit, grads);
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.5 * first, "{prediction:?}: loss {first} → {last}");
    }
}

/// A DiT conditioned on a frozen encoder's outputs (synthetic 384-wide states here, so no
/// weights are needed): the loss falls on a fixed batch, the projection receives gradient
/// through both the cross-attention and the pooled vector.
#[test]
fn a_dit_on_frozen_text_features_learns_through_its_projection() {
    use dit_model::frozen_text::{EncodedPrompt, PretrainedText};
    use dit_train::latent_cache::FrozenCaptions;

    let config = micro();
    let source = ClipSource::open(&config).unwrap();
    let device = Device::default().autodiff();
    device.seed(2);
    let mut c = dit_config(&config, &source);
    c.cross_attention = true;
    c.text.pretrained = Some(PretrainedText::MiniLmL6V2);
    let mut dit = c.init(&device).unwrap();
    assert!(dit.text_encoder.is_none());
    let width = PretrainedText::MiniLmL6V2.width();
    let prompts: Vec<EncodedPrompt> = (0..2)
        .map(|p| EncodedPrompt {
            states: (0..(3 + p) * width)
                .map(|i| ((i * (p + 3)) % 17) as f32 / 17.0 - 0.5)
                .collect(),
            tokens: 3 + p,
            pooled: (0..width).map(|i| ((i + p) % 5) as f32 / 5.0).collect(),
        })
        .collect();
    let cache = LatentCache {
        latents: Tensor::random([4, 4, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device),
        tokens: vec![vec![0; 12]; 4],
        frozen: Some(FrozenCaptions {
            prompts,
            index: vec![0, 1, 0, 1],
            width,
        }),
    };
    let process = config
        .diffusion
        .clone()
        .with_prediction(Prediction::Epsilon)
        .process();
    let mut optim = optimizer(&config.dit_training);
    let mut losses = Vec::new();
    for step in 0..60 {
        let mut draws = StepDraws::new(0, 0, 4, 4, &process, 0.0);
        let loss = diffusion_loss(&dit, &process, &cache, &mut draws, 0.0, &device);
        losses.push(loss.clone().into_scalar::<f32>());
        let grads = loss.backward();
        // adaLN-Zero starts every block and the final layer at zero: the text reaches the
        // output after the first updates.
        if step == 10 {
            let projection = dit.text_projection.as_ref().unwrap();
            for (name, grad) in [
                ("token_proj", projection.token_proj.weight.grad(&grads)),
                ("pooled_proj", projection.pooled_proj.weight.grad(&grads)),
            ] {
                let norm: f32 = grad.unwrap().abs().sum().into_scalar();
                assert!(norm > 0.0, "no gradient reaches {name}");
            }
        }
        let grads = GradientsParams::from_grads(grads, &dit);
        dit = optim.step(3e-3, dit, grads);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.5 * first, "loss {first} → {last}");
}

#[test]
fn frozen_autoencoder_receives_no_gradient() {
    let config = micro();
    let source = ClipSource::open(&config).unwrap();
    let device = Device::default().autodiff();
    let ae = config.model.autoencoder.init(&device).unwrap().no_grad();
    let dit = dit_config(&config, &source).init(&device).unwrap();
    let batcher = VideoBatcher::new(source.tokenizer(), 12);
    let batch = batcher
        .try_batch((0..2).map(|i| source.train_item(i, 0)).collect(), &device)
        .unwrap();
    // The encoder runs inside the graph here, unlike in training where latents are cached.
    let latent = ae.encode(batch.videos).mean;
    let t = Tensor::<1>::from_floats([10.0, 700.0], &device);
    let out = dit.forward(
        latent.clone() * 2.0,
        t,
        &dit.encode_text(PromptInput::Words(batch.tokens)),
    );
    let loss = (out - latent).powi_scalar(2).mean();
    let grads = loss.backward();
    let ae_grads = GradientsParams::from_grads(grads, &ae);
    assert_eq!(ae_grads.len(), 0, "the frozen autoencoder got gradients");
    let ae_live = config.model.autoencoder.init(&device).unwrap();
    let loss = ae_live
        .encode(Tensor::random(
            [1, 3, 4, 32, 32],
            Distribution::Default,
            &device,
        ))
        .mean
        .sum();
    assert!(
        !GradientsParams::from_grads(loss.backward(), &ae_live).is_empty(),
        "control: a live autoencoder gets gradients"
    );
}

#[test]
fn checkpoints_reload_bit_identically() {
    let config = micro();
    let source = ClipSource::open(&config).unwrap();
    let device = Device::default();
    let dir_guard = temp_dir("reload");
    let dir = dir_guard.path().to_path_buf();
    let dit = dit_config(&config, &source).init(&device).unwrap();
    let path = dir.join("dit.bpk");
    save_module(&dit, &path).unwrap();
    let back = load_module(dit_config(&config, &source).init(&device).unwrap(), &path).unwrap();
    let latent = Tensor::<5>::random([2, 4, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let tokens =
        Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 0, 3, 0, 0], [2, 3]), &device);
    let t = Tensor::<1>::from_floats([5.0, 600.0], &device);
    let a = dit.forward(
        latent.clone(),
        t.clone(),
        &dit.encode_text(PromptInput::Words(tokens.clone())),
    );
    let b = back.forward(latent, t, &back.encode_text(PromptInput::Words(tokens)));
    a.into_data().assert_eq(&b.into_data(), true);
}

/// The DiT as stage 2 of a recipe.
const CLOCK: trainer::StageClock = trainer::StageClock {
    stage: 2,
    seconds_before: 0.0,
};

/// A decoder round of `steps` steps at learning rate 2e-3 after those the run in `dir`
/// has done.
fn round(dir: &Path, steps: usize, latent_noise: f64) -> DecoderRound {
    let report = dit_model::run::read_autoencoder_report(dir).unwrap();
    DecoderRound::after(&report, steps, 2e-3, latent_noise)
}

/// Runs stage 1 into `dir`, or copies its result from `from`.
fn with_autoencoder(
    config: &ExperimentConfig,
    source: &ClipSource,
    dir: &Path,
    from: Option<&Path>,
) {
    match from {
        Some(src) => {
            for file in [AUTOENCODER_FILE, REPORT_FILE] {
                std::fs::copy(src.join(file), dir.join(file)).unwrap();
            }
        }
        None => {
            autoencoder::train(config, source, dir, &Device::default(), None).unwrap();
        }
    }
}

#[test]
fn resumed_training_ends_with_the_same_weights() {
    let config = micro();
    let source = ClipSource::open(&config).unwrap();
    let device = Device::default();

    let straight_guard = temp_dir("straight");

    let straight = straight_guard.path().to_path_buf();
    with_autoencoder(&config, &source, &straight, None);
    let ae_before = std::fs::read(straight.join(AUTOENCODER_FILE)).unwrap();
    trainer::train(
        &config,
        &source,
        &straight,
        std::slice::from_ref(&device),
        CLOCK,
    )
    .unwrap();
    assert_eq!(
        std::fs::read(straight.join(AUTOENCODER_FILE)).unwrap(),
        ae_before,
        "stage 2 changed the autoencoder"
    );

    // Interrupted after 3 steps (a checkpoint), then resumed to 6.
    let interrupted_guard = temp_dir("interrupted");
    let interrupted = interrupted_guard.path().to_path_buf();
    with_autoencoder(&config, &source, &interrupted, Some(&straight));
    let mut short = micro();
    short.dit_training.steps = 3;
    trainer::train(
        &short,
        &source,
        &interrupted,
        std::slice::from_ref(&device),
        CLOCK,
    )
    .unwrap();
    let report = trainer::train(
        &config,
        &source,
        &interrupted,
        std::slice::from_ref(&device),
        CLOCK,
    )
    .unwrap();
    assert_eq!(report.steps, 6);

    let load = |dir: &Path| {
        let dit = dit_config(&config, &source).init(&device).unwrap();
        named_parameters(&load_module(dit, &dir.join(DIT_FILE)).unwrap())
    };
    assert_eq!(
        load(&straight),
        load(&interrupted),
        "EMA weights differ after resumption"
    );
    let checkpoint = |dir: &Path| {
        let dit = dit_config(&config, &source).init(&device).unwrap();
        named_parameters(&load_module(dit, &dir.join("train/step-0000006/dit.bpk")).unwrap())
    };
    assert_eq!(
        checkpoint(&straight),
        checkpoint(&interrupted),
        "trained weights differ after resumption"
    );
    // The loss log has each step once, and notes where the run was resumed.
    let log = std::fs::read_to_string(interrupted.join("loss.csv")).unwrap();
    let data = log.lines().filter(|l| !l.starts_with('#'));
    assert_eq!(data.count(), 1 + 6, "{log}");
    let notes: Vec<&str> = log.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(notes, ["# at step 3: resumed"], "{log}");
    assert!(interrupted.join("loss.png").is_file());
}

#[test]
fn decoder_finetuning_keeps_the_encoder_and_lowers_the_error() {
    let mut config = micro();
    config.autoencoder_training.steps = 20;
    config.autoencoder_training.eval_clips = 8;
    let source = ClipSource::open(&config).unwrap();
    let device = Device::default();
    let dir_guard = temp_dir("decoder");
    let dir = dir_guard.path().to_path_buf();
    let before = autoencoder::train(&config, &source, &dir, &device, None).unwrap();
    let load = || {
        let ae = config.model.autoencoder.init(&device).unwrap();
        load_module(ae, &dir.join(AUTOENCODER_FILE)).unwrap()
    };
    let read_report = || -> AutoencoderReport {
        serde_json::from_str(&std::fs::read_to_string(dir.join(REPORT_FILE)).unwrap()).unwrap()
    };
    let saved_before = read_report();
    // Read the values now: weights load lazily from the file, which is about to be replaced.
    let old = load();
    let (old_encoder, old_decoder) = (
        named_parameters(&old.encoder),
        named_parameters(&old.decoder),
    );

    let (reported_before, after) =
        autoencoder::finetune_decoder(&config, &source, &dir, &device, &round(&dir, 40, 0.0))
            .unwrap();
    assert_eq!(reported_before, saved_before);
    let new = load();
    assert!(
        old_encoder == named_parameters(&new.encoder),
        "the encoder changed"
    );
    assert!(
        old_decoder != named_parameters(&new.decoder),
        "the decoder did not change"
    );
    // The scale as saved (JSON keeps it to the last bit or so of what `before` holds).
    assert_eq!(after.latent_scale, saved_before.latent_scale);
    assert_eq!((after.steps, after.decoder_steps), (20, 40));
    assert!(
        after.psnr > before.psnr,
        "PSNR {:.2} → {:.2} dB",
        before.psnr,
        after.psnr
    );
    // The report on disk is the new one.
    let on_disk = read_report();
    assert_eq!(
        (on_disk.psnr, on_disk.decoder_steps),
        (after.psnr, after.decoder_steps)
    );
}

#[test]
fn noisy_decoder_finetuning_is_seeded_recorded_and_logged() {
    let mut config = micro();
    config.autoencoder_training.steps = 10;
    config.autoencoder_training.eval_clips = 4;
    let source = ClipSource::open(&config).unwrap();
    let device = Device::default();
    let base_guard = temp_dir("decoder-noise");
    let base = base_guard.path().to_path_buf();
    autoencoder::train(&config, &source, &base, &device, None).unwrap();
    let copy = |name: &str| {
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for file in [AUTOENCODER_FILE, REPORT_FILE] {
            std::fs::copy(base.join(file), dir.join(file)).unwrap();
        }
        dir
    };
    let decoder_after = |dir: &Path, noise: f64| {
        let (_, report) =
            autoencoder::finetune_decoder(&config, &source, dir, &device, &round(dir, 5, noise))
                .unwrap();
        let ae = config.model.autoencoder.init(&device).unwrap();
        let ae = load_module(ae, &dir.join(AUTOENCODER_FILE)).unwrap();
        (named_parameters(&ae.decoder), report.decoder_latent_noise)
    };
    let (noisy, recorded) = decoder_after(&copy("a"), 0.5);
    let (noisy_again, _) = decoder_after(&copy("b"), 0.5);
    let (clean, recorded_clean) = decoder_after(&copy("c"), 0.0);
    assert_eq!((recorded, recorded_clean), (0.5, 0.0));
    assert!(noisy == noisy_again, "the latent noise is not seeded");
    assert!(noisy != clean, "the latent noise changed nothing");
    // A second fine-tuning continues the decoder's loss log: steps 1..=5, then 6..=10.
    let dir = base.join("a");
    decoder_after(&dir, 0.5);
    let log = std::fs::read_to_string(dir.join("decoder_loss.csv")).unwrap();
    let steps: Vec<&str> = log
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('#'))
        .map(|l| &l[..l.find(',').unwrap()])
        .collect();
    assert_eq!(
        steps,
        ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"],
        "{log}"
    );
    // Each round is noted where it begins, with its settings, and charted.
    let notes: Vec<&str> = log.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        notes,
        [
            "# at step 0: latent noise σ ≤ 0.5, lr 2e-3",
            "# at step 5: latent noise σ ≤ 0.5, lr 2e-3"
        ],
        "{log}"
    );
    assert!(dir.join("decoder_loss.png").is_file());
    for bad in [-0.1, f64::NAN, 11.0] {
        let err =
            autoencoder::finetune_decoder(&config, &source, &dir, &device, &round(&dir, 5, bad))
                .unwrap_err();
        assert!(err.to_string().contains("--latent-noise"), "{err}");
    }
}

#[test]
fn training_batches_show_what_their_captions_say() {
    // The tensors the latent cache encodes, read back as clips and judged from
    // their pixels, must agree with their (possibly paraphrased) captions: this
    // catches a frame-order, axis or caption-pairing mix-up in the data path.
    let config = ExperimentConfig::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny.toml"),
    )
    .unwrap();
    let source = ClipSource::open(&config).unwrap();
    let batcher = VideoBatcher::new(source.tokenizer(), 12);
    let items: Vec<_> = (0..256)
        .map(|i| source.train_item(i, config.seed))
        .collect();
    let captions: Vec<String> = items.iter().map(|item| item.caption.clone()).collect();
    let batch = batcher.try_batch(items, &Device::default()).unwrap();
    let clips = video_to_clips(batch.videos);
    let agree = captions
        .iter()
        .zip(&clips)
        .filter(|(caption, clip)| {
            let said = Composition::parse_caption(caption).expect("a Moving Shapes caption");
            judge_clip(clip).matches(&said).all()
        })
        .count();
    assert!(
        agree >= 254,
        "{agree} of 256 batches agree with their captions"
    );
}

/// The seed's scale, `configs/dit-b-2-256.toml`: 256×256 frames become 32×32×4 latents (8× per
/// side, as the paper's VAE reduces 256×256×3 images), and DiT-B/2 reads 2,048 tokens. A
/// test-sized variant (two frames, one block) takes one training step of each network on a
/// real 256×256 clip of the data set: the autoencoder's loss and the DiT's both have gradients,
/// and the DiT's weights move.
#[test]
fn the_seed_scale_config_reduces_256_pixels_to_32_latents_and_a_small_variant_trains() {
    use dit_train::memory::MemoryEstimate;

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/dit-b-2-256.toml");
    let config = ExperimentConfig::load(&path).unwrap();
    config.validate().unwrap();
    let d = &config.networks(20).unwrap().dit;
    assert_eq!(config.data.size(), 256);
    assert_eq!(
        [d.latent_channels, d.latent_frames, d.latent_size],
        [4, 8, 32]
    );
    assert_eq!((d.hidden, d.depth, d.heads, d.patch_size), (768, 12, 12, 2));
    assert_eq!(d.num_tokens(), 2048);
    let estimate = MemoryEstimate::of(&config).unwrap();
    assert!(estimate.total() > 8.0 * (1u64 << 30) as f64, "{estimate}");

    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replacen("frames = 8\n", "frames = 2\n", 1)
        .replacen("depth = 12\nheads = 12\n", "depth = 1\nheads = 12\n", 1);
    let small = ExperimentConfig::parse(&text).unwrap();
    let source = ClipSource::open(&small).unwrap();
    let device = Device::default().autodiff();
    device.seed(4);
    let batcher = VideoBatcher::new(source.tokenizer(), small.model.dit.text.max_words);
    let items = vec![source.train_item(0, 0), source.train_item(1, 0)];
    let batch = batcher.try_batch(items, &device).unwrap();
    assert_eq!(batch.videos.dims(), [2, 3, 2, 256, 256]);

    let mut ae_optim = optimizer(&small.dit_training);
    let ae = small.model.autoencoder.init(&device).unwrap();
    let moments = ae.encode(batch.videos.clone());
    let latent = moments.mean;
    assert_eq!(latent.dims(), [2, 4, 2, 32, 32]);
    let recon = ae.decode(latent.clone());
    let ae_loss = (recon - batch.videos.clone()).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(ae_loss.backward(), &ae);
    assert!(!grads.is_empty());
    let _ae = ae_optim.step(1e-3, ae, grads);

    let dit_config = dit_config(&small, &source);
    let dit = dit_config.init(&device).unwrap();
    let before = named_parameters(&dit.valid());
    let cache = LatentCache {
        latents: latent.detach(),
        tokens: batch
            .captions
            .iter()
            .map(|c| batcher.tokenize(c).unwrap())
            .collect(),
        frozen: None,
    };
    let process = small.diffusion.process();
    let mut draws = StepDraws::new(0, 0, 2, 2, &process, 0.0);
    let loss = diffusion_loss(
        &dit,
        &process,
        &cache,
        &mut draws,
        small.dit_training.min_snr_gamma,
        &device,
    );
    assert!(loss.clone().into_scalar::<f32>().is_finite());
    let grads = GradientsParams::from_grads(loss.backward(), &dit);
    let mut optim = optimizer(&small.dit_training);
    let dit = optim.step(1e-4, dit, grads);
    let after = named_parameters(&dit.valid());
    let moved: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|((_, a), (_, b))| a != b)
        .map(|((name, _), _)| name.as_str())
        .collect();
    // adaLN-Zero: at the first step only the zero-initialised output layer has a gradient.
    assert!(
        !moved.is_empty() && moved.iter().all(|name| name.starts_with("final_layer.")),
        "{moved:?}"
    );
}
