//! The run folder: everything `dit-train` writes and `dit-infer` reads, and the
//! one place that knows its layout.
//!
//! ```text
//! runs/tiny/
//!   config.toml          the experiment config, as run
//!   recipe.json          the finished stages: name, seconds, result
//!   model.json           RunSpec: network configs, clip shape, latent scale, default guidance
//!   vocab.json           the tokenizer's words
//!   autoencoder.bpk      frozen autoencoder weights
//!   autoencoder.json     AutoencoderReport: PSNR, latent scale, steps
//!   dit_ema.bpk          EMA weights of the DiT (what dit-infer samples with)
//!   loss.csv, loss.png   stage 2's loss per logged step, and its curve
//!   autoencoder_loss.*   the same for stage 1; decoder_loss.* for decoder fine-tuning
//!   fidelity.csv, .png   prompt fidelity of the EMA model against training time
//!   previews/            sample sheets for fixed prompts during training
//!   train/step-NNNNNNN/  training checkpoints: dit.bpk, ema.bpk, optim.bpk, state.json
//!   train/latest         the name of the newest complete checkpoint
//!   train/stage-N/       the checkpoints of the autoencoder or decoder stage N while it runs
//!   train.lock           locked by the dit-train process writing the folder (its id inside)
//!   eval/                what `dit-infer eval` reports, by default
//! ```
//!
//! Training checkpoints themselves (their state, retention) are `dit-train`'s business;
//! this module names the files.
//!
//! Weights are Burn burnpack files (`.bpk`): raw tensors only, so loading never
//! executes code from them. Every file is written atomically (a temporary file
//! in the same folder, renamed when complete) and a checkpoint folder is
//! renamed into place before `latest` names it, so a crash never leaves a
//! half-written file or checkpoint behind as the newest one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::autoencoder::AutoencoderConfig;
use crate::classifier::{PhotoClassifier, PhotoClassifierConfig};
use crate::dit::{DitConfig, DitSize};
use crate::frozen_text::PretrainedText;
use crate::minilm::{self, MiniLmError, MiniLmPrompts};
use crate::process::DiffusionConfig;
use crate::text::TextEncoderConfig;
use crate::tokenizer::Tokenizer;
use crate::validate::ConfigError;
use crate::{Dit, VideoAutoencoder};

/// The experiment config, as run (TOML).
pub const CONFIG_FILE: &str = "config.toml";
/// The record of the finished stages (JSON).
pub const RECIPE_FILE: &str = "recipe.json";
/// Stem of stage 2's loss log and chart ([`loss_paths`]).
pub const DIT_LOSS_LOG: &str = "loss";
/// Stem of stage 1's loss log and chart.
pub const AUTOENCODER_LOSS_LOG: &str = "autoencoder_loss";
/// Stem of the decoder fine-tunings' loss log and chart.
pub const DECODER_LOSS_LOG: &str = "decoder_loss";
/// Prompt fidelity against training time (CSV).
pub const FIDELITY_FILE: &str = "fidelity.csv";
/// Its chart.
pub const FIDELITY_CHART: &str = "fidelity.png";
/// Default folder of `dit-infer eval`'s report.
pub const EVAL_DIR: &str = "eval";
/// Network configs and the facts a sampler needs ([`RunSpec`]).
pub const SPEC_FILE: &str = "model.json";
/// Tokenizer vocabulary.
pub const VOCAB_FILE: &str = "vocab.json";
/// Autoencoder weights.
pub const AUTOENCODER_FILE: &str = "autoencoder.bpk";
/// The autoencoder's [`AutoencoderReport`].
pub const AUTOENCODER_REPORT_FILE: &str = "autoencoder.json";
/// EMA DiT weights.
pub const DIT_FILE: &str = "dit_ema.bpk";
/// Folder of preview sheets.
pub const PREVIEW_DIR: &str = "previews";
/// Folder of training checkpoints.
pub const TRAIN_DIR: &str = "train";
/// File in [`TRAIN_DIR`] naming the newest complete checkpoint.
pub const LATEST_FILE: &str = "latest";
/// Weights of the DiT being trained, in a checkpoint folder.
pub const CHECKPOINT_DIT_FILE: &str = "dit.bpk";
/// EMA weights, in a checkpoint folder.
pub const CHECKPOINT_EMA_FILE: &str = "ema.bpk";
/// Optimiser state, in a checkpoint folder.
pub const CHECKPOINT_OPTIMIZER_FILE: &str = "optim.bpk";
/// [`TrainState`], in a checkpoint folder.
pub const CHECKPOINT_STATE_FILE: &str = "state.json";
/// The file a `dit-train` process locks while it writes the run folder.
pub const LOCK_FILE: &str = "train.lock";
/// The photograph classifier's weights, in a classifier folder (`dit-train classifier`).
pub const CLASSIFIER_FILE: &str = "classifier.bpk";
/// The classifier's [`ClassifierReport`], in a classifier folder.
pub const CLASSIFIER_REPORT_FILE: &str = "classifier.json";

