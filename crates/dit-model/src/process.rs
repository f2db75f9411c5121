//! The forward process: how a clean latent x₀ becomes the network's input at a noise
//! level, what the network learns to predict there, and how a sampler reads its output
//! back. Two processes exist:
//!
//! - **Gaussian diffusion** on a β schedule ([`crate::schedule`], Ho et al. 2020):
//!   `x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε` at step t, the network predicting ε or v;
//! - **rectified flow** ([`crate::flow`], Liu et al. 2023): `x_σ = (1 − σ)·x₀ + σ·ε`,
//!   the network predicting the velocity `ε − x₀`.
//!
//! Both noise as `a·x₀ + b·ε` with coefficients of the level. Everything else that tells
//! them apart (which levels training draws, what the target is, how the output implies
//! x̂₀, which sampler walks back) is decided here and nowhere else: training, sampling and
//! the trace ask a [`ForwardProcess`] and never branch on the kind of run.

use burn::config::Config;
use burn::tensor::Tensor;
use rand::Rng;

use crate::flow;
use crate::sampler::{SamplerKind, euler, flow_sigmas, respace, sample};
use crate::schedule::{BetaSchedule, NoiseSchedule, per_sample};
use crate::validate::ConfigError;

/// What the network predicts from `x_t`: the regression target of training.
///
/// At high noise `x_t ≈ ε`, so an ε-predictor there learns little about `x_0`
/// (its loss is the `x_0` error weighted by SNR ≈ 0), and `x̂_0 = (x_t − √(1−ᾱ)·ε̂)/√ᾱ`
/// amplifies its errors by `1/√ᾱ` (≈ 160 at the last linear step). The global
/// layout of a clip (where the object starts, which way it moves) is decided at
/// exactly those steps. Predicting the velocity `v = √ᾱ·ε − √(1−ᾱ)·x_0`
/// (Salimans & Ho 2022) keeps both conversions bounded, and its unweighted loss
/// weights the `x_0` error by SNR + 1 (≥ 1 at every step). Min-SNR-γ weighting
/// ([`ForwardProcess::loss_weight`]) brings both back to an `x_0` weight of min(SNR, γ).
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
    /// What the network's output is, in words.
    pub fn describe(self) -> &'static str {
        match self {
            Prediction::Epsilon => "noise ε",
            Prediction::Velocity => "velocity v = √ᾱ·ε − √(1−ᾱ)·x₀",
            Prediction::Flow => "flow velocity ε − x₀",
        }
    }
}

/// Settings of the forward process (the `[diffusion]` section of a config).
#[derive(Config, Debug, PartialEq)]
pub struct DiffusionConfig {
    /// Number of diffusion steps T (a flow's network reads σ·T).
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

    /// The β schedule these settings describe.
    pub fn schedule(&self) -> NoiseSchedule {
        match self.schedule {
            BetaSchedule::Linear => {
                NoiseSchedule::linear(self.steps, self.beta_start, self.beta_end)
            }
            BetaSchedule::Cosine => NoiseSchedule::cosine(self.steps),
        }
    }

    /// The forward process these settings describe (a flow builds no β schedule).
    pub fn process(&self) -> ForwardProcess {
        match self.prediction {
            Prediction::Flow => ForwardProcess::Flow { steps: self.steps },
            prediction => ForwardProcess::Diffusion {
                schedule: self.schedule(),
                prediction,
            },
        }
    }
}

/// A point on the way from x₀ to pure noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NoiseLevel {
    /// Step t (0-based) of a diffusion schedule.
    Step(usize),
    /// σ ∈ [0, 1] of a rectified flow.
    Sigma(f64),
}

/// Gaussian diffusion (ε or v) or rectified flow: see the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub enum ForwardProcess {
    /// `x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε`; the network predicts ε or v (never
    /// [`Prediction::Flow`]: [`DiffusionConfig::process`] builds a flow instead).
    Diffusion {
        /// β_t and ᾱ_t.
        schedule: NoiseSchedule,
        /// [`Prediction::Epsilon`] or [`Prediction::Velocity`].
        prediction: Prediction,
    },
    /// `x_σ = (1 − σ)·x₀ + σ·ε`; the network predicts `ε − x₀` and reads σ·`steps`.
    Flow {
        /// The timestep scale T: the network reads σ·T.
        steps: usize,
    },
}

