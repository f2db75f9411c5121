//! Gaussian noise drawn on the host from a seeded generator, so that noise is
//! the same on every backend and can be replayed exactly when training resumes.

use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use rand_distr::StandardNormal;

/// A tensor of N(0, 1) values drawn from `rng`.
pub fn gaussian<const D: usize, R: Rng + ?Sized>(
    rng: &mut R,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}
