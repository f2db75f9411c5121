//! Reading and writing clips: animated GIFs and folders of PNG frames (contact sheets with
//! their text are drawn by [`crate::figure`]).
//!
//! Reading ([`read_clip`]) takes an animated GIF file or a folder of PNG frames (in file-name
//! order), composites transparency over black, centre-crops each frame to a square, resizes
//! it to `size × size` (area average when shrinking, nearest pixel when growing) and keeps
//! `frames` evenly spaced frames. Every bad file is one [`DataError`] naming it.
//!
//! Writing ([`write_gif`], [`write_frames`], [`write_png`]) turns clips into
//! files, each pixel repeated `scale × scale` times; every file is written atomically, and
//! failures are an [`OutputError`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::png::{PngDecoder, PngEncoder};
use image::imageops::{self, FilterType};
use image::{
    AnimationDecoder, Delay, DynamicImage, ExtendedColorType, ImageDecoder, ImageEncoder,
    ImageError, ImageFormat, Limits, RgbImage, RgbaImage,
};

use dit_model::run::write_atomic;

mod mp4;

use crate::clip::Clip;
use crate::error::DataError;

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Largest width or height of a clip's frames that the readers decode.
pub const MAX_SIDE: u32 = 4096;
/// Most frames the readers take from one clip.
pub const MAX_FRAMES: usize = 10_000;
/// Largest clip file (a GIF, or one PNG frame) the readers open.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads the clip at `path` — an animated GIF or H.264 MP4 file, or a folder of PNG frames
/// taken in file-name order — as `frames` evenly spaced frames of `size × size`.
///
/// Files over [`MAX_FILE_BYTES`], canvases over [`MAX_SIDE`] a side and clips of more than
/// [`MAX_FRAMES`] frames are refused, from their headers, before anything is decoded; each
/// frame is cropped and resized as soon as it is decoded, so memory stays bounded by one
/// canvas plus [`MAX_FRAMES`] frames of `size × size`.
pub fn read_clip(path: &Path, frames: usize, size: usize) -> Result<Clip, DataError> {
    read_clip_sampled(path, frames, size, FrameSampling::Spread)
}

/// Which frames of a longer clip a reader keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameSampling {
    /// The wanted frames spread evenly from the clip's first frame to its last.
    #[default]
    Spread,
    /// Every `n`-th frame from the first: the clip keeps its own pace (its rate divided by
    /// `n`) and its start; the rest of a longer clip is left out.
    Stride(usize),
}

/// [`read_clip`], keeping the frames `sampling` says.
pub fn read_clip_sampled(
    path: &Path,
    frames: usize,
    size: usize,
    sampling: FrameSampling,
) -> Result<Clip, DataError> {
    if sampling == FrameSampling::Stride(0) {
        return Err(DataError::InvalidConfig {
            field: "frame_stride",
            reason: "must be positive".into(),
        });
    }
    let mut decoded = Decoded::new(path, clip_side(size)?, frames);
    decoded.sampling = sampling;
    if path.is_dir() {
        read_png_folder(path, &mut decoded)?;
    } else {
        read_clip_file(path, &mut decoded)?;
    }
    decoded.into_clip()
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |error| DataError::Io {
        path: path.to_owned(),
        error,
    }
}

fn decode_error(path: &Path) -> impl Fn(ImageError) -> DataError + '_ {
    move |e| match e {
        ImageError::IoError(error) => DataError::Io {
            path: path.to_owned(),
            error,
        },
        ImageError::Limits(_) => DataError::TooLarge {
            path: path.to_owned(),
            what: "decoding it".into(),
            limit: format!("{MAX_SIDE} pixels a side"),
        },
        e => DataError::Decode {
            path: path.to_owned(),
            reason: e.to_string(),
        },
    }
}

/// The decoders' own limits: no canvas over [`MAX_SIDE`], no allocation over one RGBA canvas
/// of that size.
fn limits() -> Limits {
    let mut limits = Limits::no_limits();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(u64::from(MAX_SIDE) * u64::from(MAX_SIDE) * 4);
    limits
}

/// Opens a clip file after checking its size.
fn open_limited(path: &Path) -> Result<BufReader<File>, DataError> {
    let file = File::open(path).map_err(io_error(path))?;
    check_file_size(path, file.metadata().map_err(io_error(path))?.len())?;
    Ok(BufReader::new(file))
}

/// Checks a clip file's size against [`MAX_FILE_BYTES`].
fn check_file_size(path: &Path, bytes: u64) -> Result<(), DataError> {
    if bytes > MAX_FILE_BYTES {
        return Err(DataError::TooLarge {
            path: path.to_owned(),
            what: format!("a file of {bytes} bytes"),
            limit: format!("{MAX_FILE_BYTES} bytes"),
        });
    }
    Ok(())
}