impl ForwardProcess {
    /// The number of training steps T (a flow's timestep scale).
    pub fn steps(&self) -> usize {
        match self {
            ForwardProcess::Diffusion { schedule, .. } => schedule.len(),
            ForwardProcess::Flow { steps } => *steps,
        }
    }

    /// What the network predicts.
    pub fn prediction(&self) -> Prediction {
        match self {
            ForwardProcess::Diffusion { prediction, .. } => *prediction,
            ForwardProcess::Flow { .. } => Prediction::Flow,
        }
    }

    /// A training sample's noise level: a uniform step of the schedule, or σ drawn
    /// logit-normally ([`flow::logit_normal`]).
    pub fn draw_level<R: Rng + ?Sized>(&self, rng: &mut R) -> NoiseLevel {
        match self {
            ForwardProcess::Diffusion { schedule, .. } => {
                NoiseLevel::Step(rng.random_range(0..schedule.len()))
            }
            ForwardProcess::Flow { .. } => NoiseLevel::Sigma(flow::logit_normal(rng)),
        }
    }

    /// A training sample's noise level drawn with the timestep shift of Esser et al. (2024):
    /// the fraction `u` of the way to pure noise that [`Self::draw_level`] would draw (a
    /// uniform step's, or the logit-normal σ) becomes `shift·u / (1 + (shift − 1)·u)`, so a
    /// `shift` above 1 visits the noisy levels, where a clip's layout is decided, more often
    /// (3: a diffusion step's mean goes from T/2 to 0.68·T). `shift = 1` is
    /// [`Self::draw_level`], draw for draw.
    pub fn draw_level_shifted<R: Rng + ?Sized>(&self, rng: &mut R, shift: f64) -> NoiseLevel {
        if shift == 1.0 {
            return self.draw_level(rng);
        }
        let towards_noise = |u: f64| shift * u / (1.0 + (shift - 1.0) * u);
        match self {
            ForwardProcess::Diffusion { schedule, .. } => {
                let steps = schedule.len();
                let u: f64 = rng.random(); // [0, 1)
                let t = (towards_noise(u) * steps as f64) as usize;
                NoiseLevel::Step(t.min(steps - 1))
            }
            ForwardProcess::Flow { .. } => {
                NoiseLevel::Sigma(towards_noise(flow::logit_normal(rng)))
            }
        }
    }

    /// The level of training step `t` < T: the step itself, or σ = t/T.
    pub fn level_of_step(&self, t: usize) -> NoiseLevel {
        match self {
            ForwardProcess::Diffusion { .. } => NoiseLevel::Step(t),
            ForwardProcess::Flow { steps } => NoiseLevel::Sigma(t as f64 / *steps as f64),
        }
    }

    /// The timestep the network reads at `level`: the step, or σ·T.
    pub fn timestep(&self, level: NoiseLevel) -> f64 {
        match (self, level) {
            (ForwardProcess::Diffusion { .. }, NoiseLevel::Step(t)) => t as f64,
            (ForwardProcess::Flow { steps }, NoiseLevel::Sigma(sigma)) => {
                flow::timestep(sigma, *steps)
            }
            _ => mismatch(level),
        }
    }

    /// The coefficients `(a, b)` of `x = a·x₀ + b·ε` at `level`.
    pub fn coefficients(&self, level: NoiseLevel) -> (f64, f64) {
        match (self, level) {
            (ForwardProcess::Diffusion { schedule, .. }, NoiseLevel::Step(t)) => {
                let a = schedule.alpha_bar(t);
                (a.sqrt(), (1.0 - a).sqrt())
            }
            (ForwardProcess::Flow { .. }, NoiseLevel::Sigma(sigma)) => (1.0 - sigma, sigma),
            _ => mismatch(level),
        }
    }

