//! The CPU kernels behind the fused ops: plain `f32` slices, row-major and
//! contiguous, no Burn types.
//!
//! Each hot loop is written once as an `#[inline(always)]` body and compiled
//! three times by [`multiversion!`]: for AVX-512, for AVX2 + FMA and for the
//! baseline, picked at run time from what the CPU supports. The bodies are
//! written so that the compiler vectorises them (fixed-width lane
//! accumulators, no branches in the element loops); floating-point
//! contraction is off in Rust, so every path gives the same bits.
//!
//! Work is split across rayon's threads by rows or by (batch, head) pairs,
//! never inside a reduction, so results do not depend on thread timing.

use rayon::prelude::*;

/// Compiles `$body` (an `#[inline(always)]` function) for AVX-512, for
/// AVX2 + FMA and for the baseline, and calls the best one the CPU supports.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU supports every feature `avx512` enables.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports every feature `avx2` enables.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

mod attention;
mod linear;

pub use linear::linear;

pub use attention::{
    Attended, AttentionSaved, AttentionShape, Probabilities, cross_attention,
    cross_attention_backward, self_attention, self_attention_backward, valid_keys,
};

/// Lanes of the vectorised reductions: one AVX-512 register of `f32`.
const LANES: usize = 16;

/// Elements per rayon task in the elementwise kernels.
const ELEMENTWISE_CHUNK: usize = 1 << 14;

// ---------------------------------------------------------------------------
// exp
// ---------------------------------------------------------------------------

/// `e^x` in single precision, within 2 ulp on `[-87, 88]`, written to vectorise.
///
/// `e^x = 2^k · e^r` with `k = round(x·log₂e)` and `r = x − k·ln 2` in
/// `[−ln2/2, ln2/2]`; `e^r` is its Taylor polynomial of degree 7 (truncation
/// error below 5e-9 there) and `2^k` is built in the exponent bits. Inputs
/// are clamped to `[-87, 88]` so `2^k` stays a normal number: `exp(-∞)` gives
/// 1.6e-38, not 0, so callers that need exact zeros (masked keys) set them.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part with 9 significant bits, so that k·LN2_HI is exact
    // for |k| ≤ 2¹⁵, and the rest (the Cody–Waite constants of Cephes' expf).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2_E + ROUND;
    let k_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    let k = shifted - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let scale = f32::from_bits(((k_int + 127) as u32) << 23);
    p * scale
}

/// The logistic function `1 / (1 + e^(−z))`.
#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

// ---------------------------------------------------------------------------
// SiLU
// ---------------------------------------------------------------------------

/// The logistic function exactly as Burn's `flex` backend computes it (libm's
/// `expf`, one formula per sign), so that [`silu`] and [`silu_backward`] give the
/// bits of Burn's composite `x·sigmoid(x)` and of its autodiff gradient: runs
/// trained before this op existed reproduce bit for bit.
#[inline(always)]
fn sigmoid_as_flex(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// SiLU `x·σ(x)` element by element; with `keep_sigmoid`, also `σ(x)` (what the
/// backward pass needs).
pub fn silu(x: &[f32], keep_sigmoid: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut y = vec![0.0; x.len()];
    let mut s = if keep_sigmoid {
        vec![0.0; x.len()]
    } else {
        Vec::new()
    };
    if keep_sigmoid {
        y.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(s.par_chunks_mut(ELEMENTWISE_CHUNK))
            .zip(x.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|((y, s), x)| {
                for ((y, s), &x) in y.iter_mut().zip(s).zip(x) {
                    *s = sigmoid_as_flex(x);
                    *y = x * *s;
                }
            });
    } else {
        y.par_chunks_mut(ELEMENTWISE_CHUNK)
            .zip(x.par_chunks(ELEMENTWISE_CHUNK))
            .for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    *y = x * sigmoid_as_flex(x);
                }
            });
    }
    (y, keep_sigmoid.then_some(s))
}

