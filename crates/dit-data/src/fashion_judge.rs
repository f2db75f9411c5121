//! Judging a Moving Fashion clip from its pixels alone (docs/moving-fashion.md, "Judging a
//! generated clip"), with a judge that knows nothing of how the clips were drawn:
//!
//! - background = per-channel median of the border pixels of all frames;
//! - the item = pixels farther than [`FOREGROUND_THRESHOLD`] from it, tracked frame by frame;
//! - colour = the palette entry whose direction in RGB is nearest to the item's mean colour
//!   (a tinted photograph is its grey values times the tint, so the direction is the tint's);
//! - class = the photograph classifier ([`PhotoClassifier`]) on each frame's 28×28 window
//!   centred on the item, untinted back to grey, then a majority vote over the frames;
//! - direction = axis and sign of the larger least-squares slope of the item's centroid.

use burn::tensor::{Device, Tensor, TensorData};
use dit_model::classifier::{PHOTO_SIDE, PhotoClassifier};

use crate::clip::Clip;
use crate::fashion::{FashionComposition, Garment};
use crate::judge::{background, motion_direction};
use crate::shapes::{Colour, Direction};

/// RGB (Euclidean, 0..=255 scale) distance from the background beyond which a pixel
/// belongs to the item.
pub const FOREGROUND_THRESHOLD: f32 = 40.0;

/// What a viewer with the classifier's eyes would say a clip shows.
#[derive(Debug, Clone, PartialEq)]
pub struct FashionJudgement {
    /// The class most frames were classified as (`None`: no item in any frame).
    pub garment: Option<Garment>,
    /// Palette colour nearest in hue to the item's mean colour.
    pub colour: Option<Colour>,
    /// Direction of the item's motion (`None`: under two frames with an item, or no motion).
    pub direction: Option<Direction>,
    /// Frames classified as each class, in label order.
    pub votes: [usize; 10],
}

/// Which parts of a [`FashionJudgement`] agree with a composition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FashionMatch {
    /// The class matches.
    pub garment: bool,
    /// The colour matches.
    pub colour: bool,
    /// The direction matches.
    pub direction: bool,
}

impl FashionMatch {
    /// Class, colour and direction all match.
    pub fn all(&self) -> bool {
        self.garment && self.colour && self.direction
    }
}

impl FashionJudgement {
    /// Compares the judgement with what `composition` asks for.
    pub fn matches(&self, composition: &FashionComposition) -> FashionMatch {
        FashionMatch {
            garment: self.garment == Some(composition.garment),
            colour: self.colour == Some(composition.colour),
            direction: self.direction == Some(composition.direction),
        }
    }
}

/// The item in one frame: its pixels' count, centroid sums, bounds and colour sum.
#[derive(Debug, Default, Clone, Copy)]
struct Item {
    area: usize,
    sum_x: f64,
    sum_y: f64,
    bounds: Option<(usize, usize, usize, usize)>, // (x0, x1, y0, y1), inclusive
}

/// The palette entry whose RGB direction is nearest to `mean`'s (largest cosine).
fn nearest_hue(mean: [f32; 3]) -> Colour {
    let cosine = |c: Colour| {
        let rgb = c.rgb().map(f32::from);
        let dot: f32 = (0..3).map(|i| rgb[i] * mean[i]).sum();
        let norm = |v: [f32; 3]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        dot / (norm(rgb) * norm(mean)).max(1e-6)
    };
    Colour::ALL
        .into_iter()
        .max_by(|a, b| cosine(*a).total_cmp(&cosine(*b)))
        .unwrap_or(Colour::Red)
}

/// Tracks the item of `clip`: per-frame statistics, its colour, and each frame's 28×28
/// window centred on it, untinted to grey in `[0, 1]` (frames without an item get none).
fn track(clip: &Clip) -> (Vec<Item>, Option<Colour>, Vec<Option<Vec<f32>>>) {
    let bg = background(clip);
    let mut items = vec![Item::default(); clip.frames];
    let mut colour_sum = [0.0f64; 3];
    for (f, item) in items.iter_mut().enumerate() {
        for y in 0..clip.height {
            for x in 0..clip.width {
                let p = clip.pixel(f, y, x);
                let d2: f32 = (0..3).map(|c| (p[c] as f32 - bg[c]).powi(2)).sum();
                if d2 <= FOREGROUND_THRESHOLD * FOREGROUND_THRESHOLD {
                    continue;
                }
                item.area += 1;
                item.sum_x += x as f64;
                item.sum_y += y as f64;
                (0..3).for_each(|c| colour_sum[c] += (p[c] as f32 - bg[c]) as f64);
                let (x0, x1, y0, y1) = item.bounds.unwrap_or((x, x, y, y));
                item.bounds = Some((x0.min(x), x1.max(x), y0.min(y), y1.max(y)));
            }
        }
    }
    let total: usize = items.iter().map(|i| i.area).sum();
    if total == 0 {
        return (items, None, vec![None; clip.frames]);
    }
    let colour = nearest_hue(colour_sum.map(|v| (v / total as f64) as f32));
    let tint = colour.rgb().map(f32::from);
    let tint_norm2: f32 = tint.iter().map(|v| v * v).sum();
    let windows = items
        .iter()
        .enumerate()
        .map(|(f, item)| {
            let (x0, x1, y0, y1) = item.bounds?;
            let half = (PHOTO_SIDE as f32 - 1.0) / 2.0;
            let left = ((x0 + x1) as f32 / 2.0 - half).round() as i64;
            let top = ((y0 + y1) as f32 / 2.0 - half).round() as i64;
            let mut window = vec![0.0f32; PHOTO_SIDE * PHOTO_SIDE];
            for wy in 0..PHOTO_SIDE {
                for wx in 0..PHOTO_SIDE {
                    let (x, y) = (left + wx as i64, top + wy as i64);
                    if x < 0 || y < 0 || x >= clip.width as i64 || y >= clip.height as i64 {
                        continue;
                    }
                    let p = clip.pixel(f, y as usize, x as usize);
                    // Least-squares grey g of p − bg ≈ g · tint.
                    let dot: f32 = (0..3).map(|c| (p[c] as f32 - bg[c]) * tint[c]).sum();
                    window[wy * PHOTO_SIDE + wx] = (dot / tint_norm2).clamp(0.0, 1.0);
                }
            }
            Some(window)
        })
        .collect();
    (items, Some(colour), windows)
}