    /// The noised latents, one level per batch element: the schedule's `q_sample`, or a
    /// point on the flow's line.
    ///
    /// # Shapes
    /// - x0, noise: `[batch, ...]`; `levels.len() == batch`
    pub fn noise<const D: usize>(
        &self,
        x0: Tensor<D>,
        noise: Tensor<D>,
        levels: &[NoiseLevel],
    ) -> Tensor<D> {
        match self {
            ForwardProcess::Diffusion { schedule, .. } => {
                let steps = each(levels, |level| match level {
                    NoiseLevel::Step(t) => Some(t),
                    NoiseLevel::Sigma(_) => None,
                });
                schedule.q_sample(x0, noise, &steps)
            }
            ForwardProcess::Flow { .. } => {
                let sigmas = each(levels, |level| match level {
                    NoiseLevel::Sigma(sigma) => Some(sigma),
                    NoiseLevel::Step(_) => None,
                });
                flow::interpolate(x0, noise, &sigmas)
            }
        }
    }

    /// The latent at one `level` for the whole batch.
    pub fn noise_at<const D: usize>(
        &self,
        x0: Tensor<D>,
        noise: Tensor<D>,
        level: NoiseLevel,
    ) -> Tensor<D> {
        let (signal, sigma) = self.coefficients(level);
        x0 * signal + noise * sigma
    }

    /// The training target for clean latents `x0` noised with `noise` at `levels`: ε,
    /// `v = √ᾱ·ε − √(1−ᾱ)·x₀`, or the flow's `ε − x₀`.
    ///
    /// # Shapes
    /// - x0, noise: `[batch, ...]`; `levels.len() == batch`
    pub fn target<const D: usize>(
        &self,
        x0: Tensor<D>,
        noise: Tensor<D>,
        levels: &[NoiseLevel],
    ) -> Tensor<D> {
        match self.prediction() {
            Prediction::Epsilon => noise,
            Prediction::Flow => flow::velocity(x0, noise),
            Prediction::Velocity => {
                let device = x0.device();
                let (signal, sigma): (Vec<f64>, Vec<f64>) =
                    levels.iter().map(|&l| self.coefficients(l)).unzip();
                noise * per_sample::<D>(signal.into_iter(), &device)
                    - x0 * per_sample::<D>(sigma.into_iter(), &device)
            }
        }
    }

    /// Min-SNR-γ loss weight (Hang et al. 2023) at `level`: min(SNR, γ)/SNR for ε and
    /// min(SNR, γ)/(SNR + 1) for v, so that both weight the `x_0` error by min(SNR, γ).
    /// γ = 0 turns weighting off (weight 1), as does a flow, whose σ distribution does the
    /// weighting ([`flow::logit_normal`]).
    pub fn loss_weight(&self, level: NoiseLevel, gamma: f64) -> f64 {
        let ForwardProcess::Diffusion {
            schedule,
            prediction,
        } = self
        else {
            return 1.0;
        };
        if gamma <= 0.0 {
            return 1.0;
        }
        let NoiseLevel::Step(t) = level else {
            mismatch(level)
        };
        let snr = schedule.snr(t);
        match prediction {
            Prediction::Velocity => snr.min(gamma) / (snr + 1.0),
            _ => snr.min(gamma) / snr,
        }
    }

    /// The noise ε̂ implied by the network's `output` at `x_t` of diffusion step `t` (for
    /// ε-prediction, the output itself); a flow's velocity is returned as it is.
    pub fn epsilon<const D: usize>(
        &self,
        x_t: Tensor<D>,
        output: Tensor<D>,
        t: usize,
    ) -> Tensor<D> {
        match self {
            ForwardProcess::Diffusion {
                schedule,
                prediction: Prediction::Velocity,
            } => {
                // ε = √(1−ᾱ)·x_t + √ᾱ·v
                let a = schedule.alpha_bar(t);
                x_t * (1.0 - a).sqrt() + output * a.sqrt()
            }
            _ => output,
        }
    }