/// The two terms of SiLU's input gradient, `g·σ` and `(g·x)·σ·(1 − σ)`, each
/// rounded as Burn's autodiff rounds it for `x·sigmoid(x)`: the product's
/// gradient, then the sigmoid's.
#[inline(always)]
fn silu_backward_body(
    x: &[f32],
    sigmoid: &[f32],
    grad: &[f32],
    by_product: &mut [f32],
    by_sigmoid: &mut [f32],
) {
    for ((((p, q), &x), &s), &g) in by_product
        .iter_mut()
        .zip(by_sigmoid)
        .zip(x)
        .zip(sigmoid)
        .zip(grad)
    {
        *p = g * s;
        *q = g * x * s * (1.0 - s);
    }
}

multiversion! {
    fn silu_backward_chunk(x: &[f32], sigmoid: &[f32], grad: &[f32], by_product: &mut [f32], by_sigmoid: &mut [f32]) = silu_backward_body;
}

/// The gradient of [`silu`] at `x` (with its saved `sigmoid`) times `grad`, as its
/// two terms (product, sigmoid) whose sum is `dx`. They are returned apart so that
/// the caller can add them to the input's gradient one after the other, in the order
/// Burn's autodiff adds them for the composite: summed first, the result would differ
/// in the last bit where the input has other consumers.
pub fn silu_backward(x: &[f32], sigmoid: &[f32], grad: &[f32]) -> [Vec<f32>; 2] {
    assert!(
        x.len() == sigmoid.len() && x.len() == grad.len(),
        "silu backward: input, sigmoid and gradient sizes"
    );
    let mut by_product = vec![0.0; x.len()];
    let mut by_sigmoid = vec![0.0; x.len()];
    by_product
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(by_sigmoid.par_chunks_mut(ELEMENTWISE_CHUNK))
        .zip(x.par_chunks(ELEMENTWISE_CHUNK))
        .zip(sigmoid.par_chunks(ELEMENTWISE_CHUNK))
        .zip(grad.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((((p, q), x), s), g)| silu_backward_chunk(x, s, g, p, q));
    [by_product, by_sigmoid]
}

// ---------------------------------------------------------------------------
// tanh-GELU
// ---------------------------------------------------------------------------

/// `√(2/π)`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_CUBIC: f32 = 0.044_715;

#[inline(always)]
fn gelu_forward_body(x: &[f32], y: &mut [f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        let u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
        *y = x * sigmoid(2.0 * u);
    }
}

#[inline(always)]
fn gelu_backward_body(x: &[f32], grad: &[f32], dx: &mut [f32]) {
    for ((dx, &x), &g) in dx.iter_mut().zip(x).zip(grad) {
        let u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
        let s = sigmoid(2.0 * u);
        let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x);
        *dx = g * (s + x * s * (1.0 - s) * 2.0 * du);
    }
}

multiversion! {
    fn gelu_forward_chunk(x: &[f32], y: &mut [f32]) = gelu_forward_body;
}
multiversion! {
    fn gelu_backward_chunk(x: &[f32], grad: &[f32], dx: &mut [f32]) = gelu_backward_body;
}

/// tanh-GELU `x·σ(2u)`, `u = √(2/π)(x + 0.044715x³)`, element by element.
pub fn gelu_tanh(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    y.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(x.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(y, x)| gelu_forward_chunk(x, y));
    y
}

/// The gradient of [`gelu_tanh`] at `x` times `grad`.
pub fn gelu_tanh_backward(x: &[f32], grad: &[f32]) -> Vec<f32> {
    assert_eq!(
        x.len(),
        grad.len(),
        "gelu backward: input and gradient sizes"
    );
    let mut dx = vec![0.0; x.len()];
    dx.par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(x.par_chunks(ELEMENTWISE_CHUNK))
        .zip(grad.par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((dx, x), g)| gelu_backward_chunk(x, g, dx));
    dx
}

// ---------------------------------------------------------------------------
// LayerNorm + adaLN modulation
// ---------------------------------------------------------------------------

/// Sum of a slice in a fixed order: `LANES` running sums, then the lanes in order.
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// `Σ (x − mean)²` in the order of [`sum`].
#[inline(always)]
fn sum_squared_deviation(x: &[f32], mean: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += (v - mean) * (v - mean);
        }
    }
    lanes.iter().sum::<f32>() + tail.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>()
}

