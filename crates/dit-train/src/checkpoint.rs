//! Training checkpoints on disk: a checkpoint folder of any stage, written so that a crash
//! never leaves a half-written one as the newest ([`save_checkpoint`], [`latest_checkpoint`]),
//! and stage 2's training state in it: the DiT, its EMA copy, the optimiser state and the
//! step (names in the run folder: [`dit_model::run`]).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, OptimizerRecord};
use burn::tensor::Device;
use dit_model::run::{
    CHECKPOINT_DIT_FILE, CHECKPOINT_EMA_FILE, CHECKPOINT_OPTIMIZER_FILE, CHECKPOINT_STATE_FILE,
    LATEST_FILE, RunError, TRAIN_DIR, checkpoint_name, load_module, save_module, sync_dir,
    write_atomic,
};
use dit_model::{Dit, DitConfig};
use serde::{Deserialize, Serialize};

use crate::config::{AutoencoderTrainingConfig, DitTrainingConfig};

/// Checkpoints kept on disk.
pub const KEEP_CHECKPOINTS: usize = 2;

/// Where a training run stands, stored in each checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Steps completed.
    pub step: usize,
    /// The run's seed (the per-step generators derive from it).
    pub seed: u64,
    /// Training seconds so far.
    pub seconds: f64,
}

/// Writes a checkpoint of `state` into the folder `train_dir` (the run's [`TRAIN_DIR`],
/// or a stage's folder inside it): `write_files` fills a hidden temporary folder, which
/// is renamed to `train_dir/step-NNNNNNN` once complete;
/// then [`LATEST_FILE`] is replaced atomically, and all but the newest
/// [`KEEP_CHECKPOINTS`] checkpoints are removed. A crash at any point leaves the
/// previous checkpoint as the newest one, and a failure (a full disk, say) removes the
/// temporary folder. Returns the checkpoint's folder.
pub fn save_checkpoint(
    train_dir: &Path,
    state: &TrainState,
    write_files: impl FnOnce(&Path) -> Result<(), RunError>,
) -> Result<PathBuf, RunError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| RunError::Write { path, error }
    };
    fs::create_dir_all(train_dir).map_err(io(train_dir))?;
    let name = checkpoint_name(state.step);
    let tmp = train_dir.join(format!(".{name}.tmp"));
    let _ = fs::remove_dir_all(&tmp);
    let done = train_dir.join(&name);
    let written = fs::create_dir_all(&tmp)
        .map_err(io(&tmp))
        .and_then(|()| write_files(&tmp))
        .and_then(|()| {
            let json = serde_json::to_string_pretty(state).expect("states serialise to JSON");
            write_atomic(&tmp.join(CHECKPOINT_STATE_FILE), json.as_bytes())
        })
        .and_then(|()| {
            let _ = fs::remove_dir_all(&done);
            fs::rename(&tmp, &done).map_err(io(&done))
        });
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    sync_dir(train_dir);
    write_atomic(&train_dir.join(LATEST_FILE), name.as_bytes())?;
    let mut older: Vec<PathBuf> = fs::read_dir(train_dir)
        .map_err(io(train_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("step-"))
                && *p != done
        })
        .collect();
    older.sort();
    let excess = older.len().saturating_sub(KEEP_CHECKPOINTS - 1);
    for path in older.into_iter().take(excess) {
        let _ = fs::remove_dir_all(path);
    }
    Ok(done)
}

/// The newest complete checkpoint in `train_dir` (as [`save_checkpoint`] writes them) and
/// its state, if it has one.
pub fn latest_checkpoint(train_dir: &Path) -> Result<Option<(PathBuf, TrainState)>, RunError> {
    let Ok(name) = fs::read_to_string(train_dir.join(LATEST_FILE)) else {
        return Ok(None);
    };
    let dir = train_dir.join(name.trim());
    let path = dir.join(CHECKPOINT_STATE_FILE);
    let text = fs::read_to_string(&path).map_err(|e| RunError::Corrupt {
        path: path.clone(),
        message: format!("cannot be read: {e}"),
    })?;
    let state = serde_json::from_str(&text).map_err(|e| RunError::Corrupt {
        path,
        message: format!("not a training state: {e}"),
    })?;
    Ok(Some((dir, state)))
}

/// The optimiser of the recipe: AdamW with optional clipping by global norm.
pub fn optimizer(d: &DitTrainingConfig) -> ModuleOptimizer {
    let clip = (d.grad_clip > 0.0).then_some(GradientClippingConfig::Norm(d.grad_clip as f32));
    AdamWConfig::new()
        .with_weight_decay(d.weight_decay as f32)
        .with_grad_clipping(clip)
        .init()
}

/// The autoencoder stage's optimiser: Adam with optional clipping by global norm.
pub fn autoencoder_optimizer(a: &AutoencoderTrainingConfig) -> ModuleOptimizer {
    let clip = a
        .grad_clip
        .map(|norm| GradientClippingConfig::Norm(norm as f32));
    AdamConfig::new().with_grad_clipping(clip).init()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_checkpoint_leaves_the_previous_one_newest_and_no_temporary_folder() {
        let dir = tempfile::tempdir().unwrap();
        let state = |step| TrainState {
            step,
            seed: 7,
            seconds: 1.0,
        };
        save_checkpoint(dir.path(), &state(1), |_| Ok(())).unwrap();
        let full = || std::io::Error::new(std::io::ErrorKind::StorageFull, "disk full");
        let err = save_checkpoint(dir.path(), &state(2), |tmp| {
            fs::write(tmp.join("dit.bpk"), b"half").unwrap();
            Err(RunError::Write {
                path: tmp.join("optim.bpk"),
                error: full(),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        let (_, newest) = latest_checkpoint(dir.path()).unwrap().unwrap();
        assert_eq!(newest.step, 1);
    }
}
