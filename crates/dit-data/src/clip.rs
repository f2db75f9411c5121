//! [`Clip`]: an RGB video clip in memory, what every reader, renderer, judge and writer of
//! the project passes around.

/// An RGB video clip, 8 bits a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    /// Number of frames.
    pub frames: usize,
    /// Rows per frame.
    pub height: usize,
    /// Columns per frame.
    pub width: usize,
    /// Pixel values laid out `[frame][row][col][rgb]` (row-major, channels last):
    /// `frames * height * width * 3` bytes.
    pub pixels: Vec<u8>,
}

impl Clip {
    /// An all-black clip.
    pub fn black(frames: usize, height: usize, width: usize) -> Self {
        Self {
            frames,
            height,
            width,
            pixels: vec![0; frames * height * width * 3],
        }
    }

    /// Offset of pixel `(f, y, x)`'s red byte in [`Clip::pixels`].
    fn offset(&self, f: usize, y: usize, x: usize) -> usize {
        assert!(
            f < self.frames && y < self.height && x < self.width,
            "pixel (frame {f}, row {y}, col {x}) is outside a {}x{}x{} clip",
            self.frames,
            self.height,
            self.width
        );
        ((f * self.height + y) * self.width + x) * 3
    }

    /// The RGB value at frame `f`, row `y`, column `x`.
    pub fn pixel(&self, f: usize, y: usize, x: usize) -> [u8; 3] {
        let o = self.offset(f, y, x);
        [self.pixels[o], self.pixels[o + 1], self.pixels[o + 2]]
    }

    /// Sets the RGB value at frame `f`, row `y`, column `x`.
    pub fn set_pixel(&mut self, f: usize, y: usize, x: usize, rgb: [u8; 3]) {
        let o = self.offset(f, y, x);
        self.pixels[o..o + 3].copy_from_slice(&rgb);
    }

    /// The bytes of frame `f`, laid out `[row][col][rgb]`.
    pub fn frame(&self, f: usize) -> &[u8] {
        let len = self.height * self.width * 3;
        &self.pixels[f * len..(f + 1) * len]
    }

    /// The `height × width` window of every frame whose top-left pixel is `(top, left)`;
    /// `None` when it does not lie inside the frame.
    pub fn window(&self, top: usize, left: usize, height: usize, width: usize) -> Option<Clip> {
        if top.checked_add(height)? > self.height || left.checked_add(width)? > self.width {
            return None;
        }
        let mut pixels = Vec::with_capacity(self.frames * height * width * 3);
        for f in 0..self.frames {
            for y in top..top + height {
                let row = self.offset(f, y, left);
                pixels.extend_from_slice(&self.pixels[row..row + width * 3]);
            }
        }
        Some(Clip {
            frames: self.frames,
            height,
            width,
            pixels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_holds_the_pixels_it_covers() {
        let mut clip = Clip::black(2, 5, 6);
        for (f, y, x) in [(0, 1, 2), (1, 3, 4), (1, 1, 2), (0, 4, 5)] {
            clip.set_pixel(f, y, x, [f as u8 + 1, y as u8, x as u8]);
        }
        let w = clip.window(1, 2, 3, 3).unwrap();
        assert_eq!((w.frames, w.height, w.width), (2, 3, 3));
        assert_eq!(w.pixel(0, 0, 0), [1, 1, 2]);
        assert_eq!(w.pixel(1, 2, 2), [2, 3, 4]);
        assert_eq!(w.pixel(1, 0, 0), [2, 1, 2]);
        assert_eq!(w.pixels.iter().filter(|&&v| v > 0).count(), 9);
        assert!(clip.window(3, 0, 3, 6).is_none());
        assert!(clip.window(0, 1, 5, 6).is_none());
        assert!(clip.window(usize::MAX, 0, 1, 1).is_none());
        assert_eq!(clip.window(0, 0, 5, 6).unwrap(), clip);
    }

    #[test]
    fn clip_layout_is_frame_row_col_rgb() {
        let mut clip = Clip::black(2, 3, 4);
        clip.set_pixel(1, 2, 3, [7, 8, 9]);
        assert_eq!(&clip.pixels[clip.pixels.len() - 3..], &[7, 8, 9]);
        clip.set_pixel(0, 1, 0, [1, 2, 3]);
        assert_eq!(&clip.pixels[12..15], &[1, 2, 3]);
        assert_eq!(clip.frame(0)[12..15], [1, 2, 3]);
        assert_eq!(clip.frame(1)[33..36], [7, 8, 9]);
        assert_eq!(clip.pixel(1, 2, 3), [7, 8, 9]);
    }
}
