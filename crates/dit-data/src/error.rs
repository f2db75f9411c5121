//! Errors of the data sets and the batcher; each names the field, file or line at fault.

use std::path::PathBuf;

/// Why a data set could not be built or a batch could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A configuration field has an unusable value.
    #[error("invalid data config: `{field}` {reason}")]
    InvalidConfig {
        /// Name of the offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The clip folder has no `captions.jsonl`.
    #[error("missing captions file {}: a clip folder needs a captions.jsonl with one {{\"video\": ..., \"caption\": ...}} per line", .path.display())]
    MissingCaptions {
        /// Where the file was expected.
        path: PathBuf,
    },
    /// A data set's file is not installed.
    #[error("{} is missing: install the data set with `{install}`", .path.display())]
    MissingDataset {
        /// The file.
        path: PathBuf,
        /// The command that installs it.
        install: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {error}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, so not also its `source`).
        error: std::io::Error,
    },
    /// A line of `captions.jsonl` is not a `{"video": ..., "caption": ...}` object.
    #[error("{}:{line}: malformed JSON line: {reason}", .path.display())]
    MalformedLine {
        /// The captions file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the JSON parser said.
        reason: String,
    },
    /// A video named by `captions.jsonl` does not exist.
    #[error("{}:{line}: video {} does not exist", .captions.display(), .path.display())]
    MissingVideo {
        /// The captions file.
        captions: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The missing video path.
        path: PathBuf,
    },
    /// A video file is neither a GIF nor an MP4 (nor a folder of PNG frames).
    #[error("{} is not a GIF or MP4 file (videos must be animated GIFs, H.264 MP4 files or folders of PNG frames)", .path.display())]
    NotGif {
        /// The file.
        path: PathBuf,
    },
    /// A GIF or PNG file could not be decoded.
    #[error("cannot decode {}: {reason}", .path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// A clip file is larger than the readers accept (checked before decoding it).
    #[error("{}: {what} is over the limit of {limit}", .path.display())]
    TooLarge {
        /// The file or folder.
        path: PathBuf,
        /// What is too large, e.g. "a canvas of 65535×65535 pixels".
        what: String,
        /// The limit, e.g. "4096 pixels a side".
        limit: String,
    },
    /// A frame folder holds no `.png` file.
    #[error("frame folder {} holds no .png files", .path.display())]
    NoFrames {
        /// The folder.
        path: PathBuf,
    },
    /// The frames of one video differ in size.
    #[error("frames of {} differ in size: {first:?} then {other:?} (width, height)", .path.display())]
    FrameSizeMismatch {
        /// The video.
        path: PathBuf,
        /// Size of the first frame.
        first: (usize, usize),
        /// Size of a later frame.
        other: (usize, usize),
    },
    /// A video is shorter than the clip length.
    #[error("{} has {found} frames, the clips need at least {needed}", .path.display())]
    TooFewFrames {
        /// The video.
        path: PathBuf,
        /// Frames in the video.
        found: usize,
        /// Frames each clip needs.
        needed: usize,
    },
    /// The clip folder lists no clips.
    #[error("{} lists no clips", .path.display())]
    NoClips {
        /// The captions file.
        path: PathBuf,
    },
    /// A data set was asked for an item past its end.
    #[error("index {index} is past the {len} clips of {dataset}")]
    IndexOutOfRange {
        /// Which data set, in words.
        dataset: String,
        /// The index asked for.
        index: usize,
        /// How many clips the data set holds.
        len: usize,
    },
    /// A caption cannot be tokenized.
    #[error("caption {caption:?} cannot be tokenized: {error}")]
    Caption {
        /// The caption.
        caption: String,
        /// What the tokenizer said (in the message, so not also its `source`).
        error: dit_model::tokenizer::TokenizeError,
    },
    /// The items of a batch cannot be stacked.
    #[error("cannot batch: {reason}")]
    Batch {
        /// What is wrong.
        reason: String,
    },
}
