//! all-MiniLM-L6-v2, a pretrained sentence encoder (a 6-layer, 384-wide BERT; Wang et al.
//! 2020, fine-tuned for sentence embeddings by the sentence-transformers project,
//! Apache-2.0), in Burn: the frozen text encoder a DiT can condition on instead of the one it
//! trains (`scripts/fetch-minilm.sh` fetches the weights).
//!
//! BERT (Devlin et al. 2019), post-norm:
//!
//! ```text
//! ids [b, n] → word + position + token-type embeddings → LayerNorm        [b, n, 384]
//!   6 × { x = LN(x + Attention(x));  x = LN(x + W₂ GELU(W₁ x)) }          [b, n, 384]
//!   → per-token states; mean over the non-padding tokens → pooled          [b, 384]
//! ```
//!
//! Weights load from the model's own `model.safetensors` through Burn's store (PyTorch
//! adapter); the pooler and the `position_ids` buffer are not used. Text becomes ids through
//! the model's `tokenizer.json` (lower-casing WordPiece, `[CLS] … [SEP]`), read by Hugging
//! Face's `tokenizers`, without padding and truncated to [`MAX_TOKENS`].

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::frozen_text::EncodedPrompt;

/// Most tokens a prompt is encoded into, `[CLS]` and `[SEP]` included (the model's
/// tokenizer setting; longer text is cut).
pub const MAX_TOKENS: usize = 128;

/// The file tensors of the model that the encoder does not use.
const UNUSED: [&str; 3] = [
    "embeddings.position_ids",
    "pooler.dense.weight",
    "pooler.dense.bias",
];

/// Why the encoder or its tokenizer could not be loaded, or text not encoded.
#[derive(Debug, thiserror::Error)]
pub enum MiniLmError {
    /// A file of the model folder is missing.
    #[error("{0} is missing: fetch the model with scripts/fetch-minilm.sh")]
    Missing(String),
    /// A file could not be read or does not fit.
    #[error("{path}: {message}")]
    Bad {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// The hyper-parameters, as the model's `config.json` names them.
#[derive(Config, Debug, PartialEq)]
pub struct MiniLmConfig {
    /// Word-piece vocabulary size (30,522).
    pub vocab_size: usize,
    /// Width of every token state (384).
    pub hidden_size: usize,
    /// Encoder layers (6).
    pub num_hidden_layers: usize,
    /// Attention heads (12).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer (1,536).
    pub intermediate_size: usize,
    /// Longest input in tokens the position table covers (512).
    pub max_position_embeddings: usize,
    /// Segment types (2; prompts use type 0).
    pub type_vocab_size: usize,
    /// LayerNorm ε (1e-12).
    pub layer_norm_eps: f64,
}

impl MiniLmConfig {
    /// Reads the model folder's `config.json`.
    pub fn read(dir: &Path) -> Result<Self, MiniLmError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|_| MiniLmError::Missing(path.display().to_string()))?;
        serde_json::from_str(&text).map_err(|e| MiniLmError::Bad {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The encoder with freshly initialised weights.
    pub fn init(&self, device: &Device) -> MiniLm {
        let h = self.hidden_size;
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let linear = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let layer = || Layer {
            attention: Attention {
                self_attention: SelfAttention {
                    query: linear(h, h),
                    key: linear(h, h),
                    value: linear(h, h),
                    heads: self.num_attention_heads,
                },
                output: Output {
                    dense: linear(h, h),
                    layer_norm: norm(),
                },
            },
            intermediate: Intermediate {
                dense: linear(h, self.intermediate_size),
            },
            output: Output {
                dense: linear(self.intermediate_size, h),
                layer_norm: norm(),
            },
        };
        MiniLm {
            embeddings: Embeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: norm(),
            },
            encoder: Encoder {
                layer: (0..self.num_hidden_layers).map(|_| layer()).collect(),
            },
        }
    }
}

/// Word, position and token-type embeddings, summed and normalised.
#[derive(Module, Debug)]
pub struct Embeddings {
    /// One vector per word piece.
    pub word_embeddings: Embedding,
    /// One vector per position.
    pub position_embeddings: Embedding,
    /// One vector per segment type.
    pub token_type_embeddings: Embedding,
    /// LayerNorm of the sum.
    pub layer_norm: LayerNorm,
}

/// Multi-head self-attention's projections.
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Queries.
    pub query: Linear,
    /// Keys.
    pub key: Linear,
    /// Values.
    pub value: Linear,
    /// Number of heads.
    pub heads: usize,
}

/// A linear layer, a residual connection and a LayerNorm (BERT's post-norm).
#[derive(Module, Debug)]
pub struct Output {
    /// The linear layer.
    pub dense: Linear,
    /// LayerNorm after the residual sum.
    pub layer_norm: LayerNorm,
}

/// Self-attention and its output layer.
#[derive(Module, Debug)]
pub struct Attention {
    /// The projections (`attention.self` in the file).
    pub self_attention: SelfAttention,
    /// Output projection, residual, LayerNorm.
    pub output: Output,
}

/// The feed-forward layer's first half.
#[derive(Module, Debug)]
pub struct Intermediate {
    /// Hidden → intermediate width, followed by GELU.
    pub dense: Linear,
}

/// One encoder layer.
#[derive(Module, Debug)]
pub struct Layer {
    /// Self-attention block.
    pub attention: Attention,
    /// Feed-forward first half.
    pub intermediate: Intermediate,
    /// Feed-forward second half, residual, LayerNorm.
    pub output: Output,
}

/// The encoder's layers.
#[derive(Module, Debug)]
pub struct Encoder {
    /// In order.
    pub layer: Vec<Layer>,
}

/// The sentence encoder (see the module documentation).
#[derive(Module, Debug)]
pub struct MiniLm {
    /// Input embeddings.
    pub embeddings: Embeddings,
    /// Transformer layers.
    pub encoder: Encoder,
}

impl Output {
    /// `LN(dense(x) + residual)`.
    fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.layer_norm.forward(self.dense.forward(x) + residual)
    }
}

