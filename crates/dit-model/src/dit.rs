//! The Diffusion Transformer: patch-embed → + positions → blocks conditioned on
//! `c = t_emb + pooled_text` → final layer → unpatchify.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use crate::block::DitBlock;
use crate::config::{ConfigError, DitConfig};
use crate::final_layer::FinalLayer;
use crate::patch::{PatchEmbed, unpatchify};
use crate::pos_embed::position_embedding;
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
                .map(|_| DitBlock::new(self.hidden, self.heads, self.mlp_hidden(), text_width, device))
                .collect(),
            final_layer: FinalLayer::new(self.hidden, self.patch_dim(), device),
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
        let pos = position_embedding(self.hidden, self.grid, &device); // [tokens, hidden]
        let mut x = self.x_embedder.forward(latent) + pos.unsqueeze_dim(0); // [batch, tokens, hidden]
        let c = self.t_embedder.forward(t) + text.pooled.clone(); // [batch, hidden]
        for block in &self.blocks {
            x = block.forward(x, c.clone(), text);
        }
        let x = self.final_layer.forward(x, c); // [batch, tokens, C·pt·ph·pw]
        unpatchify(x, self.grid, patch, self.latent_channels)
    }
}
