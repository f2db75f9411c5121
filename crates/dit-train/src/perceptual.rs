//! A perceptual reconstruction loss for the autoencoder of photographs: the distance
//! between what a frozen network trained on Fashion-MNIST sees in a reconstruction and in
//! its original (the feature-matching idea of Johnson et al. 2016 and of LPIPS, Zhang et
//! al. 2018, with a small network of the data's own domain in place of an ImageNet one).
//!
//! Pixel MSE lets a decoder blur a sleeve, a collar or a strap it is unsure of: the error
//! of a soft edge is small in pixels. The convolutions of a network trained to tell a shirt
//! from a pullover respond to exactly those edges, so their outputs differ where the detail
//! is lost. The network must not be the judge that scores the reconstructions
//! (`checkpoints/fashion-classifier`): one trained apart (another seed,
//! `checkpoints/fashion-features`) keeps the judge an outside observer.

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use dit_infer::{default_classifier, shipped};
use dit_model::classifier::PhotoClassifier;
use dit_model::run::load_classifier;

/// The frozen feature network of the perceptual loss.
#[derive(Debug, Clone)]
pub struct PerceptualLoss {
    network: PhotoClassifier,
}

impl PerceptualLoss {
    /// Loads the classifier in folder `dir` (as `dit-train classifier` writes it), frozen:
    /// `dir` of the working folder when it is there, else of this repository (so that
    /// `checkpoints/fashion-features`, shipped, is found from anywhere).
    pub fn load(dir: &str, device: &Device) -> Result<Self> {
        let path = shipped(dir);
        let judge = default_classifier();
        if let (Ok(a), Ok(b)) = (path.canonicalize(), judge.canonicalize())
            && a == b
        {
            bail!(
                "autoencoder_training.perceptual_network = {dir:?} is the judge's own network ({}): \
                 a loss through it would teach the autoencoder to please the judge; train another one",
                judge.display()
            );
        }
        let (network, _) = load_classifier(&path, device).with_context(|| {
            format!(
                "cannot load the perceptual loss's network {} (autoencoder_training.perceptual_network); \
                 train one with `cargo run --release -p dit-train -- --seed 1 classifier --epochs 6 --out {dir}`",
                path.display()
            )
        })?;
        Ok(Self::new(network))
    }

    /// The loss seen through `network`, which it freezes.
    pub fn new(network: PhotoClassifier) -> Self {
        Self {
            network: network.no_grad(),
        }
    }

    /// The mean squared difference of the network's features of `recon` and `target`,
    /// summed over its two convolutions. Each colour channel is seen as a greyscale
    /// photograph (a tinted photograph is its grey values scaled per channel).
    ///
    /// # Shapes
    /// - recon, target: `[batch, 3, frames, height, width]` in `[-1, 1]`
    pub fn error(&self, recon: Tensor<5>, target: Tensor<5>) -> Tensor<1> {
        let [_, _, _, h, w] = recon.dims();
        // [b, 3, f, h, w] → [b·3·f, 1, h, w] in [0, 1].
        let photos = |x: Tensor<5>| (x.reshape([-1, 1, h as i32, w as i32]) + 1.0) * 0.5;
        let seen = self.network.features(photos(recon));
        let wanted = self.network.features(photos(target.detach()));
        seen.into_iter()
            .zip(wanted)
            .map(|(a, b)| (a - b).powi_scalar(2).mean())
            .reduce(|a, b| a + b)
            .expect("two feature maps")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use dit_model::classifier::PhotoClassifierConfig;

    #[test]
    fn the_error_is_the_summed_feature_mse_and_trains_the_reconstruction_only() {
        let device = Device::default().autodiff();
        device.seed(3);
        let network = PhotoClassifierConfig::new()
            .with_channels(4)
            .init(&device)
            .unwrap();
        let loss = PerceptualLoss::new(network.clone());
        let target =
            Tensor::<5>::random([2, 3, 1, 8, 8], Distribution::Uniform(-1.0, 1.0), &device);
        let error = |recon: Tensor<5>| loss.error(recon, target.clone());
        assert_eq!(error(target.clone()).into_scalar::<f32>(), 0.0);

        // The same number from the features of each channel as a [0, 1] photograph.
        let recon = Tensor::<5>::random([2, 3, 1, 8, 8], Distribution::Uniform(-1.0, 1.0), &device)
            .require_grad();
        let photos = |x: Tensor<5>| (x.reshape([6, 1, 8, 8]) + 1.0) / 2.0;
        let [a1, a2] = network.features(photos(recon.clone()));
        let [b1, b2] = network.features(photos(target.clone()));
        assert_eq!(a1.dims(), [6, 4, 8, 8]);
        assert_eq!(a2.dims(), [6, 8, 4, 4]);
        let expected = (a1 - b1).powi_scalar(2).mean().into_scalar::<f32>()
            + (a2 - b2).powi_scalar(2).mean().into_scalar::<f32>();
        let value = error(recon.clone());
        assert!((value.clone().into_scalar::<f32>() - expected).abs() < 1e-6 * expected.max(1.0));
        assert!(expected > 0.0);

        // The gradient reaches the reconstruction and none of the frozen network's weights.
        let grads = value.backward();
        let grad = recon
            .grad(&grads)
            .expect("a gradient for the reconstruction");
        assert!(grad.abs().sum().into_scalar::<f32>() > 0.0);
        assert!(loss.network.conv1.weight.grad(&grads).is_none());
    }
}