/// The checkpoint folder of stage `number` (1-based) of the autoencoder or a decoder.
pub fn stage_checkpoints(run_dir: &Path, number: usize) -> PathBuf {
    run_dir.join(TRAIN_DIR).join(format!("stage-{number}"))
}

/// Name of the checkpoint folder of `step` (zero-padded, so names sort by step).
pub fn checkpoint_name(step: usize) -> String {
    format!("step-{step:07}")
}

/// Path of the preview sheet made after `step`.
pub fn preview_path(run_dir: &Path, step: usize) -> PathBuf {
    run_dir
        .join(PREVIEW_DIR)
        .join(format!("{}.png", checkpoint_name(step)))
}

/// Paths of a stage's loss log and its plot, e.g. `dit_loss.csv`, `dit_loss.png`.
pub fn loss_paths(run_dir: &Path, log_name: &str) -> (PathBuf, PathBuf) {
    (
        run_dir.join(format!("{log_name}.csv")),
        run_dir.join(format!("{log_name}.png")),
    )
}

/// Everything needed to rebuild the networks of a run: the frozen autoencoder and the DiT.
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// The visual autoencoder.
    pub autoencoder: AutoencoderConfig,
    /// The Diffusion Transformer.
    pub dit: DitConfig,
}

impl ModelConfig {
    /// Validates both networks and that the DiT denoises the autoencoder's latent.
    pub fn validate(&self, frames: usize, size: usize) -> Result<(), ConfigError> {
        self.autoencoder
            .validate()
            .map_err(|e| e.within("autoencoder"))?;
        self.dit.validate().map_err(|e| e.within("dit"))?;
        let [c, f, h] = self.autoencoder.latent_shape(frames, size)?;
        let expect = [
            ("dit.latent_channels", self.dit.latent_channels, c),
            ("dit.latent_frames", self.dit.latent_frames, f),
            ("dit.latent_size", self.dit.latent_size, h),
        ];
        for (field, got, want) in expect {
            if got != want {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "= {got}, but the autoencoder makes latents of {c}×{f}×{h}×{h} from {frames} frames of {size}×{size}, so it must be {want}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The data a model was trained on: what its prompts can ask for, and so how
/// `dit-infer eval` judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainingData {
    /// Moving Shapes, the default data set.
    #[default]
    MovingShapes,
    /// Moving Fashion (docs/moving-fashion.md).
    MovingFashion,
    /// A folder of the user's captioned clips.
    Folder,
}

/// What a run folder says about its model.
#[derive(Config, Debug, PartialEq)]
pub struct RunSpec {
    /// The autoencoder and DiT configs (vocabulary size resolved).
    pub model: ModelConfig,
    /// The noise schedule the DiT was trained with.
    pub diffusion: DiffusionConfig,
    /// Frames per clip.
    pub frames: usize,
    /// Frame height and width.
    pub size: usize,
    /// Factor applied to encoder latents so that they have unit variance.
    pub latent_scale: f64,
    /// Guidance scale recommended for this model.
    #[config(default = 4.0)]
    pub guidance: f64,
    /// The data it was trained on (absent in run folders written before the field
    /// existed, which were all trained on Moving Shapes).
    pub data: Option<TrainingData>,
}

impl RunSpec {
    /// The data the model was trained on.
    pub fn training_data(&self) -> TrainingData {
        self.data.unwrap_or_default()
    }
}

/// Why a run folder could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The folder does not exist.
    #[error("checkpoint folder {0} does not exist")]
    MissingFolder(PathBuf),
    /// A file of the folder is missing.
    #[error("checkpoint {dir} has no {file} (is it a dit-train run folder?)")]
    MissingFile {
        /// The folder.
        dir: PathBuf,
        /// The missing file.
        file: &'static str,
    },
    /// A file exists but cannot be used.
    #[error("{path}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The checkpoint conditions on a pretrained text encoder that cannot be loaded.
    #[error("this checkpoint conditions on all-MiniLM-L6-v2: {0}")]
    TextEncoder(#[from] MiniLmError),
    /// Writing failed.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so not also its `source`).
        error: std::io::Error,
    },
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed to disk, renamed over `path`, then the folder's entry flushed too.
/// A failure or a crash leaves either the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let err = |error| RunError::Write {
        path: path.to_path_buf(),
        error,
    };
    let dir = parent_dir(path);
    let mut builder = tempfile::Builder::new();
    // Readable by others, as a file created the ordinary way is (a temporary file is
    // private to its owner).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut file = builder.tempfile_in(dir).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.as_file().sync_all().map_err(err)?;
    file.persist(path).map_err(|e| err(e.error))?;
    sync_dir(dir);
    Ok(())
}

/// The folder holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Flushes a folder's entries (renames into it) to disk, where the platform allows.
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Saves a module's weights to `path` (Burn writes to a scratch file and renames it).
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<(), RunError> {
    module.clone().save_file(path).map_err(|e| RunError::Write {
        path: path.to_path_buf(),
        error: std::io::Error::other(e.to_string()),
    })
}

/// Loads weights from `path` into `module`, checking names and shapes.
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M, RunError> {
    if !path.is_file() {
        return Err(RunError::Corrupt {
            path: path.to_path_buf(),
            message: "file not found".into(),
        });
    }
    module.try_load_file(path).map_err(|e| {
        // Shape mismatches list every tensor: keep the message to one readable line.
        let mut detail = e.to_string();
        if detail.chars().count() > 300 {
            detail = format!("{}…", detail.chars().take(300).collect::<String>());
        }
        RunError::Corrupt {
            path: path.to_path_buf(),
            message: format!("not a weights file of this model config: {detail}"),
        }
    })
}

/// A trained model, as read from its run folder.
#[derive(Debug)]
pub struct TrainedModel {
    /// The run's spec.
    pub spec: RunSpec,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The frozen autoencoder.
    pub autoencoder: VideoAutoencoder,
    /// The (EMA) DiT.
    pub dit: Dit,
    /// The frozen pretrained text encoder the DiT conditions on, if its config names one.
    pub frozen_text: Option<MiniLmPrompts>,
}

fn read_text(dir: &Path, file: &'static str) -> Result<String, RunError> {
    let path = dir.join(file);
    if !path.exists() {
        return Err(RunError::MissingFile {
            dir: dir.to_path_buf(),
            file,
        });
    }
    fs::read_to_string(&path).map_err(|e| RunError::Corrupt {
        path,
        message: e.to_string(),
    })
}

/// Reads the spec of a run folder.
pub fn read_spec(dir: &Path) -> Result<RunSpec, RunError> {
    if !dir.is_dir() {
        return Err(RunError::MissingFolder(dir.to_path_buf()));
    }
    let text = read_text(dir, SPEC_FILE)?;
    let spec: RunSpec = serde_json::from_str(&text).map_err(|e| RunError::Corrupt {
        path: dir.join(SPEC_FILE),
        message: format!("not a run spec: {e}"),
    })?;
    spec.model
        .validate(spec.frames, spec.size)
        .map_err(|e| RunError::Corrupt {
            path: dir.join(SPEC_FILE),
            message: e.to_string(),
        })?;
    Ok(spec)
}

/// Writes the spec and vocabulary of a run folder.
pub fn write_spec(dir: &Path, spec: &RunSpec, tokenizer: &Tokenizer) -> Result<(), RunError> {
    fs::create_dir_all(dir).map_err(|error| RunError::Write {
        path: dir.to_path_buf(),
        error,
    })?;
    let json = serde_json::to_string_pretty(spec).expect("configs serialise to JSON");
    write_atomic(&dir.join(SPEC_FILE), json.as_bytes())?;
    write_atomic(&dir.join(VOCAB_FILE), tokenizer.to_json().as_bytes())
}

/// The spec of the smallest model of 4-frame 32×32 clips: an autoencoder of base width 4
/// into a 4×4×8×8 latent, and DiT-S's layout (patch 1×2×2) with one block of width 32 and
/// 2 heads, reading prompts through `text` (with cross-attention when asked). What the tools'
/// tests build, untrained, when the plumbing and not the training is what matters.
pub fn micro_spec(text: TextEncoderConfig, cross_attention: bool) -> RunSpec {
    let dit = DitConfig {
        hidden: 32,
        depth: 1,
        heads: 2,
        cross_attention,
        ..DitConfig::preset(DitSize::S, 2, 4, 4, 8, text)
    };
    let model = ModelConfig::new(AutoencoderConfig::new().with_base_channels(4), dit);
    RunSpec::new(model, DiffusionConfig::new(), 4, 32, 1.0)
}

/// Writes a complete run folder of an untrained model of `spec` (freshly initialised
/// autoencoder and DiT): what tests and demonstrations of the tools need when the plumbing,
/// not the training, is what matters.
pub fn write_untrained_run(
    dir: &Path,
    spec: &RunSpec,
    tokenizer: &Tokenizer,
    device: &Device,
) -> Result<(), RunError> {
    let invalid = |e: ConfigError| RunError::Corrupt {
        path: dir.join(SPEC_FILE),
        message: e.to_string(),
    };
    write_spec(dir, spec, tokenizer)?;
    let autoencoder = spec.model.autoencoder.init(device).map_err(invalid)?;
    save_module(&autoencoder, &dir.join(AUTOENCODER_FILE))?;
    let dit = spec.model.dit.init(device).map_err(invalid)?;
    save_module(&dit, &dir.join(DIT_FILE))
}

/// Reads the tokenizer of a run folder and checks it fits the spec.
fn read_tokenizer(dir: &Path, spec: &RunSpec) -> Result<Tokenizer, RunError> {
    let path = dir.join(VOCAB_FILE);
    let tokenizer =
        Tokenizer::from_json(&read_text(dir, VOCAB_FILE)?).map_err(|e| RunError::Corrupt {
            path: path.clone(),
            message: format!("not a vocabulary: {e}"),
        })?;
    let expected = spec.model.dit.text.vocab_size;
    if tokenizer.num_ids() != expected {
        return Err(RunError::Corrupt {
            path,
            message: format!(
                "has {} ids but the model was built for {expected}",
                tokenizer.num_ids()
            ),
        });
    }
    Ok(tokenizer)
}

impl TrainedModel {
    /// Loads a run folder onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, RunError> {
        let spec = read_spec(dir)?;
        let tokenizer = read_tokenizer(dir, &spec)?;
        let corrupt = |message: String| RunError::Corrupt {
            path: dir.join(SPEC_FILE),
            message,
        };
        for file in [AUTOENCODER_FILE, DIT_FILE] {
            if !dir.join(file).exists() {
                return Err(RunError::MissingFile {
                    dir: dir.to_path_buf(),
                    file,
                });
            }
        }
        let autoencoder = spec
            .model
            .autoencoder
            .init(device)
            .map_err(|e| corrupt(e.to_string()))?;
        let autoencoder = load_module(autoencoder, &dir.join(AUTOENCODER_FILE))?;
        let dit = spec
            .model
            .dit
            .init(device)
            .map_err(|e| corrupt(e.to_string()))?;
        let dit = load_module(dit, &dir.join(DIT_FILE))?;
        let frozen_text = load_frozen_text(&spec, device)?;
        Ok(Self {
            spec,
            tokenizer,
            autoencoder,
            dit,
            frozen_text,
        })
    }
}

