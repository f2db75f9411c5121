//! The β schedule of Gaussian diffusion, `q(x_t | x_0) = N(√ᾱ_t·x_0, (1-ᾱ_t)·I)`
//! (Ho et al. 2020), linear or cosine (Nichol & Dhariwal 2021). It knows nothing of the
//! network; [`crate::process`] says what the network predicts from it.

use burn::config::Config;
use burn::tensor::{Device, Tensor, TensorData};

/// How β_t grows with t.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum BetaSchedule {
    /// β linear from `beta_start` to `beta_end` (DDPM).
    Linear,
    /// ᾱ_t = cos²(((t/T)+s)/(1+s)·π/2) with s = 0.008, β clipped at 0.999.
    Cosine,
}

/// β_t and ᾱ_t = ∏_{s≤t}(1-β_s) for t = 0..T (step t is the paper's t+1).
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    betas: Vec<f64>,
    alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    /// A schedule from explicit β values.
    pub fn from_betas(betas: Vec<f64>) -> Self {
        let mut prod = 1.0;
        let alphas_cumprod = betas
            .iter()
            .map(|b| {
                prod *= 1.0 - b;
                prod
            })
            .collect();
        Self {
            betas,
            alphas_cumprod,
        }
    }

    /// Linear β from `start` to `end` over `steps` steps.
    pub fn linear(steps: usize, start: f64, end: f64) -> Self {
        let betas = (0..steps)
            .map(|i| start + (end - start) * i as f64 / (steps - 1) as f64)
            .collect();
        Self::from_betas(betas)
    }

    /// The cosine schedule of Nichol & Dhariwal (2021).
    pub fn cosine(steps: usize) -> Self {
        let f = |t: f64| {
            (((t / steps as f64) + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let betas = (0..steps)
            .map(|i| (1.0 - f(i as f64 + 1.0) / f(i as f64)).min(0.999))
            .collect();
        Self::from_betas(betas)
    }

    /// Number of steps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Whether the schedule has no step.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// β_t.
    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t]
    }

    /// ᾱ_t.
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alphas_cumprod[t]
    }

    /// ᾱ for every step.
    pub fn alphas_cumprod(&self) -> &[f64] {
        &self.alphas_cumprod
    }

    /// Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t).
    pub fn snr(&self, t: usize) -> f64 {
        let a = self.alpha_bar(t);
        a / (1.0 - a)
    }

    /// Variance of the DDPM posterior q(x_{t-1} | x_t, x_0): β_t·(1-ᾱ_{t-1})/(1-ᾱ_t).
    pub fn posterior_variance(&self, t: usize) -> f64 {
        let prev = if t == 0 { 1.0 } else { self.alpha_bar(t - 1) };
        self.beta(t) * (1.0 - prev) / (1.0 - self.alpha_bar(t))
    }

    /// The clean latent x̂_0 = (x_t − √(1-ᾱ_t)·ε̂)/√ᾱ_t that the noise `eps` implies at
    /// step `t`.
    pub fn clean_from_noise<const D: usize>(
        &self,
        x_t: Tensor<D>,
        eps: Tensor<D>,
        t: usize,
    ) -> Tensor<D> {
        let a = self.alpha_bar(t);
        (x_t - eps * (1.0 - a).sqrt()) / a.sqrt()
    }

    /// Samples x_t = √ᾱ_t·x_0 + √(1-ᾱ_t)·ε, one step per batch element.
    ///
    /// # Shapes
    /// - x0, noise: `[batch, ...]`; `t.len() == batch`
    pub fn q_sample<const D: usize>(
        &self,
        x0: Tensor<D>,
        noise: Tensor<D>,
        t: &[usize],
    ) -> Tensor<D> {
        let device = x0.device();
        let signal = per_sample::<D>(t.iter().map(|&s| self.alpha_bar(s).sqrt()), &device);
        let sigma = per_sample::<D>(t.iter().map(|&s| (1.0 - self.alpha_bar(s)).sqrt()), &device);
        x0 * signal + noise * sigma
    }
}

/// A `[batch, 1, …, 1]` tensor of per-sample coefficients, broadcastable over `[batch, ...]`.
pub fn per_sample<const D: usize>(values: impl Iterator<Item = f64>, device: &Device) -> Tensor<D> {
    let values: Vec<f32> = values.map(|v| v as f32).collect();
    let mut shape = [1usize; D];
    shape[0] = values.len();
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn linear_alpha_bar_matches_closed_form() {
        let s = NoiseSchedule::linear(1000, 1e-4, 0.02);
        assert_eq!(s.len(), 1000);
        assert!((s.beta(0) - 1e-4).abs() < 1e-15 && (s.beta(999) - 0.02).abs() < 1e-15);
        for t in [0usize, 1, 10, 250, 500, 999] {
            let expect: f64 = (0..=t)
                .map(|i| 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0))
                .product();
            assert!((s.alpha_bar(t) - expect).abs() < 1e-12, "t = {t}");
        }
        // The well-known endpoint of DDPM's schedule: ᾱ_T ≈ 4.04e-5.
        assert!(
            (s.alpha_bar(999) - 4.036e-5).abs() < 1e-7,
            "{}",
            s.alpha_bar(999)
        );
    }

    #[test]
    fn cosine_alpha_bar_matches_closed_form() {
        let s = NoiseSchedule::cosine(1000);
        let f = |t: f64| {
            ((t / 1000.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        for t in [0usize, 100, 500, 900] {
            let expect = f(t as f64 + 1.0) / f(0.0);
            assert!((s.alpha_bar(t) - expect).abs() < 1e-9, "t = {t}");
        }
        assert!(s.betas.iter().all(|&b| b > 0.0 && b <= 0.999));
    }

    #[test]
    fn posterior_variance_at_first_step_is_zero() {
        let s = NoiseSchedule::linear(1000, 1e-4, 0.02);
        assert_eq!(s.posterior_variance(0), 0.0);
        let t = 500;
        let expect = s.beta(t) * (1.0 - s.alpha_bar(t - 1)) / (1.0 - s.alpha_bar(t));
        assert!((s.posterior_variance(t) - expect).abs() < 1e-15);
    }

    #[test]
    fn q_sample_mean_and_variance_by_monte_carlo() {
        let device = Device::default();
        let s = NoiseSchedule::linear(1000, 1e-4, 0.02);
        let n = 200_000;
        for t in [10usize, 400, 900] {
            let x0 = Tensor::<2>::ones([1, n], &device) * 0.7;
            let noise = Tensor::<2>::random([1, n], Distribution::Normal(0.0, 1.0), &device);
            let xt: Vec<f32> = s
                .q_sample(x0, noise, &[t])
                .into_data()
                .try_into_vec()
                .unwrap();
            let mean = xt.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = xt.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let (want_mean, want_var) = (0.7 * s.alpha_bar(t).sqrt(), 1.0 - s.alpha_bar(t));
            // Standard errors: σ/√n ≈ 0.0022 for the mean, ≈ σ²·√(2/n) ≈ 0.0032 for the variance.
            assert!(
                (mean - want_mean).abs() < 0.01,
                "t = {t}: mean {mean} vs {want_mean}"
            );
            assert!(
                (var - want_var).abs() < 0.015 * want_var.max(0.1),
                "t = {t}: var {var} vs {want_var}"
            );
        }
    }
}
