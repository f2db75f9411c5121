//! Stacking captioned clips into tensors, and turning generated tensors back into clips.

use burn::data::dataloader::batcher::Batcher;
use burn::tensor::{Device, Int, Tensor, TensorData};
use dit_model::tokenizer::Tokenizer;

use crate::clip::Clip;
use crate::error::DataError;
use crate::moving_shapes::VideoItem;
use crate::shapes::{MAX_CAPTION_WORDS, vocabulary};

/// A batch of videos and their tokenized captions.
#[derive(Debug, Clone)]
pub struct VideoBatch {
    /// Pixels scaled to `[-1, 1]`: `[batch, 3, frames, height, width]`.
    pub videos: Tensor<5>,
    /// Word ids right-padded with [`PAD_ID`](dit_model::tokenizer::PAD_ID): `[batch, max_words]`.
    pub tokens: Tensor<2, Int>,
    /// The captions, in batch order.
    pub captions: Vec<String>,
}

/// Turns [`VideoItem`]s into a [`VideoBatch`].
#[derive(Debug, Clone)]
pub struct VideoBatcher {
    /// Maps captions to word ids.
    pub tokenizer: Tokenizer,
    /// Token positions per caption (longer captions are an error).
    pub max_words: usize,
}

impl VideoBatcher {
    /// A batcher with the given tokenizer and caption length.
    pub fn new(tokenizer: Tokenizer, max_words: usize) -> Self {
        Self {
            tokenizer,
            max_words,
        }
    }

    /// A batcher for Moving Shapes captions: [`vocabulary`] and [`MAX_CAPTION_WORDS`].
    pub fn moving_shapes() -> Self {
        Self::new(Tokenizer::new(&vocabulary()), MAX_CAPTION_WORDS)
    }

    /// Word ids of `caption`, padded to `max_words`.
    pub fn tokenize(&self, caption: &str) -> Result<Vec<usize>, DataError> {
        self.tokenizer
            .encode_padded(caption, self.max_words)
            .map_err(|error| DataError::Caption {
                caption: caption.to_owned(),
                error,
            })
    }

    /// Builds a batch; fails on an empty batch, clips of different shapes or an untokenizable caption.
    pub fn try_batch(
        &self,
        items: Vec<VideoItem>,
        device: &Device,
    ) -> Result<VideoBatch, DataError> {
        let first = items.first().ok_or_else(|| DataError::Batch {
            reason: "no items".into(),
        })?;
        let (frames, height, width) = (first.clip.frames, first.clip.height, first.clip.width);
        let mut pixels = Vec::with_capacity(items.len() * 3 * frames * height * width);
        let mut tokens = Vec::with_capacity(items.len() * self.max_words);
        let mut captions = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let c = &item.clip;
            if (c.frames, c.height, c.width) != (frames, height, width) {
                return Err(DataError::Batch {
                    reason: format!(
                        "item {i} is {}x{}x{} (frames x height x width), item 0 is {frames}x{height}x{width}",
                        c.frames, c.height, c.width
                    ),
                });
            }
            pixels.extend(clip_to_tensor_data(c));
            tokens.extend(
                self.tokenize(&item.caption)?
                    .into_iter()
                    .map(|id| id as i64),
            );
            captions.push(item.caption);
        }
        let batch = captions.len();
        let videos = Tensor::from_data(
            TensorData::new(pixels, [batch, 3, frames, height, width]),
            device,
        );
        let tokens = Tensor::from_data(TensorData::new(tokens, [batch, self.max_words]), device);
        Ok(VideoBatch {
            videos,
            tokens,
            captions,
        })
    }
}

impl Batcher<VideoItem, VideoBatch> for VideoBatcher {
    fn batch(&self, items: Vec<VideoItem>, device: &Device) -> VideoBatch {
        self.try_batch(items, device)
            .unwrap_or_else(|e| panic!("VideoBatcher: {e} (validate captions before training)"))
    }
}

/// A batch of videos `[batch, 3, frames, height, width]` (values about `[-1, 1]`) as 8-bit clips.
pub fn video_to_clips(video: Tensor<5>) -> Vec<Clip> {
    let [_, _, frames, height, width] = video.dims();
    let values: Vec<f32> = video
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .expect("a float tensor converts to f32");
    values
        .chunks(3 * frames * height * width)
        .map(|v| tensor_to_clip(v, frames, height, width))
        .collect()
}

/// Peak signal-to-noise ratio (dB) between two lists of 8-bit clips: 10·log10(255² / MSE).
pub fn psnr(a: &[Clip], b: &[Clip]) -> f64 {
    let (mut sum, mut count) = (0.0f64, 0usize);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.pixels.iter().zip(&y.pixels) {
            sum += (*p as f64 - *q as f64).powi(2);
            count += 1;
        }
    }
    let mse = sum / count.max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// A clip's pixels as `[3, frames, height, width]` values in `[-1, 1]` (`v / 127.5 - 1`).
