//! Judging a clip from its pixels alone (the spec's "Judging a generated clip").
//!
//! - background = per-channel median of the border pixels of all frames;
//! - foreground = pixels farther than [`FOREGROUND_THRESHOLD`] (RGB distance) from it;
//! - colour = palette entry nearest to the mean foreground colour;
//! - shape = per frame, from the fill ratio of the foreground's bounding box (square ≈ 1)
//!   and the vertical centroid inside the box (a triangle's mass sits at ≈ 2/3 of its
//!   height, a disc's at 1/2), then a majority vote over the frames;
//! - direction = axis and sign of the larger least-squares slope of the foreground
//!   centroid over the frames (none when both are below [`MIN_SLOPE`] pixels a frame).

use crate::clip::Clip;
use crate::shapes::{Colour, Composition, Direction, Shape};

/// RGB (Euclidean, 0..=255 scale) distance from the background beyond which a pixel is foreground.
pub const FOREGROUND_THRESHOLD: f32 = 80.0;
/// Fill ratio of the bounding box at or above which a frame's object is a square.
pub const SQUARE_FILL: f32 = 0.9;
/// Vertical centroid (0 = top row of the box, 1 = bottom row) above which an object is a triangle.
pub const TRIANGLE_CENTROID: f32 = 0.58;
/// Smallest centroid speed, in pixels per frame, that counts as motion.
pub const MIN_SLOPE: f32 = 0.25;

/// What a viewer would say a clip shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    /// Palette colour nearest to the mean foreground colour (`None`: no foreground).
    pub colour: Option<Colour>,
    /// Shape voted over the frames (`None`: no foreground).
    pub shape: Option<Shape>,
    /// Direction of the centroid's motion (`None`: under two frames with foreground, or no motion).
    pub direction: Option<Direction>,
    /// Standard deviation over mean of the foreground area across frames (0 for a rigid object).
    pub area_variation: f32,
}

/// Which parts of a [`Judgement`] agree with a composition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JudgeMatch {
    /// The colour matches.
    pub colour: bool,
    /// The shape matches.
    pub shape: bool,
    /// The direction matches.
    pub direction: bool,
}

impl JudgeMatch {
    /// Colour, shape and direction all match ("joint accuracy").
    pub fn all(&self) -> bool {
        self.colour && self.shape && self.direction
    }
}

impl Judgement {
    /// Compares the judgement with what `composition` asks for.
    pub fn matches(&self, composition: &Composition) -> JudgeMatch {
        JudgeMatch {
            colour: self.colour == Some(composition.colour),
            shape: self.shape == Some(composition.shape),
            direction: self.direction == Some(composition.direction),
        }
    }

    /// The judged composition, when all three parts were recognised.
    pub fn composition(&self) -> Option<Composition> {
        Some(Composition::new(self.colour?, self.shape?, self.direction?))
    }
}

/// Foreground statistics of one frame.
#[derive(Debug, Default, Clone, Copy)]
struct FrameStats {
    area: usize,
    sum_x: f64,
    sum_y: f64,
    bounds: Option<(usize, usize, usize, usize)>, // (x0, x1, y0, y1), inclusive
}

/// Per-channel median of the pixels on the border of every frame.
pub(crate) fn background(clip: &Clip) -> [f32; 3] {
    let mut channels: [Vec<u8>; 3] = Default::default();
    for f in 0..clip.frames {
        for y in 0..clip.height {
            for x in 0..clip.width {
                if y == 0 || x == 0 || y + 1 == clip.height || x + 1 == clip.width {
                    let p = clip.pixel(f, y, x);
                    (0..3).for_each(|c| channels[c].push(p[c]));
                }
            }
        }
    }
    channels.map(|mut v| {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f32
    })
}

