//! The visual autoencoder: maps each 32×32 RGB frame to a 8×8 latent with 4
//! channels (×4 spatial downsampling) and back. Frames are coded independently
//! (time is folded into the batch); the DiT models time.
//!
//! Trained first on reconstruction (plus a small KL term when `variational`),
//! then frozen. Latents are multiplied by a scale factor measured on data
//! (Stable Diffusion's 0.18215 is the same idea) so the DiT sees unit variance.

use crate::fused::silu;
use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Distribution, Tensor};

use crate::param_ids::with_path_ids;
use crate::validate::{ConfigError, require_positive};

/// Hyper-parameters of the [`VideoAutoencoder`].
#[derive(Config, Debug, PartialEq)]
pub struct AutoencoderConfig {
    /// Channels of the frames (3 for RGB).
    #[config(default = 3)]
    pub image_channels: usize,
    /// Channels of the latent.
    #[config(default = 4)]
    pub latent_channels: usize,
    /// Channels of the first level (full resolution).
    #[config(default = 32)]
    pub base_channels: usize,
    /// Channels of each level (the full resolution, then after each downsampling) as multiples
    /// of `base_channels`, `downsamplings + 1` of them, as in Stable Diffusion's `ch_mult`;
    /// none means `[1, 2, 2, …]`.
    #[config(default = "None")]
    pub channel_multipliers: Option<Vec<usize>>,
    /// Number of ×2 spatial downsamplings (2 gives ×4).
    #[config(default = 2)]
    pub downsamplings: usize,
    /// Residual blocks per level.
    #[config(default = 1)]
    pub res_blocks: usize,
    /// Encode a mean and log-variance and add a KL term (a VAE), instead of a plain autoencoder.
    #[config(default = false)]
    pub variational: bool,
}

