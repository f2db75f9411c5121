//! Iterative denoising: DDPM (ancestral sampling with the posterior variance,
//! Ho et al. 2020) and DDIM (Song et al. 2021), on a respaced subset of the
//! training steps, and the Euler sampler of a rectified flow, with
//! classifier-free guidance (Ho & Salimans 2022).
//!
//! The samplers only see an ε-predictor `(x_t, t) → ε̂` or a velocity
//! `(x_σ, σ) → v̂`, so they are tested with oracles and know nothing of transformers.

use std::fmt;
use std::str::FromStr;

use crate::noise::gaussian;
use crate::schedule::NoiseSchedule;
use burn::tensor::Tensor;
use rand::Rng;

/// Which reverse process to run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerKind {
    /// Ancestral DDPM sampling with the posterior variance β̃.
    Ddpm,
    /// DDIM with stochasticity η (0: deterministic, 1: DDPM-like).
    Ddim {
        /// η ∈ [0, 1].
        eta: f64,
    },
    /// Euler steps along a rectified flow's velocity, σ from 1 to 0 ([`euler`]): the
    /// sampler of flow checkpoints, and only of them.
    Euler,
}

impl SamplerKind {
    /// Every sampler, by name (DDIM with η = 0).
    pub const ALL: [SamplerKind; 3] = [
        SamplerKind::Ddim { eta: 0.0 },
        SamplerKind::Ddpm,
        SamplerKind::Euler,
    ];

    /// The name [`FromStr`] reads: `ddim`, `ddpm` or `euler`.
    pub fn name(self) -> &'static str {
        match self {
            SamplerKind::Ddpm => "ddpm",
            SamplerKind::Ddim { .. } => "ddim",
            SamplerKind::Euler => "euler",
        }
    }

    /// This sampler with DDIM's stochasticity set to `eta` (the others have none).
    pub fn with_eta(self, eta: f64) -> Self {
        match self {
            SamplerKind::Ddim { .. } => SamplerKind::Ddim { eta },
            other => other,
        }
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SamplerKind::Ddpm => f.write_str("DDPM"),
            SamplerKind::Ddim { eta } => write!(f, "DDIM (η = {eta})"),
            SamplerKind::Euler => f.write_str("Euler"),
        }
    }
}

impl FromStr for SamplerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ddpm" => Ok(SamplerKind::Ddpm),
            "ddim" => Ok(SamplerKind::Ddim { eta: 0.0 }),
            "euler" => Ok(SamplerKind::Euler),
            other => Err(format!(
                "unknown sampler `{other}`; known: ddim, ddpm, euler"
            )),
        }
    }
}

/// `steps` training steps from T-1 down to 0, evenly spaced, both ends kept.
pub fn respace(total: usize, steps: usize) -> Vec<usize> {
    assert!(
        steps >= 1 && steps <= total,
        "cannot respace {total} steps into {steps}"
    );
    if steps == 1 {
        return vec![total - 1];
    }
    let mut out: Vec<usize> = (0..steps)
        .map(|i| ((total - 1) as f64 * i as f64 / (steps - 1) as f64).round() as usize)
        .collect();
    out.dedup();
    out.reverse();
    out
}

/// Classifier-free guidance: `ε_u + s·(ε_c − ε_u)` on every channel (the same
/// formula guides a v-prediction).
pub fn guide<const D: usize>(eps_cond: Tensor<D>, eps_uncond: Tensor<D>, scale: f64) -> Tensor<D> {
    eps_uncond.clone() + (eps_cond - eps_uncond) * scale
}

/// `steps + 1` noise levels of the Euler sampler, from σ = 1 down to σ = 0, evenly spaced.
pub fn flow_sigmas(steps: usize) -> Vec<f64> {
    (0..=steps).map(|i| 1.0 - i as f64 / steps as f64).collect()
}