/// Judges colour, shape and direction of the single object in `clip`.
pub fn judge_clip(clip: &Clip) -> Judgement {
    let bg = background(clip);
    let mut stats = vec![FrameStats::default(); clip.frames];
    let mut colour_sum = [0.0f64; 3];
    for (f, s) in stats.iter_mut().enumerate() {
        for y in 0..clip.height {
            for x in 0..clip.width {
                let p = clip.pixel(f, y, x);
                let dist2: f32 = (0..3).map(|c| (p[c] as f32 - bg[c]).powi(2)).sum();
                if dist2 <= FOREGROUND_THRESHOLD * FOREGROUND_THRESHOLD {
                    continue;
                }
                s.area += 1;
                s.sum_x += x as f64;
                s.sum_y += y as f64;
                (0..3).for_each(|c| colour_sum[c] += p[c] as f64);
                let (x0, x1, y0, y1) = s.bounds.unwrap_or((x, x, y, y));
                s.bounds = Some((x0.min(x), x1.max(x), y0.min(y), y1.max(y)));
            }
        }
    }
    let total: usize = stats.iter().map(|s| s.area).sum();
    let area_variation = area_variation(&stats);
    if total == 0 {
        return Judgement {
            colour: None,
            shape: None,
            direction: None,
            area_variation,
        };
    }
    let mean = colour_sum.map(|v| (v / total as f64) as f32);
    let colour = Colour::ALL.into_iter().min_by(|a, b| {
        let d = |c: Colour| {
            (0..3)
                .map(|i| (c.rgb()[i] as f32 - mean[i]).powi(2))
                .sum::<f32>()
        };
        d(*a).total_cmp(&d(*b))
    });
    Judgement {
        colour,
        shape: vote_shape(&stats),
        direction: direction(&stats),
        area_variation,
    }
}

/// Shape of one frame's foreground, from its bounding-box fill and vertical centroid.
fn frame_shape(s: &FrameStats) -> Option<Shape> {
    let (x0, x1, y0, y1) = s.bounds?;
    let box_area = ((x1 - x0 + 1) * (y1 - y0 + 1)) as f32;
    let fill = s.area as f32 / box_area;
    let centroid = if y1 > y0 {
        ((s.sum_y / s.area as f64) as f32 - y0 as f32) / (y1 - y0) as f32
    } else {
        0.5
    };
    Some(if fill >= SQUARE_FILL {
        Shape::Square
    } else if centroid > TRIANGLE_CENTROID {
        Shape::Triangle
    } else {
        Shape::Circle
    })
}

/// The shape most frames show (ties go to the earlier shape in `Shape::ALL`).
fn vote_shape(stats: &[FrameStats]) -> Option<Shape> {
    let mut votes = [0usize; 3];
    for shape in stats.iter().filter_map(frame_shape) {
        votes[Shape::ALL.iter().position(|&s| s == shape).unwrap_or(0)] += 1;
    }
    let best = (0..3).rev().max_by_key(|&i| votes[i])?;
    (votes[best] > 0).then_some(Shape::ALL[best])
}

/// Least-squares slope of `values` against `times`.
fn slope(times: &[f64], values: &[f64]) -> f64 {
    let n = times.len() as f64;
    let (mt, mv) = (
        times.iter().sum::<f64>() / n,
        values.iter().sum::<f64>() / n,
    );
    let num: f64 = times
        .iter()
        .zip(values)
        .map(|(t, v)| (t - mt) * (v - mv))
        .sum();
    let den: f64 = times.iter().map(|t| (t - mt).powi(2)).sum();
    if den > 0.0 { num / den } else { 0.0 }
}

/// Direction of the centroid's motion over the frames that have foreground.
fn direction(stats: &[FrameStats]) -> Option<Direction> {
    let centroids: Vec<(usize, f64, f64)> = stats
        .iter()
        .enumerate()
        .filter(|(_, s)| s.area > 0)
        .map(|(f, s)| (f, s.sum_x / s.area as f64, s.sum_y / s.area as f64))
        .collect();
    motion_direction(&centroids)
}

