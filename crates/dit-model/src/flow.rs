//! Rectified flow, or flow matching (Liu et al. 2023; Lipman et al. 2023), as SD3
//! (Esser et al. 2024) trains it: a clean latent and Gaussian noise are joined by a
//! straight line `x_σ = (1 − σ)·x_0 + σ·ε`, σ ∈ [0, 1], and the network learns the
//! velocity along it, `dx_σ/dσ = ε − x_0`. Training draws σ from a logit-normal
//! distribution, which favours the middle of the path, where the velocity is hardest to
//! tell; sampling integrates the learnt velocity from σ = 1 (pure noise) to σ = 0 with
//! Euler steps. The network reads σ as the timestep σ·T, on the same scale as the
//! diffusion steps of DDPM.

use burn::tensor::Tensor;
use rand::Rng;
use rand_distr::StandardNormal;

use crate::schedule::per_sample;

/// The point at σ on the straight line from `x0` (σ = 0) to `noise` (σ = 1), one σ per
/// batch element.
///
/// # Shapes
/// - x0, noise: `[batch, ...]`; `sigmas.len() == batch`
pub fn interpolate<const D: usize>(x0: Tensor<D>, noise: Tensor<D>, sigmas: &[f64]) -> Tensor<D> {
    let device = x0.device();
    let signal = per_sample::<D>(sigmas.iter().map(|s| 1.0 - s), &device);
    let sigma = per_sample::<D>(sigmas.iter().copied(), &device);
    x0 * signal + noise * sigma
}

/// The velocity of that line, the network's target: `ε − x_0` (the same at every σ).
pub fn velocity<const D: usize>(x0: Tensor<D>, noise: Tensor<D>) -> Tensor<D> {
    noise - x0
}

/// σ = sigmoid(n), n ~ N(0, 1): the logit-normal distribution of SD3's training.
pub fn logit_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let n: f64 = rng.sample(StandardNormal);
    1.0 / (1.0 + (-n).exp())
}

/// The timestep the network reads for σ, with `steps` the diffusion steps T.
pub fn timestep(sigma: f64, steps: usize) -> f64 {
    sigma * steps as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn the_line_joins_x0_and_the_noise_and_its_velocity_is_their_difference() {
        let device = Device::default();
        let x0 = Tensor::<2>::random([3, 5], Distribution::Uniform(-1.0, 1.0), &device);
        let noise = Tensor::<2>::random([3, 5], Distribution::Normal(0.0, 1.0), &device);
        let at = |s: f64| interpolate(x0.clone(), noise.clone(), &[s, s, s]);
        at(0.0)
            .into_data()
            .assert_approx_eq::<f32>(&x0.to_data(), Tolerance::absolute(1e-6));
        at(1.0)
            .into_data()
            .assert_approx_eq::<f32>(&noise.to_data(), Tolerance::absolute(1e-6));
        // A finite difference along the line is the velocity.
        let slope = (at(0.7) - at(0.3)) / 0.4;
        slope.into_data().assert_approx_eq::<f32>(
            &velocity(x0.clone(), noise.clone()).to_data(),
            Tolerance::absolute(1e-5),
        );
        // One σ per batch element: row 0 at x0, row 1 at the noise, row 2 halfway.
        let mixed = interpolate(x0.clone(), noise.clone(), &[0.0, 1.0, 0.5]);
        let expected = Tensor::cat(
            vec![
                x0.clone().narrow(0, 0, 1),
                noise.clone().narrow(0, 1, 1),
                ((x0 + noise) * 0.5).narrow(0, 2, 1),
            ],
            0,
        );
        mixed
            .into_data()
            .assert_approx_eq::<f32>(&expected.to_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn logit_normal_sigmas_lie_in_the_unit_interval_around_one_half() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let sigmas: Vec<f64> = (0..20_000).map(|_| logit_normal(&mut rng)).collect();
        assert!(sigmas.iter().all(|&s| s > 0.0 && s < 1.0));
        let mean = sigmas.iter().sum::<f64>() / sigmas.len() as f64;
        // Symmetric about 1/2; P(σ < sigmoid(−1)) = P(n < −1) ≈ 0.1587.
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        let below = sigmas
            .iter()
            .filter(|&&s| s < 1.0 / (1.0 + 1f64.exp()))
            .count() as f64
            / sigmas.len() as f64;
        assert!((below - 0.1587).abs() < 0.01, "{below}");
        assert_eq!(timestep(0.25, 1000), 250.0);
    }
}
