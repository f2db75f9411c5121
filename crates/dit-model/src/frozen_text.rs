//! Conditioning on a pretrained, frozen text encoder ([`crate::minilm`]): its per-token
//! states and pooled sentence vector are computed once per prompt, outside the DiT and
//! without gradients, then projected here to the DiT's text width (for cross-attention) and
//! to its hidden width (added to `c`). The counterpart of [`crate::text`]'s trained encoder:
//! both give the blocks the same [`TextFeatures`].
//!
//! The null prompt of classifier-free guidance (a row without tokens) becomes learned null
//! embeddings, as in the trained encoder, so caption dropout trains the unconditional model.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::layers::xavier_linear;
use crate::text::{NullPrompts, TextFeatures};

/// A pretrained text encoder a DiT can condition on, as configs and `model.json` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PretrainedText {
    /// all-MiniLM-L6-v2: 384-wide token states and their unit-length mean.
    #[serde(rename = "all-MiniLM-L6-v2")]
    MiniLmL6V2,
}

impl PretrainedText {
    /// Width of the encoder's token states and pooled vector.
    pub fn width(self) -> usize {
        match self {
            PretrainedText::MiniLmL6V2 => 384,
        }
    }

    /// The encoder's name, as configs write it.
    pub fn name(self) -> &'static str {
        match self {
            PretrainedText::MiniLmL6V2 => "all-MiniLM-L6-v2",
        }
    }
}

/// One prompt as the frozen encoder read it, on the host (what training caches per caption).
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPrompt {
    /// Per-token states, `[tokens, width]` row-major.
    pub states: Vec<f32>,
    /// Number of tokens (special tokens included).
    pub tokens: usize,
    /// The pooled sentence vector `[width]`.
    pub pooled: Vec<f32>,
}

/// A batch of frozen-encoder outputs on the device.
#[derive(Debug, Clone)]
pub struct FrozenText {
    /// Per-token states `[batch, tokens, width]`, zero past each prompt's end.
    pub states: Tensor<3>,
    /// `[batch, tokens]`: 1 for a token, 0 for padding; a row of zeros is the null prompt.
    pub mask: Tensor<2>,
    /// Pooled vectors `[batch, width]` (zero for the null prompt).
    pub pooled: Tensor<2>,
}

impl FrozenText {
    /// Stacks `prompts` (`None`: the null prompt), padded to the longest; `width` is the
    /// encoder's (every prompt must have it).
    pub fn batch(prompts: &[Option<&EncodedPrompt>], width: usize, device: &Device) -> Self {
        let batch = prompts.len();
        let n = prompts
            .iter()
            .flatten()
            .map(|p| p.tokens)
            .max()
            .unwrap_or(0)
            .max(1);
        let mut states = vec![0f32; batch * n * width];
        let mut mask = vec![0f32; batch * n];
        let mut pooled = vec![0f32; batch * width];
        for (row, prompt) in prompts.iter().enumerate() {
            let Some(prompt) = prompt else { continue };
            assert_eq!(
                prompt.pooled.len(),
                width,
                "an encoded prompt of another width"
            );
            let start = row * n * width;
            states[start..start + prompt.states.len()].copy_from_slice(&prompt.states);
            mask[row * n..row * n + prompt.tokens].fill(1.0);
            pooled[row * width..(row + 1) * width].copy_from_slice(&prompt.pooled);
        }
        Self {
            states: Tensor::from_data(TensorData::new(states, [batch, n, width]), device),
            mask: Tensor::from_data(TensorData::new(mask, [batch, n]), device),
            pooled: Tensor::from_data(TensorData::new(pooled, [batch, width]), device),
        }
    }

    /// The same batch twice, the second time as null prompts: classifier-free guidance's
    /// conditional and unconditional halves in one batch.
    pub fn with_null_half(self) -> Self {
        Self {
            states: Tensor::cat(vec![self.states.clone(), self.states.zeros_like()], 0),
            mask: Tensor::cat(vec![self.mask.clone(), self.mask.zeros_like()], 0),
            pooled: Tensor::cat(vec![self.pooled.clone(), self.pooled.zeros_like()], 0),
        }
    }
}

/// Frozen-encoder outputs → [`TextFeatures`]: a linear map of each token state to the text
/// width, a linear map of the pooled vector to the hidden width, and the learned null prompt.
#[derive(Module, Debug)]
pub struct FrozenTextProjection {
    /// Token states → text width.
    pub token_proj: Linear,
    /// Pooled vector → hidden width.
    pub pooled_proj: Linear,
    /// Token features of the null prompt `[1, text width]`.
    pub null_tokens: Param<Tensor<2>>,
    /// Pooled vector of the null prompt `[hidden]`.
    pub null_pooled: Param<Tensor<1>>,
}

