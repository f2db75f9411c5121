//! Training clips for both stages: Moving Shapes (default) or a folder of
//! captioned clips.

use dit_data::video::FrameSampling;
use dit_data::{ClipFolder, DataError, MovingShapes, Split, VideoItem, vocabulary};
use dit_model::Tokenizer;
use dit_model::seed::{Stream, rng_for};
use rand::seq::SliceRandom;

use crate::config::ExperimentConfig;

/// Where clips come from.
#[derive(Debug)]
pub enum ClipSource {
    /// The built-in data set: training split for training, evaluation split for PSNR.
    MovingShapes {
        /// The 66 training compositions.
        train: MovingShapes,
        /// All 72 compositions.
        eval: MovingShapes,
    },
    /// A user folder; every clip trains, the first ones also serve evaluation.
    Folder(ClipFolder),
}

impl ClipSource {
    /// Opens the source a config names; a folder is read (and checked) completely.
    pub fn open(config: &ExperimentConfig) -> Result<Self, DataError> {
        let shapes = &config.data.shapes;
        match &config.data.folder {
            Some(dir) => {
                let sampling = match config.data.frame_stride {
                    Some(n) => FrameSampling::Stride(n),
                    None => FrameSampling::Spread,
                };
                let folder = ClipFolder::open(dir, shapes.frames, shapes.size, sampling)?;
                Ok(ClipSource::Folder(folder))
            }
            None => Ok(ClipSource::MovingShapes {
                train: MovingShapes::new(shapes.clone(), config.seed, Split::Train, usize::MAX)?,
                eval: MovingShapes::new(shapes.clone(), config.seed, Split::Eval, usize::MAX)?,
            }),
        }
    }

    /// The vocabulary: Moving Shapes' words, or every word of the folder's captions.
    pub fn tokenizer(&self) -> Tokenizer {
        match self {
            ClipSource::MovingShapes { .. } => Tokenizer::new(&vocabulary()),
            ClipSource::Folder(folder) => {
                let mut words: Vec<String> = folder
                    .items()
                    .iter()
                    .flat_map(|item| Tokenizer::split_words(&item.caption))
                    .collect();
                words.sort();
                words.dedup();
                Tokenizer::new(&words)
            }
        }
    }

    /// Training clip `index` (any index: Moving Shapes renders it, a folder cycles
    /// through its clips in an order shuffled by `seed` each epoch).
    pub fn train_item(&self, index: usize, seed: u64) -> VideoItem {
        match self {
            ClipSource::MovingShapes { train, .. } => train.item(index),
            ClipSource::Folder(folder) => {
                let n = folder.items().len();
                let (epoch, i) = (index / n, index % n);
                // A random permutation per epoch.
                let mut order: Vec<usize> = (0..n).collect();
                order.shuffle(&mut rng_for(seed, Stream::EpochOrder, epoch as u64));
                folder.items()[order[i]].clone()
            }
        }
    }

    /// `n` evaluation clips.
    pub fn eval_items(&self, n: usize) -> Vec<VideoItem> {
        match self {
            ClipSource::MovingShapes { eval, .. } => (0..n).map(|i| eval.item(i)).collect(),
            ClipSource::Folder(folder) => folder.items().iter().cycle().take(n).cloned().collect(),
        }
    }

    /// Prompts drawn in the preview sheets.
    pub fn preview_prompts(&self) -> Vec<String> {
        match self {
            ClipSource::MovingShapes { .. } => [
                "a red circle moving right",
                "a green square moving up",
                "a blue triangle moving left",
                "a yellow circle moving down",
                "a magenta triangle moving right",
                "a cyan square moving down",
                "a red triangle moving up",
                "a cyan circle moving left",
            ]
            .map(String::from)
            .to_vec(),
            ClipSource::Folder(folder) => folder
                .items()
                .iter()
                .take(6)
                .map(|i| i.caption.clone())
                .collect(),
        }
    }
}
