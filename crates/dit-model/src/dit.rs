//! The Diffusion Transformer: patch-embed → + positions → blocks conditioned on
//! `c = t_emb + pooled_text` → final layer → unpatchify; its config and the
//! published sizes.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};

use crate::block::{BlockTrace, DitBlock};
use crate::final_layer::FinalLayer;
use crate::frozen_text::{FrozenText, FrozenTextProjection};
use crate::param_ids::with_path_ids;
use crate::patch::{PatchEmbed, unpatchify};
use crate::pos_embed::PositionTable;
use crate::text::{TextEncoder, TextEncoderConfig, TextFeatures};
use crate::timestep::{FREQUENCY_DIM, TimestepEmbedder};
use crate::validate::{ConfigError, require_divides, require_positive};

/// Hyper-parameters of the Diffusion Transformer.
#[derive(Config, Debug, PartialEq)]
pub struct DitConfig {
    /// Channels of the latent video the DiT denoises.
    pub latent_channels: usize,
    /// Frames of the latent video.
    pub latent_frames: usize,
    /// Height and width of the latent video.
    pub latent_size: usize,
    /// Frames per spacetime patch (`pt`).
    pub patch_frames: usize,
    /// Rows and columns per spacetime patch (`ph = pw`).
    pub patch_size: usize,
    /// Token width of the transformer.
    pub hidden: usize,
    /// Number of `DitBlock`s.
    pub depth: usize,
    /// Attention heads per block.
    pub heads: usize,
    /// Hidden width of the pointwise MLP, as a multiple of `hidden`.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Adds cross-attention to the text tokens in every block.
    #[config(default = false)]
    pub cross_attention: bool,
    /// The prompt encoder.
    pub text: TextEncoderConfig,
}

impl DitConfig {
    /// Tokens per clip: `(F/pt)·(H/ph)·(W/pw)`.
    pub fn num_tokens(&self) -> usize {
        self.grid().iter().product()
    }

    /// Patch grid `[frames, rows, columns]`.
    pub fn grid(&self) -> [usize; 3] {
        [
            self.latent_frames / self.patch_frames,
            self.latent_size / self.patch_size,
            self.latent_size / self.patch_size,
        ]
    }

    /// Values per patch: `C·pt·ph·pw`.
    pub fn patch_dim(&self) -> usize {
        self.latent_channels * self.patch_frames * self.patch_size * self.patch_size
    }

    /// Width of the MLP's hidden layer.
    pub fn mlp_hidden(&self) -> usize {
        (self.hidden as f64 * self.mlp_ratio).round() as usize
    }

    /// Number of parameters of the DiT this config builds, computed without building it
    /// (so that a config too large for memory can be refused before anything is allocated).
    pub fn num_params(&self) -> u64 {
        let linear = |i: u128, o: u128| i * o + o;
        let (d, p, m) = (
            self.hidden as u128,
            self.patch_dim() as u128,
            self.mlp_hidden() as u128,
        );
        let cross = if self.cross_attention {
            let w = self.text.width as u128;
            linear(d, d) + linear(w, 2 * d) + linear(d, d)
        } else {
            0
        };
        let block = linear(d, 3 * d)
            + linear(d, d)
            + cross
            + linear(d, m)
            + linear(m, d)
            + linear(d, 6 * d);
        let total = linear(p, d) // patch embedding
            + linear(FREQUENCY_DIM as u128, d) + linear(d, d) // timestep MLP
            + self.text.num_params(self.hidden) as u128
            + self.depth as u128 * block
            + linear(d, p) + linear(d, 2 * d); // final layer
        u64::try_from(total).unwrap_or(u64::MAX)
    }