impl AutoencoderConfig {
    /// Checks sizes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_positive("image_channels", self.image_channels)?;
        require_positive("latent_channels", self.latent_channels)?;
        require_positive("base_channels", self.base_channels)?;
        let Some(multipliers) = &self.channel_multipliers else {
            return Ok(());
        };
        if multipliers.len() != self.downsamplings + 1 {
            return Err(ConfigError::new(
                "channel_multipliers",
                format!(
                    "has {} entries; it needs one per level, downsamplings + 1 = {}",
                    multipliers.len(),
                    self.downsamplings + 1
                ),
            ));
        }
        if multipliers.contains(&0) || multipliers.iter().any(|&m| m > 64) {
            return Err(ConfigError::new(
                "channel_multipliers",
                format!("= {multipliers:?}: every multiplier must be 1 to 64"),
            ));
        }
        Ok(())
    }

    /// Spatial downsampling factor `2^downsamplings`.
    pub fn factor(&self) -> usize {
        1 << self.downsamplings
    }

    /// Latent shape `[channels, frames, size]` for clips of `frames` frames of `size×size`.
    pub fn latent_shape(&self, frames: usize, size: usize) -> Result<[usize; 3], ConfigError> {
        require_positive("frames", frames)?;
        if size == 0 || !size.is_multiple_of(self.factor()) {
            return Err(ConfigError::new(
                "downsamplings",
                format!(
                    "= {} downsamples by {}, which must divide the frame size {size}",
                    self.downsamplings,
                    self.factor()
                ),
            ));
        }
        Ok([self.latent_channels, frames, size / self.factor()])
    }

    /// Channels at `level` (0 is full resolution, `downsamplings` the latent's).
    pub fn channels(&self, level: usize) -> usize {
        let multiplier = match self.channel_multipliers.as_ref().and_then(|m| m.get(level)) {
            Some(&m) => m,
            None if level == 0 => 1,
            None => 2,
        };
        multiplier * self.base_channels
    }

    /// Number of parameters of the autoencoder [`init`](Self::init) builds.
    pub fn num_params(&self) -> u64 {
        let conv = |i: usize, o: usize| 9 * i as u128 * o as u128 + o as u128;
        let res_block = |c: usize| 2 * conv(c, c);
        let levels = self.downsamplings;
        let deepest = self.channels(levels);
        let moments = if self.variational { 2 } else { 1 } * self.latent_channels;
        let per_level: u128 = (0..levels)
            .map(|i| {
                let (c, next) = (self.channels(i), self.channels(i + 1));
                // Encoder: residual blocks, then down; decoder: up, then residual blocks.
                2 * self.res_blocks as u128 * res_block(c) + conv(c, next) + conv(next, c)
            })
            .sum();
        let total = conv(self.image_channels, self.channels(0))
            + conv(deepest, moments)
            + conv(self.latent_channels, deepest)
            + conv(self.channels(0), self.image_channels)
            + 2 * res_block(deepest)
            + per_level;
        u64::try_from(total).unwrap_or(u64::MAX)
    }

    /// FLOPs (2 per multiply-add) of the convolutions of encoding and decoding one
    /// `side × side` frame: what a benchmark reads its speed against (element-wise work
    /// and the nearest-neighbour upsampling are not counted).
    pub fn forward_flops(&self, side: usize) -> f64 {
        // One 3×3 convolution from `i` to `o` channels with an `out × out` output.
        let conv = |i: usize, o: usize, out: usize| 2.0 * 9.0 * (i * o * out * out) as f64;
        let levels = self.downsamplings;
        let at = |level: usize| side >> level;
        let (deepest, bottom) = (self.channels(levels), at(levels));
        let moments = if self.variational { 2 } else { 1 } * self.latent_channels;
        let res_blocks = |c: usize, out: usize| 2.0 * self.res_blocks as f64 * conv(c, c, out);
        let per_level: f64 = (0..levels)
            .map(|i| {
                let (c, next) = (self.channels(i), self.channels(i + 1));
                // Encoder: residual blocks, then down (stride 2); decoder: upsample, up,
                // then residual blocks.
                2.0 * res_blocks(c, at(i)) + conv(c, next, at(i + 1)) + conv(next, c, at(i))
            })
            .sum();
        conv(self.image_channels, self.channels(0), side)
            + conv(deepest, moments, bottom)
            + conv(self.latent_channels, deepest, bottom)
            + conv(self.channels(0), self.image_channels, side)
            + 2.0 * 2.0 * conv(deepest, deepest, bottom)
            + per_level
    }

    /// Builds the autoencoder (PyTorch-style Kaiming-uniform convolutions), each parameter
    /// with the id of its path ([`crate::param_ids`]).
    pub fn init(&self, device: &Device) -> Result<VideoAutoencoder, ConfigError> {
        self.validate()?;
        let levels = self.downsamplings;
        let deepest = self.channels(levels);
        let moments = if self.variational { 2 } else { 1 } * self.latent_channels;
        let encoder = Encoder {
            conv_in: conv3x3(self.image_channels, self.channels(0), 1, device),
            levels: (0..levels)
                .map(|i| EncoderLevel {
                    res: res_blocks(self.channels(i), self.res_blocks, device),
                    down: conv3x3(self.channels(i), self.channels(i + 1), 2, device),
                })
                .collect(),
            mid: ResBlock::new(deepest, device),
            conv_out: conv3x3(deepest, moments, 1, device),
        };
        let decoder = Decoder {
            conv_in: conv3x3(self.latent_channels, deepest, 1, device),
            mid: ResBlock::new(deepest, device),
            levels: (0..levels)
                .rev()
                .map(|i| DecoderLevel {
                    up: conv3x3(self.channels(i + 1), self.channels(i), 1, device),
                    res: res_blocks(self.channels(i), self.res_blocks, device),
                })
                .collect(),
            conv_out: conv3x3(self.channels(0), self.image_channels, 1, device),
        };
        Ok(with_path_ids(VideoAutoencoder {
            encoder,
            decoder,
            variational: self.variational,
        }))
    }
}

