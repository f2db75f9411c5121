//! The prompt encoder: learned word and position embeddings and a small
//! pre-LN transformer encoder over the words, giving per-word features (for
//! cross-attention) and a pooled vector (added to the timestep embedding).
//!
//! A prompt of padding only (every id [`PAD_ID`]) is the *null prompt* of
//! classifier-free guidance: it is encoded as learned null embeddings, so the
//! unconditional model is trained by replacing a caption with padding.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Bool, Device, Int, Tensor};

use crate::attention::SelfAttention;
use crate::frozen_text::{FrozenTextProjection, PretrainedText};
use crate::layers::{Mlp, xavier_linear};
use crate::tokenizer::PAD_ID;
use crate::validate::{ConfigError, require_divides, require_positive};

/// Hyper-parameters of the prompt encoder: the [`TextEncoder`] the DiT trains, or, with
/// `pretrained`, the projection of a frozen pretrained encoder's outputs
/// ([`FrozenTextProjection`]).
#[derive(Config, Debug, PartialEq)]
pub struct TextEncoderConfig {
    /// Number of token ids (vocabulary + padding); 0 means "set from the data set's vocabulary".
    /// Unused with `pretrained`.
    pub vocab_size: usize,
    /// Longest prompt, in words.
    #[config(default = 16)]
    pub max_words: usize,
    /// Width of the word features.
    #[config(default = 64)]
    pub width: usize,
    /// Transformer encoder layers.
    #[config(default = 2)]
    pub depth: usize,
    /// Attention heads per layer.
    #[config(default = 4)]
    pub heads: usize,
    /// A frozen pretrained encoder to condition on instead of training this one (then only
    /// `width`, the width its token states are projected to, is used).
    #[config(default = "None")]
    pub pretrained: Option<PretrainedText>,
}

impl TextEncoderConfig {
    /// Checks sizes and divisibility.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.pretrained.is_some() {
            return require_positive("width", self.width);
        }
        if self.vocab_size < 2 {
            return Err(ConfigError::new(
                "vocab_size",
                "must count at least one word and the padding id",
            ));
        }
        require_positive("max_words", self.max_words)?;
        require_positive("width", self.width)?;
        require_divides("heads", self.heads, "width", self.width)
    }

    /// Number of parameters of the encoder [`init`](Self::init) builds for `hidden`.
    pub fn num_params(&self, hidden: usize) -> u64 {
        if let Some(pretrained) = self.pretrained {
            return FrozenTextProjection::parameter_count(pretrained.width(), self.width, hidden);
        }
        let linear = |i: u128, o: u128| i * o + o;
        let (w, d) = (self.width as u128, hidden as u128);
        // Two LayerNorms (scale and bias), attention (qkv, proj) and the MLP (ratio 4).
        let layer = 4 * w + linear(w, 3 * w) + linear(w, w) + linear(w, 4 * w) + linear(4 * w, w);
        let total = (self.vocab_size as u128 + self.max_words as u128) * w
            + self.depth as u128 * layer
            + 2 * w // final norm
            + linear(w, d) // pooled projection
            + w + d; // null prompt
        u64::try_from(total).unwrap_or(u64::MAX)
    }

    /// Builds the encoder, projecting the pooled vector to `hidden` channels.
    pub fn init(&self, hidden: usize, device: &Device) -> TextEncoder {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        TextEncoder {
            token_embedding: EmbeddingConfig::new(self.vocab_size, self.width)
                .with_initializer(normal.clone())
                .init(device),
            position_embedding: normal.init([self.max_words, self.width], device),
            layers: (0..self.depth)
                .map(|_| TextEncoderLayer::new(self.width, self.heads, device))
                .collect(),
            norm: LayerNormConfig::new(self.width).init(device),
            pooled_proj: xavier_linear(self.width, hidden, device),
            null_tokens: normal.init([1, self.width], device),
            null_pooled: normal.init([hidden], device),
        }
    }
}

/// One pre-LN transformer encoder layer.
#[derive(Module, Debug)]
pub struct TextEncoderLayer {
    /// Norm before attention.
    pub norm1: LayerNorm,
    /// Self-attention over the words.
    pub attn: SelfAttention,
    /// Norm before the MLP.
    pub norm2: LayerNorm,
    /// Pointwise MLP (ratio 4).
    pub mlp: Mlp,
}

impl TextEncoderLayer {
    fn new(width: usize, heads: usize, device: &Device) -> Self {
        Self {
            norm1: LayerNormConfig::new(width).init(device),
            attn: SelfAttention::new(width, heads, device),
            norm2: LayerNormConfig::new(width).init(device),
            mlp: Mlp::new(width, 4 * width, device),
        }
    }

    fn forward(&self, x: Tensor<3>, padding: Tensor<2, Bool>) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x), Some(padding));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// What the DiT reads of a prompt.
