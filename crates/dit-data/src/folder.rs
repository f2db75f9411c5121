//! A folder of captioned clips: `captions.jsonl` naming animated GIFs or PNG-frame folders.
//!
//! Each line of `dir/captions.jsonl` is `{"video": "relative/path", "caption": "..."}`. A
//! video is an animated GIF file or a folder of PNG frames (taken in file-name order). Each
//! is centre-cropped to a square, resized to `size × size` (area average when shrinking,
//! nearest pixel when growing) and `frames` evenly spaced frames are kept. Everything is
//! loaded at [`ClipFolder::open`], so every error surfaces there, by name; nothing is skipped.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use burn::data::dataset::{Dataset, DatasetError};
use serde::Deserialize;

use crate::error::DataError;
use crate::moving_shapes::VideoItem;
use crate::render::Clip;

/// One line of `captions.jsonl`.
#[derive(Debug, Deserialize)]
struct Entry {
    video: String,
    caption: String,
}

/// One decoded RGB frame of any size: `[row][col][rgb]`.
struct Frame {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

/// Captioned clips read from a folder, all in memory.
#[derive(Debug, Clone)]
pub struct ClipFolder {
    items: Vec<VideoItem>,
}

impl ClipFolder {
    /// Reads every clip listed in `dir/captions.jsonl` as `frames` frames of `size × size`.
    pub fn open(dir: impl AsRef<Path>, frames: usize, size: usize) -> Result<Self, DataError> {
        let dir = dir.as_ref();
        let captions = dir.join("captions.jsonl");
        if !captions.is_file() {
            return Err(DataError::MissingCaptions { path: captions });
        }
        let text = std::fs::read_to_string(&captions).map_err(|source| DataError::Io {
            path: captions.clone(),
            source,
        })?;
        let mut items = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let entry: Entry =
                serde_json::from_str(line).map_err(|e| DataError::MalformedLine {
                    path: captions.clone(),
                    line: n + 1,
                    reason: e.to_string(),
                })?;
            let path = dir.join(&entry.video);
            if !path.exists() {
                return Err(DataError::MissingVideo {
                    captions: captions.clone(),
                    line: n + 1,
                    path,
                });
            }
            let decoded = if path.is_dir() {
                read_png_folder(&path)?
            } else {
                read_gif(&path)?
            };
            let clip = to_clip(&path, &decoded, frames, size)?;
            items.push(VideoItem {
                clip,
                caption: entry.caption,
                composition: None,
            });
        }
        if items.is_empty() {
            return Err(DataError::NoClips { path: captions });
        }
        Ok(Self { items })
    }

    /// The clips, in file order.
    pub fn items(&self) -> &[VideoItem] {
        &self.items
    }
}

impl Dataset<VideoItem> for ClipFolder {
    fn get(&self, index: usize) -> Result<VideoItem, DatasetError> {
        Ok(self.items[index].clone())
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

/// Decodes an animated GIF, compositing each frame over the previous canvas.
fn read_gif(path: &Path) -> Result<Vec<Frame>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mut magic = [0u8; 6];
    if file.read_exact(&mut magic).is_err() || !(magic == *b"GIF87a" || magic == *b"GIF89a") {
        return Err(DataError::NotGif {
            path: path.to_owned(),
        });
    }
    let file = File::open(path).map_err(io)?;
    let decode_err = |e: gif::DecodingError| DataError::Decode {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut decoder = options
        .read_info(BufReader::new(file))
        .map_err(decode_err)?;
    let (w, h) = (decoder.width() as usize, decoder.height() as usize);
    // Canvas: RGBA, starts transparent (shown as black).
    let mut canvas = vec![0u8; w * h * 4];
    let mut frames = Vec::new();
    while let Some(frame) = decoder.read_next_frame().map_err(decode_err)? {
        let saved = (frame.dispose == gif::DisposalMethod::Previous).then(|| canvas.clone());
        let (left, top) = (frame.left as usize, frame.top as usize);
        let (fw, fh) = (frame.width as usize, frame.height as usize);
        for y in 0..fh {
            for x in 0..fw {
                let (cx, cy) = (left + x, top + y);
                let src = &frame.buffer[(y * fw + x) * 4..(y * fw + x) * 4 + 4];
                if cx < w && cy < h && src[3] > 0 {
                    canvas[(cy * w + cx) * 4..(cy * w + cx) * 4 + 4].copy_from_slice(src);
                }
            }
        }
        frames.push(Frame {
            width: w,
            height: h,
            rgb: rgba_over_black(&canvas),
        });
        match frame.dispose {
            gif::DisposalMethod::Background => {
                for y in top..(top + fh).min(h) {
                    for x in left..(left + fw).min(w) {
                        canvas[(y * w + x) * 4..(y * w + x) * 4 + 4].fill(0);
                    }
                }
            }
            gif::DisposalMethod::Previous => canvas = saved.unwrap_or(canvas),
            _ => {}
        }
    }
    Ok(frames)
}

/// RGBA bytes composited over black, as RGB.
fn rgba_over_black(rgba: &[u8]) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| {
            let a = p[3] as u32;
            [0, 1, 2].map(|c| ((p[c] as u32 * a + 127) / 255) as u8)
        })
        .collect()
}

