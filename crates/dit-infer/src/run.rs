//! The run folder: everything needed to rebuild a trained model, written by
//! `dit-train` and read by `dit-infer`.
//!
//! ```text
//! run/
//!   model.json        RunSpec: network configs, clip shape, latent scale, defaults
//!   vocab.json        the tokenizer's words
//!   autoencoder.bpk   frozen autoencoder weights (Burn's burnpack format)
//!   dit_ema.bpk       EMA weights of the DiT, used for sampling
//! ```
//! Burnpack files hold raw tensors only: loading never executes code from them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;
use dit_model::{DiffusionConfig, Dit, ModelConfig, Tokenizer, VideoAutoencoder};

/// Network configs and the facts a sampler needs.
pub const SPEC_FILE: &str = "model.json";
/// Tokenizer vocabulary.
pub const VOCAB_FILE: &str = "vocab.json";
/// Autoencoder weights.
pub const AUTOENCODER_FILE: &str = "autoencoder.bpk";
/// EMA DiT weights.
pub const DIT_FILE: &str = "dit_ema.bpk";

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
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let err = |source| RunError::Write {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// Saves a module's weights to `path` (Burn writes to a scratch file and renames it).
pub fn save_module<M: Module>(module: &M, path: &Path) -> Result<(), RunError> {
    module.clone().save_file(path).map_err(|e| RunError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
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
    fs::create_dir_all(dir).map_err(|source| RunError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let json = serde_json::to_string_pretty(spec).expect("configs serialise");
    write_atomic(&dir.join(SPEC_FILE), json.as_bytes())?;
    write_atomic(&dir.join(VOCAB_FILE), tokenizer.to_json().as_bytes())
}

/// Reads the tokenizer of a run folder and checks it fits the spec.
pub fn read_tokenizer(dir: &Path, spec: &RunSpec) -> Result<Tokenizer, RunError> {
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
        Ok(Self {
            spec,
            tokenizer,
            autoencoder,
            dit,
        })
    }
}
