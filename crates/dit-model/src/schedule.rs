//! The forward diffusion process `q(x_t | x_0) = N(√ᾱ_t·x_0, (1-ᾱ_t)·I)`
//! (Ho et al. 2020) with linear or cosine β schedules (Nichol & Dhariwal 2021).
//! It knows nothing of the network.

use burn::config::Config;
use burn::tensor::{Device, Tensor, TensorData};

use crate::validate::ConfigError;

/// How β_t grows with t.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum BetaSchedule {
    /// β linear from `beta_start` to `beta_end` (DDPM).
    Linear,
    /// ᾱ_t = cos²(((t/T)+s)/(1+s)·π/2) with s = 0.008, β clipped at 0.999.
    Cosine,
}

/// What the network predicts from `x_t`: the regression target of training.
///
/// At high noise `x_t ≈ ε`, so an ε-predictor there learns little about `x_0`
/// (its loss is the `x_0` error weighted by SNR ≈ 0), and `x̂_0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ`
/// amplifies its errors by `1/√ᾱ` (≈ 160 at the last linear step). The global
/// layout of a clip (where the object starts, which way it moves) is decided at
/// exactly those steps. Predicting the velocity `v = √ᾱ·ε − √(1−ᾱ)·x_0`
/// (Salimans & Ho 2022) keeps both conversions bounded, and its unweighted loss
/// weights the `x_0` error by SNR + 1 (≥ 1 at every step). Min-SNR-γ weighting
/// ([`Prediction::loss_weight`]) brings both back to an `x_0` weight of min(SNR, γ).
#[derive(Config, Debug, PartialEq, Copy)]
pub enum Prediction {
    /// The noise ε (Ho et al. 2020).
    Epsilon,
    /// The velocity `v = √ᾱ_t·ε − √(1−ᾱ_t)·x_0` (Salimans & Ho 2022).
    Velocity,
    /// Rectified flow ([`crate::flow`]): the latent is noised along the straight line
    /// `(1 − σ)·x_0 + σ·ε` instead of the β schedule, the network predicts its velocity
    /// `ε − x_0`, and sampling is the Euler sampler's.
    Flow,
}

impl Prediction {
    /// The training target for clean latents `x0` noised with `noise` at steps `t`.
    ///
    /// # Shapes
    /// - x0, noise: `[batch, ...]`; `t.len() == batch`
    pub fn target<const D: usize>(
        self,
        schedule: &NoiseSchedule,
        x0: Tensor<D>,
        noise: Tensor<D>,
        t: &[usize],
    ) -> Tensor<D> {
        match self {
            Prediction::Epsilon => noise,
            Prediction::Flow => crate::flow::velocity(x0, noise),
            Prediction::Velocity => {
                let device = x0.device();
                let signal =
                    per_sample::<D>(t.iter().map(|&s| schedule.alpha_bar(s).sqrt()), &device);
                let sigma = per_sample::<D>(
                    t.iter().map(|&s| (1.0 - schedule.alpha_bar(s)).sqrt()),
                    &device,
                );
                noise * signal - x0 * sigma
            }
        }
    }

    /// The noise ε̂ implied by the network `output` at `x_t`, all at one step with
    /// cumulative product `alpha_bar` (for ε-prediction, the output itself). A flow's
    /// `x_t` is not a point of the β schedule: its output is the velocity the Euler
    /// sampler integrates, returned as it is.
    pub fn epsilon<const D: usize>(
        self,
        x_t: Tensor<D>,
        output: Tensor<D>,
        alpha_bar: f64,
    ) -> Tensor<D> {
        match self {
            Prediction::Epsilon | Prediction::Flow => output,
            // ε = √(1−ᾱ)·x_t + √ᾱ·v
            Prediction::Velocity => x_t * (1.0 - alpha_bar).sqrt() + output * alpha_bar.sqrt(),
        }
    }

    /// Min-SNR-γ loss weight (Hang et al. 2023) at signal-to-noise ratio `snr`:
    /// min(SNR, γ)/SNR for ε and min(SNR, γ)/(SNR + 1) for v, so that both weight
    /// the `x_0` error by min(SNR, γ). γ = 0 turns weighting off (weight 1), as does a
    /// flow, whose σ distribution does the weighting ([`crate::flow::logit_normal`]).
    pub fn loss_weight(self, snr: f64, gamma: f64) -> f64 {
        if gamma <= 0.0 {
            return 1.0;
        }
        match self {
            Prediction::Epsilon => snr.min(gamma) / snr,
            Prediction::Velocity => snr.min(gamma) / (snr + 1.0),
            Prediction::Flow => 1.0,
        }
    }
}