    /// Checks every constraint the modules rely on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_positive("latent_channels", self.latent_channels)?;
        require_positive("latent_frames", self.latent_frames)?;
        require_positive("latent_size", self.latent_size)?;
        require_positive("depth", self.depth)?;
        require_divides(
            "patch_frames",
            self.patch_frames,
            "latent_frames",
            self.latent_frames,
        )?;
        require_divides(
            "patch_size",
            self.patch_size,
            "latent_size",
            self.latent_size,
        )?;
        require_positive("hidden", self.hidden)?;
        require_divides("heads", self.heads, "hidden", self.hidden)?;
        if !self.hidden.is_multiple_of(16) {
            return Err(ConfigError::new(
                "hidden",
                format!(
                    "= {} must be a multiple of 16 (the 3D sin-cos position embedding gives \
                     hidden/4 to frames and 3·hidden/8 to rows and to columns, each even)",
                    self.hidden
                ),
            ));
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) {
            return Err(ConfigError::new(
                "mlp_ratio",
                format!("must be positive, got {}", self.mlp_ratio),
            ));
        }
        if let Some(pretrained) = self.text.pretrained
            && !self.cross_attention
        {
            return Err(ConfigError::new(
                "cross_attention",
                format!(
                    "must be true with text.pretrained = \"{}\": the DiT reads the encoder's \
                     per-token states through cross-attention",
                    pretrained.name()
                ),
            ));
        }
        self.text.validate().map_err(|e| e.within("text"))
    }

    /// Builds the DiT with DiT's initialisation (Xavier Linear layers,
    /// N(0, 0.02²) timestep MLP, zero adaLN and final layer), each parameter with the id of
    /// its path ([`crate::param_ids`]).
    pub fn init(&self, device: &Device) -> Result<Dit, ConfigError> {
        self.validate()?;
        let patch = [self.patch_frames, self.patch_size, self.patch_size];
        let text_width = self.cross_attention.then_some(self.text.width);
        Ok(with_path_ids(Dit {
            x_embedder: PatchEmbed::new(self.latent_channels, patch, self.hidden, device),
            t_embedder: TimestepEmbedder::new(self.hidden, device),
            text_encoder: match self.text.pretrained {
                None => Some(self.text.init(self.hidden, device)),
                Some(_) => None,
            },
            text_projection: self.text.pretrained.map(|pretrained| {
                FrozenTextProjection::new(pretrained.width(), self.text.width, self.hidden, device)
            }),
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
        }))
    }

    /// A DiT of the given published size (`S`, `B`, `L`, `XL`, Peebles & Xie 2023,
    /// table 1) with cubic patch `patch` over a latent of the given shape.
    pub fn preset(
        size: DitSize,
        patch: usize,
        latent_channels: usize,
        latent_frames: usize,
        latent_size: usize,
        text: TextEncoderConfig,
    ) -> Self {
        let (hidden, depth, heads) = size.dims();
        DitConfig {
            latent_channels,
            latent_frames,
            latent_size,
            patch_frames: 1,
            patch_size: patch,
            hidden,
            depth,
            heads,
            mlp_ratio: 4.0,
            cross_attention: false,
            text,
        }
    }
}

/// The model sizes of the DiT paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DitSize {
    /// DiT-S: hidden 384, depth 12, 6 heads.
    S,
    /// DiT-B: hidden 768, depth 12, 12 heads.
    B,
    /// DiT-L: hidden 1024, depth 24, 16 heads.
    L,
    /// DiT-XL: hidden 1152, depth 28, 16 heads.
    XL,
}

impl DitSize {
    /// `(hidden, depth, heads)` of this size.
    pub fn dims(self) -> (usize, usize, usize) {
        match self {
            DitSize::S => (384, 12, 6),
            DitSize::B => (768, 12, 12),
            DitSize::L => (1024, 24, 16),
            DitSize::XL => (1152, 28, 16),
        }
    }
}

/// The text-conditioned video Diffusion Transformer.
#[derive(Module, Debug)]
pub struct Dit {
    /// Spacetime patch embedding.
    pub x_embedder: PatchEmbed,
    /// Diffusion-step embedding.
    pub t_embedder: TimestepEmbedder,
    /// Prompt encoder (trained with the DiT; none when it conditions on a frozen encoder).
    pub text_encoder: Option<TextEncoder>,
    /// Projection of a frozen pretrained encoder's outputs (none with a trained encoder).
    pub text_projection: Option<FrozenTextProjection>,
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

/// A batch of prompts in the form the DiT's prompt encoder reads.
// Made once per batch of prompts: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum PromptInput {
    /// Word ids `[batch, words]` for the trained encoder; a row of padding is the null prompt.
    Words(Tensor<2, Int>),
    /// A frozen pretrained encoder's outputs; a row without tokens is the null prompt.
    Frozen(FrozenText),
}

impl PromptInput {
    /// The batch followed by as many null prompts: classifier-free guidance's conditional
    /// and unconditional halves.
    pub fn with_null_half(self) -> Self {
        match self {
            PromptInput::Words(tokens) => {
                PromptInput::Words(Tensor::cat(vec![tokens.clone(), tokens.zeros_like()], 0))
            }
            PromptInput::Frozen(text) => PromptInput::Frozen(text.with_null_half()),
        }
    }
}