    /// The clean latent x̂₀ implied by the network's `output` at `x` of `level`.
    pub fn predicted_clean<const D: usize>(
        &self,
        x: Tensor<D>,
        output: Tensor<D>,
        level: NoiseLevel,
    ) -> Tensor<D> {
        match (self, level) {
            (ForwardProcess::Diffusion { schedule, .. }, NoiseLevel::Step(t)) => {
                let e = self.epsilon(x.clone(), output, t);
                schedule.clean_from_noise(x, e, t)
            }
            // On the line, x_σ = x̂₀ + σ·v.
            (ForwardProcess::Flow { .. }, NoiseLevel::Sigma(sigma)) => x - output * sigma,
            _ => mismatch(level),
        }
    }

    /// How `x` is made from x₀ and ε at `level`, in words with the numbers filled in.
    pub fn formula(&self, level: NoiseLevel) -> String {
        match (self, level) {
            (ForwardProcess::Diffusion { schedule, .. }, NoiseLevel::Step(t)) => format!(
                "x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε with ᾱ_t = {:.4}",
                schedule.alpha_bar(t)
            ),
            (ForwardProcess::Flow { .. }, NoiseLevel::Sigma(sigma)) => {
                format!("x_σ = (1 − σ)·x₀ + σ·ε with σ = t/T = {sigma:.3}")
            }
            _ => mismatch(level),
        }
    }

    /// The levels a sampler of `steps` steps visits from pure noise: the respaced
    /// diffusion steps (descending), or σ from 1 down to 0 (`steps + 1` values, the
    /// last one the clean end).
    pub fn sampling_levels(&self, steps: usize) -> Vec<NoiseLevel> {
        match self {
            ForwardProcess::Diffusion { schedule, .. } => respace(schedule.len(), steps)
                .into_iter()
                .map(NoiseLevel::Step)
                .collect(),
            ForwardProcess::Flow { .. } => flow_sigmas(steps)
                .into_iter()
                .map(NoiseLevel::Sigma)
                .collect(),
        }
    }

    /// The sampler a model of this process uses unless told otherwise: deterministic
    /// DDIM for ε and v, Euler for a flow.
    pub fn default_sampler(&self) -> SamplerKind {
        match self {
            ForwardProcess::Diffusion { .. } => SamplerKind::Ddim { eta: 0.0 },
            ForwardProcess::Flow { .. } => SamplerKind::Euler,
        }
    }

    /// Whether `sampler` can walk this process back (DDPM and DDIM for ε and v, Euler for
    /// a flow), or why not, in a sentence naming the samplers that can.
    pub fn check_sampler(&self, sampler: SamplerKind) -> Result<(), String> {
        match (self, sampler) {
            (ForwardProcess::Flow { .. }, SamplerKind::Euler)
            | (ForwardProcess::Diffusion { .. }, SamplerKind::Ddim { .. } | SamplerKind::Ddpm) => {
                Ok(())
            }
            (ForwardProcess::Flow { .. }, _) => Err(format!(
                "this checkpoint is a rectified flow: sample it with --sampler euler, not {sampler}"
            )),
            (ForwardProcess::Diffusion { prediction, .. }, _) => Err(format!(
                "this checkpoint predicts the {}: sample it with --sampler ddim or ddpm \
                 (euler is for rectified-flow checkpoints)",
                if *prediction == Prediction::Epsilon {
                    "noise ε"
                } else {
                    "velocity v"
                }
            )),
        }
    }