/// Settings of the [`NoiseSchedule`].
#[derive(Config, Debug, PartialEq)]
pub struct DiffusionConfig {
    /// Number of diffusion steps T.
    #[config(default = 1000)]
    pub steps: usize,
    /// Shape of the β schedule.
    #[config(default = "BetaSchedule::Linear")]
    pub schedule: BetaSchedule,
    /// β_1 of the linear schedule.
    #[config(default = 1e-4)]
    pub beta_start: f64,
    /// β_T of the linear schedule.
    #[config(default = 0.02)]
    pub beta_end: f64,
    /// What the network predicts (ε or v), or a rectified flow.
    #[config(default = "Prediction::Epsilon")]
    pub prediction: Prediction,
}

impl DiffusionConfig {
    /// Checks the step count and β range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.steps < 2 {
            return Err(ConfigError::new(
                "steps",
                format!("must be at least 2, got {}", self.steps),
            ));
        }
        if !(0.0 < self.beta_start && self.beta_start < self.beta_end && self.beta_end < 1.0) {
            return Err(ConfigError::new(
                "beta_start",
                format!(
                    "and beta_end must satisfy 0 < beta_start < beta_end < 1, got {} and {}",
                    self.beta_start, self.beta_end
                ),
            ));
        }
        Ok(())
    }

    /// The schedule these settings describe.
    pub fn build(&self) -> NoiseSchedule {
        match self.schedule {
            BetaSchedule::Linear => {
                NoiseSchedule::linear(self.steps, self.beta_start, self.beta_end)
            }
            BetaSchedule::Cosine => NoiseSchedule::cosine(self.steps),
        }
    }
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
    use burn::tensor::{Distribution, Tolerance};

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

    #[test]
    fn velocity_target_converts_back_to_the_noise_and_the_clean_latent() {
        // v = √ᾱ·ε − √(1−ᾱ)·x_0, so √(1−ᾱ)·x_t + √ᾱ·v = ε and √ᾱ·x_t − √(1−ᾱ)·v = x_0.
        let device = Device::default();
        let s = NoiseSchedule::linear(1000, 1e-4, 0.02);
        for t in [0usize, 500, 999] {
            let x0 = Tensor::<2>::random([3, 64], Distribution::Uniform(-2.0, 2.0), &device);
            let noise = Tensor::<2>::random([3, 64], Distribution::Normal(0.0, 1.0), &device);
            let ts = [t; 3];
            let x_t = s.q_sample(x0.clone(), noise.clone(), &ts);
            let v = Prediction::Velocity.target(&s, x0.clone(), noise.clone(), &ts);
            let a = s.alpha_bar(t);
            Prediction::Velocity
                .epsilon(x_t.clone(), v.clone(), a)
                .into_data()
                .assert_approx_eq::<f32>(&noise.to_data(), Tolerance::absolute(1e-4));
            (x_t * a.sqrt() - v * (1.0 - a).sqrt())
                .into_data()
                .assert_approx_eq::<f32>(&x0.to_data(), Tolerance::absolute(1e-4));
            // ε-prediction: the target is the noise and the output is ε̂ itself.
            Prediction::Epsilon
                .target(&s, x0.clone(), noise.clone(), &ts)
                .into_data()
                .assert_eq(&noise.to_data(), true);
        }
    }

    #[test]
    fn min_snr_weights_give_both_objectives_the_same_x0_weight() {
        // ‖ε̂−ε‖² = SNR·‖x̂_0−x_0‖² and ‖v̂−v‖² = (SNR+1)·‖x̂_0−x_0‖²: both weighted
        // losses equal min(SNR, γ)·‖x̂_0−x_0‖².
        for snr in [1e-4_f64, 0.5, 5.0, 1e3] {
            let gamma = 5.0;
            let x0_weight = snr.min(gamma);
            let eps = Prediction::Epsilon.loss_weight(snr, gamma) * snr;
            let v = Prediction::Velocity.loss_weight(snr, gamma) * (snr + 1.0);
            assert!((eps - x0_weight).abs() < 1e-12 && (v - x0_weight).abs() < 1e-12);
            assert_eq!(Prediction::Velocity.loss_weight(snr, 0.0), 1.0);
            assert_eq!(Prediction::Epsilon.loss_weight(snr, 0.0), 1.0);
        }
    }

    #[test]
    fn invalid_settings_are_named() {
        assert_eq!(
            DiffusionConfig::new()
                .with_steps(1)
                .validate()
                .unwrap_err()
                .field,
            "steps"
        );
        assert_eq!(
            DiffusionConfig::new()
                .with_beta_end(2.0)
                .validate()
                .unwrap_err()
                .field,
            "beta_start"
        );
    }
}
