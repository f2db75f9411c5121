//! The Moving Shapes data set: procedurally rendered, captioned clips.
//!
//! Clip `i` of a split is a pure function of `(seed, split, i)`: its random stream is a
//! ChaCha8 generator seeded from a SplitMix64 mix of the three, so it is the same on every
//! machine and never depends on a randomized hasher.

use burn::config::Config;
use burn::data::dataset::{Dataset, DatasetError};
use dit_model::seed::{Stream, rng_for};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::clip::Clip;
use crate::error::DataError;
use crate::render::{ClipParams, render_clip};
use crate::shapes::{Composition, Direction};

/// Sizes, speeds and captions of the generated clips (defaults are the spec's).
#[derive(Config, Debug)]
pub struct MovingShapesConfig {
    /// Frames per clip.
    #[config(default = 8)]
    pub frames: usize,
    /// Width and height of each frame, in pixels.
    #[config(default = 32)]
    pub size: usize,
    /// Smallest side of the object's bounding box, in pixels.
    #[config(default = 10.0)]
    pub min_object_size: f32,
    /// Largest side of the object's bounding box, in pixels.
    #[config(default = 14.0)]
    pub max_object_size: f32,
    /// Slowest speed, in pixels per frame.
    #[config(default = 1.5)]
    pub min_speed: f32,
    /// Fastest speed, in pixels per frame.
    #[config(default = 2.5)]
    pub max_speed: f32,
    /// Probability that a clip's caption is a paraphrase rather than the canonical one.
    #[config(default = 0.5)]
    pub paraphrase_probability: f64,
}