fn conv3x3(input: usize, output: usize, stride: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([input, output], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

fn res_blocks(channels: usize, count: usize, device: &Device) -> Vec<ResBlock> {
    (0..count)
        .map(|_| ResBlock::new(channels, device))
        .collect()
}

/// `x + conv(silu(conv(silu(x))))`.
#[derive(Module, Debug)]
pub struct ResBlock {
    /// First 3×3 convolution.
    pub conv1: Conv2d,
    /// Second 3×3 convolution.
    pub conv2: Conv2d,
}

impl ResBlock {
    fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv1: conv3x3(channels, channels, 1, device),
            conv2: conv3x3(channels, channels, 1, device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x.clone() + self.conv2.forward(silu(self.conv1.forward(silu(x))))
    }
}

/// Residual blocks, then a stride-2 convolution.
#[derive(Module, Debug)]
pub struct EncoderLevel {
    /// Residual blocks at this resolution.
    pub res: Vec<ResBlock>,
    /// Downsampling convolution.
    pub down: Conv2d,
}

/// Frames → latent moments.
#[derive(Module, Debug)]
pub struct Encoder {
    /// Stem convolution.
    pub conv_in: Conv2d,
    /// Downsampling levels.
    pub levels: Vec<EncoderLevel>,
    /// Residual block at the latent resolution.
    pub mid: ResBlock,
    /// Projection to the latent mean (and log-variance).
    pub conv_out: Conv2d,
}

/// Nearest ×2 upsampling, a convolution, then residual blocks.
#[derive(Module, Debug)]
pub struct DecoderLevel {
    /// Convolution after upsampling.
    pub up: Conv2d,
    /// Residual blocks at this resolution.
    pub res: Vec<ResBlock>,
}

/// Latent → frames.
#[derive(Module, Debug)]
pub struct Decoder {
    /// Projection from the latent.
    pub conv_in: Conv2d,
    /// Residual block at the latent resolution.
    pub mid: ResBlock,
    /// Upsampling levels.
    pub levels: Vec<DecoderLevel>,
    /// Projection to pixels.
    pub conv_out: Conv2d,
}

/// Per-frame convolutional autoencoder for videos.
#[derive(Module, Debug)]
pub struct VideoAutoencoder {
    /// Frames → latent.
    pub encoder: Encoder,
    /// Latent → frames.
    pub decoder: Decoder,
    /// Whether the encoder outputs a mean and a log-variance.
    pub variational: bool,
}

/// Folds time into the batch: `[B, C, F, H, W]` → `[B·F, C, H, W]`.
fn frames_to_batch(x: Tensor<5>) -> Tensor<4> {
    let [b, c, f, h, w] = x.dims();
    x.swap_dims(1, 2).reshape([b * f, c, h, w])
}

/// Unfolds time: `[B·F, C, H, W]` → `[B, C, F, H, W]`.
fn batch_to_frames(x: Tensor<4>, frames: usize) -> Tensor<5> {
    let [bf, c, h, w] = x.dims();
    x.reshape([bf / frames, frames, c, h, w]).swap_dims(1, 2)
}

/// What the encoder says about a clip.
#[derive(Debug, Clone)]
pub struct LatentMoments {
    /// Latent mean `[B, C, F, h, w]`.
    pub mean: Tensor<5>,
    /// Latent log-variance (VAE only), same shape.
    pub log_var: Option<Tensor<5>>,
}

impl LatentMoments {
    /// A latent draw: the mean, plus noise for a VAE.
    pub fn sample(&self) -> Tensor<5> {
        match &self.log_var {
            Some(log_var) => {
                let eps = Tensor::random(
                    self.mean.shape(),
                    Distribution::Normal(0.0, 1.0),
                    &self.mean.device(),
                );
                self.mean.clone() + (log_var.clone() * 0.5).exp() * eps
            }
            None => self.mean.clone(),
        }
    }

    /// KL(q(z|x) ‖ N(0, I)) averaged over latent elements (0 for a plain autoencoder).
    pub fn kl(&self) -> Tensor<1> {
        match &self.log_var {
            Some(log_var) => {
                let mean2 = self.mean.clone().powi_scalar(2);
                ((mean2 + log_var.clone().exp() - log_var.clone() - 1.0) * 0.5).mean()
            }
            None => Tensor::zeros([1], &self.mean.device()),
        }
    }
}

impl VideoAutoencoder {
    /// # Shapes
    /// - video: `[B, 3, F, H, W]` in [-1, 1] → moments `[B, C, F, H/4, W/4]`
    pub fn encode(&self, video: Tensor<5>) -> LatentMoments {
        let frames = video.dims()[2];
        let e = &self.encoder;
        let mut x = e.conv_in.forward(frames_to_batch(video));
        for level in &e.levels {
            for res in &level.res {
                x = res.forward(x);
            }
            x = level.down.forward(silu(x));
        }
        let x = e.conv_out.forward(silu(e.mid.forward(x)));
        let x = batch_to_frames(x, frames);
        if self.variational {
            let [mean, log_var]: [Tensor<5>; 2] = x.chunk(2, 1).try_into().expect("two moments");
            LatentMoments {
                mean,
                log_var: Some(log_var.clamp(-30.0, 20.0)),
            }
        } else {
            LatentMoments {
                mean: x,
                log_var: None,
            }
        }
    }

    /// # Shapes
    /// - latent: `[B, C, F, h, w]` → video `[B, 3, F, 4h, 4w]` (about [-1, 1])
    pub fn decode(&self, latent: Tensor<5>) -> Tensor<5> {
        let frames = latent.dims()[2];
        let d = &self.decoder;
        let mut x = d.mid.forward(d.conv_in.forward(frames_to_batch(latent)));
        for level in &d.levels {
            let [_, _, h, w] = x.dims();
            let options = InterpolateOptions {
                output_size: Some([2 * h, 2 * w]),
                ..InterpolateOptions::new(InterpolateMode::Nearest)
            };
            x = level.up.forward(interpolate(silu(x), options));
            for res in &level.res {
                x = res.forward(x);
            }
        }
        batch_to_frames(d.conv_out.forward(silu(x)), frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_flops_count_every_convolution_at_its_resolution() {
        // 3 → 8 channels at 8×8, one downsampling to 16 channels at 4×4, 4 latent channels.
        let config = AutoencoderConfig::new()
            .with_base_channels(8)
            .with_downsamplings(1);
        let conv = |i: usize, o: usize, side: usize| 2 * 9 * i * o * side * side;
        let by_hand = conv(3, 8, 8) // encoder in
            + 2 * conv(8, 8, 8) // encoder residual block
            + conv(8, 16, 4) // down, stride 2
            + 2 * conv(16, 16, 4) // encoder middle
            + conv(16, 4, 4) // encoder out
            + conv(4, 16, 4) // decoder in
            + 2 * conv(16, 16, 4) // decoder middle
            + conv(16, 8, 8) // up, after upsampling
            + 2 * conv(8, 8, 8) // decoder residual block
            + conv(8, 3, 8); // decoder out
        assert_eq!(by_hand, 866_304);
        assert_eq!(config.forward_flops(8), by_hand as f64);
    }

    #[test]
    fn the_parameter_count_is_that_of_the_built_model() {
        let device = Device::default();
        for config in [
            AutoencoderConfig::new(),
            AutoencoderConfig::new()
                .with_base_channels(8)
                .with_downsamplings(3)
                .with_res_blocks(2)
                .with_variational(true),
            AutoencoderConfig::new().with_downsamplings(0),
            AutoencoderConfig::new()
                .with_base_channels(4)
                .with_downsamplings(3)
                .with_channel_multipliers(Some(vec![1, 2, 4, 8])),
        ] {
            let built = config.init(&device).unwrap().num_params() as u64;
            assert_eq!(config.num_params(), built, "{config:?}");
        }
    }

    #[test]
    fn channel_multipliers_set_each_level_and_are_checked() {
        let config = AutoencoderConfig::new()
            .with_base_channels(16)
            .with_downsamplings(3)
            .with_channel_multipliers(Some(vec![1, 2, 4, 8]));
        let channels: Vec<usize> = (0..=3).map(|level| config.channels(level)).collect();
        assert_eq!(channels, [16, 32, 64, 128]);
        let default = AutoencoderConfig::new()
            .with_base_channels(16)
            .with_downsamplings(3);
        let channels: Vec<usize> = (0..=3).map(|level| default.channels(level)).collect();
        assert_eq!(channels, [16, 32, 32, 32]);
        let short = config.clone().with_channel_multipliers(Some(vec![1, 2]));
        let error = short.validate().unwrap_err().to_string();
        assert!(error.contains("downsamplings + 1 = 4"), "{error}");
        let zero = config.with_channel_multipliers(Some(vec![1, 0, 2, 2]));
        assert!(zero.validate().is_err());
        // A model.json written before the field existed reads as the old scheme.
        let old: AutoencoderConfig = serde_json::from_str(
            r#"{"image_channels":3,"latent_channels":4,"base_channels":16,"downsamplings":2,"res_blocks":1,"variational":false}"#,
        )
        .unwrap();
        assert_eq!(old.channel_multipliers, None);
    }

    #[test]
    fn shapes_round_trip() {
        let device = Device::default();
        for variational in [false, true] {
            let ae = AutoencoderConfig::new()
                .with_base_channels(8)
                .with_variational(variational)
                .init(&device)
                .unwrap();
            let video =
                Tensor::<5>::random([2, 3, 4, 32, 32], Distribution::Uniform(-1.0, 1.0), &device);
            let moments = ae.encode(video);
            assert_eq!(moments.mean.dims(), [2, 4, 4, 8, 8]);
            assert_eq!(moments.log_var.is_some(), variational);
            assert_eq!(ae.decode(moments.sample()).dims(), [2, 3, 4, 32, 32]);
            let kl: f32 = moments.kl().into_scalar();
            assert!(kl.is_finite() && (kl > 0.0) == variational);
        }
    }

    #[test]
    fn frames_fold_into_batch_and_back() {
        let device = Device::default();
        let x = Tensor::<5>::random([2, 3, 4, 5, 6], Distribution::Default, &device);
        batch_to_frames(frames_to_batch(x.clone()), 4)
            .into_data()
            .assert_eq(&x.into_data(), true);
    }

    #[test]
    fn latent_shape_checks_divisibility() {
        let c = AutoencoderConfig::new();
        assert_eq!(c.latent_shape(8, 32).unwrap(), [4, 8, 8]);
        assert_eq!(c.latent_shape(8, 30).unwrap_err().field, "downsamplings");
    }
}
