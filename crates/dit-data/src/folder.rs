//! A folder of captioned clips: `captions.jsonl` naming MP4 files, animated GIFs or PNG-frame
//! folders.
//!
//! Each line of `dir/captions.jsonl` is `{"video": "relative/path", "caption": "..."}`. A
//! video is an H.264 MP4 file, an animated GIF file or a folder of PNG frames (taken in
//! file-name order), read by [`crate::video::read_clip_sampled`]: centre-cropped to a square,
//! resized to `size × size`, and `frames` frames kept as the [`FrameSampling`] says.
//! Everything is loaded at [`ClipFolder::open`], so every
//! error surfaces there, by name; nothing is skipped.

use std::path::{Path, PathBuf};

use burn::data::dataset::{Dataset, DatasetError};
use serde::Deserialize;

use crate::error::DataError;
use crate::moving_shapes::VideoItem;
use crate::video::{FrameSampling, read_clip_sampled};

/// One line of `captions.jsonl`.
#[derive(Debug, Deserialize)]
struct Entry {
    video: String,
    caption: String,
}

/// Captioned clips read from a folder, all in memory.
#[derive(Debug, Clone)]
pub struct ClipFolder {
    /// The folder, for error messages.
    dir: PathBuf,
    items: Vec<VideoItem>,
}

impl ClipFolder {
    /// Reads every clip listed in `dir/captions.jsonl` as `frames` frames of `size × size`,
    /// chosen by `sampling`.
    pub fn open(
        dir: impl AsRef<Path>,
        frames: usize,
        size: usize,
        sampling: FrameSampling,
    ) -> Result<Self, DataError> {
        let dir = dir.as_ref();
        let captions = dir.join("captions.jsonl");
        if !captions.is_file() {
            return Err(DataError::MissingCaptions { path: captions });
        }
        let text = std::fs::read_to_string(&captions).map_err(|error| DataError::Io {
            path: captions.clone(),
            error,
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
                    captions,
                    line: n + 1,
                    path,
                });
            }
            let clip = read_clip_sampled(&path, frames, size, sampling)?;
            items.push(VideoItem {
                clip,
                caption: entry.caption,
                composition: None,
            });
        }
        if items.is_empty() {
            return Err(DataError::NoClips { path: captions });
        }
        Ok(Self {
            dir: dir.to_owned(),
            items,
        })
    }

    /// The clips, in file order.
    pub fn items(&self) -> &[VideoItem] {
        &self.items
    }
}

impl Dataset<VideoItem> for ClipFolder {
    fn get(&self, index: usize) -> Result<VideoItem, DatasetError> {
        self.items.get(index).cloned().ok_or_else(|| {
            DatasetError::new(DataError::IndexOutOfRange {
                dataset: format!("clip folder {}", self.dir.display()),
                index,
                len: self.items.len(),
            })
        })
    }

    fn len(&self) -> usize {
        self.items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::Clip;
    use crate::video::{write_gif, write_png};
    use tempfile::TempDir;

    /// Writes a `w × h` GIF whose frame `i` is filled with `colour(i)`.
    fn gif_of(path: &Path, w: usize, h: usize, frames: usize, colour: impl Fn(usize) -> [u8; 3]) {
        let mut clip = Clip::black(frames, h, w);
        for (i, frame) in clip.pixels.chunks_exact_mut(w * h * 3).enumerate() {
            for p in frame.chunks_exact_mut(3) {
                p.copy_from_slice(&colour(i));
            }
        }
        write_gif(&clip, path, 1, 10).unwrap();
    }

    /// Writes an RGB PNG filled with `rgb`.
    fn png_of(path: &Path, w: usize, h: usize, rgb: [u8; 3]) {
        let data: Vec<u8> = (0..w * h).flat_map(|_| rgb).collect();
        write_png(path, w, h, &data).unwrap();
    }

    fn grey(i: usize) -> [u8; 3] {
        [(i * 10) as u8; 3]
    }

    /// Two GIFs and one PNG-frame folder with their captions.
    fn sample_folder() -> TempDir {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path();
        gif_of(&dir.join("a.gif"), 40, 32, 16, grey);
        std::fs::create_dir(dir.join("clips")).unwrap();
        gif_of(&dir.join("clips/b.gif"), 16, 16, 8, |_| [200, 30, 60]);
        std::fs::create_dir(dir.join("frames")).unwrap();
        // Written out of order: reading must sort by file name.
        for i in [3, 0, 9, 1, 4, 8, 2, 5, 7, 6] {
            png_of(
                &dir.join(format!("frames/{i:03}.png")),
                64,
                48,
                [i * 20, 0, 255],
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
        let folder = ClipFolder::open(tmp.path(), 4, 8, FrameSampling::Spread).unwrap();
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
    fn index_past_the_end_is_an_error() {
        let tmp = sample_folder();
        let folder = ClipFolder::open(tmp.path(), 4, 8, FrameSampling::Spread).unwrap();
        assert!(folder.get(2).is_ok());
        let err = folder.get(3).unwrap_err().to_string();
        assert!(
            err.contains("index 3 is past the 3 clips of clip folder")
                && err.contains(&tmp.path().display().to_string()),
            "{err}"
        );
    }

    fn open_err(tmp: &TempDir, frames: usize) -> String {
        ClipFolder::open(tmp.path(), frames, 8, FrameSampling::Spread)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let tmp = TempDir::new().unwrap();
        let err = open_err(&tmp, 4);
        assert!(
            err.contains("missing captions file") && err.contains("captions.jsonl"),
            "{err}"
        );

        let tmp = sample_folder();
        let captions = tmp.path().join("captions.jsonl");
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

        std::fs::write(tmp.path().join("notes.gif"), "this is text, not a picture").unwrap();
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