#[derive(Debug, Clone)]
pub struct TextFeatures {
    /// Per-word features `[batch, words, width]`.
    pub tokens: Tensor<3>,
    /// `[batch, words]`, true where a word position must be ignored.
    pub padding: Tensor<2, Bool>,
    /// Pooled prompt vector `[batch, hidden]`.
    pub pooled: Tensor<2>,
}

/// Where a batch's null prompts are — the rows without a token, classifier-free guidance's
/// unconditional input — and how they read: a null row attends to its first position, which
/// holds the learned null features, and its pooled vector is the learned null one. Shared by
/// the trained encoder and the frozen encoder's projection.
pub(crate) struct NullPrompts {
    /// `[batch, 1]`: true for a null row.
    is_null: Tensor<2, Bool>,
    /// `[batch, n]`: true at a null row's first position.
    null_first: Tensor<2, Bool>,
    /// `[batch, n]`: true where a position must be ignored (padding, but not a null row's
    /// first position).
    pub padding: Tensor<2, Bool>,
}

impl NullPrompts {
    /// From the token counts `[batch, 1]` and the padding `[batch, n]` of a batch.
    pub(crate) fn locate(count: Tensor<2>, is_pad: Tensor<2, Bool>) -> Self {
        let [batch, n] = is_pad.dims();
        let is_null = count.equal_elem(0.0); // [batch, 1]
        let first = Tensor::<1, Int>::arange(0..n as i64, &is_pad.device())
            .equal_elem(0)
            .reshape([1, n])
            .expand([batch, n]);
        let null_first = first.bool_and(is_null.clone().expand([batch, n])); // [batch, n]
        let padding = is_pad.bool_and(null_first.clone().bool_not());
        Self {
            is_null,
            null_first,
            padding,
        }
    }

    /// `tokens` `[batch, n, width]` with each null row's first position set to
    /// `null_tokens` `[1, width]`.
    pub(crate) fn fill_tokens(&self, tokens: Tensor<3>, null_tokens: Tensor<2>) -> Tensor<3> {
        let [batch, n, width] = tokens.dims();
        tokens.mask_where(
            self.null_first
                .clone()
                .unsqueeze_dim::<3>(2)
                .expand([batch, n, width]),
            null_tokens.unsqueeze_dim::<3>(0).expand([batch, n, width]),
        )
    }

    /// `pooled` `[batch, hidden]` with each null row set to `null_pooled` `[hidden]`.
    pub(crate) fn fill_pooled(&self, pooled: Tensor<2>, null_pooled: Tensor<1>) -> Tensor<2> {
        let [batch, hidden] = pooled.dims();
        pooled.mask_where(
            self.is_null.clone().expand([batch, hidden]),
            null_pooled.unsqueeze_dim::<2>(0).expand([batch, hidden]),
        )
    }
}

/// Encodes word ids into [`TextFeatures`] (DiT's `y_embedder`, for text).
#[derive(Module, Debug)]
pub struct TextEncoder {
    /// Word embeddings `[vocab_size, width]`.
    pub token_embedding: Embedding,
    /// Learned position embeddings `[max_words, width]`.
    pub position_embedding: Param<Tensor<2>>,
    /// Transformer encoder layers.
    pub layers: Vec<TextEncoderLayer>,
    /// Final LayerNorm.
    pub norm: LayerNorm,
    /// Projection of the mean word feature to the DiT width.
    pub pooled_proj: Linear,
    /// Word features of the null prompt `[1, width]`.
    pub null_tokens: Param<Tensor<2>>,
    /// Pooled vector of the null prompt `[hidden]`.
    pub null_pooled: Param<Tensor<1>>,
}

impl TextEncoder {
    /// # Shapes
    /// - tokens: `[batch, words]` word ids, right-padded with [`PAD_ID`]; a row of
    ///   padding only is the null prompt.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> TextFeatures {
        let [_, words] = tokens.dims();

        let is_pad = tokens.clone().equal_elem(PAD_ID as i64); // [batch, words]
        let real = is_pad.clone().bool_not().float(); // [batch, words]
        let count = real.clone().sum_dim(1); // [batch, 1]
        let null = NullPrompts::locate(count.clone(), is_pad);

        let positions = self
            .position_embedding
            .val()
            .narrow(0, 0, words)
            .unsqueeze_dim::<3>(0);
        let x = self.token_embedding.forward(tokens) + positions; // [batch, words, width]
        let mut x = null.fill_tokens(x, self.null_tokens.val());
        for layer in &self.layers {
            x = layer.forward(x, null.padding.clone());
        }
        let x = self.norm.forward(x);

        // Mean over real words; the null row's count is clamped to avoid 0/0.
        let summed = (x.clone() * real.unsqueeze_dim::<3>(2))
            .sum_dim(1)
            .squeeze_dim::<2>(1); // [batch, width]
        let mean = summed / count.clamp_min(1.0);
        let pooled = self.pooled_proj.forward(mean); // [batch, hidden]
        let pooled = null.fill_pooled(pooled, self.null_pooled.val());
        TextFeatures {
            tokens: x,
            padding: null.padding,
            pooled,
        }
    }
}