/// The side of the clips to read, checked.
fn clip_side(size: usize) -> Result<u32, DataError> {
    u32::try_from(size)
        .ok()
        .filter(|&s| s > 0 && s <= MAX_SIDE)
        .ok_or_else(|| DataError::InvalidConfig {
            field: "size",
            reason: format!("must be between 1 and {MAX_SIDE}, got {size}"),
        })
}

/// Checks a canvas size read from a file's header.
fn check_canvas(path: &Path, (width, height): (u32, u32)) -> Result<(), DataError> {
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(DataError::TooLarge {
            path: path.to_owned(),
            what: format!("a canvas of {width}×{height} pixels"),
            limit: format!("{MAX_SIDE} pixels a side"),
        });
    }
    Ok(())
}

/// The frames of one clip file, each cropped and resized to `side` as it arrives.
struct Decoded<'a> {
    path: &'a Path,
    side: u32,
    /// Frames the clip must have.
    needed: usize,
    /// Which of the decoded frames the clip keeps.
    sampling: FrameSampling,
    /// Width and height of the first frame, which every frame must share.
    first: Option<(u32, u32)>,
    frames: Vec<RgbImage>,
}

impl<'a> Decoded<'a> {
    fn new(path: &'a Path, side: u32, needed: usize) -> Self {
        Self {
            path,
            side,
            needed,
            sampling: FrameSampling::Spread,
            first: None,
            frames: Vec::new(),
        }
    }

    /// Checks the frame count before a frame is decoded.
    fn make_room(&self) -> Result<(), DataError> {
        if self.frames.len() >= MAX_FRAMES {
            return Err(DataError::TooLarge {
                path: self.path.to_owned(),
                what: format!("a clip of more than {MAX_FRAMES} frames"),
                limit: format!("{MAX_FRAMES} frames"),
            });
        }
        Ok(())
    }

    fn push(&mut self, frame: RgbImage) -> Result<(), DataError> {
        self.make_room()?;
        let dims = frame.dimensions();
        let first = *self.first.get_or_insert(dims);
        if dims != first {
            let size = |(w, h): (u32, u32)| (w as usize, h as usize);
            return Err(DataError::FrameSizeMismatch {
                path: self.path.to_owned(),
                first: size(first),
                other: size(dims),
            });
        }
        self.frames.push(crop_resize(&frame, self.side));
        Ok(())
    }

    /// Keeps `frames` evenly spaced frames.
    fn into_clip(self) -> Result<Clip, DataError> {
        let frames = self.needed;
        let found = self.frames.len();
        let span = match self.sampling {
            FrameSampling::Spread => frames,
            FrameSampling::Stride(n) => frames.saturating_sub(1).saturating_mul(n) + 1,
        };
        if found < span || found == 0 {
            return Err(DataError::TooFewFrames {
                path: self.path.to_owned(),
                found,
                needed: span.max(1),
            });
        }
        let size = self.side as usize;
        let mut clip = Clip::black(frames, size, size);
        let len = size * size * 3;
        for f in 0..frames {
            let source = match self.sampling {
                FrameSampling::Stride(n) => f * n,
                FrameSampling::Spread if frames > 1 => {
                    (f * (found - 1) + (frames - 1) / 2) / (frames - 1)
                }
                FrameSampling::Spread => 0,
            };
            clip.pixels[f * len..(f + 1) * len].copy_from_slice(self.frames[source].as_raw());
        }
        Ok(clip)
    }
}

/// The first 16 bytes of a file (fewer if it is shorter), the reader rewound to its start.
fn read_magic(reader: &mut (impl Read + Seek), path: &Path) -> Result<Vec<u8>, DataError> {
    let mut magic = Vec::with_capacity(16);
    reader
        .take(16)
        .read_to_end(&mut magic)
        .and_then(|_| reader.rewind())
        .map_err(io_error(path))?;
    Ok(magic)
}

/// Decodes a clip file frame by frame: an animated GIF or an H.264 MP4, told apart by their
/// content, not their name.
fn read_clip_file(path: &Path, decoded: &mut Decoded<'_>) -> Result<(), DataError> {
    let mut reader = open_limited(path)?;
    let bytes = reader.get_ref().metadata().map_err(io_error(path))?.len();
    let magic = read_magic(&mut reader, path)?;
    if mp4::is_mp4(&magic) {
        mp4::decode(reader, bytes, decoded)
    } else {
        decode_gif(reader, decoded)
    }
}

