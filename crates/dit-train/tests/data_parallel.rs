//! Data parallelism on the CPU: two replicas of sixteen samples compute the gradients
//! of one batch of thirty-two, and train to the same weights.

use std::path::Path;
use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Tensor};

use dit_model::frozen_text::{EncodedPrompt, PretrainedText};
use dit_model::weights::named_parameters;
use dit_model::{DiffusionConfig, Prediction};
use dit_train::checkpoint::optimizer;
use dit_train::config::ExperimentConfig;
use dit_train::data::ClipSource;
use dit_train::data_parallel::Replicas;
use dit_train::latent_cache::{FrozenCaptions, LatentCache};
use dit_train::loss::{StepBatch, StepDraws};

const BATCH: usize = 32;

fn micro() -> ExperimentConfig {
    ExperimentConfig::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/micro.toml"),
    )
    .unwrap()
}

/// Every parameter's gradient, flattened, in the module's order.
fn flat_gradients(dit: &dit_model::Dit, grads: &GradientsParams) -> Vec<(String, Vec<f32>)> {
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<(String, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.get::<D>(param.id) {
                let values = grad
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap();
                self.out.push((param.id.to_string(), values));
            }
        }
    }
    let mut visitor = Collect {
        grads,
        out: Vec::new(),
    };
    dit.visit(&mut visitor);
    visitor.out
}

/// `‖a − b‖ / ‖a‖` over every gradient.
fn relative_difference(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f64 {
    assert_eq!(a.len(), b.len(), "the replicas left out a parameter");
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for ((name_a, a), (name_b, b)) in a.iter().zip(b) {
        assert_eq!(name_a, name_b);
        for (x, y) in a.iter().zip(b) {
            diff += ((x - y) as f64).powi(2);
            norm += (*x as f64).powi(2);
        }
    }
    (diff / norm).sqrt()
}

/// Held while a test seeds the device's generator and draws from it: the tests of this
/// file run in parallel, and their draws must not interleave.
static GENERATOR: Mutex<()> = Mutex::new(());

/// A DiT of the micro config (with `frozen`: conditioned on frozen-encoder states) on the
/// autodiff device of `device`, and a latent cache of `BATCH` random clips on `device`
/// itself, as training keeps it.
fn setup(frozen: bool, device: &Device) -> (dit_model::Dit, LatentCache) {
    let _generator = GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let config = micro();
    let source = ClipSource::open(&config).unwrap();
    let mut c = config.networks(source.tokenizer().num_ids()).unwrap().dit;
    let frozen = frozen.then(|| {
        c.cross_attention = true;
        c.text.pretrained = Some(PretrainedText::MiniLmL6V2);
        let width = PretrainedText::MiniLmL6V2.width();
        // Captions of different lengths, so that each share pads to its own longest.
        let prompts = (0..5)
            .map(|p| EncodedPrompt {
                states: (0..(2 + 3 * p) * width)
                    .map(|i| ((i * (p + 3)) % 19) as f32 / 19.0 - 0.5)
                    .collect(),
                tokens: 2 + 3 * p,
                pooled: (0..width).map(|i| ((i + p) % 7) as f32 / 7.0).collect(),
            })
            .collect();
        FrozenCaptions {
            prompts,
            index: (0..BATCH).map(|i| (i * 7) % 5).collect(),
            width,
        }
    });
    device.seed(5);
    let dit = c.init(&device.clone().autodiff()).unwrap();
    // Burn initialises a parameter on first use: here, in module order, as training does.
    let _ = dit.valid();
    let cache = LatentCache {
        latents: Tensor::random([BATCH, 4, 4, 8, 8], Distribution::Normal(0.0, 1.0), device),
        tokens: (0..BATCH)
            .map(|i| {
                let mut row = vec![1 + i % 5, 2 + i % 3, 3, 0];
                row.resize(12, 0);
                row
            })
            .collect(),
        frozen,
    };
    (dit, cache)
}

/// The ε-prediction batch of step `step` (seed 9, min-SNR-5, caption dropout `dropout`).
fn step_batch<'a>(
    cache: &'a LatentCache,
    step: usize,
    dropout: f64,
    device: &Device,
) -> StepBatch<'a> {
    let process = DiffusionConfig::new()
        .with_prediction(Prediction::Epsilon)
        .process();
    let mut draws = StepDraws::new(9, step, BATCH, BATCH, &process, dropout);
    StepBatch::new(&process, cache, &mut draws, 5.0, device)
}

#[test]
fn two_replicas_of_sixteen_give_the_gradients_of_one_batch_of_thirty_two() {
    let device = Device::default();
    let train = device.clone().autodiff();
    let config = micro();
    let one = Replicas::new(vec![train.clone()]);
    let two = Replicas::new(vec![train.clone(), train]);
    for frozen in [false, true] {
        let (dit, cache) = setup(frozen, &device);
        // adaLN-Zero starts with zero gates: a few steps open them so that every
        // parameter has a gradient to compare.
        let mut optim = optimizer(&config.dit_training);
        let mut dit = dit;
        for step in 0..4 {
            let batch = step_batch(&cache, step, 0.25, &device);
            let (loss_one, grads_one) = one.gradients(&dit, &batch).unwrap();
            let (loss_two, grads_two) = two.gradients(&dit, &batch).unwrap();
            let (a, b) = (
                flat_gradients(&dit, &grads_one),
                flat_gradients(&dit, &grads_two),
            );
            let difference = relative_difference(&a, &b);
            assert!(
                difference <= 1e-5,
                "frozen text {frozen}, step {step}: gradients differ by {difference:e} (relative)"
            );
            assert!(
                (loss_one - loss_two).abs() <= 1e-5 * loss_one,
                "frozen text {frozen}: loss {loss_one} on one replica, {loss_two} on two"
            );
            dit = optim.step(1e-3, dit, grads_one);
        }
    }
}

#[test]
fn two_replicas_train_to_the_weights_of_one_device() {
    let device = Device::default();
    let autodiff = device.clone().autodiff();
    let config = micro();
    let train = |replicas: Replicas| {
        let (mut dit, cache) = setup(false, &device);
        let mut optim = optimizer(&config.dit_training);
        for step in 0..20 {
            let batch = step_batch(&cache, step, 0.1, &device);
            let (_, grads) = replicas.gradients(&dit, &batch).unwrap();
            dit = optim.step(1e-3, dit, grads);
        }
        named_parameters(&dit.valid())
    };
    let one = train(Replicas::new(vec![autodiff.clone()]));
    let two = train(Replicas::new(vec![autodiff.clone(), autodiff]));
    assert_eq!(one.len(), two.len());
    let mut moved = 0.0f32;
    for ((name, a), (_, b)) in one.iter().zip(&two) {
        for (x, y) in a.iter().zip(b) {
            assert!(
                (x - y).abs() <= 1e-4,
                "{name}: {x} on one device, {y} on two after 20 steps"
            );
        }
        moved += a.iter().map(|x| x.abs()).sum::<f32>();
    }
    assert!(moved > 0.0);
}