/// Judges the class, colour and direction of the single item in each clip; the frames of
/// all clips go through the classifier together, in batches of up to 1,024.
pub fn judge_fashion_clips(
    clips: &[Clip],
    classifier: &PhotoClassifier,
    device: &Device,
) -> Vec<FashionJudgement> {
    let tracked: Vec<_> = clips.iter().map(track).collect();
    // Every window of every clip, with the clip it belongs to.
    let windows: Vec<(usize, &Vec<f32>)> = tracked
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, w))| w.iter().flatten().map(move |w| (i, w)))
        .collect();
    let mut votes = vec![[0usize; 10]; clips.len()];
    let pixels = PHOTO_SIDE * PHOTO_SIDE;
    for chunk in windows.chunks(1024) {
        let values: Vec<f32> = chunk.iter().flat_map(|(_, w)| w.iter().copied()).collect();
        let batch = Tensor::<4>::from_data(
            TensorData::new(values, [chunk.len(), 1, PHOTO_SIDE, PHOTO_SIDE]),
            device,
        );
        debug_assert_eq!(chunk.len() * pixels, batch.shape().num_elements());
        for ((clip, _), class) in chunk.iter().zip(classifier.classify(batch)) {
            if let Some(v) = votes[*clip].get_mut(class) {
                *v += 1;
            }
        }
    }
    tracked
        .iter()
        .zip(votes)
        .map(|((items, colour, _), votes)| {
            // Most votes; ties go to the lower label.
            let best = (0..10).rev().max_by_key(|&c| votes[c]).unwrap_or(0);
            let centroids: Vec<(usize, f64, f64)> = items
                .iter()
                .enumerate()
                .filter(|(_, i)| i.area > 0)
                .map(|(f, i)| (f, i.sum_x / i.area as f64, i.sum_y / i.area as f64))
                .collect();
            FashionJudgement {
                garment: (votes[best] > 0).then(|| Garment::ALL[best]),
                colour: *colour,
                direction: motion_direction(&centroids),
                votes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moving_fashion::{FashionMotion, render_fashion_clip};

    /// A photograph: a centred 16×20 block with a ramp of greys.
    fn photo() -> Vec<u8> {
        let mut p = vec![0u8; 784];
        for y in 4..24 {
            for x in 6..22 {
                p[y * 28 + x] = (60 + 8 * (x - 6) + (y - 4)) as u8;
            }
        }
        p
    }

    #[test]
    fn tracking_finds_the_colour_the_direction_and_the_untinted_photograph() {
        let photo = photo();
        for (colour, direction) in [
            (Colour::Red, Direction::Left),
            (Colour::Yellow, Direction::Down),
            (Colour::Cyan, Direction::Up),
            (Colour::Magenta, Direction::Right),
        ] {
            let motion = FashionMotion {
                speed: 3.0,
                start_x: if direction == Direction::Left {
                    30.0
                } else {
                    5.0
                },
                start_y: if direction == Direction::Up {
                    30.0
                } else {
                    5.0
                },
                direction,
            };
            let clip = render_fashion_clip(&photo, colour, &motion, 8, 64);
            let (items, judged, windows) = track(&clip);
            assert_eq!(judged, Some(colour));
            let centroids: Vec<_> = items
                .iter()
                .enumerate()
                .map(|(f, i)| (f, i.sum_x / i.area as f64, i.sum_y / i.area as f64))
                .collect();
            assert_eq!(motion_direction(&centroids), Some(direction));
            // Each frame's window is the photograph, back to grey within the rounding of
            // the tint (a channel of 8 bits holds grey × tint / 255).
            for window in windows {
                let window = window.expect("every frame has the item");
                for (w, &p) in window.iter().zip(&photo) {
                    assert!(
                        (w - p as f32 / 255.0).abs() < 0.01,
                        "{colour:?}: {w} vs {p}"
                    );
                }
            }
        }
    }

    #[test]
    fn an_empty_clip_has_no_item() {
        let clip = Clip::black(8, 64, 64);
        let (items, colour, windows) = track(&clip);
        assert!(items.iter().all(|i| i.area == 0));
        assert_eq!(colour, None);
        assert!(windows.iter().all(Option::is_none));
    }
}