/// The pretrained text encoder `spec`'s DiT conditions on, loaded from [`minilm::model_dir`];
/// none for a DiT that trains its own.
pub fn load_frozen_text(
    spec: &RunSpec,
    device: &Device,
) -> Result<Option<MiniLmPrompts>, RunError> {
    match spec.model.dit.text.pretrained {
        None => Ok(None),
        Some(PretrainedText::MiniLmL6V2) => {
            Ok(Some(MiniLmPrompts::load(&minilm::model_dir(), device)?))
        }
    }
}

/// What stage 1 (and any decoder fine-tuning after it) reports, saved as
/// [`AUTOENCODER_REPORT_FILE`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AutoencoderReport {
    /// Reconstruction PSNR (dB) of the 8-bit decoded evaluation clips.
    pub psnr: f64,
    /// 1 / standard deviation of the latents of the evaluation clips.
    pub latent_scale: f64,
    /// Optimiser steps of stage 1.
    pub steps: usize,
    /// Optimiser steps of decoder fine-tuning after stage 1 (encoder frozen).
    #[serde(default)]
    pub decoder_steps: usize,
    /// Largest latent noise (in units of the normalised latent the DiT sees) of the
    /// last decoder fine-tuning; 0 when it decoded clean latents only.
    #[serde(default)]
    pub decoder_latent_noise: f64,
    /// Training seconds.
    pub seconds: f64,
    /// For Moving Fashion: the photograph classifier's class accuracy on the autoencoder's
    /// reconstructions of real clips of test photographs, and on the clips themselves (its
    /// ceiling). Absent for other data, or without the classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconstructed_class: Option<ClassOnReconstructions>,
}

