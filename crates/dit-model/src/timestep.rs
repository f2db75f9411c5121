//! Embedding of the diffusion step `t`: a 256-d sinusoid, then Linear → SiLU → Linear.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

/// Width of the sinusoidal timestep features.
pub const FREQUENCY_DIM: usize = 256;

/// Sinusoidal features `[cos(t·ω_i), sin(t·ω_i)]`, `ω_i = 10000^(-i/(dim/2))`.
///
/// The exponent `-ln(10000)·i / half` is computed in `f32`, operation by
/// operation, as the official DiT's `TimestepEmbedder` computes it, so that
/// ported weights see the same features; its `exp` is rounded correctly (from
/// `f64`), because platforms' `f32` exp functions differ by one ulp on a few
/// frequencies, which at t ≈ 1000 is already 1e-4 rad of phase.
///
/// # Shapes
/// - t: `[batch]` (float, so respaced steps may be fractional) → `[batch, dim]`
pub fn timestep_features(t: Tensor<1>, dim: usize) -> Tensor<2> {
    let half = dim / 2;
    let log_period = -(10000f64.ln() as f32);
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((log_period * i as f32 / half as f32) as f64).exp() as f32)
        .collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &t.device());
    let args = t.unsqueeze_dim::<2>(1) * freqs.unsqueeze_dim(0); // [batch, half]
    Tensor::cat(vec![args.clone().cos(), args.sin()], 1)
}

/// Maps diffusion steps to the conditioning width (`t_embedder` in DiT).
#[derive(Module, Debug)]
pub struct TimestepEmbedder {
    /// `256 → hidden` (PyTorch `t_embedder.mlp.0`).
    pub fc1: Linear,
    /// `hidden → hidden` (PyTorch `t_embedder.mlp.2`).
    pub fc2: Linear,
}

impl TimestepEmbedder {
    /// An embedder to `hidden` channels, weights drawn from N(0, 0.02²) as in DiT.
    pub fn new(hidden: usize, device: &Device) -> Self {
        let init = Initializer::Normal {
            mean: 0.0,
            std: 0.02,
        };
        let mut fc1 = LinearConfig::new(FREQUENCY_DIM, hidden)
            .with_initializer(init.clone())
            .init(device);
        let mut fc2 = LinearConfig::new(hidden, hidden)
            .with_initializer(init)
            .init(device);
        fc1.bias = Some(burn::module::Param::from_tensor(Tensor::zeros(
            [hidden],
            device,
        )));
        fc2.bias = Some(burn::module::Param::from_tensor(Tensor::zeros(
            [hidden],
            device,
        )));
        Self { fc1, fc2 }
    }

    /// # Shapes
    /// - t: `[batch]` → `[batch, hidden]`
    pub fn forward(&self, t: Tensor<1>) -> Tensor<2> {
        self.fc2
            .forward(silu(self.fc1.forward(timestep_features(t, FREQUENCY_DIM))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_match_closed_form() {
        let device = Device::default();
        let t = Tensor::<1>::from_floats([0.0, 10.0], &device);
        let f: Vec<f32> = timestep_features(t, 8).into_data().try_into_vec().unwrap();
        // t = 0: cos = 1, sin = 0.
        assert_eq!(&f[0..8], &[1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        // t = 10, ω = 10000^(-i/4).
        for i in 0..4 {
            let w = 10000f64.powf(-(i as f64) / 4.0);
            assert!((f[8 + i] as f64 - (10.0 * w).cos()).abs() < 1e-5);
            assert!((f[12 + i] as f64 - (10.0 * w).sin()).abs() < 1e-5);
        }
    }

    #[test]
    fn embedder_shape() {
        let device = Device::default();
        let e = TimestepEmbedder::new(64, &device);
        let out = e.forward(Tensor::<1>::from_floats([1.0, 500.0, 999.0], &device));
        assert_eq!(out.dims(), [3, 64]);
    }
}