/// `Σ a·b` in the order of [`sum`].
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = a.chunks_exact(LANES).zip(b.chunks_exact(LANES));
    let tail = a.len() - a.len() % LANES;
    for (ca, cb) in chunks {
        for ((lane, &x), &y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>()
        + a[tail..]
            .iter()
            .zip(&b[tail..])
            .map(|(x, y)| x * y)
            .sum::<f32>()
}

/// Normalises `rows` rows of `x` and modulates them with one `shift`, `scale`;
/// writes `y` and each row's mean and `1/σ`.
#[inline(always)]
fn norm_modulate_rows_body(
    x: &[f32],
    shift: &[f32],
    scale: &[f32],
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let width = shift.len();
    for (((x, y), mean), rstd) in x
        .chunks_exact(width)
        .zip(y.chunks_exact_mut(width))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        let m = sum(x) / width as f32;
        let r = 1.0 / (sum_squared_deviation(x, m) / width as f32 + eps).sqrt();
        for (((y, &x), &shift), &scale) in y.iter_mut().zip(x).zip(shift).zip(scale) {
            *y = (x - m) * r * (1.0 + scale) + shift;
        }
        *mean = m;
        *rstd = r;
    }
}

multiversion! {
    fn norm_modulate_rows(
        x: &[f32],
        shift: &[f32],
        scale: &[f32],
        eps: f32,
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
    ) = norm_modulate_rows_body;
}

/// The output of [`layer_norm_modulate`]: `y` and the statistics its backward pass needs.
pub struct NormModulated {
    /// `x̂·(1 + scale) + shift`, shaped like `x`.
    pub y: Vec<f32>,
    /// Mean of each row of `x`.
    pub mean: Vec<f32>,
    /// `1 / √(var + eps)` of each row of `x` (biased variance).
    pub rstd: Vec<f32>,
}

/// LayerNorm without affine parameters, then adaLN modulation:
/// `y = x̂·(1 + scale[b]) + shift[b]`, `x̂ = (x − mean)/√(var + eps)` over the
/// last axis.
///
/// # Shapes
/// - x: `[batch, tokens, width]`, shift and scale: `[batch, width]`
pub fn layer_norm_modulate(
    x: &[f32],
    shift: &[f32],
    scale: &[f32],
    [batch, tokens, width]: [usize; 3],
    eps: f32,
) -> NormModulated {
    assert_eq!(x.len(), batch * tokens * width, "norm-modulate: x size");
    assert_eq!(shift.len(), batch * width, "norm-modulate: shift size");
    assert_eq!(scale.len(), batch * width, "norm-modulate: scale size");
    let mut y = vec![0.0; x.len()];
    let mut mean = vec![0.0; batch * tokens];
    let mut rstd = vec![0.0; batch * tokens];
    // One task per sample and block of up to 32 rows.
    let rows_per_task = 32.min(tokens.max(1));
    let row_blocks = tokens.div_ceil(rows_per_task);
    let tasks: Vec<_> = y
        .chunks_mut(tokens * width)
        .zip(mean.chunks_mut(tokens).zip(rstd.chunks_mut(tokens)))
        .enumerate()
        .flat_map(|(b, (y, (mean, rstd)))| {
            y.chunks_mut(rows_per_task * width)
                .zip(
                    mean.chunks_mut(rows_per_task)
                        .zip(rstd.chunks_mut(rows_per_task)),
                )
                .enumerate()
                .map(move |(block, (y, (mean, rstd)))| (b, block, y, mean, rstd))
        })
        .collect();
    debug_assert_eq!(tasks.len(), batch * row_blocks);
    tasks.into_par_iter().for_each(|(b, block, y, mean, rstd)| {
        let start = (b * tokens + block * rows_per_task) * width;
        let rows = &x[start..start + y.len()];
        let params = b * width..(b + 1) * width;
        norm_modulate_rows(
            rows,
            &shift[params.clone()],
            &scale[params],
            eps,
            y,
            mean,
            rstd,
        );
    });
    NormModulated { y, mean, rstd }
}