/// The judge's class accuracy on an autoencoder's reconstructions of real clips, against
/// its accuracy on the clips (the ceiling).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassOnReconstructions {
    /// Class accuracy on the reconstructions.
    pub class: f64,
    /// Class accuracy on the real clips.
    pub ceiling: f64,
}

/// Reads a run folder's [`AutoencoderReport`].
pub fn read_autoencoder_report(dir: &Path) -> Result<AutoencoderReport, RunError> {
    let text = read_text(dir, AUTOENCODER_REPORT_FILE)?;
    serde_json::from_str(&text).map_err(|e| RunError::Corrupt {
        path: dir.join(AUTOENCODER_REPORT_FILE),
        message: format!("not an autoencoder report: {e}"),
    })
}

/// Writes the autoencoder's weights and report into a run folder, each atomically.
pub fn write_autoencoder(
    dir: &Path,
    autoencoder: &VideoAutoencoder,
    report: &AutoencoderReport,
) -> Result<(), RunError> {
    save_module(autoencoder, &dir.join(AUTOENCODER_FILE))?;
    let json = serde_json::to_string_pretty(report).expect("reports serialise to JSON");
    write_atomic(&dir.join(AUTOENCODER_REPORT_FILE), json.as_bytes())
}

/// What `dit-train classifier` trained and how well it classifies the unseen split.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClassifierReport {
    /// The network's hyper-parameters.
    pub config: PhotoClassifierConfig,
    /// The seed of the training run.
    pub seed: u64,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Photographs per step.
    pub batch_size: usize,
    /// Top-1 accuracy on the test split (photographs never trained on).
    pub test_accuracy: f64,
    /// Top-1 accuracy of each class on the test split.
    pub class_accuracy: Vec<f64>,
    /// Test-split counts: `confusion[true class][predicted class]`.
    pub confusion: Vec<Vec<usize>>,
    /// Training seconds.
    pub seconds: f64,
    /// The CPU (or device) it was trained on.
    pub machine: String,
}