pub fn clip_to_tensor_data(clip: &Clip) -> Vec<f32> {
    let plane = clip.frames * clip.height * clip.width;
    let mut out = vec![0.0f32; 3 * plane];
    for (p, rgb) in clip.pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + p] = rgb[c] as f32 / 127.5 - 1.0;
        }
    }
    out
}

/// The inverse of [`clip_to_tensor_data`]: `[3, frames, height, width]` values, clamped to
/// `[-1, 1]`, mapped to `0..=255` with rounding (non-finite values become black).
pub fn tensor_to_clip(values: &[f32], frames: usize, height: usize, width: usize) -> Clip {
    let plane = frames * height * width;
    assert_eq!(
        values.len(),
        3 * plane,
        "tensor_to_clip: {} values given, a 3x{frames}x{height}x{width} video has {}",
        values.len(),
        3 * plane
    );
    let mut clip = Clip::black(frames, height, width);
    for p in 0..plane {
        for c in 0..3 {
            let v = values[c * plane + p];
            let v = if v.is_finite() {
                v.clamp(-1.0, 1.0)
            } else {
                -1.0
            };
            clip.pixels[p * 3 + c] = ((v + 1.0) * 127.5).round() as u8;
        }
    }
    clip
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moving_shapes::{MovingShapes, MovingShapesConfig, Split};
    use burn::data::dataset::Dataset;
    use dit_model::tokenizer::PAD_ID;

    fn items(n: usize) -> Vec<VideoItem> {
        let set = MovingShapes::new(MovingShapesConfig::new(), 3, Split::Train, n).unwrap();
        (0..n).map(|i| set.get(i).unwrap()).collect()
    }

    #[test]
    fn batch_has_documented_shapes_and_range() {
        let device = Device::default();
        let items = items(4);
        let expected_tokens = VideoBatcher::moving_shapes()
            .tokenize(&items[2].caption)
            .unwrap();
        let batch = VideoBatcher::moving_shapes().batch(items.clone(), &device);
        assert_eq!(batch.videos.dims(), [4, 3, 8, 32, 32]);
        assert_eq!(batch.tokens.dims(), [4, MAX_CAPTION_WORDS]);
        assert_eq!(batch.captions[2], items[2].caption);
        let values = batch.videos.into_data().try_to_vec::<f32>().unwrap();
        let min = values.iter().cloned().fold(f32::INFINITY, f32::min);
        let max = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(min, -1.0, "black background maps to -1");
        assert!(max > 0.5 && max <= 1.0, "max {max}");
        // Item 1's red channel at frame 0, row 0, col 0 sits at [1, 0, 0, 0, 0].
        let clip_values = clip_to_tensor_data(&items[1].clip);
        assert_eq!(
            values[3 * 8 * 32 * 32..2 * 3 * 8 * 32 * 32],
            clip_values[..]
        );
        let tokens = batch
            .tokens
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        let row: Vec<usize> = tokens[2 * MAX_CAPTION_WORDS..3 * MAX_CAPTION_WORDS]
            .iter()
            .map(|&t| t as usize)
            .collect();
        assert_eq!(row, expected_tokens);
        assert_eq!(*row.last().unwrap(), PAD_ID);
    }

    #[test]
    fn tensor_round_trip_is_exact() {
        for item in items(20) {
            let values = clip_to_tensor_data(&item.clip);
            assert_eq!(tensor_to_clip(&values, 8, 32, 32), item.clip);
        }
        let mut clip = Clip::black(1, 1, 2);
        clip.pixels = vec![0, 1, 127, 128, 254, 255];
        assert_eq!(tensor_to_clip(&clip_to_tensor_data(&clip), 1, 1, 2), clip);
        // [C, F, H, W]: the second value is the red channel of pixel (0, 0, 1).
        assert_eq!(clip_to_tensor_data(&clip)[1], 128.0 / 127.5 - 1.0);
        let clamped = tensor_to_clip(&[-3.0, 2.0, 0.0, f32::NAN, 0.0, 0.0], 1, 1, 2);
        assert_eq!(clamped.pixels, vec![0, 128, 128, 255, 0, 128]);
    }

    #[test]
    fn bad_batches_are_named_errors() {
        let device = Device::default();
        let batcher = VideoBatcher::moving_shapes();
        let mut bad = items(2);
        bad[1].caption = "a purple circle".into();
        let err = batcher.try_batch(bad, &device).unwrap_err().to_string();
        assert!(err.contains("purple"), "{err}");
        let mut mixed = items(2);
        mixed[1].clip = Clip::black(8, 16, 16);
        let err = batcher.try_batch(mixed, &device).unwrap_err().to_string();
        assert!(err.contains("item 1"), "{err}");
        assert!(batcher.try_batch(Vec::new(), &device).is_err());
    }
}