/// Decodes an animated GIF frame by frame (frame offsets and disposal applied by `image`'s
/// GIF decoder), transparency shown as black.
fn decode_gif(mut reader: impl BufRead + Seek, decoded: &mut Decoded<'_>) -> Result<(), DataError> {
    let path = decoded.path;
    let magic = read_magic(&mut reader, path)?;
    if image::guess_format(&magic).ok() != Some(ImageFormat::Gif) {
        return Err(DataError::NotGif {
            path: path.to_owned(),
        });
    }
    let mut decoder = GifDecoder::new(reader).map_err(decode_error(path))?;
    check_canvas(path, decoder.dimensions())?;
    decoder.set_limits(limits()).map_err(decode_error(path))?;
    let mut frames = decoder.into_frames();
    loop {
        decoded.make_room()?;
        match frames.next() {
            None => return Ok(()),
            Some(frame) => {
                let frame = frame.map_err(decode_error(path))?;
                decoded.push(rgba_over_black(frame.buffer()))?;
            }
        }
    }
}

/// Reads an animated GIF held in memory as [`read_clip`] reads a GIF file, with the same
/// limits; `name` stands for the file in errors. (What the fuzz target of the GIF reader
/// calls.)
pub fn gif_from_bytes(
    bytes: &[u8],
    name: &Path,
    frames: usize,
    size: usize,
) -> Result<Clip, DataError> {
    clip_from_bytes(bytes, name, frames, size, decode_gif)
}

/// Reads an H.264 MP4 file held in memory as [`read_clip`] reads an MP4 file, with the same
/// limits; `name` stands for the file in errors. (What the fuzz target of the MP4 reader
/// calls.)
pub fn mp4_from_bytes(
    bytes: &[u8],
    name: &Path,
    frames: usize,
    size: usize,
) -> Result<Clip, DataError> {
    let len = bytes.len() as u64;
    clip_from_bytes(bytes, name, frames, size, |reader, decoded| {
        mp4::decode(reader, len, decoded)
    })
}

/// Reads a clip file held in memory with `decode`, with the limits of [`read_clip`].
fn clip_from_bytes<'a>(
    bytes: &'a [u8],
    name: &Path,
    frames: usize,
    size: usize,
    decode: impl FnOnce(std::io::Cursor<&'a [u8]>, &mut Decoded<'_>) -> Result<(), DataError>,
) -> Result<Clip, DataError> {
    let mut decoded = Decoded::new(name, clip_side(size)?, frames);
    check_file_size(name, bytes.len() as u64)?;
    decode(std::io::Cursor::new(bytes), &mut decoded)?;
    decoded.into_clip()
}

/// Reads one PNG frame held in memory as [`read_clip`] reads each frame of a folder, with
/// the same limits; `name` stands for the file in errors. (What the fuzz target of the PNG
/// reader calls.)
pub fn png_from_bytes(bytes: &[u8], name: &Path, size: usize) -> Result<Clip, DataError> {
    let mut decoded = Decoded::new(name, clip_side(size)?, 1);
    check_file_size(name, bytes.len() as u64)?;
    decoded.push(decode_png(std::io::Cursor::new(bytes), name)?)?;
    decoded.into_clip()
}

/// RGBA pixels composited over black, as RGB.
fn rgba_over_black(rgba: &RgbaImage) -> RgbImage {
    let (width, height) = rgba.dimensions();
    let rgb = rgba
        .as_raw()
        .chunks_exact(4)
        .flat_map(|p| {
            let a = p[3] as u32;
            [0, 1, 2].map(|c| ((p[c] as u32 * a + 127) / 255) as u8)
        })
        .collect();
    RgbImage::from_raw(width, height, rgb).expect("3 bytes for each RGBA pixel")
}

/// Reads the `.png` files of a folder in file-name order.
fn read_png_folder(dir: &Path, decoded: &mut Decoded<'_>) -> Result<(), DataError> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        {
            if paths.len() == MAX_FRAMES {
                return Err(DataError::TooLarge {
                    path: dir.to_owned(),
                    what: format!("a folder of more than {MAX_FRAMES} frames"),
                    limit: format!("{MAX_FRAMES} frames"),
                });
            }
            paths.push(path);
        }
    }
    if paths.is_empty() {
        return Err(DataError::NoFrames {
            path: dir.to_owned(),
        });
    }
    if paths.len() < decoded.needed {
        return Err(DataError::TooFewFrames {
            path: dir.to_owned(),
            found: paths.len(),
            needed: decoded.needed,
        });
    }
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    for path in &paths {
        decoded.push(read_png(path)?)?;
    }
    Ok(())
}

/// Decodes one PNG file.
fn read_png(path: &Path) -> Result<RgbImage, DataError> {
    decode_png(open_limited(path)?, path)
}

/// Decodes one PNG of any colour type and bit depth into 8-bit RGB (alpha over black).
fn decode_png(reader: impl BufRead + Seek, path: &Path) -> Result<RgbImage, DataError> {
    let mut decoder = PngDecoder::new(reader).map_err(decode_error(path))?;
    check_canvas(path, decoder.dimensions())?;
    decoder.set_limits(limits()).map_err(decode_error(path))?;
    let image = DynamicImage::from_decoder(decoder).map_err(decode_error(path))?;
    Ok(if image.color().has_alpha() {
        rgba_over_black(&image.to_rgba8())
    } else {
        image.to_rgb8()
    })
}