/// One sample's rows of the backward pass of [`layer_norm_modulate`]:
/// writes `dx` and adds into `dshift`, `dscale` (one row each), token by token.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn norm_modulate_backward_sample_body(
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    scale: &[f32],
    grad: &[f32],
    dx: &mut [f32],
    dshift: &mut [f32],
    dscale: &mut [f32],
) {
    let width = scale.len();
    let mut normalised = vec![0.0f32; width];
    let mut g = vec![0.0f32; width];
    for ((((x, grad), dx), &m), &r) in x
        .chunks_exact(width)
        .zip(grad.chunks_exact(width))
        .zip(dx.chunks_exact_mut(width))
        .zip(mean)
        .zip(rstd)
    {
        for ((((n, g), &x), &gy), &scale) in normalised
            .iter_mut()
            .zip(g.iter_mut())
            .zip(x)
            .zip(grad)
            .zip(scale)
        {
            *n = (x - m) * r;
            *g = gy * (1.0 + scale);
        }
        for (((ds, dc), &gy), &n) in dshift
            .iter_mut()
            .zip(dscale.iter_mut())
            .zip(grad)
            .zip(&normalised)
        {
            *ds += gy;
            *dc += gy * n;
        }
        let mean_g = sum(&g) / width as f32;
        let mean_gn = dot(&g, &normalised) / width as f32;
        for ((dx, &g), &n) in dx.iter_mut().zip(&g).zip(&normalised) {
            *dx = r * (g - mean_g - n * mean_gn);
        }
    }
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn norm_modulate_backward_sample(
        x: &[f32],
        mean: &[f32],
        rstd: &[f32],
        scale: &[f32],
        grad: &[f32],
        dx: &mut [f32],
        dshift: &mut [f32],
        dscale: &mut [f32],
    ) = norm_modulate_backward_sample_body;
}

/// Gradients of [`layer_norm_modulate`] with respect to `x`, `shift` and `scale`.
pub struct NormModulateGrads {
    /// `∂L/∂x`, `[batch, tokens, width]`.
    pub x: Vec<f32>,
    /// `∂L/∂shift`, `[batch, width]`.
    pub shift: Vec<f32>,
    /// `∂L/∂scale`, `[batch, width]`.
    pub scale: Vec<f32>,
}

/// The backward pass of [`layer_norm_modulate`], from its input, saved
/// statistics and `scale`, for the output gradient `grad`.
///
/// `∂L/∂shift = Σₜ g`, `∂L/∂scale = Σₜ g·x̂`, and with `ĝ = g·(1 + scale)`,
/// `∂L/∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / σ`. Samples run in parallel; the
/// sums over tokens run in token order.
pub fn layer_norm_modulate_backward(
    x: &[f32],
    mean: &[f32],
    rstd: &[f32],
    scale: &[f32],
    grad: &[f32],
    [batch, tokens, width]: [usize; 3],
) -> NormModulateGrads {
    assert_eq!(
        grad.len(),
        batch * tokens * width,
        "norm-modulate backward: grad size"
    );
    let mut dx = vec![0.0; x.len()];
    let mut dshift = vec![0.0; batch * width];
    let mut dscale = vec![0.0; batch * width];
    let sample = tokens * width;
    dx.par_chunks_mut(sample.max(1))
        .zip(dshift.par_chunks_mut(width.max(1)))
        .zip(dscale.par_chunks_mut(width.max(1)))
        .enumerate()
        .for_each(|(b, ((dx, dshift), dscale))| {
            norm_modulate_backward_sample(
                &x[b * sample..(b + 1) * sample],
                &mean[b * tokens..(b + 1) * tokens],
                &rstd[b * tokens..(b + 1) * tokens],
                &scale[b * width..(b + 1) * width],
                &grad[b * sample..(b + 1) * sample],
                dx,
                dshift,
                dscale,
            );
        });
    NormModulateGrads {
        x: dx,
        shift: dshift,
        scale: dscale,
    }
}