impl MovingShapesConfig {
    /// Checks that clips can be rendered: the error names the first bad field.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |field, reason: String| Err(DataError::InvalidConfig { field, reason });
        if self.frames < 2 {
            return bad(
                "frames",
                format!("is {}, at least 2 are needed to show motion", self.frames),
            );
        }
        if self.size == 0 {
            return bad("size", "must be positive".into());
        }
        if !(self.min_object_size.is_finite() && self.min_object_size >= 1.0) {
            return bad(
                "min_object_size",
                format!("is {}, it must be at least 1", self.min_object_size),
            );
        }
        if !(self.max_object_size.is_finite() && self.max_object_size >= self.min_object_size) {
            return bad(
                "max_object_size",
                format!(
                    "is {}, below min_object_size {}",
                    self.max_object_size, self.min_object_size
                ),
            );
        }
        if self.max_object_size > self.size as f32 {
            return bad(
                "max_object_size",
                format!(
                    "is {}, larger than the {}-pixel frame",
                    self.max_object_size, self.size
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
        let span = self.max_object_size + self.max_speed * (self.frames - 1) as f32;
        if span > self.size as f32 {
            return bad(
                "max_speed",
                format!(
                    "is {}: an object of side {} moving that fast over {} frames spans {span} pixels, more than the {}-pixel frame",
                    self.max_speed, self.max_object_size, self.frames, self.size
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

/// Which compositions a data set draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The 66 compositions that are not held out.
    Train,
    /// All 72 compositions.
    Eval,
}

impl Split {
    /// The random stream of this split's clips.
    pub fn stream(self) -> Stream {
        match self {
            Split::Train => Stream::TrainClips,
            Split::Eval => Stream::EvalClips,
        }
    }

    /// The compositions this split draws from, uniformly.
    pub fn compositions(self) -> Vec<Composition> {
        match self {
            Split::Train => Composition::training(),
            Split::Eval => Composition::all(),
        }
    }
}

/// How the caption of a clip is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CaptionMode {
    /// Always the canonical caption.
    Canonical,
    /// Always a random paraphrase.
    Paraphrase,
    /// A paraphrase with this probability, the canonical caption otherwise.
    Mixed(f64),
}

impl CaptionMode {
    /// Whether this clip's caption is a paraphrase (a draw from `rng` only when `Mixed`).
    pub(crate) fn paraphrases(self, rng: &mut ChaCha8Rng) -> bool {
        match self {
            CaptionMode::Canonical => false,
            CaptionMode::Paraphrase => true,
            CaptionMode::Mixed(p) => rng.random::<f64>() < p,
        }
    }
}

/// One captioned clip.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoItem {
    /// The pixels.
    pub clip: Clip,
    /// What the clip shows, in words.
    pub caption: String,
    /// The composition, when known (generated clips); `None` for clips read from files.
    pub composition: Option<Composition>,
}

/// A uniform draw in `[lo, hi]` from 53 random bits (portable across platforms).
pub(crate) fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    let t = (rng.random::<u64>() >> 11) as f64 / (1u64 << 53) as f64;
    (lo as f64 + (hi as f64 - lo as f64) * t) as f32
}

/// Draws size, speed and a start position that keeps the whole object inside the frame in
/// every frame, uniformly over the allowed range.
pub(crate) fn sample_params(
    config: &MovingShapesConfig,
    composition: Composition,
    rng: &mut ChaCha8Rng,
) -> ClipParams {
    let s = uniform(rng, config.min_object_size, config.max_object_size);
    let speed = uniform(rng, config.min_speed, config.max_speed);
    let room = config.size as f32 - s;
    let travel = speed * (config.frames - 1) as f32;
    let (start_x, start_y) = sample_start(rng, composition.direction, room, travel);
    ClipParams {
        composition,
        object_size: s,
        speed,
        start_x,
        start_y,
    }
}

/// A start position `(x, y)` of an object that has `room` pixels of free space along each
/// axis and travels `travel` pixels in `direction`, drawn uniformly over the positions that
/// keep it inside every frame (x first, then y).
pub(crate) fn sample_start(
    rng: &mut ChaCha8Rng,
    direction: Direction,
    room: f32,
    travel: f32,
) -> (f32, f32) {
    let (dx, dy) = direction.step();
    // Along the motion the start must leave `travel` pixels ahead of the object.
    let start_range = |d: f32| {
        if d > 0.0 {
            (0.0, room - travel)
        } else if d < 0.0 {
            (travel, room)
        } else {
            (0.0, room)
        }
    };
    let (x_lo, x_hi) = start_range(dx);
    let (y_lo, y_hi) = start_range(dy);
    let start_x = uniform(rng, x_lo, x_hi.max(x_lo));
    let start_y = uniform(rng, y_lo, y_hi.max(y_lo));
    (start_x, start_y)
}

/// Renders `composition` from `rng` and captions it per `caption`.
fn make_item(
    config: &MovingShapesConfig,
    composition: Composition,
    rng: &mut ChaCha8Rng,
    caption: CaptionMode,
) -> VideoItem {
    let params = sample_params(config, composition, rng);
    let clip = render_clip(&params, config.frames, config.size);
    let caption = if caption.paraphrases(rng) {
        composition.paraphrase(rng)
    } else {
        composition.canonical_caption()
    };
    VideoItem {
        clip,
        caption,
        composition: Some(composition),
    }
}

/// A Moving Shapes split of `len` clips; clip `i` is rendered on demand.
#[derive(Debug, Clone)]
pub struct MovingShapes {
    config: MovingShapesConfig,
    seed: u64,
    split: Split,
    len: usize,
    compositions: Vec<Composition>,
}

impl MovingShapes {
    /// A data set of `len` clips of `split`, after validating `config`.
    pub fn new(
        config: MovingShapesConfig,
        seed: u64,
        split: Split,
        len: usize,
    ) -> Result<Self, DataError> {
        config.validate()?;
        Ok(Self {
            config,
            seed,
            split,
            len,
            compositions: split.compositions(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MovingShapesConfig {
        &self.config
    }

    /// The split.
    pub fn split(&self) -> Split {
        self.split
    }

    /// Clip `index`: a pure function of `(seed, split, index)` (any index, even past `len`).
    pub fn item(&self, index: usize) -> VideoItem {
        let mut rng = rng_for(self.seed, self.split.stream(), index as u64);
        let pick = rng.random_range(0..self.compositions.len() as u32) as usize;
        let mode = CaptionMode::Mixed(self.config.paraphrase_probability);
        make_item(&self.config, self.compositions[pick], &mut rng, mode)
    }

    /// Clip `index` of `composition` (a stream of its own per composition, independent of
    /// the splits): what evaluation uses to get clips of each of the 72 compositions.
    pub fn clip_for(
        config: &MovingShapesConfig,
        composition: Composition,
        seed: u64,
        index: usize,
        caption: CaptionMode,
    ) -> VideoItem {
        let stream = Stream::CompositionClips(composition.index());
        let mut rng = rng_for(seed, stream, index as u64);
        make_item(config, composition, &mut rng, caption)
    }
}

impl Dataset<VideoItem> for MovingShapes {
    fn get(&self, index: usize) -> Result<VideoItem, DatasetError> {
        if index >= self.len {
            return Err(DatasetError::new(DataError::IndexOutOfRange {
                dataset: "this Moving Shapes split".into(),
                index,
                len: self.len,
            }));
        }
        Ok(self.item(index))
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{Direction, HELD_OUT};
    use rand::SeedableRng;
    use std::collections::BTreeSet;

    fn data(split: Split, len: usize) -> MovingShapes {
        MovingShapes::new(MovingShapesConfig::new(), 42, split, len).unwrap()
    }

    #[test]
    fn clips_are_a_pure_function_of_seed_split_and_index() {
        let a = data(Split::Train, 10);
        let b = data(Split::Train, 10);
        for i in 0..10 {
            assert_eq!(a.get(i).unwrap(), b.get(i).unwrap());
        }
        assert_ne!(a.item(0).clip, a.item(1).clip);
        assert_ne!(a.item(3).clip, data(Split::Eval, 10).item(3).clip);
        let other_seed =
            MovingShapes::new(MovingShapesConfig::new(), 43, Split::Train, 10).unwrap();
        assert_ne!(a.item(0).clip, other_seed.item(0).clip);
        let c = Composition::all()[17];
        let x = MovingShapes::clip_for(a.config(), c, 5, 2, CaptionMode::Canonical);
        assert_eq!(
            x,
            MovingShapes::clip_for(a.config(), c, 5, 2, CaptionMode::Canonical)
        );
        assert_eq!(x.caption, c.canonical_caption());
        assert_eq!(x.composition, Some(c));
    }

    /// Least-squares slope of `ys` against frame number.
    fn slope(ys: &[f32]) -> f32 {
        let n = ys.len() as f32;
        let mean_t = (n - 1.0) / 2.0;
        let mean_y = ys.iter().sum::<f32>() / n;
        let num: f32 = ys
            .iter()
            .enumerate()
            .map(|(t, y)| (t as f32 - mean_t) * (y - mean_y))
            .sum();
        let den: f32 = (0..ys.len()).map(|t| (t as f32 - mean_t).powi(2)).sum();
        num / den
    }

    #[test]
    fn clips_conform_to_the_spec() {
        let set = data(Split::Eval, 400);
        let mut paraphrased = 0;
        for i in 0..set.len() {
            let item = set.get(i).unwrap();
            let c = Composition::parse_caption(&item.caption).unwrap();
            assert_eq!(Some(c), item.composition);
            paraphrased += usize::from(item.caption != c.canonical_caption());
            let clip = &item.clip;
            assert_eq!((clip.frames, clip.height, clip.width), (8, 32, 32));
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for f in 0..clip.frames {
                let (mut n, mut sx, mut sy) = (0usize, 0.0f32, 0.0f32);
                let (mut x0, mut x1, mut y0, mut y1) = (usize::MAX, 0, usize::MAX, 0);
                for y in 0..32 {
                    for x in 0..32 {
                        let p = clip.pixel(f, y, x);
                        if p == [0, 0, 0] {
                            continue;
                        }
                        assert_eq!(p, c.colour.rgb(), "clip {i} frame {f} ({x}, {y})");
                        n += 1;
                        sx += x as f32;
                        sy += y as f32;
                        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
                    }
                }
                assert!(n > 30, "clip {i} frame {f} has {n} object pixels");
                let side = (x1 - x0 + 1).max(y1 - y0 + 1);
                assert!(
                    (9..=15).contains(&side),
                    "clip {i} frame {f}: box side {side}"
                );
                xs.push(sx / n as f32);
                ys.push(sy / n as f32);
            }
            let (along, across) = match c.direction {
                Direction::Left => (-slope(&xs), slope(&ys)),
                Direction::Right => (slope(&xs), slope(&ys)),
                Direction::Up => (-slope(&ys), slope(&xs)),
                Direction::Down => (slope(&ys), slope(&xs)),
            };
            assert!(
                (1.2..=2.8).contains(&along),
                "clip {i} ({c:?}) speed {along}"
            );
            assert!(
                across.abs() < 0.3,
                "clip {i} drifts {across} px/frame across"
            );
        }
        assert!(
            (120..280).contains(&paraphrased),
            "{paraphrased} of 400 paraphrased"
        );
    }

    #[test]
    fn sampled_params_keep_the_object_inside_every_frame() {
        let config = MovingShapesConfig::new();
        for i in 0..2000u64 {
            let c = Composition::all()[(i % 72) as usize];
            let mut rng = ChaCha8Rng::seed_from_u64(i);
            let p = sample_params(&config, c, &mut rng);
            assert!((10.0..=14.0).contains(&p.object_size), "{p:?}");
            assert!((1.5..=2.5).contains(&p.speed), "{p:?}");
            for f in 0..config.frames {
                let (x, y) = p.position(f);
                let max = 32.0 - p.object_size + 1e-4;
                assert!(
                    (-1e-4..=max).contains(&x) && (-1e-4..=max).contains(&y),
                    "{p:?} frame {f}"
                );
            }
        }
    }

    #[test]
    fn training_split_never_shows_held_out_compositions() {
        let train = data(Split::Train, 2000);
        let mut seen = BTreeSet::new();
        for i in 0..train.len() {
            let c = train.item(i).composition.unwrap();
            assert!(!HELD_OUT.contains(&c), "clip {i} is held-out {c:?}");
            seen.insert(c);
        }
        assert_eq!(seen.len(), 66);
        let eval = data(Split::Eval, 2000);
        let seen: BTreeSet<_> = (0..eval.len())
            .map(|i| eval.item(i).composition.unwrap())
            .collect();
        assert_eq!(seen.len(), 72);
    }

    #[test]
    fn index_past_the_end_is_an_error() {
        let d = data(Split::Train, 10);
        assert!(d.get(9).is_ok());
        let err = d.get(10).unwrap_err().to_string();
        assert_eq!(
            err,
            "index 10 is past the 10 clips of this Moving Shapes split"
        );
        assert!(d.get(usize::MAX).is_err());
        // `item` itself is defined for any index.
        assert_eq!(d.item(10).clip.frames, d.get(0).unwrap().clip.frames);
    }

    #[test]
    fn validate_names_the_bad_field() {
        let err = |c: MovingShapesConfig| c.validate().unwrap_err().to_string();
        assert!(MovingShapesConfig::new().validate().is_ok());
        assert!(err(MovingShapesConfig::new().with_max_speed(3.0)).contains("`max_speed`"));
        assert!(
            err(MovingShapesConfig::new().with_min_object_size(15.0)).contains("`max_object_size`")
        );
        assert!(err(MovingShapesConfig::new().with_frames(1)).contains("`frames`"));
        assert!(
            err(MovingShapesConfig::new().with_paraphrase_probability(1.5))
                .contains("`paraphrase_probability`")
        );
        assert!(
            MovingShapes::new(MovingShapesConfig::new().with_size(16), 0, Split::Train, 1).is_err()
        );
    }
}