impl FrozenTextProjection {
    /// Projections from an encoder of width `input` to `width` (tokens) and `hidden` (pooled).
    pub fn new(input: usize, width: usize, hidden: usize, device: &Device) -> Self {
        let normal = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        Self {
            token_proj: xavier_linear(input, width, device),
            pooled_proj: xavier_linear(input, hidden, device),
            null_tokens: normal.init([1, width], device),
            null_pooled: normal.init([hidden], device),
        }
    }

    /// Number of parameters of a projection [`new`](Self::new) builds.
    pub fn parameter_count(input: usize, width: usize, hidden: usize) -> u64 {
        let (i, w, d) = (input as u64, width as u64, hidden as u64);
        (i * w + w) + (i * d + d) + w + d
    }

    /// # Shapes
    /// - text: `batch` prompts of up to `n` tokens → tokens `[batch, n, width]`, padding
    ///   `[batch, n]`, pooled `[batch, hidden]`
    pub fn forward(&self, text: &FrozenText) -> TextFeatures {
        let count = text.mask.clone().sum_dim(1); // [batch, 1]
        let null = NullPrompts::locate(count, text.mask.clone().equal_elem(0.0));
        let tokens = null.fill_tokens(
            self.token_proj.forward(text.states.clone()),
            self.null_tokens.val(),
        ); // [batch, n, width]
        let pooled = null.fill_pooled(
            self.pooled_proj.forward(text.pooled.clone()),
            self.null_pooled.val(),
        ); // [batch, hidden]
        TextFeatures {
            tokens,
            padding: null.padding,
            pooled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(tokens: usize, width: usize, value: f32) -> EncodedPrompt {
        EncodedPrompt {
            states: (0..tokens * width)
                .map(|i| value + i as f32 * 0.01)
                .collect(),
            tokens,
            pooled: vec![value; width],
        }
    }

    #[test]
    fn prompts_pad_to_the_longest_and_the_null_prompt_reads_as_learned_embeddings() {
        let device = Device::default();
        let (a, b) = (prompt(3, 4, 1.0), prompt(5, 4, -1.0));
        let text = FrozenText::batch(&[Some(&a), None, Some(&b)], 4, &device);
        assert_eq!(text.states.dims(), [3, 5, 4]);
        let mask: Vec<f32> = text.mask.to_data().try_to_vec().unwrap();
        assert_eq!(
            mask,
            [1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 1., 1., 1., 1., 1.]
        );

        let projection = FrozenTextProjection::new(4, 8, 16, &device);
        let params = projection.num_params() as u64;
        assert_eq!(params, FrozenTextProjection::parameter_count(4, 8, 16));
        let features = projection.forward(&text);
        assert_eq!(features.tokens.dims(), [3, 5, 8]);
        assert_eq!(features.pooled.dims(), [3, 16]);
        // Read through integers: backends store booleans differently (wgpu as u32).
        let padding: Vec<i64> = features
            .padding
            .clone()
            .int()
            .into_data()
            .convert::<i64>()
            .try_to_vec()
            .unwrap();
        // The null row keeps its first position (the null tokens) and pads the rest.
        assert_eq!(&padding[..5], [0, 0, 0, 1, 1]);
        assert_eq!(&padding[5..10], [0, 1, 1, 1, 1]);
        assert_eq!(&padding[10..], [0; 5]);
        features
            .tokens
            .clone()
            .narrow(0, 1, 1)
            .narrow(1, 0, 1)
            .reshape([1, 8])
            .into_data()
            .assert_eq(&projection.null_tokens.val().into_data(), true);
        features
            .pooled
            .clone()
            .narrow(0, 1, 1)
            .reshape([16])
            .into_data()
            .assert_eq(&projection.null_pooled.val().into_data(), true);
        // A real row is the linear map of its states.
        let expected = projection.token_proj.forward(text.states.narrow(0, 2, 1));
        features
            .tokens
            .narrow(0, 2, 1)
            .into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Default::default());
    }

    #[test]
    fn the_null_half_repeats_the_batch_without_tokens() {
        let device = Device::default();
        let a = prompt(2, 3, 0.5);
        let text = FrozenText::batch(&[Some(&a)], 3, &device).with_null_half();
        assert_eq!(text.states.dims(), [2, 2, 3]);
        let mask: Vec<f32> = text.mask.to_data().try_to_vec().unwrap();
        assert_eq!(mask, [1., 1., 0., 0.]);
    }

    #[test]
    fn the_config_name_is_the_models() {
        let name = serde_json::to_string(&PretrainedText::MiniLmL6V2).unwrap();
        assert_eq!(name, "\"all-MiniLM-L6-v2\"");
        assert_eq!(PretrainedText::MiniLmL6V2.width(), 384);
    }
}