/// Reads the `.png` files of a folder in file-name order.
fn read_png_folder(dir: &Path) -> Result<Vec<Frame>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|source| DataError::Io {
                path: dir.to_owned(),
                source,
            })?
            .path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(DataError::NoFrames {
            path: dir.to_owned(),
        });
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    paths.iter().map(|p| read_png(p)).collect()
}

/// Decodes one PNG into 8-bit RGB (alpha composited over black).
fn read_png(path: &Path) -> Result<Frame, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_owned(),
        source,
    })?;
    let decode_err = |e: png::DecodingError| DataError::Decode {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(decode_err)?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).map_err(decode_err)?;
    let (width, height) = (info.width as usize, info.height as usize);
    let pixels = &buf[..info.buffer_size()];
    let row = info.line_size;
    let mut rgba = Vec::with_capacity(width * height * 4);
    for y in 0..height {
        let line = &pixels[y * row..];
        for x in 0..width {
            let px: [u8; 4] = match info.color_type {
                png::ColorType::Grayscale => [line[x], line[x], line[x], 255],
                png::ColorType::GrayscaleAlpha => {
                    [line[2 * x], line[2 * x], line[2 * x], line[2 * x + 1]]
                }
                png::ColorType::Rgb => [line[3 * x], line[3 * x + 1], line[3 * x + 2], 255],
                png::ColorType::Rgba => [
                    line[4 * x],
                    line[4 * x + 1],
                    line[4 * x + 2],
                    line[4 * x + 3],
                ],
                png::ColorType::Indexed => {
                    return Err(DataError::Decode {
                        path: path.to_owned(),
                        reason: "indexed colour was not expanded".into(),
                    });
                }
            };
            rgba.extend_from_slice(&px);
        }
    }
    Ok(Frame {
        width,
        height,
        rgb: rgba_over_black(&rgba),
    })
}

/// Picks `frames` evenly spaced frames, crops them square and resizes them to `size`.
fn to_clip(path: &Path, decoded: &[Frame], frames: usize, size: usize) -> Result<Clip, DataError> {
    if decoded.len() < frames || decoded.is_empty() {
        return Err(DataError::TooFewFrames {
            path: path.to_owned(),
            found: decoded.len(),
            needed: frames.max(1),
        });
    }
    let first = (decoded[0].width, decoded[0].height);
    if let Some(other) = decoded
        .iter()
        .map(|f| (f.width, f.height))
        .find(|&s| s != first)
    {
        return Err(DataError::FrameSizeMismatch {
            path: path.to_owned(),
            first,
            other,
        });
    }
    let mut clip = Clip::black(frames, size, size);
    for f in 0..frames {
        let source = if frames > 1 {
            (f * (decoded.len() - 1) + (frames - 1) / 2) / (frames - 1)
        } else {
            0
        };
        let resized = crop_resize(&decoded[source], size);
        let len = size * size * 3;
        clip.pixels[f * len..(f + 1) * len].copy_from_slice(&resized);
    }
    Ok(clip)
}

