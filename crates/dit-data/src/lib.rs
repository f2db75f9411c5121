//! Captioned video data for the text-to-video DiT.
//!
//! - [`clip`]: [`Clip`], an RGB video clip in memory;
//! - [`shapes`]: the Moving Shapes palette, shapes, directions, compositions and captions;
//! - [`unseen`]: Moving Shapes prompts in words no caption has (for pretrained text encoders);
//! - [`render`]: the renderer of one Moving Shapes clip;
//! - [`moving_shapes`]: the procedurally generated, deterministic data set;
//! - [`fashion`]: the Moving Fashion classes, compositions and captions;
//! - [`moving_fashion`]: the Moving Fashion data set, Fashion-MNIST's photographs in motion;
//! - [`video`]: reading clips from GIFs / PNG-frame folders, and writing GIFs, PNG frames
//!   and contact sheets;
//! - [`figure`]: charts with axes and legends, and contact sheets with each row's text;
//! - [`folder`]: the captioned clips listed by a folder's `captions.jsonl`;
//! - [`idx`]: labelled photographs in the IDX format (Fashion-MNIST), gzipped or not;
//! - [`batcher`]: clips and captions to tensors, and generated tensors back to clips;
//! - [`judge`]: what a clip shows, judged from its pixels alone;
//! - [`fashion_judge`]: what a Moving Fashion clip shows, judged by the photograph classifier;
//! - [`error`]: [`DataError`], the errors, each naming its field, file or line.

pub mod batcher;
pub mod clip;
pub mod error;
pub mod fashion;
pub mod fashion_judge;
pub mod figure;
pub mod folder;
pub mod idx;
pub mod judge;
pub mod moving_fashion;
pub mod moving_shapes;
pub mod render;
pub mod shapes;
pub mod unseen;
pub mod video;

pub use batcher::{
    VideoBatch, VideoBatcher, clip_to_tensor_data, psnr, tensor_to_clip, video_to_clips,
};
pub use clip::Clip;
pub use error::DataError;
pub use folder::ClipFolder;
pub use judge::{JudgeMatch, Judgement, judge_clip};
pub use moving_shapes::{CaptionMode, MovingShapes, MovingShapesConfig, Split, VideoItem};
pub use render::{ClipParams, render_clip};
pub use shapes::{
    Colour, Composition, Direction, HELD_OUT, MAX_CAPTION_WORDS, Phrasing, Shape, TEMPLATES,
    vocabulary,
};