/// Reads a classifier folder: the report and the weights, loaded onto `device`.
pub fn load_classifier(
    dir: &Path,
    device: &Device,
) -> Result<(PhotoClassifier, ClassifierReport), RunError> {
    if !dir.is_dir() {
        return Err(RunError::MissingFolder(dir.to_path_buf()));
    }
    let text = read_text(dir, CLASSIFIER_REPORT_FILE)?;
    let report: ClassifierReport = serde_json::from_str(&text).map_err(|e| RunError::Corrupt {
        path: dir.join(CLASSIFIER_REPORT_FILE),
        message: format!("not a classifier report: {e}"),
    })?;
    let model = report.config.init(device).map_err(|e| RunError::Corrupt {
        path: dir.join(CLASSIFIER_REPORT_FILE),
        message: e.to_string(),
    })?;
    let model = load_module(model, &dir.join(CLASSIFIER_FILE))?;
    Ok((model, report))
}

/// Writes a classifier's weights and report into `dir`, each atomically.
pub fn write_classifier(
    dir: &Path,
    classifier: &PhotoClassifier,
    report: &ClassifierReport,
) -> Result<(), RunError> {
    save_module(classifier, &dir.join(CLASSIFIER_FILE))?;
    let json = serde_json::to_string_pretty(report).expect("reports serialise to JSON");
    write_atomic(&dir.join(CLASSIFIER_REPORT_FILE), json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let missing = dir.path().join("no-such-folder").join("file.json");
        let err = write_atomic(&missing, b"x").unwrap_err();
        assert!(matches!(err, RunError::Write { .. }));
        // The cause is in the message once, so it is not also the error's source (a report
        // of the chain would repeat it).
        assert!(err.to_string().contains("No such file"), "{err}");
        assert!(std::error::Error::source(&err).is_none());
    }
}