/// Centre-crops `frame` to a square and resizes it to `size × size`: an area average when
/// shrinking (each source pixel counts towards exactly one output pixel), the nearest source
/// pixel when growing (every pixel stays a colour of the source).
fn crop_resize(frame: &RgbImage, size: u32) -> RgbImage {
    let (width, height) = frame.dimensions();
    let side = width.min(height);
    let square = imageops::crop_imm(frame, (width - side) / 2, (height - side) / 2, side, side);
    if side >= size {
        imageops::thumbnail(&*square, size, size)
    } else {
        imageops::resize(&*square, size, size, FilterType::Nearest)
    }
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

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

/// One frame as RGB bytes, each pixel repeated `scale×scale` times.
pub(crate) fn frame_rgb(clip: &Clip, frame: usize, scale: usize) -> Vec<u8> {
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
    let bytes = encode_gif(clip, scale, delay_cs).map_err(|e| error(path, e))?;
    write_atomic(path, &bytes).map_err(|e| error(path, e))
}

/// An endlessly looping animated GIF of the clip, in memory, `delay_cs` hundredths of a
/// second a frame, each pixel repeated `scale×scale` times.
pub fn encode_gif(clip: &Clip, scale: usize, delay_cs: u16) -> Result<Vec<u8>, String> {
    if clip.frames == 0 {
        return Err("a GIF needs at least one frame".into());
    }
    let (w, h) = (clip.width * scale, clip.height * scale);
    let (Ok(w32), Ok(h32)) = (u32::try_from(w), u32::try_from(h)) else {
        return Err(format!("{w}x{h} is too large for a GIF"));
    };
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(&mut bytes, 10);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| e.to_string())?;
        let delay = Delay::from_numer_denom_ms(u32::from(delay_cs) * 10, 1);
        for f in 0..clip.frames {
            let rgba: Vec<u8> = frame_rgb(clip, f, scale)
                .chunks_exact(3)
                .flat_map(|p| [p[0], p[1], p[2], 255])
                .collect();
            let buffer = RgbaImage::from_raw(w32, h32, rgba).expect("4 bytes a pixel");
            encoder
                .encode_frame(image::Frame::from_parts(buffer, 0, 0, delay))
                .map_err(|e| e.to_string())?;
        }
        // Dropping the encoder writes the GIF trailer.
    }
    Ok(bytes)
}

/// Writes an RGB image as PNG.
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<(), OutputError> {
    let bytes = encode_png(width, height, rgb).map_err(|e| error(path, e))?;
    write_atomic(path, &bytes).map_err(|e| error(path, e))
}

/// An RGB image as the bytes of a PNG file.
pub fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Result<Vec<u8>, String> {
    if width * height * 3 != rgb.len() {
        return Err(format!(
            "{} bytes are not a {width}x{height} RGB image ({} bytes)",
            rgb.len(),
            width * height * 3
        ));
    }
    let (Ok(w), Ok(h)) = (u32::try_from(width), u32::try_from(height)) else {
        return Err(format!("{width}x{height} is too large for a PNG"));
    };
    let mut bytes = Vec::new();
    PngEncoder::new(&mut bytes)
        .write_image(rgb, w, h, ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// What a clip is written as, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipFormat {
    /// `.gif`: an endlessly looping animated GIF.
    Gif,
    /// `.png`: the frames side by side in one picture.
    Png,
    /// `.mp4`: H.264 video in an MP4 container.
    Mp4,
}

impl ClipFormat {
    /// The format a path's extension names; any other extension is an error.
    pub fn of_path(path: &Path) -> Result<Self, OutputError> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default()
            .to_ascii_lowercase();
        extension.parse().map_err(|e| error(path, e))
    }

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            ClipFormat::Gif => "gif",
            ClipFormat::Png => "png",
            ClipFormat::Mp4 => "mp4",
        }
    }
}

impl std::str::FromStr for ClipFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gif" => Ok(ClipFormat::Gif),
            "png" => Ok(ClipFormat::Png),
            "mp4" => Ok(ClipFormat::Mp4),
            "" => Err("the file name has no extension: use .gif, .mp4 or .png".into()),
            other => Err(format!(
                "unknown clip format `{other}`: use gif, mp4 or png"
            )),
        }
    }
}

/// Frames shown a second in written clips, unless asked otherwise: the rate the GIFs of this
/// project have always played at.
pub const FRAMES_PER_SECOND: u16 = 8;

/// Writes an MP4 file of H.264 video (see [`encode_mp4`]).
pub fn write_mp4(clip: &Clip, path: &Path, scale: usize, fps: u16) -> Result<(), OutputError> {
    let bytes = encode_mp4(clip, scale, fps).map_err(|e| error(path, e))?;
    write_atomic(path, &bytes).map_err(|e| error(path, e))
}