    /// Runs `sampler` from `x`, the latent at point `start` of the [sampling
    /// levels](Self::sampling_levels) of `steps` steps, to a clean latent. `output` is the
    /// (guided) network at `(x, timestep)`; `observe` sees every step's timestep, input and
    /// implied x̂₀; `rng` draws the stochastic samplers' noise.
    ///
    /// # Panics
    /// If [`Self::check_sampler`] refuses `sampler`, or `start > steps`.
    #[allow(clippy::too_many_arguments)]
    pub fn sample<const D: usize, R: Rng + ?Sized>(
        &self,
        sampler: SamplerKind,
        steps: usize,
        start: usize,
        x: Tensor<D>,
        rng: &mut R,
        mut output: impl FnMut(Tensor<D>, f64) -> Tensor<D>,
        mut observe: impl FnMut(f64, &Tensor<D>, Tensor<D>),
    ) -> Tensor<D> {
        if let Err(why) = self.check_sampler(sampler) {
            panic!("{why}");
        }
        match self {
            ForwardProcess::Flow { steps: total } => {
                let velocity = |x: Tensor<D>, sigma: f64| {
                    let t = flow::timestep(sigma, *total);
                    let v = output(x.clone(), t);
                    observe(
                        t,
                        &x,
                        self.predicted_clean(x.clone(), v.clone(), NoiseLevel::Sigma(sigma)),
                    );
                    v
                };
                euler(&flow_sigmas(steps)[start..], x, velocity, |_| {})
            }
            ForwardProcess::Diffusion { schedule, .. } => {
                let eps = |x: Tensor<D>, t: usize| {
                    let out = output(x.clone(), t as f64);
                    let e = self.epsilon(x.clone(), out, t);
                    observe(
                        t as f64,
                        &x,
                        schedule.clean_from_noise(x.clone(), e.clone(), t),
                    );
                    e
                };
                let timesteps = respace(schedule.len(), steps);
                sample(schedule, &timesteps[start..], sampler, x, rng, eps, |_| {})
            }
        }
    }
}

/// What `value` reads of each level (`None`: a level of the other process, see [`mismatch`]).
fn each<T>(levels: &[NoiseLevel], value: impl Fn(NoiseLevel) -> Option<T>) -> Vec<T> {
    levels
        .iter()
        .map(|&level| value(level).unwrap_or_else(|| mismatch(level)))
        .collect()
}