impl Dit {
    /// Encodes a batch of prompts into what the blocks read.
    ///
    /// # Panics
    /// If the input is not of the DiT's kind (word ids for a trained encoder, frozen outputs
    /// for a pretrained one): the model's config decides which, so this is a program error.
    pub fn encode_text(&self, prompts: PromptInput) -> TextFeatures {
        match (prompts, &self.text_encoder, &self.text_projection) {
            (PromptInput::Words(tokens), Some(encoder), _) => encoder.forward(tokens),
            (PromptInput::Frozen(text), _, Some(projection)) => projection.forward(&text),
            _ => panic!("prompts given in a form this DiT's text conditioning does not read"),
        }
    }

    /// Predicts, from the noised `latent` at diffusion step `t` and the prompt, what
    /// the model was trained to predict: the noise ε or the velocity v
    /// ([`Prediction`](crate::Prediction) of the run's diffusion config).
    ///
    /// # Shapes
    /// - latent: `[batch, C, F, H, W]` (the configured latent shape)
    /// - t: `[batch]`, diffusion steps in `[0, T)` (float: respaced steps may be fractional)
    /// - text: features of `batch` prompts from [`Dit::encode_text`]
    /// - output: `[batch, C, F, H, W]`, the predicted ε or v
    pub fn forward(&self, latent: Tensor<5>, t: Tensor<1>, text: &TextFeatures) -> Tensor<5> {
        self.run(latent, t, text, false).0
    }

    /// [`Dit::forward`], and what it computed on the way: the tokens, the embeddings
    /// that make `c`, and each block's [`BlockTrace`].
    pub fn forward_traced(
        &self,
        latent: Tensor<5>,
        t: Tensor<1>,
        text: &TextFeatures,
    ) -> (Tensor<5>, DitTrace) {
        let (out, trace) = self.run(latent, t, text, true);
        (out, trace.expect("traced"))
    }

    fn run(
        &self,
        latent: Tensor<5>,
        t: Tensor<1>,
        text: &TextFeatures,
        traced: bool,
    ) -> (Tensor<5>, Option<DitTrace>) {
        let device = latent.device();
        let patch = self.x_embedder.patch;
        let pos = self.positions.tensor(&device); // [tokens, hidden]
        let mut x = self.x_embedder.forward(latent) + pos.unsqueeze_dim(0); // [batch, tokens, hidden]
        let t_embedding = self.t_embedder.forward(t); // [batch, hidden]
        let c = t_embedding.clone() + text.pooled.clone(); // [batch, hidden]
        let mut trace = traced.then(|| DitTrace {
            tokens: x.clone(),
            t_embedding,
            c: c.clone(),
            blocks: Vec::new(),
        });
        for block in &self.blocks {
            x = match &mut trace {
                Some(trace) => {
                    let (x, block_trace) = block.forward_traced(x, c.clone(), text);
                    trace.blocks.push(block_trace);
                    x
                }
                None => block.forward(x, c.clone(), text),
            };
        }
        let x = self.final_layer.forward(x, c); // [batch, tokens, C·pt·ph·pw]
        (unpatchify(x, self.grid, patch, self.latent_channels), trace)
    }
}

/// What [`Dit::forward_traced`] saw.
#[derive(Debug, Clone)]
pub struct DitTrace {
    /// The spacetime tokens after the patch embedding and positions `[batch, tokens, hidden]`.
    pub tokens: Tensor<3>,
    /// The diffusion step's embedding `[batch, hidden]`.
    pub t_embedding: Tensor<2>,
    /// The conditioning `c` = step embedding + pooled text `[batch, hidden]`.
    pub c: Tensor<2>,
    /// Each block's trace, in order.
    pub blocks: Vec<BlockTrace>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::DitBlock;
    use crate::weights::named_parameters;
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::{Distribution, Int, TensorData, Tolerance};