/// An MP4 file of H.264 video (OpenH264, Constrained Baseline) in memory, `fps` frames a
/// second. Odd sides are padded by repeating the last row or column (H.264 stores colour at
/// half resolution).
pub fn encode_mp4(clip: &Clip, scale: usize, fps: u16) -> Result<Vec<u8>, String> {
    if clip.frames == 0 {
        return Err("an MP4 needs at least one frame".into());
    }
    if !(1..=120).contains(&fps) {
        return Err(format!("{fps} frames a second is not in 1..=120"));
    }
    let (w, h) = (clip.width * scale, clip.height * scale);
    let (even_w, even_h) = (w + w % 2, h + h % 2);
    if even_w > MAX_SIDE as usize || even_h > MAX_SIDE as usize {
        return Err(format!("{w}x{h} is too large for this MP4 writer"));
    }
    let frames: Vec<Vec<u8>> = (0..clip.frames)
        .map(|f| {
            let rgb = frame_rgb(clip, f, scale);
            let mut padded = Vec::with_capacity(even_w * even_h * 3);
            for y in 0..even_h {
                let row = &rgb[y.min(h - 1) * w * 3..(y.min(h - 1) + 1) * w * 3];
                padded.extend_from_slice(row);
                if even_w > w {
                    padded.extend_from_slice(&row[(w - 1) * 3..]);
                }
            }
            padded
        })
        .collect();
    mp4::encode(&frames, even_w, even_h, u32::from(fps))
}

/// Writes a clip in the format its path's extension names ([`ClipFormat`]), atomically,
/// `fps` frames a second (GIF and MP4).
pub fn write_clip(clip: &Clip, path: &Path, scale: usize, fps: u16) -> Result<(), OutputError> {
    let bytes =
        encode_clip(clip, ClipFormat::of_path(path)?, scale, fps).map_err(|e| error(path, e))?;
    write_atomic(path, &bytes).map_err(|e| error(path, e))
}

