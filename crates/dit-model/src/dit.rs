//! The Diffusion Transformer: patch-embed → + positions → blocks conditioned on
//! `c = t_emb + pooled_text` → final layer → unpatchify.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use crate::block::DitBlock;
use crate::config::{ConfigError, DitConfig};
use crate::final_layer::FinalLayer;
use crate::patch::{PatchEmbed, unpatchify};
use crate::pos_embed::PositionTable;
use crate::text::{TextEncoder, TextFeatures};
use crate::timestep::TimestepEmbedder;

impl DitConfig {
    /// Builds the DiT with DiT's initialisation (Xavier Linear layers,
    /// N(0, 0.02²) timestep MLP, zero adaLN and final layer).
    pub fn init(&self, device: &Device) -> Result<Dit, ConfigError> {
        self.validate()?;
        let patch = [self.patch_frames, self.patch_size, self.patch_size];
        let text_width = self.cross_attention.then_some(self.text.width);
        Ok(Dit {
            x_embedder: PatchEmbed::new(self.latent_channels, patch, self.hidden, device),
            t_embedder: TimestepEmbedder::new(self.hidden, device),
            text_encoder: self.text.init(self.hidden, device),
            blocks: (0..self.depth)
                .map(|_| {
                    DitBlock::new(
                        self.hidden,
                        self.heads,
                        self.mlp_hidden(),
                        text_width,
                        device,
                    )
                })
                .collect(),
            final_layer: FinalLayer::new(self.hidden, self.patch_dim(), device),
            positions: PositionTable::new(self.hidden, self.grid()),
            grid: self.grid(),
            hidden: self.hidden,
            latent_channels: self.latent_channels,
        })
    }
}

/// The text-conditioned video Diffusion Transformer.
#[derive(Module, Debug)]
pub struct Dit {
    /// Spacetime patch embedding.
    pub x_embedder: PatchEmbed,
    /// Diffusion-step embedding.
    pub t_embedder: TimestepEmbedder,
    /// Prompt encoder.
    pub text_encoder: TextEncoder,
    /// Transformer blocks.
    pub blocks: Vec<DitBlock>,
    /// adaLN + Linear to patch values.
    pub final_layer: FinalLayer,
    /// Fixed 3D sin-cos position embedding of the patch grid.
    #[module(skip)]
    pub positions: PositionTable,
    /// Patch grid `[frames, rows, columns]`.
    pub grid: [usize; 3],
    /// Token width.
    pub hidden: usize,
    /// Latent channels.
    pub latent_channels: usize,
}

impl Dit {
    /// Encodes word ids (a row of padding only is the null prompt).
    ///
    /// # Shapes
    /// - tokens: `[batch, words]`
    pub fn encode_text(&self, tokens: Tensor<2, Int>) -> TextFeatures {
        self.text_encoder.forward(tokens)
    }

