//! Training the photograph classifier that judges Moving Fashion clips
//! (`dit-train classifier`): Fashion-MNIST's training split only, cross-entropy, Adam with
//! a cosine learning rate, and each photograph shifted by up to [`MAX_SHIFT`] pixels (the
//! judge crops a tracked item, which sits a pixel or two off where the photograph was).
//! Checkpoints as the recipe's stages write them, so a stopped run continues with
//! `--resume` and ends with the same bytes; the test split is read only to report accuracy.

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams, OptimizerRecord};
use burn::tensor::{Device, Int, Tensor, TensorData};
use dit_data::idx::{FashionSplit, IdxImages, fashion_mnist};
use dit_model::classifier::{PHOTO_SIDE, PhotoClassifier, PhotoClassifierConfig};
use dit_model::run::{
    CHECKPOINT_OPTIMIZER_FILE, CLASSIFIER_FILE, ClassifierReport, TRAIN_DIR, load_module,
    save_module, write_classifier,
};
use dit_model::seed::{Stream, rng_for, seed_for};
use rand::Rng;
use rand::seq::SliceRandom;

use crate::checkpoint::{TrainState, latest_checkpoint, save_checkpoint, save_optimizer};
use crate::lr_schedule::cosine_lr;
use crate::progress::Progress;

/// Largest shift, in pixels along each axis, of a training photograph.
pub const MAX_SHIFT: i32 = 2;

/// How to train the classifier.
#[derive(Debug, Clone)]
pub struct ClassifierTraining {
    /// The network.
    pub config: PhotoClassifierConfig,
    /// Passes over the 60,000 training photographs.
    pub epochs: usize,
    /// Photographs per step.
    pub batch_size: usize,
    /// Peak learning rate (cosine decay to a tenth of it).
    pub learning_rate: f64,
    /// Seed of the order, shifts, dropout and initialisation.
    pub seed: u64,
    /// Steps between checkpoints.
    pub checkpoint_every: usize,
}

impl Default for ClassifierTraining {
    fn default() -> Self {
        Self {
            config: PhotoClassifierConfig::new(),
            epochs: 15,
            batch_size: 128,
            learning_rate: 1e-3,
            seed: 0,
            checkpoint_every: 500,
        }
    }
}

/// `photos` as a `[n, 1, 28, 28]` tensor in `[0, 1]`, photograph `i` moved by `shifts[i]`
/// pixels (x, y) with black filling what comes into view.
pub fn photo_tensor(
    images: &IdxImages,
    picks: &[usize],
    shifts: &[(i32, i32)],
    device: &Device,
) -> Tensor<4> {
    let side = PHOTO_SIDE as i32;
    let mut values = vec![0.0f32; picks.len() * PHOTO_SIDE * PHOTO_SIDE];
    for (n, &index) in picks.iter().enumerate() {
        let (dx, dy) = shifts.get(n).copied().unwrap_or((0, 0));
        let image = images.image(index);
        let out = &mut values[n * PHOTO_SIDE * PHOTO_SIDE..(n + 1) * PHOTO_SIDE * PHOTO_SIDE];
        for y in 0..side {
            for x in 0..side {
                let (sx, sy) = (x - dx, y - dy);
                if (0..side).contains(&sx) && (0..side).contains(&sy) {
                    out[(y * side + x) as usize] = image[(sy * side + sx) as usize] as f32 / 255.0;
                }
            }
        }
    }
    Tensor::from_data(
        TensorData::new(values, [picks.len(), 1, PHOTO_SIDE, PHOTO_SIDE]),
        device,
    )
}

/// Top-1 accuracy, per-class accuracy and the confusion matrix of `model` on every
/// photograph of `images`.
pub fn evaluate(
    model: &PhotoClassifier,
    images: &IdxImages,
    labels: &[u8],
    classes: usize,
    device: &Device,
) -> (f64, Vec<f64>, Vec<Vec<usize>>) {
    let mut confusion = vec![vec![0usize; classes]; classes];
    let all: Vec<usize> = (0..images.count).collect();
    for chunk in all.chunks(500) {
        let predicted = model.classify(photo_tensor(images, chunk, &[], device));
        for (&i, p) in chunk.iter().zip(predicted) {
            confusion[labels[i] as usize][p] += 1;
        }
    }
    let correct: usize = (0..classes).map(|c| confusion[c][c]).sum();
    let per_class = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| row[c] as f64 / row.iter().sum::<usize>().max(1) as f64)
        .collect();
    (
        correct as f64 / images.count.max(1) as f64,
        per_class,
        confusion,
    )
}