/// A clip as the bytes of a `format` file, `fps` frames a second (GIF and MP4), each pixel
/// repeated `scale×scale` times.
pub fn encode_clip(
    clip: &Clip,
    format: ClipFormat,
    scale: usize,
    fps: u16,
) -> Result<Vec<u8>, String> {
    match format {
        ClipFormat::Gif => encode_gif(clip, scale, 100 / fps.clamp(1, 100)),
        ClipFormat::Mp4 => encode_mp4(clip, scale, fps),
        ClipFormat::Png => {
            let (width, height, rgb) = sheet_rgb(std::slice::from_ref(clip), scale);
            encode_png(width, height, &rgb)
        }
    }
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
pub(crate) fn sheet_rgb(clips: &[Clip], scale: usize) -> (usize, usize, Vec<u8>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A Moving Shapes clip of `caption`'s composition, and the composition.
    fn shapes_clip(caption: &str) -> (Clip, crate::Composition) {
        let composition = crate::Composition::parse_caption(caption).unwrap();
        let config = crate::MovingShapesConfig::new();
        let item = crate::MovingShapes::clip_for(
            &config,
            composition,
            3,
            0,
            crate::CaptionMode::Canonical,
        );
        (item.clip, composition)
    }

    #[test]
    fn mp4_round_trip_keeps_frames_size_and_content() {
        let dir = tempfile::tempdir().unwrap();
        for (scale, caption) in [
            (2, "a red circle moving right"),
            (4, "a cyan square moving up"),
        ] {
            let (clip, composition) = shapes_clip(caption);
            let path = dir.path().join(format!("clip-{scale}.mp4"));
            write_mp4(&clip, &path, scale, FRAMES_PER_SECOND).unwrap();
            let back = read_clip(&path, clip.frames, clip.width).unwrap();
            assert_eq!(
                (back.frames, back.height, back.width),
                (clip.frames, clip.height, clip.width)
            );
            let psnr = crate::psnr(std::slice::from_ref(&clip), std::slice::from_ref(&back));
            assert!(psnr >= 30.0, "scale {scale}: PSNR {psnr:.1} dB");
            assert!(crate::judge_clip(&back).matches(&composition).all());
        }
    }

    #[test]
    fn a_stride_keeps_the_clips_own_pace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ramp.gif");
        // Frame i is grey level 10·i.
        write_gif(&filled(16, 8, 8, |i| [(i * 10) as u8; 3]), &path, 1, 10).unwrap();
        let level = |clip: &Clip, f: usize| clip.pixel(f, 4, 4)[0];
        let clip = read_clip_sampled(&path, 4, 8, FrameSampling::Stride(3)).unwrap();
        assert_eq!(
            (0..4).map(|f| level(&clip, f)).collect::<Vec<_>>(),
            [0, 30, 60, 90]
        );
        let spread = read_clip(&path, 4, 8).unwrap();
        assert_eq!(
            (0..4).map(|f| level(&spread, f)).collect::<Vec<_>>(),
            [0, 50, 100, 150]
        );
        let err = read_clip_sampled(&path, 4, 8, FrameSampling::Stride(6)).unwrap_err();
        assert!(
            err.to_string()
                .contains("has 16 frames, the clips need at least 19"),
            "{err}"
        );
        assert!(read_clip_sampled(&path, 4, 8, FrameSampling::Stride(0)).is_err());
    }

    #[test]
    fn odd_sides_are_padded_for_h264() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.mp4");
        let clip = filled(3, 17, 23, |f| [40 * f as u8, 200, 90]);
        write_mp4(&clip, &path, 1, 8).unwrap();
        // Read back at the padded size's square crop: 24×18 → the centred 18×18.
        let back = read_clip(&path, 3, 18).unwrap();
        assert_eq!(back.frames, 3);
        let [r, g, b] = back.pixel(2, 3, 3);
        assert!(r.abs_diff(80) < 8 && g.abs_diff(200) < 8 && b.abs_diff(90) < 8);
    }

    #[test]
    fn bad_mp4_files_are_one_line_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (clip, _) = shapes_clip("a red circle moving right");
        let good = dir.path().join("good.mp4");
        write_mp4(&clip, &good, 1, 8).unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let truncated = dir.path().join("truncated.mp4");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_err(&truncated, 2);
        assert!(
            err.contains("truncated.mp4") && !err.contains('\n'),
            "{err}"
        );
        // Asking for more frames than the clip has.
        let err = read_err(&good, 9);
        assert!(
            err.contains("has 8 frames, the clips need at least 9"),
            "{err}"
        );
        // An MP4 box of random bytes after a valid file type box.
        let junk = dir.path().join("junk.mp4");
        let mut noise = bytes[..32].to_vec();
        noise.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        std::fs::write(&junk, noise).unwrap();
        let err = read_err(&junk, 2);
        assert!(err.contains("junk.mp4"), "{err}");
    }

    use image::codecs::png::PngEncoder;

    fn clip() -> Clip {
        let mut c = Clip::black(3, 4, 5);
        c.set_pixel(1, 2, 3, [200, 10, 20]);
        c
    }

    /// A `frames`-frame clip, `h` rows of `w` columns, frame `i` filled with `colour(i)`.
    fn filled(frames: usize, h: usize, w: usize, colour: impl Fn(usize) -> [u8; 3]) -> Clip {
        let mut clip = Clip::black(frames, h, w);
        for (f, frame) in clip.pixels.chunks_exact_mut(h * w * 3).enumerate() {
            for p in frame.chunks_exact_mut(3) {
                p.copy_from_slice(&colour(f));
            }
        }
        clip
    }

    /// Writes `pixels` (in `colour`'s layout) as a PNG through `image`'s encoder.
    fn write_png_as(path: &Path, w: u32, h: u32, pixels: &[u8], colour: ExtendedColorType) {
        PngEncoder::new(File::create(path).unwrap())
            .write_image(pixels, w, h, colour)
            .unwrap();
    }

    // ---- writing ------------------------------------------------------------------------

    #[test]
    fn gif_has_the_clip_frames_and_size() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("out.gif");
        write_gif(&clip(), &path, 2, 12).unwrap();
        let decoder = GifDecoder::new(BufReader::new(File::open(&path).unwrap())).unwrap();
        let frames = decoder.into_frames().collect_frames().unwrap();
        assert_eq!(frames.len(), 3);
        for frame in &frames {
            assert_eq!(frame.buffer().dimensions(), (10, 8));
            assert_eq!(frame.delay().numer_denom_ms(), (120, 1));
        }
        // Pixel (row 2, col 3) scaled by 2.
        let px = frames[1].buffer().get_pixel(3 * 2, 2 * 2);
        assert!(px[0] > 150 && px[1] < 60, "{px:?}");
        // And the reader gets the clip back.
        let back = read_clip(&path, 3, 8).unwrap();
        assert_eq!(back.pixel(1, 4, 6), [200, 10, 20]);
        assert_eq!(back.pixel(0, 4, 6), [0, 0, 0]);
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
    fn frames_are_pngs_read_back_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("frames");
        write_frames(&clip(), &dir, 1).unwrap();
        let names: Vec<String> = {
            let mut n: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names, ["frame_000.png", "frame_001.png", "frame_002.png"]);
        // 5 × 4 frames crop to 4 × 4 (columns 0..4), so pixel (2, 3) survives.
        let back = read_clip(&dir, 3, 4).unwrap();
        assert_eq!(back.pixel(1, 2, 3), [200, 10, 20]);
        assert_eq!(back.pixels.iter().map(|&v| v as u32).sum::<u32>(), 230);
    }

    #[test]
    fn unwritable_path_is_an_error_naming_it() {
        let err = write_gif(&clip(), Path::new("/nonexistent-dir/x.gif"), 1, 10).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.gif"), "{err}");
        let err = write_png(Path::new("/nonexistent-dir/x.png"), 1, 1, &[0; 3]).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.png"), "{err}");
    }

    #[test]
    fn png_of_the_wrong_length_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("x.png");
        let err = write_png(&path, 2, 2, &[0; 11]).unwrap_err().to_string();
        assert!(err.contains("x.png") && err.contains("2x2"), "{err}");
    }

    // ---- reading ------------------------------------------------------------------------

    #[test]
    fn upscales_and_centre_crops() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.gif");
        // 12 × 6 frame: left half black, right half white; the centre crop (cols 3..9) is half each.
        let mut clip = Clip::black(2, 6, 12);
        for f in 0..2 {
            for y in 0..6 {
                for x in 6..12 {
                    clip.set_pixel(f, y, x, [255; 3]);
                }
            }
        }
        write_gif(&clip, &path, 1, 10).unwrap();
        let clip = read_clip(&path, 2, 12).unwrap();
        let row: Vec<u8> = (0..12).map(|x| clip.pixel(1, 4, x)[0]).collect();
        assert_eq!(row, vec![0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255]);
    }

    #[test]
    fn shrinking_averages_areas() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("frames");
        std::fs::create_dir(&dir).unwrap();
        // 4 × 4 checkerboard of 0 / 200, a white 2 × 2 block at the bottom right.
        let mut rgb = Vec::new();
        for y in 0..4 {
            for x in 0..4 {
                let v = if x >= 2 && y >= 2 {
                    255
                } else if (x + y) % 2 == 0 {
                    200
                } else {
                    0
                };
                rgb.extend_from_slice(&[v, v, v]);
            }
        }
        write_png(&dir.join("0.png"), 4, 4, &rgb).unwrap();
        let clip = read_clip(&dir, 1, 2).unwrap();
        let greys: Vec<u8> = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .map(|(y, x)| clip.pixel(0, y, x)[0])
            .to_vec();
        assert_eq!(greys, vec![100, 100, 100, 255]);
    }

    #[test]
    fn gif_frames_are_composited_with_offsets_and_disposal() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("layers.gif");
        {
            let mut file = File::create(&path).unwrap();
            let mut encoder = gif::Encoder::new(&mut file, 4, 4, &[]).unwrap();
            let mut frame = |w: u16, h: u16, at: (u16, u16), rgba: [u8; 4], dispose| {
                let mut pixels: Vec<u8> = (0..w * h).flat_map(|_| rgba).collect();
                let mut frame = gif::Frame::from_rgba_speed(w, h, &mut pixels, 10);
                (frame.left, frame.top, frame.dispose) = (at.0, at.1, dispose);
                encoder.write_frame(&frame).unwrap();
            };
            // Red everywhere, kept.
            frame(4, 4, (0, 0), [255, 0, 0, 255], gif::DisposalMethod::Keep);
            // Green 2 × 2 at (1, 1), then cleared to the (transparent) background.
            frame(
                2,
                2,
                (1, 1),
                [0, 255, 0, 255],
                gif::DisposalMethod::Background,
            );
            // Blue 1 × 1 at (3, 0), kept.
            frame(1, 1, (3, 0), [0, 0, 255, 255], gif::DisposalMethod::Keep);
        }
        // Read at the canvas size, so that resizing leaves the frames as decoded.
        let mut decoded = Decoded::new(&path, 4, 3);
        read_clip_file(&path, &mut decoded).unwrap();
        let frames = decoded.frames;
        assert_eq!(frames.len(), 3);
        let at = |f: usize, x: u32, y: u32| frames[f].get_pixel(x, y).0;
        assert!(frames.iter().all(|f| f.dimensions() == (4, 4)));
        assert_eq!(at(0, 2, 2), [255, 0, 0]);
        assert_eq!(
            (at(1, 0, 0), at(1, 1, 1), at(1, 2, 2)),
            ([255, 0, 0], [0, 255, 0], [0, 255, 0])
        );
        assert_eq!(at(1, 3, 3), [255, 0, 0]);
        // Frame 1's area was disposed to transparent, shown black; the rest stays red.
        assert_eq!((at(2, 1, 1), at(2, 2, 2)), ([0, 0, 0], [0, 0, 0]));
        assert_eq!(
            (at(2, 3, 0), at(2, 0, 0), at(2, 3, 3)),
            ([0, 0, 255], [255, 0, 0], [255, 0, 0])
        );
    }

    #[test]
    fn pngs_of_any_colour_type_and_depth_read_as_rgb() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("frames");
        std::fs::create_dir(&dir).unwrap();
        let (w, h) = (2u32, 2u32);
        let n = (w * h) as usize;
        let repeat =
            |px: &[u8]| -> Vec<u8> { px.iter().copied().cycle().take(px.len() * n).collect() };
        // Grey, grey + alpha (half transparent), 16-bit RGB, 16-bit RGBA, 8-bit RGBA.
        write_png_as(
            &dir.join("0.png"),
            w,
            h,
            &repeat(&[90]),
            ExtendedColorType::L8,
        );
        write_png_as(
            &dir.join("1.png"),
            w,
            h,
            &repeat(&[200, 128]),
            ExtendedColorType::La8,
        );
        let rgb16: Vec<u8> = [0x1234u16, 0xff00, 0x0080]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        write_png_as(
            &dir.join("2.png"),
            w,
            h,
            &repeat(&rgb16),
            ExtendedColorType::Rgb16,
        );
        let rgba16: Vec<u8> = [0xffffu16, 0, 0, 0]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        write_png_as(
            &dir.join("3.png"),
            w,
            h,
            &repeat(&rgba16),
            ExtendedColorType::Rgba16,
        );
        write_png_as(
            &dir.join("4.png"),
            w,
            h,
            &repeat(&[10, 20, 30, 255]),
            ExtendedColorType::Rgba8,
        );
        let clip = read_clip(&dir, 5, 2).unwrap();
        assert_eq!(clip.pixel(0, 1, 1), [90, 90, 90]);
        assert_eq!(clip.pixel(1, 0, 0), [100, 100, 100]);
        assert_eq!(clip.pixel(2, 0, 1), [0x12, 0xfe, 0x00]);
        assert_eq!(clip.pixel(3, 1, 0), [0, 0, 0]);
        assert_eq!(clip.pixel(4, 1, 1), [10, 20, 30]);
    }

    #[test]
    fn evenly_spaced_frames_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a.gif");
        write_gif(&filled(16, 32, 40, |i| [(i * 10) as u8; 3]), &path, 1, 10).unwrap();
        let clip = read_clip(&path, 4, 8).unwrap();
        assert_eq!((clip.frames, clip.height, clip.width), (4, 8, 8));
        let greys: Vec<u8> = (0..4).map(|f| clip.pixel(f, 3, 3)[0]).collect();
        assert_eq!(greys, vec![0, 50, 100, 150]);
        let one = read_clip(&path, 1, 8).unwrap();
        assert_eq!(one.pixel(0, 0, 0), [0, 0, 0]);
    }

    fn read_err(path: &Path, frames: usize) -> String {
        read_clip(path, frames, 8).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_are_one_line_errors_naming_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let one_line = |e: String| {
            assert!(!e.contains('\n'), "{e}");
            e
        };

        std::fs::write(dir.join("notes.gif"), "this is text, not a picture").unwrap();
        let err = one_line(read_err(&dir.join("notes.gif"), 4));
        assert!(
            err.contains("notes.gif") && err.contains("not a GIF"),
            "{err}"
        );

        std::fs::write(dir.join("tiny.gif"), "GI").unwrap();
        let err = one_line(read_err(&dir.join("tiny.gif"), 4));
        assert!(
            err.contains("tiny.gif") && err.contains("not a GIF"),
            "{err}"
        );

        std::fs::write(dir.join("cut.gif"), b"GIF89a\x04\x00").unwrap();
        let err = one_line(read_err(&dir.join("cut.gif"), 4));
        assert!(err.contains("cut.gif"), "{err}");

        let err = one_line(read_err(&dir.join("gone.gif"), 4));
        assert!(
            err.contains("cannot read") && err.contains("gone.gif"),
            "{err}"
        );

        std::fs::create_dir(dir.join("empty")).unwrap();
        let err = one_line(read_err(&dir.join("empty"), 4));
        assert!(
            err.contains("empty") && err.contains("no .png files"),
            "{err}"
        );

        std::fs::create_dir(dir.join("broken")).unwrap();
        std::fs::write(dir.join("broken/0.png"), "not a png").unwrap();
        let err = one_line(read_err(&dir.join("broken"), 1));
        assert!(
            err.contains("cannot decode") && err.contains("0.png"),
            "{err}"
        );

        std::fs::create_dir(dir.join("sizes")).unwrap();
        write_png(&dir.join("sizes/0.png"), 4, 4, &[0; 48]).unwrap();
        write_png(&dir.join("sizes/1.png"), 4, 2, &[0; 24]).unwrap();
        let err = one_line(read_err(&dir.join("sizes"), 2));
        assert!(
            err.contains("sizes") && err.contains("(4, 4) then (4, 2)"),
            "{err}"
        );

        let err = one_line(read_err(&dir.join("sizes"), 3));
        assert!(
            err.contains("sizes has 2 frames") && err.contains("at least 3"),
            "{err}"
        );
    }
}
