//! Model configurations, their validation, and the published DiT sizes.
//!
//! Configs are Burn [`Config`]s, so they serialise to JSON beside a checkpoint
//! and deserialise from the TOML files under `configs/`. [`validate`](DitConfig::validate)
//! checks every constraint the modules rely on, with an error naming the field.

use burn::config::Config;

use crate::autoencoder::AutoencoderConfig;
use crate::text::TextEncoderConfig;

/// A configuration value that the model cannot be built with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid config: `{field}` {reason}")]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `model.heads`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error, with `prefix.` in front of the field name.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// Checks that a size is positive.
pub fn require_positive(field: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be positive, got 0"));
    }
    Ok(())
}

/// Checks that `divisor` divides `value`, naming both fields.
pub fn require_divides(
    field: &str,
    divisor: usize,
    what: &str,
    value: usize,
) -> Result<(), ConfigError> {
    require_positive(field, divisor)?;
    if !value.is_multiple_of(divisor) {
        return Err(ConfigError::new(
            field,
            format!("= {divisor} must divide {what} = {value}"),
        ));
    }
    Ok(())
}

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
        self.text.validate().map_err(|e| e.within("text"))
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
        DitConfig::new(
            latent_channels,
            latent_frames,
            latent_size,
            1,
            patch,
            hidden,
            depth,
            heads,
            text,
        )
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

/// Everything needed to rebuild the networks of a run: the frozen autoencoder and the DiT.
#[derive(Config, Debug, PartialEq)]
pub struct ModelConfig {
    /// The visual autoencoder.
    pub autoencoder: AutoencoderConfig,
    /// The Diffusion Transformer.
    pub dit: DitConfig,
}

impl ModelConfig {
    /// Validates both networks and that the DiT denoises the autoencoder's latent.
    pub fn validate(&self, frames: usize, size: usize) -> Result<(), ConfigError> {
        self.autoencoder
            .validate()
            .map_err(|e| e.within("autoencoder"))?;
        self.dit.validate().map_err(|e| e.within("dit"))?;
        let [c, f, h] = self.autoencoder.latent_shape(frames, size)?;
        let expect = [
            ("dit.latent_channels", self.dit.latent_channels, c),
            ("dit.latent_frames", self.dit.latent_frames, f),
            ("dit.latent_size", self.dit.latent_size, h),
        ];
        for (field, got, want) in expect {
            if got != want {
                return Err(ConfigError::new(
                    field,
                    format!(
                        "= {got}, but the autoencoder makes latents of {c}×{f}×{h}×{h} from {frames} frames of {size}×{size}, so it must be {want}"
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> DitConfig {
        DitConfig::new(4, 8, 8, 1, 2, 128, 4, 4, TextEncoderConfig::new(20))
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

/// Parses a TOML config into `T`, rejecting unknown keys so typos are caught.
///
/// Every field must be given: a config file is the complete record of a run.
///
/// Unknown keys are found by comparing the file with the parsed value
/// serialised back: every key of the file must survive the round trip.
pub fn from_toml<T: serde::Serialize + serde::de::DeserializeOwned>(
    text: &str,
) -> Result<T, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        ConfigError::new("(file)", format!("is not valid TOML: {}", e.message()))
    })?;
    let parsed: T = toml::from_str(text).map_err(|e| {
        let message = e.message().to_string();
        // serde names a missing field in its message ("missing field `heads`"); for a
        // bad value, the key is on the line the error points at.
        let field = match (message.strip_prefix("missing field `"), e.span()) {
            (Some(rest), _) => rest.split('`').next().unwrap_or("(file)").to_string(),
            (None, Some(span)) => {
                let line = text[..span.start].matches('\n').count() + 1;
                let key = text
                    .lines()
                    .nth(line - 1)
                    .and_then(|l| l.split('=').next())
                    .unwrap_or("")
                    .trim();
                format!("{key} (line {line})")
            }
            (None, None) => "(file)".to_string(),
        };
        ConfigError::new(field, format!("cannot be read: {message}"))
    })?;
    let known =
        toml::Value::try_from(&parsed).map_err(|e| ConfigError::new("(file)", e.to_string()))?;
    if let Some(path) = unknown_key(&toml::Value::Table(table), &known, "") {
        return Err(ConfigError::new(path, "is not a known setting (a typo?)"));
    }
    Ok(parsed)
}

fn unknown_key(given: &toml::Value, known: &toml::Value, prefix: &str) -> Option<String> {
    let (toml::Value::Table(given), toml::Value::Table(known)) = (given, known) else {
        return None;
    };
    for (key, value) in given {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.get(key) {
            None => return Some(path),
            Some(k) => {
                if let Some(p) = unknown_key(value, k, &path) {
                    return Some(p);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod toml_tests {
    use super::*;

    const TINY: &str = r#"
latent_channels = 4
latent_frames = 8
latent_size = 8
patch_frames = 1
patch_size = 2
hidden = 128
depth = 4
heads = 4
mlp_ratio = 4.0
cross_attention = false
[text]
vocab_size = 20
max_words = 16
width = 64
depth = 2
heads = 4
"#;

    #[test]
    fn reads_a_complete_config() {
        let c: DitConfig = from_toml(TINY).unwrap();
        let text = TextEncoderConfig::new(20);
        assert_eq!(c, DitConfig::new(4, 8, 8, 1, 2, 128, 4, 4, text));
    }

    #[test]
    fn names_the_problem() {
        let typo = TINY.replace("heads = 4", "heads = 4\nhedas = 2");
        assert_eq!(from_toml::<DitConfig>(&typo).unwrap_err().field, "hedas");
        let nested = TINY.replace("vocab_size = 20", "vocab_size = 20\nwidht = 3");
        assert_eq!(
            from_toml::<DitConfig>(&nested).unwrap_err().field,
            "text.widht"
        );
        let missing = TINY.replace("hidden = 128\n", "");
        assert_eq!(
            from_toml::<DitConfig>(&missing).unwrap_err().field,
            "hidden"
        );
        let wrong_type = TINY.replace("depth = 4", "depth = \"four\"");
        assert!(
            from_toml::<DitConfig>(&wrong_type)
                .unwrap_err()
                .to_string()
                .contains("invalid type")
        );
        let negative = TINY.replace("depth = 4", "depth = -4");
        assert_eq!(
            from_toml::<DitConfig>(&negative).unwrap_err().field,
            "depth (line 8)"
        );
        assert_eq!(
            from_toml::<DitConfig>("hidden = [").unwrap_err().field,
            "(file)"
        );
    }
}