/// Trains the classifier on Fashion-MNIST in `data_dir` into the folder `out` (its
/// checkpoints in `out/train`, continued when present), then writes the weights and the
/// report with the test split's accuracy.
pub fn train(
    options: &ClassifierTraining,
    data_dir: &Path,
    out: &Path,
    device: &Device,
) -> Result<ClassifierReport> {
    if options.batch_size == 0 || options.epochs == 0 {
        bail!("--epochs and --batch-size must be positive");
    }
    let (train_images, train_labels) = fashion_mnist(data_dir, FashionSplit::Train)?;
    let (test_images, test_labels) = fashion_mnist(data_dir, FashionSplit::Test)?;
    let classes = options.config.classes;
    if let Some(&label) = train_labels.iter().find(|&&l| l as usize >= classes) {
        bail!(
            "the training labels include class {label}, but the classifier has {classes} classes"
        );
    }
    let train_device = device.clone().autodiff();
    train_device.seed(options.seed);
    let mut model = options.config.init(&train_device)?;
    let mut optim = AdamConfig::new().init();
    let steps_per_epoch = train_images.count / options.batch_size;
    let steps = steps_per_epoch * options.epochs;
    let mut state = TrainState {
        step: 0,
        seed: options.seed,
        seconds: 0.0,
    };
    let checkpoints = out.join(TRAIN_DIR);
    if let Some((dir, saved)) = latest_checkpoint(&checkpoints)? {
        if saved.seed != options.seed || saved.step > steps {
            bail!(
                "checkpoint {} (seed {}, step {}) is not of this training (seed {}, {steps} steps)",
                dir.display(),
                saved.seed,
                saved.step,
                options.seed
            );
        }
        model = load_module(model, &dir.join(CLASSIFIER_FILE))?;
        let path = dir.join(CHECKPOINT_OPTIMIZER_FILE);
        let record =
            OptimizerRecord::load(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        optim = optim.load_record(record);
        state = saved;
    }
    let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
    let progress = Progress::new("classifier", state.step, steps);
    let seconds_before = state.seconds;
    let mut order: Vec<usize> = Vec::new();
    let mut order_epoch = usize::MAX;
    for step in state.step..steps {
        let epoch = step / steps_per_epoch;
        if epoch != order_epoch {
            order = (0..train_images.count).collect();
            order.shuffle(&mut rng_for(options.seed, Stream::Classifier, epoch as u64));
            order_epoch = epoch;
        }
        let at = (step % steps_per_epoch) * options.batch_size;
        let picks = &order[at..at + options.batch_size];
        let step_index = (1u64 << 32) + step as u64;
        let mut rng = rng_for(options.seed, Stream::Classifier, step_index);
        let shifts: Vec<(i32, i32)> = picks
            .iter()
            .map(|_| {
                (
                    rng.random_range(-MAX_SHIFT..=MAX_SHIFT),
                    rng.random_range(-MAX_SHIFT..=MAX_SHIFT),
                )
            })
            .collect();
        train_device.seed(seed_for(options.seed, Stream::Classifier, step_index));
        let photos = photo_tensor(&train_images, picks, &shifts, &train_device);
        let labels: Vec<i64> = picks.iter().map(|&i| train_labels[i] as i64).collect();
        let targets =
            Tensor::<1, Int>::from_data(TensorData::new(labels, [picks.len()]), &train_device);
        let loss = loss_fn.forward(model.forward(photos), targets);
        let lr = cosine_lr(options.learning_rate, step, steps);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        let done = step + 1;
        if done % 50 == 0 || done == steps {
            let value = loss.into_scalar::<f32>();
            if !value.is_finite() {
                bail!("classifier loss became {value} at step {done}; lower the learning rate");
            }
            progress.update(
                done,
                &format!("loss {value:.4} epoch {}", epoch + 1),
                done % 500 == 0,
            );
        }
        if done % options.checkpoint_every == 0 || done == steps {
            state.step = done;
            state.seconds = seconds_before + progress.elapsed();
            save_checkpoint(&checkpoints, &state, |path| {
                save_module(&model, &path.join(CLASSIFIER_FILE))?;
                save_optimizer(&optim, &path.join(CHECKPOINT_OPTIMIZER_FILE))
            })?;
        }
    }
    progress.finish();
    let model = model.valid();
    let (test_accuracy, class_accuracy, confusion) =
        evaluate(&model, &test_images, &test_labels, classes, device);
    let report = ClassifierReport {
        config: options.config.clone(),
        seed: options.seed,
        steps,
        batch_size: options.batch_size,
        test_accuracy,
        class_accuracy,
        confusion,
        seconds: seconds_before + progress.elapsed(),
        machine: crate::memory::cpu_model(),
    };
    write_classifier(out, &model, &report)?;
    Ok(report)
}
