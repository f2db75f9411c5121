//! Writing clips: animated GIF, PNG frames, and a contact sheet.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use dit_data::Clip;

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {message}")]
pub struct OutputError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

fn error(path: &Path, e: impl ToString) -> OutputError {
    OutputError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn create(path: &Path) -> Result<BufWriter<File>, OutputError> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(|e| error(path, e))
}

/// One frame as RGB bytes, each pixel repeated `scale×scale` times.
pub fn frame_rgb(clip: &Clip, frame: usize, scale: usize) -> Vec<u8> {
    let (w, h) = (clip.width * scale, clip.height * scale);
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            out.extend_from_slice(&clip.pixel(frame, y / scale, x / scale));
        }
    }
    out
}

/// Writes an endlessly looping animated GIF, `delay_cs` hundredths of a second a frame.
pub fn write_gif(clip: &Clip, path: &Path, scale: usize, delay_cs: u16) -> Result<(), OutputError> {
    let (w, h) = ((clip.width * scale) as u16, (clip.height * scale) as u16);
    let mut encoder = gif::Encoder::new(create(path)?, w, h, &[]).map_err(|e| error(path, e))?;
    encoder
        .set_repeat(gif::Repeat::Infinite)
        .map_err(|e| error(path, e))?;
    for f in 0..clip.frames {
        let mut frame = gif::Frame::from_rgb_speed(w, h, &frame_rgb(clip, f, scale), 10);
        frame.delay = delay_cs;
        encoder.write_frame(&frame).map_err(|e| error(path, e))?;
    }
    Ok(())
}

/// Writes an RGB image as PNG.
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<(), OutputError> {
    let mut encoder = png::Encoder::new(create(path)?, width as u32, height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| error(path, e))?;
    writer.write_image_data(rgb).map_err(|e| error(path, e))
}

/// Writes each frame as `frame_000.png`, … in `dir` (created if needed).
pub fn write_frames(clip: &Clip, dir: &Path, scale: usize) -> Result<(), OutputError> {
    std::fs::create_dir_all(dir).map_err(|e| error(dir, e))?;
    for f in 0..clip.frames {
        let path = dir.join(format!("frame_{f:03}.png"));
        write_png(
            &path,
            clip.width * scale,
            clip.height * scale,
            &frame_rgb(clip, f, scale),
        )?;
    }
    Ok(())
}

/// A grid image: one row per clip, its frames side by side, with a 2-pixel grey gutter.
pub fn sheet_rgb(clips: &[Clip], scale: usize) -> (usize, usize, Vec<u8>) {
    const GUTTER: usize = 2;
    let frames = clips.iter().map(|c| c.frames).max().unwrap_or(0);
    let (cw, ch) = clips
        .first()
        .map_or((0, 0), |c| (c.width * scale, c.height * scale));
    let width = frames * (cw + GUTTER) + GUTTER;
    let height = clips.len() * (ch + GUTTER) + GUTTER;
    let mut rgb = vec![96u8; width * height * 3];
    for (row, clip) in clips.iter().enumerate() {
        for f in 0..clip.frames {
            let frame = frame_rgb(clip, f, scale);
            let (x0, y0) = (GUTTER + f * (cw + GUTTER), GUTTER + row * (ch + GUTTER));
            for y in 0..ch {
                let dst = ((y0 + y) * width + x0) * 3;
                rgb[dst..dst + cw * 3].copy_from_slice(&frame[y * cw * 3..(y + 1) * cw * 3]);
            }
        }
    }
    (width, height, rgb)
}

/// Writes a contact sheet of `clips` (see [`sheet_rgb`]).
pub fn write_sheet(clips: &[Clip], path: &Path, scale: usize) -> Result<(), OutputError> {
    let (w, h, rgb) = sheet_rgb(clips, scale);
    write_png(path, w, h, &rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip() -> Clip {
        let mut c = Clip::black(3, 4, 5);
        c.set_pixel(1, 2, 3, [200, 10, 20]);
        c
    }

    #[test]
    fn gif_has_the_clip_frames_and_size() {
        let path = std::env::temp_dir().join(format!("dit-out-{}.gif", std::process::id()));
        write_gif(&clip(), &path, 2, 12).unwrap();
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::RGBA);
        let mut decoder = options.read_info(File::open(&path).unwrap()).unwrap();
        assert_eq!((decoder.width(), decoder.height()), (10, 8));
        let mut frames = 0;
        while let Some(frame) = decoder.read_next_frame().unwrap() {
            if frames == 1 {
                let i = ((2 * 2) * 10 + 3 * 2) * 4; // pixel (2,3) scaled by 2
                let px = &frame.buffer[i..i + 3];
                assert!(px[0] > 150 && px[1] < 60, "{px:?}");
            }
            frames += 1;
        }
        assert_eq!(frames, 3);
        std::fs::remove_file(path).ok();
    }

    #[test]
    fn sheet_places_frames_in_a_row() {
        let (w, h, rgb) = sheet_rgb(&[clip(), clip()], 1);
        assert_eq!((w, h), (3 * 7 + 2, 2 * 6 + 2));
        // Frame 1 of row 0 starts at x = 2 + 7 = 9, y = 2; its pixel (2, 3).
        let i = ((2 + 2) * w + 9 + 3) * 3;
        assert_eq!(&rgb[i..i + 3], &[200, 10, 20]);
    }

    #[test]
    fn unwritable_path_is_an_error_naming_it() {
        let err = write_gif(&clip(), Path::new("/nonexistent-dir/x.gif"), 1, 10).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.gif"), "{err}");
    }
}
