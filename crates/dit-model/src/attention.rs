//! Multi-head attention over spacetime tokens (self-attention) and from video
//! tokens to text tokens (cross-attention), on Burn's fused
//! `softmax(QKᵀ/√d)·V` kernel.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::softmax;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Tensor};

use crate::fused;
use crate::layers::{per_token, xavier_linear, zero_linear};

/// Splits `[batch, tokens, heads·head_dim]` into `[batch, heads, tokens, head_dim]`.
fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [batch, tokens, width] = x.dims();
    x.reshape([batch, tokens, heads, width / heads])
        .swap_dims(1, 2)
}

/// Merges `[batch, heads, tokens, head_dim]` back into `[batch, tokens, heads·head_dim]`.
fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [batch, heads, tokens, head_dim] = x.dims();
    x.swap_dims(1, 2).reshape([batch, tokens, heads * head_dim])
}

/// Expands a key-padding mask `[batch, keys]` (true = ignore) to the kernel's
/// `[batch, heads, queries, keys]`.
fn expand_key_mask(mask: Tensor<2, Bool>, heads: usize, queries: usize) -> Tensor<4, Bool> {
    let [batch, keys] = mask.dims();
    mask.reshape([batch, 1, 1, keys])
        .expand([batch, heads, queries, keys])
}

/// Scaled dot-product attention per head.
///
/// # Shapes
/// - q: `[batch, queries, width]`, k and v: `[batch, keys, width]`
/// - key_padding: `[batch, keys]`, true where a key must be ignored
/// - output: `[batch, queries, width]`
pub(crate) fn multi_head_attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    key_padding: Option<Tensor<2, Bool>>,
) -> Tensor<3> {
    let queries = q.dims()[1];
    let mask = key_padding.map(|m| expand_key_mask(m, heads, queries));
    let out = attention(
        split_heads(q, heads),
        split_heads(k, heads),
        split_heads(v, heads),
        mask,
        None,
        AttentionModuleOptions::default(),
    );
    merge_heads(out)
}

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
    use burn::tensor::{Distribution, Tolerance};

    /// softmax(QKᵀ/√d)·V written out per head, with -∞ at masked keys.
    fn naive(
        q: Tensor<3>,
        k: Tensor<3>,
        v: Tensor<3>,
        heads: usize,
        pad: Option<Tensor<2, Bool>>,
    ) -> Tensor<3> {
        let [batch, queries, width] = q.dims();
        let keys = k.dims()[1];
        let d = width / heads;
        let mut outs = Vec::new();
        for h in 0..heads {
            let qh = q.clone().narrow(2, h * d, d);
            let kh = k.clone().narrow(2, h * d, d);
            let vh = v.clone().narrow(2, h * d, d);
            let mut scores = qh.matmul(kh.swap_dims(1, 2)) / (d as f64).sqrt(); // [b, q, k]
            if let Some(pad) = pad.clone() {
                let mask = pad.reshape([batch, 1, keys]).expand([batch, queries, keys]);
                scores = scores.mask_fill(mask, f32::NEG_INFINITY);
            }
            outs.push(softmax(scores, 2).matmul(vh));
        }
        Tensor::cat(outs, 2)
    }

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

    #[test]
    fn fused_attention_matches_naive_softmax() {
        let device = Device::default();
        let q = Tensor::<3>::random([2, 7, 12], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &device);
        let v = Tensor::<3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &device);
        let pad =
            Tensor::<2, Bool>::from_data([[false, false, false, true, true], [false; 5]], &device);
        for mask in [None, Some(pad)] {
            let fused = multi_head_attention(q.clone(), k.clone(), v.clone(), 3, mask.clone());
            let reference = naive(q.clone(), k.clone(), v.clone(), 3, mask);
            fused
                .into_data()
                .assert_approx_eq::<f32>(&reference.into_data(), Tolerance::absolute(1e-5));
        }
    }
}
