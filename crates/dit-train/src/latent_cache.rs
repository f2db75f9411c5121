//! The latents of stage 2's training clips, encoded once by the frozen autoencoder.

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use dit_data::VideoBatcher;
use dit_model::VideoAutoencoder;

use crate::data::ClipSource;

/// Latents and word ids of the fixed training set, encoded once.
pub struct LatentCache {
    /// Scaled latents `[clips, C, F, h, w]` on the training device.
    pub latents: Tensor<5>,
    /// Word ids, one padded row per clip.
    pub tokens: Vec<Vec<usize>>,
}

impl LatentCache {
    /// Encodes `count` training clips with the frozen autoencoder on `device`.
    pub fn encode(
        source: &ClipSource,
        batcher: &VideoBatcher,
        ae: &VideoAutoencoder,
        scale: f64,
        count: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut latents = Vec::new();
        let mut tokens = Vec::with_capacity(count);
        for start in (0..count).step_by(64) {
            let items: Vec<_> = (start..(start + 64).min(count))
                .map(|i| source.train_item(i, seed))
                .collect();
            for item in &items {
                tokens.push(batcher.tokenize(&item.caption)?);
            }
            let video = batcher.try_batch(items, device)?.videos;
            latents.push(ae.encode(video).mean * scale);
        }
        Ok(Self {
            latents: Tensor::cat(latents, 0),
            tokens,
        })
    }

    /// The cache on another device (the training device).
    pub(crate) fn into_device(self, device: &Device) -> Self {
        Self {
            latents: Tensor::from_data(self.latents.into_data(), device),
            tokens: self.tokens,
        }
    }

    /// Number of cached clips.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}