    /// Predicts the noise in `latent` at diffusion step `t` given the prompt.
    ///
    /// # Shapes
    /// - latent: `[batch, C, F, H, W]` (the configured latent shape)
    /// - t: `[batch]`, diffusion steps in `[0, T)` (float: respaced steps may be fractional)
    /// - text: features of `batch` prompts from [`Dit::encode_text`]
    /// - output: `[batch, C, F, H, W]`, the predicted noise ε
    pub fn forward(&self, latent: Tensor<5>, t: Tensor<1>, text: &TextFeatures) -> Tensor<5> {
        let device = latent.device();
        let patch = self.x_embedder.patch;
        let pos = self.positions.tensor(&device); // [tokens, hidden]
        let mut x = self.x_embedder.forward(latent) + pos.unsqueeze_dim(0); // [batch, tokens, hidden]
        let c = self.t_embedder.forward(t) + text.pooled.clone(); // [batch, hidden]
        for block in &self.blocks {
            x = block.forward(x, c.clone(), text);
        }
        let x = self.final_layer.forward(x, c); // [batch, tokens, C·pt·ph·pw]
        unpatchify(x, self.grid, patch, self.latent_channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::DitBlock;
    use crate::text::TextEncoderConfig;
    use crate::weights::named_parameters;
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::{Distribution, Int, TensorData, Tolerance};

    fn config(cross_attention: bool) -> DitConfig {
        DitConfig::new(
            4,
            4,
            8,
            1,
            2,
            32,
            2,
            4,
            TextEncoderConfig::new(10).with_width(16).with_max_words(6),
        )
        .with_cross_attention(cross_attention)
    }

    fn tokens(device: &Device) -> Tensor<2, Int> {
        // Two prompts and the null prompt.
        Tensor::from_data(
            TensorData::new(vec![1i64, 2, 3, 0, 4, 5, 0, 0, 0, 0, 0, 0], [3, 4]),
            device,
        )
    }

    #[test]
    fn output_has_the_latent_shape() {
        let device = Device::default();
        for (cross, patch_frames, patch_size) in
            [(false, 1, 2), (true, 2, 2), (false, 4, 8), (true, 1, 1)]
        {
            let c = DitConfig {
                patch_frames,
                patch_size,
                ..config(cross)
            };
            let dit = c.init(&device).unwrap();
            let latent =
                Tensor::<5>::random([3, 4, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
            let t = Tensor::<1>::from_floats([0.0, 10.0, 999.0], &device);
            let text = dit.encode_text(tokens(&device));
            assert_eq!(text.pooled.dims(), [3, 32]);
            assert_eq!(dit.forward(latent, t, &text).dims(), [3, 4, 4, 8, 8]);
        }
    }

    #[test]
    fn block_is_identity_and_output_zero_at_init() {
        let device = Device::default();
        for cross in [false, true] {
            let dit = config(cross).init(&device).unwrap();
            let text = dit.encode_text(tokens(&device));
            let x = Tensor::<3>::random([3, 64, 32], Distribution::Normal(0.0, 1.0), &device);
            let c = Tensor::<2>::random([3, 32], Distribution::Normal(0.0, 1.0), &device);
            let block: &DitBlock = &dit.blocks[0];
            block
                .forward(x.clone(), c, &text)
                .into_data()
                .assert_approx_eq::<f32>(&x.into_data(), Tolerance::absolute(1e-6));
            let latent =
                Tensor::<5>::random([3, 4, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
            let out = dit.forward(latent, Tensor::from_floats([1.0, 2.0, 3.0], &device), &text);
            out.into_data()
                .assert_eq(&TensorData::zeros::<f32, _>([3, 4, 4, 8, 8]), false);
        }
    }

    /// With adaLN-Zero, the first step only reaches the final Linear (every other
    /// gradient passes through a zero weight or a zero gate); from the second step
    /// on, every parameter receives gradient.
    #[test]
    fn every_parameter_moves_under_training() {
        let device = Device::default().autodiff();
        device.seed(3);
        let mut dit = config(true).init(&device).unwrap();
        let before = named_parameters(&dit);
        let mut optim = AdamWConfig::new().with_weight_decay(0.0).init();
        let latent = Tensor::<5>::random([3, 4, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let noise = Tensor::<5>::random([3, 4, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<1>::from_floats([5.0, 500.0, 900.0], &device);
        for step in 0..3 {
            let text = dit.encode_text(tokens(&device));
            let loss = (dit.forward(latent.clone(), t.clone(), &text) - noise.clone())
                .powi_scalar(2)
                .mean();
            let grads = GradientsParams::from_grads(loss.backward(), &dit);
            dit = optim.step(1e-3, dit, grads);
            if step == 0 {
                let moved: Vec<String> = changed(&before, &named_parameters(&dit));
                assert_eq!(
                    moved,
                    vec!["final_layer.linear.bias", "final_layer.linear.weight"]
                );
            }
        }
        let after = named_parameters(&dit);
        let moved = changed(&before, &after);
        let still: Vec<&String> = before
            .iter()
            .map(|(n, _)| n)
            .filter(|n| !moved.contains(n))
            .collect();
        assert!(still.is_empty(), "parameters that never moved: {still:?}");
        assert!(before.len() > 40, "{} parameters", before.len());
    }

    fn changed(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> Vec<String> {
        a.iter()
            .zip(b)
            .filter(|(x, y)| x.1 != y.1)
            .map(|(x, _)| x.0.clone())
            .collect()
    }
}
