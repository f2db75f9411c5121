//! The DiT block with adaLN-Zero conditioning (Peebles & Xie 2023, fig. 3).
//!
//! `c` (timestep + pooled text) regresses per-block shift, scale and gate for
//! the attention and MLP branches. The regression is zero-initialised, so
//! every gate is 0 and a new block is the identity.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};

use crate::attention::{CrossAttention, SelfAttention};
use crate::fused::layer_norm_modulate;
use crate::layers::{Mlp, zero_linear};
use crate::ops::layer_norm;
use crate::text::TextFeatures;

/// LayerNorm epsilon of the DiT blocks and final layer.
pub(crate) const NORM_EPS: f64 = 1e-6;

/// Splits `[batch, n·hidden]` into `n` tensors `[batch, hidden]`.
pub fn chunks<const N: usize>(x: Tensor<2>) -> [Tensor<2>; N] {
    x.chunk(N, 1)
        .try_into()
        .expect("adaLN output splits evenly")
}

/// What one block computed, for looking inside ([`crate::Dit::forward_traced`]).
#[derive(Debug, Clone)]
pub struct BlockTrace {
    /// adaLN-Zero's values `[batch, hidden]` each, in the paper's order: shift, scale and
    /// gate of the attention branch, then shift, scale and gate of the MLP branch.
    pub modulation: [Tensor<2>; 6],
    /// Self-attention weights `[batch, heads, tokens (queries), tokens (keys)]`.
    pub attention: Tensor<4>,
    /// The MLP's hidden activations after GELU `[batch, tokens, mlp hidden]`.
    pub mlp_hidden: Tensor<3>,
}

/// A transformer block over spacetime tokens, conditioned by adaLN-Zero.
#[derive(Module, Debug)]
pub struct DitBlock {
    /// Multi-head self-attention over all spacetime tokens.
    pub attn: SelfAttention,
    /// Optional cross-attention to the words (between attention and MLP).
    pub cross_attn: Option<CrossAttention>,
    /// Pointwise MLP.
    pub mlp: Mlp,
    /// SiLU → Linear producing shift/scale/gate for attention and MLP (`adaLN_modulation`).
    pub ada_ln_modulation: Linear,
}

impl DitBlock {
    /// A block of width `hidden`; `text_width` enables cross-attention when given.
    pub fn new(
        hidden: usize,
        heads: usize,
        mlp_hidden: usize,
        text_width: Option<usize>,
        device: &Device,
    ) -> Self {
        Self {
            attn: SelfAttention::new(hidden, heads, device),
            cross_attn: text_width.map(|w| CrossAttention::new(hidden, w, heads, device)),
            mlp: Mlp::new(hidden, mlp_hidden, device),
            ada_ln_modulation: zero_linear(hidden, 6 * hidden, device),
        }
    }

    /// # Shapes
    /// - x: `[batch, tokens, hidden]`, c: `[batch, hidden]` → `[batch, tokens, hidden]`
    pub fn forward(&self, x: Tensor<3>, c: Tensor<2>, text: &TextFeatures) -> Tensor<3> {
        self.run(x, c, text, false).0
    }

    /// [`DitBlock::forward`], and what the block computed on the way.
    pub fn forward_traced(
        &self,
        x: Tensor<3>,
        c: Tensor<2>,
        text: &TextFeatures,
    ) -> (Tensor<3>, BlockTrace) {
        let (x, trace) = self.run(x, c, text, true);
        (x, trace.expect("traced"))
    }

    /// The forward pass; with `traced`, also the modulation, attention weights and MLP
    /// activations (computed a second time, outside the fused kernels).
    fn run(
        &self,
        x: Tensor<3>,
        c: Tensor<2>,
        text: &TextFeatures,
        traced: bool,
    ) -> (Tensor<3>, Option<BlockTrace>) {
        let modulation = chunks::<6>(self.ada_ln_modulation.forward(silu(c)));
        let [
            shift_msa,
            scale_msa,
            gate_msa,
            shift_mlp,
            scale_mlp,
            gate_mlp,
        ] = modulation.clone();

        let h = layer_norm_modulate(x.clone(), shift_msa, scale_msa, NORM_EPS);
        let attention = traced.then(|| self.attn.weights(h.clone()));
        let x = x + gate_msa.unsqueeze_dim::<3>(1) * self.attn.forward(h, None);

        let x = match &self.cross_attn {
            Some(cross) => {
                let h = layer_norm(x.clone(), NORM_EPS);
                x + cross.forward(h, text.tokens.clone(), text.padding.clone())
            }
            None => x,
        };

        let h = layer_norm_modulate(x.clone(), shift_mlp, scale_mlp, NORM_EPS);
        let mlp_hidden = traced.then(|| self.mlp.hidden(h.clone()));
        let x = x + gate_mlp.unsqueeze_dim::<3>(1) * self.mlp.forward(h);
        let trace = attention
            .zip(mlp_hidden)
            .map(|(attention, mlp_hidden)| BlockTrace {
                modulation,
                attention,
                mlp_hidden,
            });
        (x, trace)
    }
}
