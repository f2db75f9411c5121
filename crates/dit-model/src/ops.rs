//! The tensor operations of the networks, written with Burn's own ops: parameter-free
//! LayerNorm, adaLN modulation, tanh-GELU and multi-head attention.
//!
//! These are also the composite references of the fused kernels ([`crate::fused`]): what
//! every backend but `flex` runs, and what the kernels are tested against. This module
//! imports nothing of the model, so the model calls the routed ops of `fused`, which fall
//! back to these, and nothing goes round in a circle.

use burn::tensor::activation::sigmoid;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

/// LayerNorm over the last axis without scale or shift (DiT uses eps = 1e-6).
pub fn layer_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    (x - mean) / (var + eps).sqrt()
}

/// adaLN modulation: `x · (1 + scale) + shift`, with one scale and shift per sample.
///
/// # Shapes
/// - x: `[batch, tokens, hidden]`
/// - shift, scale: `[batch, hidden]`
pub fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    x * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim(1)
}

/// tanh-approximated GELU (PyTorch's `GELU(approximate="tanh")`), written as
/// `x · σ(2u)` with `u = √(2/π)·(x + 0.044715·x³)`.
///
/// `½·(1 + tanh(u)) = σ(2u)`, so this is the same function as Burn's
/// `gelu_approximate`; this form needs one `exp` per element and cubes with
/// multiplications, where the library form calls `powf` and `tanh` (half of a
/// CPU training step in profiles of the `tiny` DiT).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4; // 2·√(2/π)
    let cube = x.clone() * x.clone() * x.clone();
    let u2 = (x.clone() + cube * 0.044715) * TWO_SQRT_2_OVER_PI;
    x * sigmoid(u2)
}

/// Splits `[batch, tokens, heads·head_dim]` into `[batch, heads, tokens, head_dim]`.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [batch, tokens, width] = x.dims();
    x.reshape([batch, tokens, heads, width / heads])
        .swap_dims(1, 2)
}

/// Merges `[batch, heads, tokens, head_dim]` back into `[batch, tokens, heads·head_dim]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
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
pub fn multi_head_attention(
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::{Device, Distribution, TensorData, Tolerance};

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
    fn gelu_tanh_matches_the_tanh_formula() {
        let device = Device::default();
        let xs: Vec<f32> = (-80..=80).map(|i| i as f32 * 0.1).collect();
        let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device);
        let got = gelu_tanh(x.clone());
        // Reference values from the definition, in f64.
        let want: Vec<f32> = xs
            .iter()
            .map(|&x| {
                let x = x as f64;
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
                (0.5 * x * (1.0 + u.tanh())) as f32
            })
            .collect();
        got.clone().into_data().assert_approx_eq::<f32>(
            &TensorData::new(want, [xs.len()]),
            Tolerance::absolute(1e-6),
        );
        // And Burn's own tanh form.
        got.into_data().assert_approx_eq::<f32>(
            &burn::tensor::activation::gelu_approximate(x).into_data(),
            Tolerance::absolute(1e-6),
        );
    }

    #[test]
    fn layer_norm_gives_zero_mean_unit_variance() {
        let device = Device::default();
        let x = Tensor::<3>::random([2, 5, 16], Distribution::Normal(3.0, 2.0), &device);
        let y = layer_norm(x, 1e-6);
        let (var, mean) = y.var_mean_bias(2);
        mean.into_data().assert_approx_eq::<f32>(
            &TensorData::zeros::<f32, _>([2, 5, 1]),
            Tolerance::absolute(1e-5),
        );
        var.into_data().assert_approx_eq::<f32>(
            &TensorData::ones::<f32, _>([2, 5, 1]),
            Tolerance::absolute(1e-4),
        );
    }

    #[test]
    fn modulate_matches_closed_form() {
        let device = Device::default();
        let x = Tensor::<3>::from_floats([[[1.0, 2.0]], [[3.0, 4.0]]], &device);
        let shift = Tensor::<2>::from_floats([[0.5, 0.0], [1.0, -1.0]], &device);
        let scale = Tensor::<2>::from_floats([[1.0, 0.0], [-1.0, 2.0]], &device);
        let y = modulate(x, shift, scale);
        y.into_data()
            .assert_eq(&TensorData::from([[[2.5f32, 2.0]], [[1.0, 11.0]]]), false);
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