/// Direction of motion of centroids `(frame, x, y)`: axis and sign of the larger
/// least-squares slope, `None` under two frames or when both slopes are below [`MIN_SLOPE`].
pub(crate) fn motion_direction(centroids: &[(usize, f64, f64)]) -> Option<Direction> {
    if centroids.len() < 2 {
        return None;
    }
    let times: Vec<f64> = centroids.iter().map(|c| c.0 as f64).collect();
    let xs: Vec<f64> = centroids.iter().map(|c| c.1).collect();
    let ys: Vec<f64> = centroids.iter().map(|c| c.2).collect();
    let (sx, sy) = (slope(&times, &xs) as f32, slope(&times, &ys) as f32);
    if sx.abs().max(sy.abs()) < MIN_SLOPE {
        None
    } else if sx.abs() >= sy.abs() {
        Some(if sx > 0.0 {
            Direction::Right
        } else {
            Direction::Left
        })
    } else {
        Some(if sy > 0.0 {
            Direction::Down
        } else {
            Direction::Up
        })
    }
}

/// Standard deviation over mean of the per-frame foreground areas (0 when there is none).
fn area_variation(stats: &[FrameStats]) -> f32 {
    let n = stats.len().max(1) as f64;
    let mean = stats.iter().map(|s| s.area as f64).sum::<f64>() / n;
    if mean == 0.0 {
        return 0.0;
    }
    let var = stats
        .iter()
        .map(|s| (s.area as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    (var.sqrt() / mean) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moving_shapes::{CaptionMode, MovingShapes, MovingShapesConfig, Split};
    use burn::data::dataset::Dataset;

    #[test]
    fn judge_recognises_generated_clips() {
        let set = MovingShapes::new(MovingShapesConfig::new(), 11, Split::Eval, 1440).unwrap();
        let mut correct = 0;
        let mut failures = Vec::new();
        for i in 0..set.len() {
            let item = set.get(i).unwrap();
            let truth = item.composition.unwrap();
            let judgement = judge_clip(&item.clip);
            assert!(judgement.area_variation < 0.15, "clip {i}: {judgement:?}");
            if judgement.matches(&truth).all() {
                correct += 1;
            } else {
                failures.push((i, truth, judgement));
            }
        }
        let accuracy = correct as f32 / set.len() as f32;
        eprintln!(
            "judge joint accuracy on {} generated clips: {accuracy}",
            set.len()
        );
        assert!(
            accuracy >= 0.99,
            "accuracy {accuracy}; failures {:?}",
            &failures[..failures.len().min(5)]
        );
    }

    #[test]
    fn judge_recognises_every_composition() {
        let config = MovingShapesConfig::new();
        for c in Composition::all() {
            let ok = (0..5)
                .filter(|&i| {
                    let item = MovingShapes::clip_for(&config, c, 1, i, CaptionMode::Canonical);
                    judge_clip(&item.clip).composition() == Some(c)
                })
                .count();
            assert!(ok >= 4, "{c:?}: {ok} of 5 judged right");
        }
    }

    #[test]
    fn blank_and_still_clips() {
        let j = judge_clip(&Clip::black(8, 32, 32));
        assert_eq!(
            (j.colour, j.shape, j.direction, j.area_variation),
            (None, None, None, 0.0)
        );
        // A still yellow square on a grey background: colour and shape, no direction.
        let mut clip = Clip::black(4, 32, 32);
        clip.pixels.fill(40);
        for f in 0..4 {
            for y in 8..20 {
                for x in 8..20 {
                    clip.set_pixel(f, y, x, [235, 215, 70]);
                }
            }
        }
        let j = judge_clip(&clip);
        assert_eq!(
            (j.colour, j.shape, j.direction),
            (Some(Colour::Yellow), Some(Shape::Square), None)
        );
        assert_eq!(j.area_variation, 0.0);
    }
}
