//! Stage 2's training state on disk: the DiT, its EMA copy, the optimiser
//! state and the step, saved into (and restored from) the run folder's
//! `train/step-NNNNNNN` checkpoints (layout and atomicity: [`dit_model::run`]).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, OptimizerRecord};
use burn::tensor::Device;
use dit_model::run::{
    CHECKPOINT_DIT_FILE, CHECKPOINT_EMA_FILE, CHECKPOINT_OPTIMIZER_FILE, RunError, TRAIN_DIR,
    TrainState, latest_checkpoint, load_module, save_checkpoint, save_module,
};
use dit_model::{Dit, DitConfig};

use crate::config::DitTrainingConfig;

/// The optimiser of the recipe: AdamW with optional clipping by global norm.
pub fn optimizer(d: &DitTrainingConfig) -> ModuleOptimizer {
    let clip = (d.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(d.grad_clip as f32));
    AdamWConfig::new()
        .with_weight_decay(d.weight_decay as f32)
        .with_grad_clipping(clip)
        .init()
}

/// Saves an optimiser's state (its moments and step counts) to `path`.
pub fn save_optimizer(optim: &ModuleOptimizer, path: &Path) -> Result<(), RunError> {
    optim.save(path).map_err(|e| RunError::Write {
        path: path.to_path_buf(),
        error: std::io::Error::other(e.to_string()),
    })
}

/// Everything stage 2 needs to continue exactly where it stopped.
pub struct Checkpoint {
    /// The DiT being trained.
    pub dit: Dit,
    /// Its EMA copy.
    pub ema: Dit,
    /// Optimiser state.
    pub optim: ModuleOptimizer,
    /// Step, seed, time.
    pub state: TrainState,
}

impl Checkpoint {
    /// Step 0: a DiT initialised from `seed`, its EMA equal to it, a fresh optimiser.
    pub fn fresh(
        dit_config: &DitConfig,
        training: &DitTrainingConfig,
        seed: u64,
        train_device: &Device,
    ) -> Result<Self> {
        train_device.seed(seed);
        let dit = dit_config.init(train_device)?;
        let ema = dit.valid();
        Ok(Self {
            dit,
            ema,
            optim: optimizer(training),
            state: TrainState {
                step: 0,
                seed,
                seconds: 0.0,
            },
        })
    }

    /// Saves the checkpoint into `run_dir/train/` (atomically); returns its folder.
    pub fn save(&self, run_dir: &Path) -> Result<PathBuf> {
        Ok(save_checkpoint(
            &run_dir.join(TRAIN_DIR),
            &self.state,
            |dir| {
                save_module(&self.dit, &dir.join(CHECKPOINT_DIT_FILE))?;
                save_module(&self.ema, &dir.join(CHECKPOINT_EMA_FILE))?;
                save_optimizer(&self.optim, &dir.join(CHECKPOINT_OPTIMIZER_FILE))
            },
        )?)
    }

    /// Loads the newest complete checkpoint of a run folder, if any. `dit_config` is
    /// the run's DiT config (vocabulary size resolved); the checkpoint must have been
    /// trained with `seed`.
    pub fn load_latest(
        run_dir: &Path,
        training: &DitTrainingConfig,
        dit_config: &DitConfig,
        seed: u64,
        train_device: &Device,
    ) -> Result<Option<Self>> {
        let Some((dir, state)) = latest_checkpoint(&run_dir.join(TRAIN_DIR))? else {
            return Ok(None);
        };
        if state.seed != seed {
            bail!(
                "checkpoint {} was trained with seed {}, the config says {seed}",
                dir.display(),
                state.seed,
            );
        }
        let dit = load_module(
            dit_config.init(train_device)?,
            &dir.join(CHECKPOINT_DIT_FILE),
        )?;
        let ema = load_module(
            dit_config.init(&train_device.clone().inner())?,
            &dir.join(CHECKPOINT_EMA_FILE),
        )?;
        let record = OptimizerRecord::load(dir.join(CHECKPOINT_OPTIMIZER_FILE))
            .map_err(|e| anyhow::anyhow!("{}/{CHECKPOINT_OPTIMIZER_FILE}: {e}", dir.display()))?;
        Ok(Some(Self {
            dit,
            ema,
            optim: optimizer(training).load_record(record),
            state,
        }))
    }
}