impl SelfAttention {
    /// Attention of `x` `[b, n, h]` to itself, keys at padding positions (`bias` −∞-like,
    /// `[b, 1, 1, n]`) ignored.
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [b, n, h] = x.dims();
        let d = h / self.heads;
        let split = |t: Tensor<3>| t.reshape([b, n, self.heads, d]).swap_dims(1, 2); // [b, H, n, d]
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt() + bias; // [b, H, n, n]
        let context = softmax(scores, 3).matmul(v); // [b, H, n, d]
        context.swap_dims(1, 2).reshape([b, n, h])
    }
}

impl MiniLm {
    /// Loads the model folder (`config.json`, `model.safetensors`) onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, MiniLmError> {
        let config = MiniLmConfig::read(dir)?;
        let path = dir.join("model.safetensors");
        if !path.is_file() {
            return Err(MiniLmError::Missing(path.display().to_string()));
        }
        let shown = path.display().to_string();
        let mut store = SafetensorsStore::from_file(&path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .with_key_remapping("LayerNorm", "layer_norm")
            .with_key_remapping(r"\.attention\.self\.", ".attention.self_attention.")
            .allow_partial(true);
        let mut model = config.init(device);
        let result = model.load_from(&mut store).map_err(|e| MiniLmError::Bad {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let unexpected: Vec<&String> = result
            .unused
            .iter()
            .filter(|name| !UNUSED.contains(&name.as_str()))
            .collect();
        if !result.errors.is_empty() || !result.missing.is_empty() || !unexpected.is_empty() {
            return Err(MiniLmError::Bad {
                path: shown,
                message: format!(
                    "not all-MiniLM-L6-v2's weights: errors {:?}, missing {:?}, unexpected {:?}",
                    result.errors, result.missing, unexpected
                ),
            });
        }
        Ok(model)
    }

    /// Every token's final state: `ids` `[b, n]`, `mask` `[b, n]` (1 for a token, 0 for
    /// padding) → `[b, n, hidden]`.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [b, n] = ids.dims();
        let device = ids.device();
        let e = &self.embeddings;
        let positions = Tensor::<1, Int>::arange(0..n as i64, &device)
            .reshape([1, n])
            .expand([b, n]);
        let types = Tensor::<2, Int>::zeros([b, n], &device);
        let x = e.word_embeddings.forward(ids)
            + e.position_embeddings.forward(positions)
            + e.token_type_embeddings.forward(types);
        let mut x = e.layer_norm.forward(x); // [b, n, h]
        // Padding keys get a large negative score (BERT's own −10,000 is not −∞ either).
        let bias = ((mask - 1.0) * 1e9).reshape([b, 1, 1, n]);
        for layer in &self.encoder.layer {
            let attended = layer
                .attention
                .self_attention
                .forward(x.clone(), bias.clone());
            x = layer.attention.output.forward(attended, x);
            let hidden = gelu(layer.intermediate.dense.forward(x.clone()));
            x = layer.output.forward(hidden, x);
        }
        x
    }

    /// Mean of the token states over the non-padding tokens: `states` `[b, n, h]`, `mask`
    /// `[b, n]` → `[b, h]`.
    pub fn pool(states: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
        let [b, n, _] = states.dims();
        let weights = mask.reshape([b, n, 1]);
        let sum: Tensor<2> = (states * weights.clone()).sum_dim(1).squeeze_dim(1);
        let count: Tensor<2> = weights.sum_dim(1).squeeze_dim(1).clamp_min(1e-9);
        sum / count
    }

    /// `pooled` `[b, h]` scaled to unit length per row.
    pub fn normalise(pooled: Tensor<2>) -> Tensor<2> {
        let norm = pooled
            .clone()
            .powi_scalar(2)
            .sum_dim(1)
            .sqrt()
            .clamp_min(1e-12);
        pooled / norm
    }
}

/// Where the model folder is: `$DIT_MINILM_DIR`, else the clone's `models/all-MiniLM-L6-v2`
/// (where `scripts/fetch-minilm.sh` puts it).
pub fn model_dir() -> PathBuf {
    match std::env::var_os("DIT_MINILM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/all-MiniLM-L6-v2"),
    }
}