/// Integrates a rectified flow from `x` at `sigmas[0]` to `sigmas[last]` with Euler steps
/// `x ← x + (σ_next − σ)·v̂(x, σ)`; `velocity` predicts `dx/dσ = ε − x_0`.
pub fn euler<const D: usize>(
    sigmas: &[f64],
    x: Tensor<D>,
    mut velocity: impl FnMut(Tensor<D>, f64) -> Tensor<D>,
    mut on_step: impl FnMut(usize),
) -> Tensor<D> {
    let mut x = x;
    for (i, pair) in sigmas.windows(2).enumerate() {
        let (sigma, next) = (pair[0], pair[1]);
        let v = velocity(x.clone(), sigma);
        x = x + v * (next - sigma);
        on_step(i);
    }
    x
}

/// Runs the reverse process from `x_T` over the respaced `timesteps` (descending).
///
/// `eps` predicts the noise of `x_t` at training step `t`; `rng` draws the
/// stochastic terms (unused by DDIM with η = 0). `kind` is DDPM or DDIM (a flow is sampled
/// by [`euler`]; [`ForwardProcess::check_sampler`](crate::ForwardProcess::check_sampler) tells which applies).
pub fn sample<const D: usize, R: Rng + ?Sized>(
    schedule: &NoiseSchedule,
    timesteps: &[usize],
    kind: SamplerKind,
    x_t: Tensor<D>,
    rng: &mut R,
    mut eps: impl FnMut(Tensor<D>, usize) -> Tensor<D>,
    mut on_step: impl FnMut(usize),
) -> Tensor<D> {
    assert!(
        kind != SamplerKind::Euler,
        "Euler samples flows (`euler`); ForwardProcess::check_sampler refuses it for ε and v"
    );
    let device = x_t.device();
    let mut x = x_t;
    for (i, &t) in timesteps.iter().enumerate() {
        let a_t = schedule.alpha_bar(t);
        let a_prev = timesteps.get(i + 1).map_or(1.0, |&p| schedule.alpha_bar(p));
        let e = eps(x.clone(), t);
        let x0 = schedule.clean_from_noise(x.clone(), e.clone(), t);
        let last = i + 1 == timesteps.len();
        x = match kind {
            SamplerKind::Ddim { eta } => {
                let sigma =
                    eta * ((1.0 - a_prev) / (1.0 - a_t)).sqrt() * (1.0 - a_t / a_prev).sqrt();
                let dir = (1.0 - a_prev - sigma * sigma).max(0.0).sqrt();
                let mut next = x0 * a_prev.sqrt() + e * dir;
                if sigma > 0.0 && !last {
                    next = next + gaussian(rng, x.dims(), &device) * sigma;
                }
                next
            }
            SamplerKind::Ddpm => {
                // Posterior q(x_prev | x_t, x̂_0) of the respaced chain.
                let beta = 1.0 - a_t / a_prev;
                let coef_x0 = beta * a_prev.sqrt() / (1.0 - a_t);
                let coef_xt = (1.0 - a_prev) * (1.0 - beta).sqrt() / (1.0 - a_t);
                let mean = x0 * coef_x0 + x.clone() * coef_xt;
                let variance = beta * (1.0 - a_prev) / (1.0 - a_t);
                if last {
                    mean
                } else {
                    mean + gaussian(rng, x.dims(), &device) * variance.sqrt()
                }
            }
            SamplerKind::Euler => unreachable!("refused above"),
        };
        on_step(i);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow;
    use crate::process::{DiffusionConfig, Prediction};
    use burn::tensor::{Device, Distribution, Tolerance};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn respacing_keeps_the_endpoints() {
        for steps in [2, 10, 50, 999, 1000] {
            let ts = respace(1000, steps);
            assert_eq!(ts.len(), steps);
            assert_eq!((ts[0], *ts.last().unwrap()), (999, 0));
            assert!(ts.windows(2).all(|w| w[0] > w[1]));
        }
        assert_eq!(respace(1000, 1), vec![999]);
        assert_eq!(respace(10, 4), vec![9, 6, 3, 0]);
    }

    /// ε-oracle: the exact noise that turns `x0` into `x_t`.
    fn oracle(
        schedule: &NoiseSchedule,
        x0: Tensor<2>,
    ) -> impl FnMut(Tensor<2>, usize) -> Tensor<2> + '_ {
        move |x, t| {
            let a = schedule.alpha_bar(t);
            (x - x0.clone() * a.sqrt()) / (1.0 - a).sqrt()
        }
    }

    /// [`sample`] over `steps` respaced steps of `schedule`'s 1,000, the stochastic terms
    /// seeded by `seed`.
    fn run(
        schedule: &NoiseSchedule,
        kind: SamplerKind,
        steps: usize,
        x_t: Tensor<2>,
        seed: u64,
        eps: impl FnMut(Tensor<2>, usize) -> Tensor<2>,
    ) -> Tensor<2> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        sample(
            schedule,
            &respace(1000, steps),
            kind,
            x_t,
            &mut rng,
            eps,
            |_| {},
        )
    }

    #[test]
    fn ddim_with_the_true_noise_recovers_x0() {
        let device = Device::default();
        let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02);
        let x0 = Tensor::<2>::random([4, 64], Distribution::Uniform(-1.0, 1.0), &device);
        let x_t = Tensor::<2>::random([4, 64], Distribution::Normal(0.0, 1.0), &device);
        for steps in [1, 10, 50] {
            let ddim = SamplerKind::Ddim { eta: 0.0 };
            let out = run(
                &schedule,
                ddim,
                steps,
                x_t.clone(),
                0,
                oracle(&schedule, x0.clone()),
            );
            out.into_data()
                .assert_approx_eq::<f32>(&x0.to_data(), Tolerance::absolute(2e-3));
        }
    }

    #[test]
    fn ddim_with_the_true_velocity_recovers_x0() {
        // A v-predictor, converted to ε the way the pipeline does it.
        let device = Device::default();
        let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02);
        let x0 = Tensor::<2>::random([4, 64], Distribution::Uniform(-1.0, 1.0), &device);
        let x_t = Tensor::<2>::random([4, 64], Distribution::Normal(0.0, 1.0), &device);
        let mut eps = oracle(&schedule, x0.clone());
        let process = DiffusionConfig::new()
            .with_prediction(Prediction::Velocity)
            .process();
        let v_model = |x: Tensor<2>, t: usize| {
            let a = schedule.alpha_bar(t);
            let v = eps(x.clone(), t) * a.sqrt() - x0.clone() * (1.0 - a).sqrt();
            process.epsilon(x, v, t)
        };
        run(
            &schedule,
            SamplerKind::Ddim { eta: 0.0 },
            25,
            x_t,
            0,
            v_model,
        )
        .into_data()
        .assert_approx_eq::<f32>(&x0.to_data(), Tolerance::absolute(2e-3));
    }

    #[test]
    fn stochastic_samplers_with_the_true_noise_recover_x0() {
        // With an exact ε the posterior mean is exact; the added noise keeps being
        // explained away by the oracle, and the last step adds none.
        let device = Device::default();
        let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02);
        let x0 = Tensor::<2>::random([2, 32], Distribution::Uniform(-1.0, 1.0), &device);
        let x_t = Tensor::<2>::random([2, 32], Distribution::Normal(0.0, 1.0), &device);
        for kind in [SamplerKind::Ddpm, SamplerKind::Ddim { eta: 1.0 }] {
            let out = run(
                &schedule,
                kind,
                20,
                x_t.clone(),
                1,
                oracle(&schedule, x0.clone()),
            );
            out.into_data()
                .assert_approx_eq::<f32>(&x0.to_data(), Tolerance::absolute(2e-3));
        }
    }

    #[test]
    fn same_seed_same_result_and_ddim_is_deterministic() {
        let device = Device::default();
        let schedule = NoiseSchedule::linear(1000, 1e-4, 0.02);
        let x_t = Tensor::<2>::random([2, 16], Distribution::Normal(0.0, 1.0), &device);
        let toy = |x: Tensor<2>, _t: usize| x * 0.5; // any ε-predictor
        let sampled = |kind, seed| run(&schedule, kind, 10, x_t.clone(), seed, toy).into_data();
        sampled(SamplerKind::Ddpm, 7).assert_eq(&sampled(SamplerKind::Ddpm, 7), true);
        sampled(SamplerKind::Ddim { eta: 0.0 }, 1)
            .assert_eq(&sampled(SamplerKind::Ddim { eta: 0.0 }, 2), true);
        assert_ne!(sampled(SamplerKind::Ddpm, 1), sampled(SamplerKind::Ddpm, 2));
    }

    #[test]
    fn guidance_scale_one_is_the_conditional_prediction() {
        let device = Device::default();
        let c = Tensor::<2>::random([2, 8], Distribution::Normal(0.0, 1.0), &device);
        let u = Tensor::<2>::random([2, 8], Distribution::Normal(0.0, 1.0), &device);
        guide(c.clone(), u.clone(), 1.0)
            .into_data()
            .assert_approx_eq::<f32>(&c.to_data(), Tolerance::absolute(1e-6));
        guide(c, u.clone(), 0.0)
            .into_data()
            .assert_approx_eq::<f32>(&u.to_data(), Tolerance::absolute(1e-6));
    }

    #[test]
    fn sampler_names_parse() {
        assert_eq!(
            "DDIM".parse::<SamplerKind>().unwrap(),
            SamplerKind::Ddim { eta: 0.0 }
        );
        assert_eq!("ddpm".parse::<SamplerKind>().unwrap(), SamplerKind::Ddpm);
        assert_eq!("Euler".parse::<SamplerKind>().unwrap(), SamplerKind::Euler);
        assert!("heun".parse::<SamplerKind>().is_err());
    }

    #[test]
    fn euler_with_the_true_velocity_recovers_x0() {
        // On a straight line the velocity oracle (x_σ − x0)/σ = ε − x0 is constant, so
        // Euler is exact with any number of steps, from any starting noise.
        let device = Device::default();
        let x0 = Tensor::<2>::random([4, 64], Distribution::Uniform(-1.0, 1.0), &device);
        let noise = Tensor::<2>::random([4, 64], Distribution::Normal(0.0, 1.0), &device);
        let x1 = flow::interpolate(x0.clone(), noise, &[1.0; 4]);
        for steps in [1, 7, 50] {
            let sigmas = flow_sigmas(steps);
            assert_eq!(
                (sigmas[0], sigmas[steps], sigmas.len()),
                (1.0, 0.0, steps + 1)
            );
            let mut calls = 0;
            let out = euler(
                &sigmas,
                x1.clone(),
                |x, sigma| (x - x0.clone()) / sigma,
                |_| calls += 1,
            );
            assert_eq!(calls, steps);
            out.into_data()
                .assert_approx_eq::<f32>(&x0.to_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn euler_integrates_a_curved_velocity_to_first_order() {
        // dx/dσ = x has the solution x(0) = x(1)·e^{-1}; Euler's error shrinks as 1/steps.
        let device = Device::default();
        let x1 = Tensor::<1>::from_floats([1.0, -2.0], &device);
        let error = |steps: usize| {
            let out = euler(&flow_sigmas(steps), x1.clone(), |x, _| x, |_| {});
            let exact = x1.clone() * (-1f32).exp();
            (out - exact).abs().max().into_scalar::<f32>() as f64
        };
        let (coarse, fine) = (error(10), error(100));
        assert!(coarse > 0.01 && fine < coarse / 8.0, "{coarse} {fine}");
    }
}
