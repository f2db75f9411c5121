//! The DiT's final layer: adaLN, then a Linear to the patch values.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use crate::block::{NORM_EPS, chunks};
use crate::fused::layer_norm_modulate;
use crate::layers::{per_token, zero_linear};

/// adaLN + Linear to `pt·ph·pw·C` values per token, zero-initialised so the
/// untrained DiT predicts zero noise.
#[derive(Module, Debug)]
pub struct FinalLayer {
    /// `hidden → C·pt·ph·pw`.
    pub linear: Linear,
    /// SiLU → Linear producing shift and scale (`adaLN_modulation`).
    pub ada_ln_modulation: Linear,
}

impl FinalLayer {
    /// A final layer from `hidden` channels to `patch_dim` values.
    pub fn new(hidden: usize, patch_dim: usize, device: &Device) -> Self {
        Self {
            linear: zero_linear(hidden, patch_dim, device),
            ada_ln_modulation: zero_linear(hidden, 2 * hidden, device),
        }
    }

    /// # Shapes
    /// - x: `[batch, tokens, hidden]`, c: `[batch, hidden]` → `[batch, tokens, patch_dim]`
    pub fn forward(&self, x: Tensor<3>, c: Tensor<2>) -> Tensor<3> {
        let [shift, scale] = chunks::<2>(self.ada_ln_modulation.forward(silu(c)));
        per_token(&self.linear, layer_norm_modulate(x, shift, scale, NORM_EPS))
    }
}
