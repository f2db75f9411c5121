//! The latents of stage 2's training clips, encoded once by the frozen autoencoder.

use std::collections::HashMap;

use anyhow::Result;
use burn::tensor::{Device, Tensor};
use dit_data::VideoBatcher;
use dit_model::VideoAutoencoder;
use dit_model::frozen_text::EncodedPrompt;
use dit_model::minilm::MiniLmPrompts;

use crate::data::ClipSource;

/// Latents and word ids of the fixed training set, encoded once.
pub struct LatentCache {
    /// Scaled latents `[clips, C, F, h, w]` on the training device.
    pub latents: Tensor<5>,
    /// Word ids, one padded row per clip.
    pub tokens: Vec<Vec<usize>>,
    /// The frozen text encoder's reading of the captions, for a DiT that conditions on one.
    pub frozen: Option<FrozenCaptions>,
}

/// A frozen text encoder's outputs for the training captions, computed once (the encoder
/// does not learn, so a training step costs what it costs with word ids).
pub struct FrozenCaptions {
    /// One entry per distinct caption.
    pub prompts: Vec<EncodedPrompt>,
    /// For each cached clip, its caption's entry in `prompts`.
    pub index: Vec<usize>,
    /// Width of the encoder's states.
    pub width: usize,
}

impl FrozenCaptions {
    /// Encodes the distinct `captions` (one per clip) with `encoder`.
    pub fn encode(encoder: &MiniLmPrompts, captions: &[String]) -> Result<Self> {
        let mut distinct: Vec<&str> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let index = captions
            .iter()
            .map(|caption| {
                *seen.entry(caption.as_str()).or_insert_with(|| {
                    distinct.push(caption);
                    distinct.len() - 1
                })
            })
            .collect();
        let prompts = encoder.encode(&distinct)?;
        let width = prompts.first().map_or(0, |p| p.pooled.len());
        Ok(Self {
            prompts,
            index,
            width,
        })
    }
}

impl LatentCache {
    /// Encodes `count` training clips with the frozen autoencoder on `device`, and their
    /// captions with `frozen_text` if the DiT conditions on it.
    #[allow(clippy::too_many_arguments)]
    pub fn encode(
        source: &ClipSource,
        batcher: &VideoBatcher,
        ae: &VideoAutoencoder,
        frozen_text: Option<&MiniLmPrompts>,
        scale: f64,
        count: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut latents = Vec::new();
        let mut tokens = Vec::with_capacity(count);
        let mut captions = Vec::with_capacity(count);
        for start in (0..count).step_by(64) {
            let items: Vec<_> = (start..(start + 64).min(count))
                .map(|i| source.train_item(i, seed))
                .collect();
            for item in &items {
                tokens.push(batcher.tokenize(&item.caption)?);
                captions.push(item.caption.clone());
            }
            let video = batcher.try_batch(items, device)?.videos;
            latents.push(ae.encode(video).mean * scale);
        }
        let frozen = frozen_text
            .map(|encoder| FrozenCaptions::encode(encoder, &captions))
            .transpose()?;
        Ok(Self {
            latents: Tensor::cat(latents, 0),
            tokens,
            frozen,
        })
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