    fn config(cross_attention: bool) -> DitConfig {
        DitConfig {
            latent_channels: 4,
            latent_frames: 4,
            latent_size: 8,
            patch_frames: 1,
            patch_size: 2,
            hidden: 32,
            depth: 2,
            heads: 4,
            mlp_ratio: 4.0,
            cross_attention,
            text: TextEncoderConfig::new(10).with_width(16).with_max_words(6),
        }
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
            let text = dit.encode_text(PromptInput::Words(tokens(&device)));
            assert_eq!(text.pooled.dims(), [3, 32]);
            assert_eq!(dit.forward(latent, t, &text).dims(), [3, 4, 4, 8, 8]);
        }
    }

    #[test]
    fn block_is_identity_and_output_zero_at_init() {
        let device = Device::default();
        for cross in [false, true] {
            let dit = config(cross).init(&device).unwrap();
            let text = dit.encode_text(PromptInput::Words(tokens(&device)));
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

    #[test]
    fn the_traced_forward_is_the_forward_and_its_parts_add_up() {
        let device = Device::default();
        device.seed(5);
        let dit = config(false).init(&device).unwrap();
        let text = dit.encode_text(PromptInput::Words(tokens(&device)));
        let latent = Tensor::<5>::random([3, 4, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
        let t = Tensor::<1>::from_floats([1.0, 300.0, 999.0], &device);
        let (out, trace) = dit.forward_traced(latent.clone(), t.clone(), &text);
        out.into_data()
            .assert_eq(&dit.forward(latent, t, &text).into_data(), true);
        assert_eq!(trace.blocks.len(), 2);
        assert_eq!(trace.tokens.dims(), [3, 64, 32]);
        // c is the step embedding plus the pooled prompt.
        (trace.t_embedding.clone() + text.pooled)
            .into_data()
            .assert_approx_eq::<f32>(&trace.c.clone().into_data(), Tolerance::absolute(1e-6));
        for block in &trace.blocks {
            // Attention rows are distributions over the 64 tokens.
            assert_eq!(block.attention.dims(), [3, 4, 64, 64]);
            block
                .attention
                .clone()
                .sum_dim(3)
                .into_data()
                .assert_approx_eq::<f32>(
                    &TensorData::ones::<f32, _>([3, 4, 64, 1]),
                    Tolerance::absolute(1e-5),
                );
            assert_eq!(block.mlp_hidden.dims(), [3, 64, 128]);
            // A fresh model's adaLN-Zero regression is zero: every gate (and shift, scale) is 0.
            for part in &block.modulation {
                part.clone()
                    .into_data()
                    .assert_eq(&TensorData::zeros::<f32, _>([3, 32]), false);
            }
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
            let text = dit.encode_text(PromptInput::Words(tokens(&device)));
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

    fn tiny() -> DitConfig {
        DitConfig {
            latent_channels: 4,
            latent_frames: 8,
            latent_size: 8,
            patch_frames: 1,
            patch_size: 2,
            hidden: 128,
            depth: 4,
            heads: 4,
            mlp_ratio: 4.0,
            cross_attention: false,
            text: TextEncoderConfig::new(20),
        }
    }

    #[test]
    fn the_parameter_count_is_that_of_the_built_model() {
        let device = Device::default();
        for c in [
            tiny(),
            config(false),
            config(true),
            tiny().with_mlp_ratio(2.5),
        ] {
            assert_eq!(c.num_params(), c.init(&device).unwrap().num_params() as u64);
        }
        // DiT-XL/2 over a 4×1×32×32 latent has the paper's 675 M parameters, plus the
        // text encoder that replaces its class embedding.
        let xl = DitConfig::preset(DitSize::XL, 2, 4, 1, 32, TextEncoderConfig::new(1001));
        let text = xl.text.num_params(xl.hidden);
        assert!((670_000_000..680_000_000).contains(&(xl.num_params() - text)));
    }

    #[test]
    fn derived_sizes() {
        let c = tiny();
        assert_eq!(c.grid(), [8, 4, 4]);
        assert_eq!(c.num_tokens(), 128);
        assert_eq!(c.patch_dim(), 16);
        assert_eq!(c.mlp_hidden(), 512);
        c.validate().unwrap();
    }

    #[test]
    fn invalid_values_name_their_field() {
        let err = DitConfig { heads: 3, ..tiny() }.validate().unwrap_err();
        assert_eq!(err.field, "heads");
        assert!(
            err.to_string().contains("must divide hidden = 128"),
            "{err}"
        );
        assert_eq!(
            DitConfig {
                patch_size: 3,
                ..tiny()
            }
            .validate()
            .unwrap_err()
            .field,
            "patch_size"
        );
        assert_eq!(
            DitConfig {
                patch_frames: 3,
                ..tiny()
            }
            .validate()
            .unwrap_err()
            .field,
            "patch_frames"
        );
        assert_eq!(
            DitConfig { depth: 0, ..tiny() }
                .validate()
                .unwrap_err()
                .field,
            "depth"
        );
        assert_eq!(
            DitConfig {
                hidden: 136,
                ..tiny()
            }
            .validate()
            .unwrap_err()
            .field,
            "hidden"
        );
        assert_eq!(
            tiny().with_mlp_ratio(-1.0).validate().unwrap_err().field,
            "mlp_ratio"
        );
    }

    #[test]
    fn presets_have_the_published_sizes() {
        for size in [DitSize::S, DitSize::B, DitSize::L, DitSize::XL] {
            for patch in [2, 4, 8] {
                let c = DitConfig::preset(size, patch, 4, 16, 32, TextEncoderConfig::new(20));
                c.validate().unwrap();
                assert_eq!(c.hidden, size.dims().0);
            }
        }
    }
}
