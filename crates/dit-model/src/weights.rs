//! Exchange of DiT weights with PyTorch through safetensors files.
//!
//! Tensor names follow the reference DiT (`x_embedder.proj`, `t_embedder.mlp.0`,
//! `blocks.N.attn.qkv`, `blocks.N.adaLN_modulation.1`, `final_layer.linear`, …);
//! Linear weights are stored `[out, in]` as in `torch.nn.Linear`. Where a Burn
//! field name differs from its PyTorch name, the tables below map one to the
//! other, so every tensor maps 1:1 in both directions. Safetensors holds raw
//! tensors only: loading a file never executes code from it.

use std::path::Path;

use burn::module::Module;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

/// `(PyTorch name pattern, Burn name)` for the names that differ.
const FROM_PYTORCH: [(&str, &str); 4] = [
    (r"^t_embedder\.mlp\.0\.", "t_embedder.fc1."),
    (r"^t_embedder\.mlp\.2\.", "t_embedder.fc2."),
    (
        r"^blocks\.(\d+)\.adaLN_modulation\.1\.",
        "blocks.$1.ada_ln_modulation.",
    ),
    (
        r"^final_layer\.adaLN_modulation\.1\.",
        "final_layer.ada_ln_modulation.",
    ),
];

/// `(Burn name pattern, PyTorch name)`: the inverse of [`FROM_PYTORCH`].
const TO_PYTORCH: [(&str, &str); 4] = [
    (r"^t_embedder\.fc1\.", "t_embedder.mlp.0."),
    (r"^t_embedder\.fc2\.", "t_embedder.mlp.2."),
    (
        r"^blocks\.(\d+)\.ada_ln_modulation\.",
        "blocks.$1.adaLN_modulation.1.",
    ),
    (
        r"^final_layer\.ada_ln_modulation\.",
        "final_layer.adaLN_modulation.1.",
    ),
];

/// Why weights could not be exchanged.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read, written or parsed.
    #[error("{path}: {message}")]
    Store {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The file's tensors do not match the model.
    #[error("{path}: the weights do not match the model: {message}")]
    Mismatch {
        /// The file.
        path: String,
        /// Missing, unused or misshapen tensors.
        message: String,
    },
}

/// Loads PyTorch-named safetensors weights into `module`; every tensor of the
/// module must be present with its shape, and every tensor of the file used.
pub fn load_pytorch_safetensors<M: Module + ModuleSnapshot>(
    mut module: M,
    path: &Path,
) -> Result<M, WeightsError> {
    let shown = path.display().to_string();
    let mut store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter);
    for (from, to) in FROM_PYTORCH {
        store = store.with_key_remapping(from, to);
    }
    let result = module
        .load_from(&mut store)
        .map_err(|e| WeightsError::Store {
            path: shown.clone(),
            message: e.to_string(),
        })?;
    if !result.errors.is_empty() || !result.unused.is_empty() {
        return Err(WeightsError::Mismatch {
            path: shown,
            message: format!(
                "errors: {:?}; tensors the model has no place for: {:?}",
                result.errors, result.unused
            ),
        });
    }
    Ok(module)
}

/// Writes `module`'s weights as PyTorch-named safetensors.
pub fn save_pytorch_safetensors<M: Module + ModuleSnapshot>(
    module: &M,
    path: &Path,
) -> Result<(), WeightsError> {
    let mut store = SafetensorsStore::from_file(path).with_to_adapter(BurnToPyTorchAdapter);
    for (from, to) in TO_PYTORCH {
        store = store.with_key_remapping(from, to);
    }
    module
        .save_into(&mut store)
        .map_err(|e| WeightsError::Store {
            path: path.display().to_string(),
            message: e.to_string(),
        })
}

/// Every parameter of `module` as `(name, values)`, sorted by name.
pub fn named_parameters<M: ModuleSnapshot>(module: &M) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> = module
        .collect(None, None, false)
        .into_iter()
        .map(|t| {
            let bytes = t.to_bytes().expect("parameter bytes are readable");
            let values = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (t.name, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
