//! Named random streams: the one place where a run's `--seed` becomes the seed
//! of each random generator the project uses.
//!
//! Every random draw belongs to a [`Stream`] and to an index within it (a clip,
//! a training step, a prompt). [`seed_for`] mixes seed, stream and index with
//! SplitMix64, so streams never overlap and any draw can be replayed on its
//! own: clip 1,000 needs no clips before it, and a run resumed at step `s`
//! draws exactly what an uninterrupted run draws at step `s`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a random generator is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Moving Shapes training clips; index: the clip.
    TrainClips,
    /// Moving Shapes evaluation clips (stage 1's PSNR); index: the clip.
    EvalClips,
    /// Moving Shapes clips of one composition (0–71), for evaluation; index: the clip.
    CompositionClips(usize),
    /// The order of a folder's clips in one epoch; index: the epoch.
    EpochOrder,
    /// Which frame of a training clip stage 1 reconstructs; index: the clip.
    AutoencoderFrame,
    /// Stage 1 and decoder fine-tuning draws (latent noise); index: the step.
    AutoencoderStep,
    /// Stage 2 draws (clips, diffusion steps, caption dropout, noise); index: the step.
    DitStep,
    /// The pure noise a generated clip starts from; index: the prompt in its batch.
    InitialNoise,
    /// The noise a stochastic sampler (DDPM, DDIM with η > 0) adds; index: 0.
    SamplerNoise,
    /// The noise of `dit-infer trace`'s view of one training step; index: 0.
    TraceNoise,
    /// The start step and noise of the DiT-denoised latents a decoder stage learns from;
    /// index: the batch of clips.
    DecoderDenoising,
    /// Where stage 1's window lies in a training frame (`autoencoder_training.crop`);
    /// index: the clip.
    AutoencoderCrop,
    /// The photograph classifier's training: each epoch's order (index: the epoch) and each
    /// step's shifts and dropout (index: `1 << 32` + the step).
    Classifier,
}

impl Stream {
    /// A number unique to the stream. The Moving Shapes streams keep the numbers
    /// the data set was first generated with, so its clips never change.
    fn id(self) -> u64 {
        match self {
            Stream::TrainClips => 0,
            Stream::EvalClips => 1,
            Stream::EpochOrder => 2,
            Stream::AutoencoderFrame => 3,
            Stream::AutoencoderStep => 4,
            Stream::DitStep => 5,
            Stream::InitialNoise => 6,
            Stream::SamplerNoise => 7,
            // 8 was the evaluation's paraphrase draws, now designed instead.
            Stream::TraceNoise => 9,
            Stream::DecoderDenoising => 10,
            Stream::Classifier => 11,
            Stream::AutoencoderCrop => 12,
            Stream::CompositionClips(composition) => 1000 + composition as u64,
        }
    }
}

/// SplitMix64's finaliser: a fixed, well-mixing bijection on `u64`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of draw `index` of `stream` in a run seeded by `seed`.
pub fn seed_for(seed: u64, stream: Stream, index: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(seed) ^ stream.id()) ^ index)
}

/// A generator for draw `index` of `stream` in a run seeded by `seed`.
pub fn rng_for(seed: u64, stream: Stream, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed_for(seed, stream, index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // The first outputs of SplitMix64 seeded with 0 (Steele, Lea & Flood 2014):
        // state 0x9E37…, 2·0x9E37…, … through the finaliser.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn streams_and_indices_give_different_seeds() {
        let streams = [
            Stream::TrainClips,
            Stream::EvalClips,
            Stream::CompositionClips(0),
            Stream::CompositionClips(71),
            Stream::EpochOrder,
            Stream::AutoencoderFrame,
            Stream::AutoencoderStep,
            Stream::DitStep,
            Stream::InitialNoise,
            Stream::SamplerNoise,
            Stream::TraceNoise,
            Stream::DecoderDenoising,
            Stream::Classifier,
            Stream::AutoencoderCrop,
        ];
        let mut seeds: Vec<u64> = streams
            .iter()
            .flat_map(|&s| (0..100).map(move |i| seed_for(7, s, i)))
            .collect();
        let n = seeds.len();
        seeds.sort();
        seeds.dedup();
        assert_eq!(seeds.len(), n);
        assert_ne!(
            seed_for(7, Stream::DitStep, 3),
            seed_for(8, Stream::DitStep, 3)
        );
    }

    #[test]
    fn the_data_streams_keep_their_original_seeds() {
        // The Moving Shapes clips were first generated with these derivations.
        let original = |seed: u64, stream: u64, index: u64| {
            splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ index)
        };
        assert_eq!(seed_for(5, Stream::TrainClips, 9), original(5, 0, 9));
        assert_eq!(seed_for(5, Stream::EvalClips, 9), original(5, 1, 9));
        assert_eq!(
            seed_for(5, Stream::CompositionClips(17), 2),
            original(5, 1017, 2)
        );
    }
}
