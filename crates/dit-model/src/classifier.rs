//! A small convolutional classifier of 28×28 greyscale photographs: the judge of what a
//! Moving Fashion clip shows (docs/moving-fashion.md). It is trained on Fashion-MNIST's
//! training split alone, apart from the DiT and never on anything the DiT drew, so its
//! verdict on a generated clip is that of an outside observer.
//!
//! Two convolution stages and two linear layers, the classic small CNN of MNIST-like data:
//!
//! ```text
//! [b, 1, 28, 28] → conv 3×3 → ReLU → max-pool 2 → [b, c, 14, 14]
//!                → conv 3×3 → ReLU → max-pool 2 → [b, 2c, 7, 7]
//!                → flatten → linear → ReLU → dropout → linear → [b, classes] (logits)
//! ```

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::param_ids::with_path_ids;
use crate::validate::{ConfigError, require_positive};

/// Side of the photographs the classifier reads.
pub const PHOTO_SIDE: usize = 28;

/// Hyper-parameters of the [`PhotoClassifier`].
#[derive(Config, Debug, PartialEq)]
pub struct PhotoClassifierConfig {
    /// Number of classes.
    #[config(default = 10)]
    pub classes: usize,
    /// Channels of the first convolution; the second has twice as many.
    #[config(default = 32)]
    pub channels: usize,
    /// Width of the hidden linear layer.
    #[config(default = 128)]
    pub hidden: usize,
    /// Dropout before the last layer, in training only.
    #[config(default = 0.25)]
    pub dropout: f64,
}

impl PhotoClassifierConfig {
    /// Checks sizes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        require_positive("classes", self.classes)?;
        require_positive("channels", self.channels)?;
        require_positive("hidden", self.hidden)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ConfigError::new(
                "dropout",
                format!("is {}, it must be in [0, 1)", self.dropout),
            ));
        }
        Ok(())
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        let (c, h) = (self.channels, self.hidden);
        let flat = 2 * c * (PHOTO_SIDE / 4) * (PHOTO_SIDE / 4);
        (9 * c + c) + (9 * c * 2 * c + 2 * c) + (flat * h + h) + (h * self.classes + self.classes)
    }

    /// Builds the classifier (PyTorch-style Kaiming-uniform initialisation), each parameter
    /// with the id of its path ([`crate::param_ids`]).
    pub fn init(&self, device: &Device) -> Result<PhotoClassifier, ConfigError> {
        self.validate()?;
        let conv = |input: usize, output: usize| {
            Conv2dConfig::new([input, output], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        let flat = 2 * self.channels * (PHOTO_SIDE / 4) * (PHOTO_SIDE / 4);
        Ok(with_path_ids(PhotoClassifier {
            conv1: conv(1, self.channels),
            conv2: conv(self.channels, 2 * self.channels),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            hidden: LinearConfig::new(flat, self.hidden).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(self.hidden, self.classes).init(device),
        }))
    }
}

/// The photograph classifier (see the module documentation).
#[derive(Module, Debug)]
pub struct PhotoClassifier {
    /// First convolution, 1 → c channels.
    pub conv1: Conv2d,
    /// Second convolution, c → 2c channels.
    pub conv2: Conv2d,
    /// 2×2 max-pooling after each convolution.
    pub pool: MaxPool2d,
    /// Flattened features → hidden.
    pub hidden: Linear,
    /// Dropout on the hidden features (training only).
    pub dropout: Dropout,
    /// Hidden → class logits.
    pub output: Linear,
}

impl PhotoClassifier {
    /// Class logits of photographs with values in `[0, 1]`.
    ///
    /// `photos`: `[batch, 1, 28, 28]` → `[batch, classes]`.
    pub fn forward(&self, photos: Tensor<4>) -> Tensor<2> {
        let [_, second] = self.features(photos);
        let x = self.pool.forward(second); // [b, 2c, 7, 7]
        let x: Tensor<2> = x.flatten(1, 3); // [b, 2c·49]
        let x = self.dropout.forward(relu(self.hidden.forward(x)));
        self.output.forward(x)
    }

    /// The rectified outputs of the two convolutions, before their pooling: what the
    /// network sees of a picture at one and at two pixels' scale. Convolutions take any
    /// size, so pictures need not be 28×28.
    ///
    /// `photos`: `[batch, 1, h, w]` → `[batch, c, h, w]` and `[batch, 2c, h/2, w/2]`.
    pub fn features(&self, photos: Tensor<4>) -> [Tensor<4>; 2] {
        let first = relu(self.conv1.forward(photos)); // [b, c, h, w]
        let second = relu(self.conv2.forward(self.pool.forward(first.clone()))); // [b, 2c, h/2, w/2]
        [first, second]
    }

    /// The most likely class of each photograph (`[batch, 1, 28, 28]` → `batch` indices).
    pub fn classify(&self, photos: Tensor<4>) -> Vec<usize> {
        let logits = self.forward(photos);
        let [batch, classes] = logits.dims();
        let values: Vec<f32> = logits.into_data().try_to_vec::<f32>().unwrap_or_default();
        (0..batch)
            .map(|b| {
                let row = &values[b * classes..(b + 1) * classes];
                (0..classes)
                    .max_by(|&i, &j| row[i].total_cmp(&row[j]))
                    .unwrap_or(0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use burn::optim::GradientsParams;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn logits_have_one_value_per_class_and_the_parameter_count_is_exact() {
        let device = Backend::default_compiled().device().unwrap();
        let config = PhotoClassifierConfig::new();
        let model = config.init(&device).unwrap();
        let photos = Tensor::<4>::random([3, 1, 28, 28], Distribution::Default, &device);
        assert_eq!(model.forward(photos.clone()).dims(), [3, 10]);
        assert_eq!(model.classify(photos).len(), 3);
        assert_eq!(model.num_params(), config.num_params());
        // 320 + 18,496 + 401,536 + 1,290.
        assert_eq!(config.num_params(), 421_642);
    }

    #[test]
    fn gradients_reach_the_first_convolution() {
        let device = Backend::default_compiled().device().unwrap().autodiff();
        let model = PhotoClassifierConfig::new().init(&device).unwrap();
        let photos = Tensor::<4>::random([2, 1, 28, 28], Distribution::Default, &device);
        let loss = model.forward(photos).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let g = grads
            .get::<4>(model.conv1.weight.id)
            .expect("conv1 has a gradient");
        let sum: f32 = g.abs().sum().into_scalar();
        assert!(sum > 0.0);
        // Evaluation mode has no dropout: two passes agree exactly.
        let valid = model.valid();
        let plain = Backend::default_compiled().device().unwrap();
        let x = Tensor::<4>::from_data(TensorData::new(vec![0.5f32; 784], [1, 1, 28, 28]), &plain);
        assert_eq!(
            valid.forward(x.clone()).into_data(),
            valid.forward(x).into_data()
        );
    }
}