/// The frozen encoder with its tokenizer: text in, [`EncodedPrompt`]s out (per-token states
/// and the unit-length mean, as sentence-transformers gives it).
#[derive(Debug, Clone)]
pub struct MiniLmPrompts {
    model: MiniLm,
    tokenizer: MiniLmTokenizer,
    device: Device,
}

impl MiniLmPrompts {
    /// Prompts encoded at a time.
    const BATCH: usize = 64;

    /// Loads the model folder onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, MiniLmError> {
        Ok(Self {
            tokenizer: MiniLmTokenizer::load(dir)?,
            model: MiniLm::load(dir, device)?,
            device: device.clone(),
        })
    }

    /// Whether `text` is longer than the encoder reads (it is then cut to [`MAX_TOKENS`]).
    pub fn is_truncated(&self, text: &str) -> Result<bool, MiniLmError> {
        Ok(self.tokenizer.encode(text)?.1)
    }

    /// The WordPiece ids and pieces `text` is read as, `[CLS]` and `[SEP]` included.
    pub fn pieces(&self, text: &str) -> Result<Vec<(u32, String)>, MiniLmError> {
        self.tokenizer.pieces(text)
    }

    /// Encodes `texts`, in order.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<EncodedPrompt>, MiniLmError> {
        let width = self.model.embeddings.word_embeddings.weight.dims()[1];
        let mut encoded = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(Self::BATCH) {
            let mut ids = Vec::with_capacity(chunk.len());
            for text in chunk {
                ids.push(self.tokenizer.encode(text)?.0);
            }
            let (tokens, mask) = MiniLmTokenizer::batch(&ids, &self.device);
            let states = self.model.forward(tokens, mask.clone()); // [b, n, width]
            let pooled = MiniLm::normalise(MiniLm::pool(states.clone(), mask)); // [b, width]
            let n = states.dims()[1];
            let states: Vec<f32> = states
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(bad_data)?;
            let pooled: Vec<f32> = pooled
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(bad_data)?;
            for (row, sentence) in ids.iter().enumerate() {
                let start = row * n * width;
                encoded.push(EncodedPrompt {
                    states: states[start..start + sentence.len() * width].to_vec(),
                    tokens: sentence.len(),
                    pooled: pooled[row * width..(row + 1) * width].to_vec(),
                });
            }
        }
        Ok(encoded)
    }
}

fn bad_data(error: burn::tensor::DataError) -> MiniLmError {
    MiniLmError::Bad {
        path: "encoder output".into(),
        message: format!("{error:?}"),
    }
}

/// all-MiniLM-L6-v2's tokenizer: the model folder's `tokenizer.json`, without padding,
/// truncated to [`MAX_TOKENS`].
#[derive(Debug, Clone)]
pub struct MiniLmTokenizer {
    inner: tokenizers::Tokenizer,
}

impl MiniLmTokenizer {
    /// Reads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self, MiniLmError> {
        let path = dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(MiniLmError::Missing(path.display().to_string()));
        }
        let bad = |message: String| MiniLmError::Bad {
            path: path.display().to_string(),
            message,
        };
        let mut inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| bad(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self { inner })
    }

    /// The ids of `text`, `[CLS]` first and `[SEP]` last, at most [`MAX_TOKENS`], and
    /// whether the text was cut to fit.
    pub fn encode(&self, text: &str) -> Result<(Vec<u32>, bool), MiniLmError> {
        let encoding = self.encoding(text)?;
        Ok((
            encoding.get_ids().to_vec(),
            !encoding.get_overflowing().is_empty(),
        ))
    }

    /// The ids and WordPiece pieces of `text`, as [`encode`](Self::encode) cuts it.
    pub fn pieces(&self, text: &str) -> Result<Vec<(u32, String)>, MiniLmError> {
        let encoding = self.encoding(text)?;
        Ok(encoding
            .get_ids()
            .iter()
            .copied()
            .zip(encoding.get_tokens().iter().cloned())
            .collect())
    }

    /// The tokenizer's encoding of `text`, special tokens added, cut to [`MAX_TOKENS`].
    fn encoding(&self, text: &str) -> Result<tokenizers::Encoding, MiniLmError> {
        self.inner.encode(text, true).map_err(|e| MiniLmError::Bad {
            path: "tokenizer.json".into(),
            message: e.to_string(),
        })
    }

    /// `ids` of several texts padded with 0 to the longest, as `[b, n]` ids and mask.
    pub fn batch(ids: &[Vec<u32>], device: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let n = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut flat = vec![0i64; ids.len() * n];
        let mut mask = vec![0f32; ids.len() * n];
        for (row, sentence) in ids.iter().enumerate() {
            for (j, &id) in sentence.iter().enumerate() {
                flat[row * n + j] = id as i64;
                mask[row * n + j] = 1.0;
            }
        }
        (
            Tensor::from_data(TensorData::new(flat, [ids.len(), n]), device),
            Tensor::from_data(TensorData::new(mask, [ids.len(), n]), device),
        )
    }
}
