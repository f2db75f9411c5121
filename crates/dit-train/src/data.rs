//! Training clips for both stages: Moving Shapes (default), Moving Fashion or a folder of
//! captioned clips.

use dit_data::fashion::{FashionComposition, Garment, fashion_vocabulary};
use dit_data::idx::fashion_mnist_dir;
use dit_data::moving_fashion::MovingFashion;
use dit_data::shapes::{Colour, Direction};
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
    /// Moving Fashion: training photographs for training, test photographs for evaluation.
    MovingFashion {
        /// The 220 training compositions, over the 60,000 training photographs.
        train: MovingFashion,
        /// All 240 compositions, over the 10,000 test photographs.
        eval: MovingFashion,
    },
    /// A user folder; every clip trains, the first ones also serve evaluation.
    Folder(ClipFolder),
}

impl ClipSource {
    /// Opens the source a config names; a folder is read (and checked) completely.
    pub fn open(config: &ExperimentConfig) -> Result<Self, DataError> {
        let data = &config.data;
        match (&data.folder, &data.shapes, &data.fashion) {
            (Some(dir), _, _) => {
                let sampling = match data.frame_stride {
                    Some(n) => FrameSampling::Stride(n),
                    None => FrameSampling::Spread,
                };
                let folder = ClipFolder::open(dir, data.frames(), data.size(), sampling)?;
                Ok(ClipSource::Folder(folder))
            }
            (None, None, Some(fashion)) => {
                let dir = fashion_mnist_dir();
                let open = |split| MovingFashion::open(&dir, fashion.clone(), config.seed, split);
                Ok(ClipSource::MovingFashion {
                    train: open(Split::Train)?,
                    eval: open(Split::Eval)?,
                })
            }
            (None, shapes, _) => {
                let shapes = shapes
                    .clone()
                    .unwrap_or_else(dit_data::MovingShapesConfig::new);
                Ok(ClipSource::MovingShapes {
                    train: MovingShapes::new(
                        shapes.clone(),
                        config.seed,
                        Split::Train,
                        usize::MAX,
                    )?,
                    eval: MovingShapes::new(shapes, config.seed, Split::Eval, usize::MAX)?,
                })
            }
        }
    }

    /// The vocabulary: Moving Shapes' words, or every word of the folder's captions.
    pub fn tokenizer(&self) -> Tokenizer {
        match self {
            ClipSource::MovingShapes { .. } => Tokenizer::new(&vocabulary()),
            ClipSource::MovingFashion { .. } => Tokenizer::new(&fashion_vocabulary()),
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
            ClipSource::MovingFashion { train, .. } => train.item(index).item,
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
            ClipSource::MovingFashion { eval, .. } => (0..n).map(|i| eval.item(i).item).collect(),
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
            // One of each class, in training compositions, colours and directions varied.
            ClipSource::MovingFashion { .. } => Garment::ALL
                .iter()
                .enumerate()
                .map(|(k, &garment)| {
                    let colour = Colour::ALL[(k + 1) % 6];
                    let direction = Direction::ALL[(k + 1) % 4];
                    FashionComposition::new(garment, colour, direction).canonical_caption()
                })
                .collect(),
            ClipSource::Folder(folder) => folder
                .items()
                .iter()
                .take(6)
                .map(|i| i.caption.clone())
                .collect(),
        }
    }
}
