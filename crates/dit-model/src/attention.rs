//! Multi-head attention over spacetime tokens (self-attention) and from video
//! tokens to text tokens (cross-attention), on Burn's fused
//! `softmax(QKᵀ/√d)·V` kernel.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Device, Tensor};

use crate::fused;
use crate::layers::{per_token, xavier_linear, zero_linear};
use crate::ops::split_heads;

/// Multi-head self-attention with one fused q,k,v projection (`attn.qkv`, `attn.proj`).
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Joint projection to queries, keys and values: `width → 3·width`.
    pub qkv: Linear,
    /// Output projection.
    pub proj: Linear,
    /// Number of heads.
    pub heads: usize,
}

impl SelfAttention {
    /// Self-attention of `width` channels split into `heads` heads.
    pub fn new(width: usize, heads: usize, device: &Device) -> Self {
        Self {
            qkv: xavier_linear(width, 3 * width, device),
            proj: xavier_linear(width, width, device),
            heads,
        }
    }

    /// # Shapes
    /// - x: `[batch, tokens, width]` → `[batch, tokens, width]`
    /// - key_padding: `[batch, tokens]`, true where a token must be ignored
    pub fn forward(&self, x: Tensor<3>, key_padding: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let qkv = per_token(&self.qkv, x); // [batch, tokens, 3·width]
        per_token(
            &self.proj,
            fused::self_attention(qkv, self.heads, key_padding),
        )
    }

    /// The attention weights `softmax(QKᵀ/√d)` of every head, for looking inside (the
    /// forward pass never forms them whole).
    ///
    /// # Shapes
    /// - x: `[batch, tokens, width]` → `[batch, heads, tokens (queries), tokens (keys)]`
    pub fn weights(&self, x: Tensor<3>) -> Tensor<4> {
        let qkv = per_token(&self.qkv, x); // [batch, tokens, 3·width]
        let [q, k, _v]: [Tensor<3>; 3] = qkv.chunk(3, 2).try_into().expect("q, k, v");
        let (q, k) = (split_heads(q, self.heads), split_heads(k, self.heads));
        let head_dim = q.dims()[3] as f64;
        softmax(q.matmul(k.swap_dims(2, 3)) / head_dim.sqrt(), 3)
    }
}

/// Multi-head cross-attention from video tokens to text tokens (PixArt-α style).
#[derive(Module, Debug)]
pub struct CrossAttention {
    /// Queries from the video tokens.
    pub q: Linear,
    /// Keys and values from the text tokens: `text_width → 2·width`.
    pub kv: Linear,
    /// Output projection, zero-initialised so a new block starts as the identity.
    pub proj: Linear,
    /// Number of heads.
    pub heads: usize,
}

impl CrossAttention {
    /// Cross-attention from `width`-wide tokens to `text_width`-wide context.
    pub fn new(width: usize, text_width: usize, heads: usize, device: &Device) -> Self {
        Self {
            q: xavier_linear(width, width, device),
            kv: xavier_linear(text_width, 2 * width, device),
            proj: zero_linear(width, width, device),
            heads,
        }
    }

    /// # Shapes
    /// - x: `[batch, tokens, width]`, context: `[batch, words, text_width]`
    /// - context_padding: `[batch, words]`, true at padding
    /// - output: `[batch, tokens, width]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        context: Tensor<3>,
        context_padding: Tensor<2, Bool>,
    ) -> Tensor<3> {
        let q = per_token(&self.q, x); // [batch, tokens, width]
        let kv = per_token(&self.kv, context); // [batch, words, 2·width]
        per_token(
            &self.proj,
            fused::cross_attention(q, kv, self.heads, context_padding),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::merge_heads;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn the_attention_weights_are_the_ones_the_forward_pass_applies() {
        let device = Device::default();
        let attn = SelfAttention::new(12, 3, &device);
        let x = Tensor::<3>::random([2, 9, 12], Distribution::Normal(0.0, 1.0), &device);
        let weights = attn.weights(x.clone()); // [2, 3, 9, 9]
        let v = per_token(&attn.qkv, x.clone()).narrow(2, 24, 12);
        let mixed = merge_heads(weights.matmul(split_heads(v, 3)));
        per_token(&attn.proj, mixed)
            .into_data()
            .assert_approx_eq::<f32>(
                &attn.forward(x, None).into_data(),
                Tolerance::absolute(1e-5),
            );
    }
}
