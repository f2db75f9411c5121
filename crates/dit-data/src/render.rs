//! Rendering one Moving Shapes clip from its parameters.
//!
//! Positions are sub-pixel; a pixel belongs to the object when its centre is inside the
//! shape (no anti-aliasing), so every pixel is either black or exactly the palette colour.

use crate::clip::Clip;
use crate::shapes::{Composition, Shape};

/// Everything that determines a rendered clip besides its frame count and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipParams {
    /// What is drawn and where it goes.
    pub composition: Composition,
    /// Side `s` of the object's square bounding box, in pixels.
    pub object_size: f32,
    /// Distance travelled per frame, in pixels, along the direction's axis.
    pub speed: f32,
    /// Left edge of the bounding box in frame 0.
    pub start_x: f32,
    /// Top edge of the bounding box in frame 0.
    pub start_y: f32,
}

impl ClipParams {
    /// Top-left corner `(x, y)` of the bounding box in frame `f`.
    pub fn position(&self, f: usize) -> (f32, f32) {
        let (dx, dy) = self.composition.direction.step();
        let travelled = self.speed * f as f32;
        (self.start_x + dx * travelled, self.start_y + dy * travelled)
    }
}

/// Whether the point `(u, v)`, in box units (`0..1` across, `0..1` down), is inside `shape`.
pub(crate) fn inside_shape(shape: Shape, u: f32, v: f32) -> bool {
    if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
        return false;
    }
    match shape {
        Shape::Square => true,
        Shape::Circle => (u - 0.5).powi(2) + (v - 0.5).powi(2) <= 0.25,
        // Apex at (0.5, 0), base from (0, 1) to (1, 1): half-width v / 2 at height v.
        Shape::Triangle => (u - 0.5).abs() <= 0.5 * v,
    }
}

/// Renders `frames` frames of `size × size` pixels on a black background.
pub fn render_clip(params: &ClipParams, frames: usize, size: usize) -> Clip {
    let mut clip = Clip::black(frames, size, size);
    let rgb = params.composition.colour.rgb();
    let s = params.object_size;
    for f in 0..frames {
        let (x, y) = params.position(f);
        // Only pixels whose centre can fall in [x, x + s) × [y, y + s) need testing.
        let cols = pixel_range(x, s, size);
        let rows = pixel_range(y, s, size);
        for py in rows {
            let v = (py as f32 + 0.5 - y) / s;
            for px in cols.clone() {
                let u = (px as f32 + 0.5 - x) / s;
                if inside_shape(params.composition.shape, u, v) {
                    clip.set_pixel(f, py, px, rgb);
                }
            }
        }
    }
    clip
}

/// Pixel indices in `0..size` whose centres may lie in `[start, start + len)`.
fn pixel_range(start: f32, len: f32, size: usize) -> std::ops::Range<usize> {
    let lo = (start - 0.5).floor().max(0.0) as usize;
    let hi = ((start + len + 0.5).ceil().max(0.0) as usize).min(size);
    lo.min(hi)..hi
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{Colour, Direction};

    fn params(shape: Shape, direction: Direction, s: f32, x: f32, y: f32) -> ClipParams {
        ClipParams {
            composition: Composition::new(Colour::Blue, shape, direction),
            object_size: s,
            speed: 2.0,
            start_x: x,
            start_y: y,
        }
    }

    fn count(clip: &Clip, f: usize) -> usize {
        clip.frame(f).chunks(3).filter(|p| p != &[0, 0, 0]).count()
    }

    #[test]
    fn integer_square_covers_exactly_its_box() {
        let clip = render_clip(
            &params(Shape::Square, Direction::Right, 10.0, 3.0, 5.0),
            3,
            32,
        );
        assert_eq!(count(&clip, 0), 100);
        assert_eq!(clip.pixel(0, 5, 3), Colour::Blue.rgb());
        assert_eq!(clip.pixel(0, 14, 12), Colour::Blue.rgb());
        assert_eq!(clip.pixel(0, 15, 12), [0, 0, 0]);
        assert_eq!(clip.pixel(0, 5, 2), [0, 0, 0]);
        // Frame 2 is shifted right by 2 * speed = 4 pixels.
        assert_eq!(clip.pixel(2, 5, 7), Colour::Blue.rgb());
        assert_eq!(clip.pixel(2, 5, 6), [0, 0, 0]);
    }

    #[test]
    fn areas_follow_the_geometry() {
        let s = 14.0;
        let disc = render_clip(&params(Shape::Circle, Direction::Up, s, 9.3, 16.7), 1, 32);
        let tri = render_clip(&params(Shape::Triangle, Direction::Up, s, 9.3, 16.7), 1, 32);
        let disc_area = count(&disc, 0) as f32;
        let tri_area = count(&tri, 0) as f32;
        assert!(
            (disc_area / (s * s) - std::f32::consts::FRAC_PI_4).abs() < 0.05,
            "{disc_area}"
        );
        assert!((tri_area / (s * s) - 0.5).abs() < 0.05, "{tri_area}");
    }

    #[test]
    fn triangle_apex_is_at_the_top_and_base_at_the_bottom() {
        let clip = render_clip(
            &params(Shape::Triangle, Direction::Down, 12.0, 10.0, 10.0),
            1,
            32,
        );
        let width = |row: usize| {
            (0..32)
                .filter(|&x| clip.pixel(0, row, x) != [0, 0, 0])
                .count()
        };
        assert!(width(10) <= 1, "top row width {}", width(10));
        assert!(width(21) >= 11, "bottom row width {}", width(21));
        assert_eq!(width(22), 0);
    }
}
