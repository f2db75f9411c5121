//! The Moving Fashion data set (docs/moving-fashion.md): real photographs in motion.
//!
//! A clip is one Fashion-MNIST photograph at its native 28×28, tinted with a colour of the
//! Moving Shapes palette, moving at constant speed in one of four directions across a black
//! 64×64 canvas (the Moving MNIST canvas), captioned by the grammar of [`crate::fashion`].
//! The training split draws its photographs from Fashion-MNIST's 60,000 training images
//! only and shows 220 of the 240 compositions; the evaluation split draws from the 10,000
//! test images only, never seen in training, and shows all 240.
//!
//! Clip `i` of a split is a pure function of `(seed, split, i)`, as Moving Shapes' clips are.

use std::path::Path;
use std::sync::Arc;

use burn::config::Config;
use dit_model::classifier::PHOTO_SIDE;
use dit_model::seed::{Stream, rng_for};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::clip::Clip;
use crate::error::DataError;
use crate::fashion::{FashionComposition, Garment};
use crate::idx::{FashionSplit, IdxImages, fashion_mnist};
use crate::moving_shapes::{CaptionMode, Split, VideoItem, sample_start, uniform};
use crate::shapes::{Colour, Direction};

/// Frames, canvas, speeds and captions of the clips (defaults are the spec's).
#[derive(Config, Debug)]
pub struct MovingFashionConfig {
    /// Frames per clip.
    #[config(default = 8)]
    pub frames: usize,
    /// Width and height of each frame, in pixels.
    #[config(default = 64)]
    pub size: usize,
    /// Slowest speed, in pixels per frame.
    #[config(default = 2.0)]
    pub min_speed: f32,
    /// Fastest speed, in pixels per frame.
    #[config(default = 4.0)]
    pub max_speed: f32,
    /// Probability that a clip's caption is a paraphrase rather than the canonical one.
    #[config(default = 0.5)]
    pub paraphrase_probability: f64,
}

impl MovingFashionConfig {
    /// Checks that clips can be drawn: the error names the first bad field.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |field, reason| Err(DataError::InvalidConfig { field, reason });
        if self.frames < 2 {
            return bad(
                "frames",
                format!("is {}, at least 2 are needed to show motion", self.frames),
            );
        }
        if self.size < PHOTO_SIDE {
            return bad(
                "size",
                format!(
                    "is {}, smaller than a {PHOTO_SIDE}-pixel photograph",
                    self.size
                ),
            );
        }
        if !(self.min_speed.is_finite() && self.min_speed > 0.0) {
            return bad(
                "min_speed",
                format!("is {}, it must be positive", self.min_speed),
            );
        }
        if !(self.max_speed.is_finite() && self.max_speed >= self.min_speed) {
            return bad(
                "max_speed",
                format!("is {}, below min_speed {}", self.max_speed, self.min_speed),
            );
        }
        let span = PHOTO_SIDE as f32 + self.max_speed * (self.frames - 1) as f32;
        if span > self.size as f32 {
            return bad(
                "max_speed",
                format!(
                    "is {}: a photograph moving that fast over {} frames spans {span} pixels, more than the {}-pixel frame",
                    self.max_speed, self.frames, self.size
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.paraphrase_probability) {
            return bad(
                "paraphrase_probability",
                format!("is {}, it must be in [0, 1]", self.paraphrase_probability),
            );
        }
        Ok(())
    }
}

/// Where a clip's photograph is in each frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FashionMotion {
    /// Pixels per frame.
    pub speed: f32,
    /// Top-left corner of the photograph in frame 0 (sub-pixel; frames round it).
    pub start_x: f32,
    /// See `start_x`.
    pub start_y: f32,
    /// The direction of motion.
    pub direction: Direction,
}

impl FashionMotion {
    /// Top-left corner of the photograph in frame `f`, in whole pixels (the photograph is
    /// never resampled).
    pub fn corner(&self, f: usize) -> (usize, usize) {
        let (dx, dy) = self.direction.step();
        let at = |start: f32, d: f32| (start + d * self.speed * f as f32).round().max(0.0) as usize;
        (at(self.start_x, dx), at(self.start_y, dy))
    }
}