/// A level of the other process: a programming error, since every level comes from the
/// process it is given back to.
fn mismatch(level: NoiseLevel) -> ! {
    panic!("{level:?} is not a level of this forward process")
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, Tolerance};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn velocity() -> ForwardProcess {
        DiffusionConfig::new()
            .with_prediction(Prediction::Velocity)
            .process()
    }

    #[test]
    fn velocity_target_converts_back_to_the_noise_and_the_clean_latent() {
        // v = √ᾱ·ε − √(1−ᾱ)·x_0, so √(1−ᾱ)·x_t + √ᾱ·v = ε and √ᾱ·x_t − √(1−ᾱ)·v = x_0.
        let device = Device::default();
        let process = velocity();
        for t in [0usize, 500, 999] {
            let x0 = Tensor::<2>::random([3, 64], Distribution::Uniform(-2.0, 2.0), &device);
            let noise = Tensor::<2>::random([3, 64], Distribution::Normal(0.0, 1.0), &device);
            let levels = [NoiseLevel::Step(t); 3];
            let x_t = process.noise(x0.clone(), noise.clone(), &levels);
            let v = process.target(x0.clone(), noise.clone(), &levels);
            process
                .epsilon(x_t.clone(), v.clone(), t)
                .into_data()
                .assert_approx_eq::<f32>(&noise.to_data(), Tolerance::absolute(1e-4));
            process
                .predicted_clean(x_t, v, levels[0])
                .into_data()
                .assert_approx_eq::<f32>(&x0.to_data(), Tolerance::absolute(1e-4));
            // ε-prediction: the target is the noise and the output is ε̂ itself.
            DiffusionConfig::new()
                .process()
                .target(x0.clone(), noise.clone(), &levels)
                .into_data()
                .assert_eq(&noise.to_data(), true);
        }
    }

    #[test]
    fn diffusion_noising_is_the_schedules_and_a_flow_noises_along_its_line() {
        let device = Device::default();
        let x0 = Tensor::<2>::random([2, 16], Distribution::Uniform(-1.0, 1.0), &device);
        let noise = Tensor::<2>::random([2, 16], Distribution::Normal(0.0, 1.0), &device);
        let process = velocity();
        let ForwardProcess::Diffusion { schedule, .. } = &process else {
            unreachable!()
        };
        process
            .noise(
                x0.clone(),
                noise.clone(),
                &[NoiseLevel::Step(10), NoiseLevel::Step(900)],
            )
            .into_data()
            .assert_eq(
                &schedule
                    .q_sample(x0.clone(), noise.clone(), &[10, 900])
                    .into_data(),
                true,
            );
        let flow = DiffusionConfig::new()
            .with_prediction(Prediction::Flow)
            .process();
        assert_eq!(flow, ForwardProcess::Flow { steps: 1000 });
        let levels = [NoiseLevel::Sigma(0.25), NoiseLevel::Sigma(1.0)];
        flow.noise(x0.clone(), noise.clone(), &levels)
            .into_data()
            .assert_eq(
                &flow::interpolate(x0.clone(), noise.clone(), &[0.25, 1.0]).into_data(),
                true,
            );
        // The flow's target is its velocity, and x̂₀ = x_σ − σ·v recovers x₀.
        let v = flow.target(x0.clone(), noise.clone(), &levels);
        let x_t = flow.noise(x0.clone(), noise, &levels);
        flow.predicted_clean(x_t.narrow(0, 0, 1), v.narrow(0, 0, 1), levels[0])
            .into_data()
            .assert_approx_eq::<f32>(&x0.narrow(0, 0, 1).to_data(), Tolerance::absolute(1e-5));
        assert_eq!(flow.timestep(NoiseLevel::Sigma(0.25)), 250.0);
        assert_eq!(flow.level_of_step(250), NoiseLevel::Sigma(0.25));
        assert_eq!(process.timestep(process.level_of_step(250)), 250.0);
    }

    #[test]
    fn training_levels_are_uniform_steps_or_logit_normal_sigmas() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let process = velocity();
        let steps: Vec<usize> = (0..5_000)
            .map(|_| match process.draw_level(&mut rng) {
                NoiseLevel::Step(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(steps.iter().all(|&t| t < 1000));
        let mean = steps.iter().sum::<usize>() as f64 / steps.len() as f64;
        assert!((mean - 499.5).abs() < 15.0, "{mean}");
        // The diffusion draw is the generator's uniform step, as the recipe has always drawn it.
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(
            process.draw_level(&mut a),
            NoiseLevel::Step(b.random_range(0..1000))
        );
        let flow = ForwardProcess::Flow { steps: 1000 };
        let NoiseLevel::Sigma(sigma) = flow.draw_level(&mut a) else {
            panic!("a flow draws σ")
        };
        assert_eq!(sigma, flow::logit_normal(&mut b));
    }

    #[test]
    fn shifted_training_levels_lean_towards_noise_as_the_closed_form_says() {
        let (process, flow) = (velocity(), ForwardProcess::Flow { steps: 1000 });
        // Shift 1 is the unshifted draw, draw for draw (so recipes keep their bits).
        let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(5), ChaCha8Rng::seed_from_u64(5));
        for p in [&process, &flow, &process] {
            assert_eq!(p.draw_level_shifted(&mut a, 1.0), p.draw_level(&mut b));
        }
        // Shift s maps u ~ U[0, 1) to s·u / (1 + (s − 1)·u), whose mean for s = 3 is
        // ∫ 3u / (1 + 2u) du = 3/2 − (3/4)·ln 3 ≈ 0.676: a mean step of 0.676·T.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let steps: Vec<usize> = (0..20_000)
            .map(|_| match process.draw_level_shifted(&mut rng, 3.0) {
                NoiseLevel::Step(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(steps.iter().all(|&t| t < 1000));
        let mean = steps.iter().sum::<usize>() as f64 / steps.len() as f64 / 1000.0;
        let expected = 1.5 - 0.75 * 3f64.ln();
        assert!((mean - expected).abs() < 0.01, "{mean} against {expected}");
        // A shifted σ is the shift of the logit-normal σ the same generator gives.
        let (mut a, mut b) = (ChaCha8Rng::seed_from_u64(8), ChaCha8Rng::seed_from_u64(8));
        let NoiseLevel::Sigma(shifted) = flow.draw_level_shifted(&mut a, 3.0) else {
            panic!("a flow draws σ")
        };
        let sigma = flow::logit_normal(&mut b);
        assert!((shifted - 3.0 * sigma / (1.0 + 2.0 * sigma)).abs() < 1e-12);
        assert!(shifted > sigma && shifted < 1.0);
    }

    #[test]
    fn min_snr_weights_give_both_objectives_the_same_x0_weight() {
        // ‖ε̂−ε‖² = SNR·‖x̂_0−x_0‖² and ‖v̂−v‖² = (SNR+1)·‖x̂_0−x_0‖²: both weighted
        // losses equal min(SNR, γ)·‖x̂_0−x_0‖².
        let (eps, v) = (DiffusionConfig::new().process(), velocity());
        let ForwardProcess::Diffusion { schedule, .. } = &v else {
            unreachable!()
        };
        let gamma = 5.0;
        for t in [0usize, 300, 700, 999] {
            let snr = schedule.snr(t);
            let level = NoiseLevel::Step(t);
            let x0_weight = snr.min(gamma);
            assert!((eps.loss_weight(level, gamma) * snr - x0_weight).abs() < 1e-9);
            assert!((v.loss_weight(level, gamma) * (snr + 1.0) - x0_weight).abs() < 1e-9);
            assert_eq!(v.loss_weight(level, 0.0), 1.0);
            assert_eq!(eps.loss_weight(level, 0.0), 1.0);
        }
        let flow = ForwardProcess::Flow { steps: 1000 };
        assert_eq!(flow.loss_weight(NoiseLevel::Sigma(0.3), gamma), 1.0);
    }

    #[test]
    fn each_process_takes_its_own_samplers_and_refuses_the_others() {
        let (v, flow) = (velocity(), ForwardProcess::Flow { steps: 1000 });
        assert_eq!(v.default_sampler(), SamplerKind::Ddim { eta: 0.0 });
        assert_eq!(flow.default_sampler(), SamplerKind::Euler);
        assert!(v.check_sampler(SamplerKind::Ddpm).is_ok());
        assert!(v.check_sampler(SamplerKind::Ddim { eta: 0.5 }).is_ok());
        assert!(flow.check_sampler(SamplerKind::Euler).is_ok());
        let refused = v.check_sampler(SamplerKind::Euler).unwrap_err();
        assert!(
            refused.contains("velocity v") && refused.contains("ddim or ddpm"),
            "{refused}"
        );
        let refused = flow.check_sampler(SamplerKind::Ddpm).unwrap_err();
        assert!(refused.contains("--sampler euler"), "{refused}");
        assert_eq!(v.sampling_levels(4).len(), 4);
        assert_eq!(
            flow.sampling_levels(4),
            [1.0, 0.75, 0.5, 0.25, 0.0].map(NoiseLevel::Sigma).to_vec()
        );
    }

    #[test]
    fn sampling_with_an_oracle_recovers_x0_in_both_processes() {
        let device = Device::default();
        let x0 = Tensor::<2>::random([2, 32], Distribution::Uniform(-1.0, 1.0), &device);
        let noise = Tensor::<2>::random([2, 32], Distribution::Normal(0.0, 1.0), &device);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for process in [velocity(), ForwardProcess::Flow { steps: 1000 }] {
            let start = process.sampling_levels(20)[0];
            let x = process.noise_at(x0.clone(), noise.clone(), start);
            let level = |t: f64| match process {
                ForwardProcess::Flow { steps } => NoiseLevel::Sigma(t / steps as f64),
                _ => NoiseLevel::Step(t as usize),
            };
            // The oracle returns the target for the true x₀ and ε at every step.
            let mut observed = 0;
            let out = process.sample(
                process.default_sampler(),
                20,
                0,
                x,
                &mut rng,
                |x, t| {
                    let (a, b) = process.coefficients(level(t));
                    let eps = (x - x0.clone() * a) / b;
                    process.target(x0.clone(), eps, &[level(t), level(t)])
                },
                |_, _, clean| {
                    observed += 1;
                    clean
                        .into_data()
                        .assert_approx_eq::<f32>(&x0.to_data(), Tolerance::absolute(2e-3));
                },
            );
            assert_eq!(observed, 20);
            out.into_data()
                .assert_approx_eq::<f32>(&x0.to_data(), Tolerance::absolute(2e-3));
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