/// Centre-crops `frame` to a square and resizes it to `size × size` RGB bytes.
fn crop_resize(frame: &Frame, size: usize) -> Vec<u8> {
    let side = frame.width.min(frame.height);
    let (x0, y0) = ((frame.width - side) / 2, (frame.height - side) / 2);
    let source =
        |x: usize, y: usize, c: usize| frame.rgb[((y0 + y) * frame.width + x0 + x) * 3 + c] as u32;
    let mut out = vec![0u8; size * size * 3];
    if side >= size {
        // Area average: each source pixel goes to the output pixel holding its centre.
        let mut sums = vec![0u32; size * size * 3];
        let mut counts = vec![0u32; size * size];
        let bin = |i: usize| ((2 * i + 1) * size / (2 * side)).min(size - 1);
        for y in 0..side {
            for x in 0..side {
                let o = bin(y) * size + bin(x);
                counts[o] += 1;
                for c in 0..3 {
                    sums[o * 3 + c] += source(x, y, c);
                }
            }
        }
        for (o, v) in out.iter_mut().enumerate() {
            let n = counts[o / 3];
            *v = ((sums[o] + n / 2) / n) as u8;
        }
    } else {
        // Nearest source pixel to each output pixel's centre.
        let near = |i: usize| ((2 * i + 1) * side / (2 * size)).min(side - 1);
        for y in 0..size {
            for x in 0..size {
                for c in 0..3 {
                    out[(y * size + x) * 3 + c] = source(near(x), near(y), c) as u8;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static COUNTER: AtomicUsize = AtomicUsize::new(0);
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let dir =
                std::env::temp_dir().join(format!("dit-data-folder-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Writes a `w × h` GIF whose frame `i` is filled with `colour(i)`.
    fn write_gif(path: &Path, w: u16, h: u16, frames: usize, colour: impl Fn(usize) -> [u8; 3]) {
        let mut file = File::create(path).unwrap();
        let mut encoder = gif::Encoder::new(&mut file, w, h, &[]).unwrap();
        for i in 0..frames {
            let mut rgba: Vec<u8> = (0..w as usize * h as usize)
                .flat_map(|_| {
                    let [r, g, b] = colour(i);
                    [r, g, b, 255]
                })
                .collect();
            encoder
                .write_frame(&gif::Frame::from_rgba_speed(w, h, &mut rgba, 10))
                .unwrap();
        }
    }

    /// Writes an RGB PNG filled with `rgb`.
    fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        let file = File::create(path).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let data: Vec<u8> = (0..w * h).flat_map(|_| rgb).collect();
        encoder
            .write_header()
            .unwrap()
            .write_image_data(&data)
            .unwrap();
    }

    fn grey(i: usize) -> [u8; 3] {
        [(i * 10) as u8; 3]
    }

    /// Two GIFs and one PNG-frame folder with their captions.
    fn sample_folder() -> TempDir {
        let tmp = TempDir::new();
        let dir = &tmp.0;
        write_gif(&dir.join("a.gif"), 40, 32, 16, grey);
        std::fs::create_dir(dir.join("clips")).unwrap();
        write_gif(&dir.join("clips/b.gif"), 16, 16, 8, |_| [200, 30, 60]);
        std::fs::create_dir(dir.join("frames")).unwrap();
        // Written out of order: reading must sort by file name.
        for i in [3, 0, 9, 1, 4, 8, 2, 5, 7, 6] {
            write_png(
                &dir.join(format!("frames/{i:03}.png")),
                64,
                48,
                [i as u8 * 20, 0, 255],
            );
        }
        let captions = [
            r#"{"video": "a.gif", "caption": "a grey square getting lighter"}"#,
            r#"{"video": "clips/b.gif", "caption": "a red square"}"#,
            "",
            r#"{"video": "frames", "caption": "a blue picture"}"#,
        ];
        std::fs::write(dir.join("captions.jsonl"), captions.join("\n")).unwrap();
        tmp
    }

    #[test]
    fn reads_gifs_and_png_folders() {
        let tmp = sample_folder();
        let folder = ClipFolder::open(&tmp.0, 4, 8).unwrap();
        assert_eq!(folder.len(), 3);
        let items: Vec<VideoItem> = (0..3).map(|i| folder.get(i).unwrap()).collect();
        for item in &items {
            assert_eq!(
                (item.clip.frames, item.clip.height, item.clip.width),
                (4, 8, 8)
            );
            assert_eq!(item.composition, None);
        }
        assert_eq!(items[0].caption, "a grey square getting lighter");
        // 16 GIF frames, 4 kept evenly: 0, 5, 10, 15 (rounded), grey levels 10 × index.
        let greys: Vec<u8> = (0..4).map(|f| items[0].clip.pixel(f, 3, 3)[0]).collect();
        assert_eq!(greys, vec![0, 50, 100, 150]);
        // The GIF encoder quantizes colours; allow a small error.
        let p = items[1].clip.pixel(2, 7, 0);
        assert!(
            p.iter()
                .zip([200, 30, 60])
                .all(|(&a, b)| (a as i32 - b).abs() <= 8),
            "{p:?}"
        );
        // PNG frames 0..=9 sorted by name, 4 kept: 0, 3, 6, 9.
        let reds: Vec<u8> = (0..4).map(|f| items[2].clip.pixel(f, 0, 0)[0]).collect();
        assert_eq!(reds, vec![0, 60, 120, 180]);
        assert_eq!(items[2].clip.pixel(1, 5, 5), [60, 0, 255]);
    }

    #[test]
    fn upscales_and_centre_crops() {
        let tmp = TempDir::new();
        // 12 × 6 frame: left half black, right half white; the centre crop (cols 3..9) is half each.
        let mut rgba = Vec::new();
        for _y in 0..6 {
            for x in 0..12 {
                let v = if x < 6 { 0 } else { 255 };
                rgba.extend_from_slice(&[v, v, v, 255]);
            }
        }
        let mut file = File::create(tmp.0.join("c.gif")).unwrap();
        let mut encoder = gif::Encoder::new(&mut file, 12, 6, &[]).unwrap();
        for _ in 0..2 {
            encoder
                .write_frame(&gif::Frame::from_rgba_speed(12, 6, &mut rgba.clone(), 10))
                .unwrap();
        }
        drop(encoder);
        std::fs::write(
            tmp.0.join("captions.jsonl"),
            r#"{"video": "c.gif", "caption": "x"}"#,
        )
        .unwrap();
        let folder = ClipFolder::open(&tmp.0, 2, 12).unwrap();
        let clip = &folder.items()[0].clip;
        let row: Vec<u8> = (0..12).map(|x| clip.pixel(1, 4, x)[0]).collect();
        assert_eq!(row, vec![0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255]);
    }

    fn open_err(tmp: &TempDir, frames: usize) -> String {
        ClipFolder::open(&tmp.0, frames, 8).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let tmp = TempDir::new();
        let err = open_err(&tmp, 4);
        assert!(
            err.contains("missing captions file") && err.contains("captions.jsonl"),
            "{err}"
        );

        let tmp = sample_folder();
        let captions = tmp.0.join("captions.jsonl");
        let good = std::fs::read_to_string(&captions).unwrap();
        std::fs::write(
            &captions,
            format!("{good}\n{{\"video\": \"a.gif\", \"caption\": }}\n"),
        )
        .unwrap();
        let err = open_err(&tmp, 4);
        assert!(
            err.contains("captions.jsonl:5") && err.contains("malformed JSON"),
            "{err}"
        );

        std::fs::write(tmp.0.join("notes.gif"), "this is text, not a picture").unwrap();
        std::fs::write(
            &captions,
            format!("{good}\n{{\"video\": \"notes.gif\", \"caption\": \"x\"}}"),
        )
        .unwrap();
        let err = open_err(&tmp, 4);
        assert!(
            err.contains("notes.gif") && err.contains("not a GIF"),
            "{err}"
        );

        std::fs::write(&captions, r#"{"video": "gone.gif", "caption": "x"}"#).unwrap();
        let err = open_err(&tmp, 4);
        assert!(
            err.contains("captions.jsonl:1") && err.contains("gone.gif"),
            "{err}"
        );

        std::fs::write(&captions, good).unwrap();
        let err = open_err(&tmp, 9);
        assert!(
            err.contains("b.gif has 8 frames") && err.contains("at least 9"),
            "{err}"
        );

        std::fs::write(&captions, "\n\n").unwrap();
        assert!(open_err(&tmp, 4).contains("lists no clips"));
    }
}