/// One captioned clip with what made it.
#[derive(Debug, Clone, PartialEq)]
pub struct FashionItem {
    /// Pixels and caption (its `composition` is `None`: that field names Moving Shapes').
    pub item: VideoItem,
    /// What the clip shows.
    pub composition: FashionComposition,
    /// Index of the photograph in its Fashion-MNIST split (training images for the
    /// training split, test images for the evaluation split).
    pub photo: usize,
    /// Where the photograph is in each frame.
    pub motion: FashionMotion,
}

/// Draws `photo` (28×28 grey bytes) tinted with `colour` into frames of `size × size`,
/// moving per `motion`: each pixel is `round(grey × colour / 255)`, the rest black.
pub fn render_fashion_clip(
    photo: &[u8],
    colour: Colour,
    motion: &FashionMotion,
    frames: usize,
    size: usize,
) -> Clip {
    let mut clip = Clip::black(frames, size, size);
    let rgb = colour.rgb();
    for f in 0..frames {
        let (x0, y0) = motion.corner(f);
        for y in 0..PHOTO_SIDE {
            for x in 0..PHOTO_SIDE {
                let grey = photo[y * PHOTO_SIDE + x] as u32;
                if grey == 0 || y0 + y >= size || x0 + x >= size {
                    continue;
                }
                let tint = rgb.map(|c| ((grey * c as u32 + 127) / 255) as u8);
                clip.set_pixel(f, y0 + y, x0 + x, tint);
            }
        }
    }
    clip
}

/// Draws a speed and a start that keep the whole photograph inside every frame.
fn sample_motion(
    config: &MovingFashionConfig,
    direction: Direction,
    rng: &mut ChaCha8Rng,
) -> FashionMotion {
    let speed = uniform(rng, config.min_speed, config.max_speed);
    let room = (config.size - PHOTO_SIDE) as f32;
    let travel = speed * (config.frames - 1) as f32;
    let (start_x, start_y) = sample_start(rng, direction, room, travel);
    FashionMotion {
        speed,
        start_x,
        start_y,
        direction,
    }
}

/// The photographs of one Fashion-MNIST split, indexed by class.
#[derive(Debug)]
struct Photos {
    images: IdxImages,
    labels: Vec<u8>,
    by_class: Vec<Vec<usize>>,
}

/// A Moving Fashion split; clip `i` is drawn on demand.
#[derive(Debug, Clone)]
pub struct MovingFashion {
    config: MovingFashionConfig,
    seed: u64,
    split: Split,
    photos: Arc<Photos>,
}

impl MovingFashion {
    /// The split `split` over Fashion-MNIST in `dir` (its training images for
    /// [`Split::Train`], its test images for [`Split::Eval`]).
    pub fn open(
        dir: &Path,
        config: MovingFashionConfig,
        seed: u64,
        split: Split,
    ) -> Result<Self, DataError> {
        config.validate()?;
        let source = match split {
            Split::Train => FashionSplit::Train,
            Split::Eval => FashionSplit::Test,
        };
        let (images, labels) = fashion_mnist(dir, source)?;
        Self::from_photos(images, labels, config, seed, split)
    }

    /// A split over photographs already read (28×28, labels 0–9).
    pub fn from_photos(
        images: IdxImages,
        labels: Vec<u8>,
        config: MovingFashionConfig,
        seed: u64,
        split: Split,
    ) -> Result<Self, DataError> {
        config.validate()?;
        let bad = |reason: String| DataError::InvalidConfig {
            field: "photographs",
            reason,
        };
        if (images.rows, images.columns) != (PHOTO_SIDE, PHOTO_SIDE) {
            return Err(bad(format!(
                "are {}×{}, not {PHOTO_SIDE}×{PHOTO_SIDE}",
                images.rows, images.columns
            )));
        }
        if labels.len() != images.count {
            return Err(bad(format!(
                "{} images but {} labels",
                images.count,
                labels.len()
            )));
        }
        let mut by_class = vec![Vec::new(); Garment::ALL.len()];
        for (i, &label) in labels.iter().enumerate() {
            match by_class.get_mut(label as usize) {
                Some(list) => list.push(i),
                None => return Err(bad(format!("photograph {i} has label {label}, past 9"))),
            }
        }
        if let Some(class) = by_class.iter().position(Vec::is_empty) {
            return Err(bad(format!(
                "none of class {class} ({})",
                Garment::ALL[class].name()
            )));
        }
        Ok(Self {
            config,
            seed,
            split,
            photos: Arc::new(Photos {
                images,
                labels,
                by_class,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MovingFashionConfig {
        &self.config
    }

    /// The split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// Number of photographs the split draws from.
    pub fn photo_count(&self) -> usize {
        self.photos.images.count
    }

    /// The compositions this split shows: 220 for training, all 240 for evaluation.
    pub fn compositions(&self) -> Vec<FashionComposition> {
        match self.split {
            Split::Train => FashionComposition::training(),
            Split::Eval => FashionComposition::all(),
        }
    }

    /// Clip `index`: a photograph drawn uniformly from the split, then a colour and a
    /// direction drawn uniformly among those its class shows in this split.
    pub fn item(&self, index: usize) -> FashionItem {
        let mut rng = rng_for(self.seed, self.split.stream(), index as u64);
        let photo = rng.random_range(0..self.photos.images.count as u32) as usize;
        let garment = Garment::ALL[self.photos.labels[photo] as usize];
        let pairs: Vec<(Colour, Direction)> = self
            .compositions()
            .into_iter()
            .filter(|c| c.garment == garment)
            .map(|c| (c.colour, c.direction))
            .collect();
        let (colour, direction) = pairs[rng.random_range(0..pairs.len() as u32) as usize];
        let composition = FashionComposition::new(garment, colour, direction);
        let mode = CaptionMode::Mixed(self.config.paraphrase_probability);
        self.make_item(composition, photo, &mut rng, mode)
    }

    /// Clip `index` of `composition`, with a photograph of its class drawn uniformly from
    /// this split (a stream of its own per composition): what evaluation uses.
    pub fn clip_for(
        &self,
        composition: FashionComposition,
        index: usize,
        caption: CaptionMode,
    ) -> FashionItem {
        let stream = Stream::CompositionClips(composition.index());
        let mut rng = rng_for(self.seed, stream, index as u64);
        let candidates = &self.photos.by_class[composition.garment.label()];
        let photo = candidates[rng.random_range(0..candidates.len() as u32) as usize];
        self.make_item(composition, photo, &mut rng, caption)
    }

    fn make_item(
        &self,
        composition: FashionComposition,
        photo: usize,
        rng: &mut ChaCha8Rng,
        caption: CaptionMode,
    ) -> FashionItem {
        let motion = sample_motion(&self.config, composition.direction, rng);
        let clip = render_fashion_clip(
            self.photos.images.image(photo),
            composition.colour,
            &motion,
            self.config.frames,
            self.config.size,
        );
        let caption = if caption.paraphrases(rng) {
            composition.paraphrase(rng)
        } else {
            composition.canonical_caption()
        };
        FashionItem {
            item: VideoItem {
                clip,
                caption,
                composition: None,
            },
            composition,
            photo,
            motion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 40 synthetic photographs, 4 of each class: a filled 20×20 square of grey `10·i + 5`.
    fn photos() -> (IdxImages, Vec<u8>) {
        let count = 40;
        let mut pixels = vec![0u8; count * 784];
        for i in 0..count {
            for y in 4..24 {
                for x in 4..24 {
                    pixels[i * 784 + y * 28 + x] = (10 * (i % 25) + 5) as u8;
                }
            }
        }
        let images = IdxImages {
            count,
            rows: 28,
            columns: 28,
            pixels,
        };
        (images, (0..count).map(|i| (i % 10) as u8).collect())
    }

    fn data(split: Split) -> MovingFashion {
        let (images, labels) = photos();
        MovingFashion::from_photos(images, labels, MovingFashionConfig::new(), 7, split).unwrap()
    }

    #[test]
    fn clips_follow_the_spec() {
        let set = data(Split::Train);
        for i in 0..300 {
            let item = set.item(i);
            assert_eq!(
                item,
                set.item(i),
                "clip {i} is a pure function of its index"
            );
            let c = item.composition;
            assert!(!c.is_held_out(), "clip {i}: {c:?}");
            assert_eq!(
                FashionComposition::parse_caption(&item.item.caption),
                Some(c)
            );
            assert_eq!(set.photos.labels[item.photo] as usize, c.garment.label());
            let clip = &item.item.clip;
            assert_eq!((clip.frames, clip.height, clip.width), (8, 64, 64));
            let grey = (10 * (item.photo % 25) + 5) as u32;
            let expected = c
                .colour
                .rgb()
                .map(|v| ((grey * v as u32 + 127) / 255) as u8);
            let mut corners = Vec::new();
            for f in 0..8 {
                // Exactly the 20×20 square, tinted, at the photograph's corner + 4.
                let (x0, y0) = item.motion.corner(f);
                assert!(
                    x0 + 28 <= 64 && y0 + 28 <= 64,
                    "clip {i} frame {f} leaves the frame"
                );
                let mut n = 0;
                for y in 0..64 {
                    for x in 0..64 {
                        let p = clip.pixel(f, y, x);
                        let inside =
                            (y0 + 4..y0 + 24).contains(&y) && (x0 + 4..x0 + 24).contains(&x);
                        assert_eq!(p, if inside { expected } else { [0, 0, 0] });
                        n += usize::from(inside);
                    }
                }
                assert_eq!(n, 400);
                corners.push((x0 as f32, y0 as f32));
            }
            let (dx, dy) = c.direction.step();
            let moved = (corners[7].0 - corners[0].0, corners[7].1 - corners[0].1);
            let speed = item.motion.speed;
            assert!((2.0..=4.0).contains(&speed));
            assert!(
                (moved.0 - dx * speed * 7.0).abs() <= 1.0,
                "clip {i}: {moved:?}"
            );
            assert!(
                (moved.1 - dy * speed * 7.0).abs() <= 1.0,
                "clip {i}: {moved:?}"
            );
        }
    }

    #[test]
    fn the_evaluation_split_shows_every_composition_and_clip_for_keeps_the_class() {
        let eval = data(Split::Eval);
        let seen: std::collections::BTreeSet<_> =
            (0..4000).map(|i| eval.item(i).composition).collect();
        assert_eq!(seen.len(), 240);
        let c = FashionComposition::new(Garment::Coat, Colour::Cyan, Direction::Up);
        for k in 0..20 {
            let item = eval.clip_for(c, k, CaptionMode::Canonical);
            assert_eq!(item.composition, c);
            assert_eq!(item.item.caption, "a cyan coat moving up");
            assert_eq!(eval.photos.labels[item.photo], 4);
        }
        assert_ne!(
            eval.clip_for(c, 0, CaptionMode::Canonical),
            eval.clip_for(c, 1, CaptionMode::Canonical)
        );
    }

    #[test]
    fn bad_configs_and_photographs_name_the_problem() {
        let err = |c: MovingFashionConfig| c.validate().unwrap_err().to_string();
        assert!(err(MovingFashionConfig::new().with_max_speed(6.0)).contains("`max_speed`"));
        assert!(err(MovingFashionConfig::new().with_size(20)).contains("`size`"));
        assert!(err(MovingFashionConfig::new().with_frames(1)).contains("`frames`"));
        let (images, mut labels) = photos();
        labels[3] = 12;
        let e =
            MovingFashion::from_photos(images, labels, MovingFashionConfig::new(), 0, Split::Train)
                .unwrap_err()
                .to_string();
        assert!(e.contains("label 12"), "{e}");
    }
}
