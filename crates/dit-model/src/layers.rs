//! Small building blocks shared by the networks: parameter-free LayerNorm,
//! adaLN modulation, initialisers and the pointwise MLP.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};

/// LayerNorm over the last axis without scale or shift (DiT uses eps = 1e-6).
pub fn layer_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    let (var, mean) = x.clone().var_mean_bias(D - 1);
    (x - mean) / (var + eps).sqrt()
}

/// adaLN modulation: `x · (1 + scale) + shift`, with one scale and shift per sample.
///
/// # Shapes
/// - x: `[batch, tokens, hidden]`
/// - shift, scale: `[batch, hidden]`
pub fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    x * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim(1)
}

/// tanh-approximated GELU (PyTorch's `GELU(approximate="tanh")`), written as
/// `x · σ(2u)` with `u = √(2/π)·(x + 0.044715·x³)`.
///
/// `½·(1 + tanh(u)) = σ(2u)`, so this is the same function as Burn's
/// `gelu_approximate`; this form needs one `exp` per element and cubes with
/// multiplications, where the library form calls `powf` and `tanh` (half of a
/// CPU training step in profiles of the `tiny` DiT).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * 0.797_884_560_802_865_4; // 2·√(2/π)
    let cube = x.clone() * x.clone() * x.clone();
    let u2 = (x.clone() + cube * 0.044715) * TWO_SQRT_2_OVER_PI;
    x * sigmoid(u2)
}

/// A Linear layer applied to every token: `[batch, tokens, d_in] → [batch, tokens, d_out]`.
///
/// The tokens of all samples go through as one `[batch·tokens, d_in]` matrix
/// product, rather than one product per sample as `Linear` does on a 3-D
/// input, which repacks the weight for every sample on CPU backends.
pub fn per_token(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, tokens, width] = x.dims();
    let y = linear.forward(x.reshape([batch * tokens, width]));
    let out = y.dims()[1];
    y.reshape([batch, tokens, out])
}

/// A Linear layer with Xavier-uniform weights and zero bias (DiT's initialisation).
pub(crate) fn xavier_linear(d_input: usize, d_output: usize, device: &Device) -> Linear {
    let mut linear = LinearConfig::new(d_input, d_output)
        .with_initializer(Initializer::XavierUniform { gain: 1.0 })
        .init(device);
    linear.bias = Some(Param::from_tensor(Tensor::zeros([d_output], device)));
    linear
}

/// A Linear layer whose weight and bias are zero (adaLN-Zero, final layer).
pub(crate) fn zero_linear(d_input: usize, d_output: usize, device: &Device) -> Linear {
    LinearConfig::new(d_input, d_output)
        .with_initializer(Initializer::Zeros)
        .init(device)
}

/// Pointwise MLP: Linear → tanh-GELU → Linear.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Expansion to the hidden width.
    pub fc1: Linear,
    /// Projection back to the token width.
    pub fc2: Linear,
}

impl Mlp {
    /// An MLP `width → hidden → width` with Xavier initialisation.
    pub fn new(width: usize, hidden: usize, device: &Device) -> Self {
        Self {
            fc1: xavier_linear(width, hidden, device),
            fc2: xavier_linear(hidden, width, device),
        }
    }

    /// # Shapes
    /// - x: `[batch, tokens, width]` → `[batch, tokens, width]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        per_token(&self.fc2, self.hidden(x))
    }

    /// The hidden activations `gelu(fc1(x))`.
    ///
    /// # Shapes
    /// - x: `[batch, tokens, width]` → `[batch, tokens, hidden]`
    pub fn hidden(&self, x: Tensor<3>) -> Tensor<3> {
        crate::fused::gelu_tanh(per_token(&self.fc1, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    #[test]
    fn gelu_tanh_matches_the_tanh_formula() {
        let device = Device::default();
        let xs: Vec<f32> = (-80..=80).map(|i| i as f32 * 0.1).collect();
        let x = Tensor::<1>::from_data(TensorData::new(xs.clone(), [xs.len()]), &device);
        let got = gelu_tanh(x.clone());
        // Reference values from the definition, in f64.
        let want: Vec<f32> = xs
            .iter()
            .map(|&x| {
                let x = x as f64;
                let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
                (0.5 * x * (1.0 + u.tanh())) as f32
            })
            .collect();
        got.clone().into_data().assert_approx_eq::<f32>(
            &TensorData::new(want, [xs.len()]),
            Tolerance::absolute(1e-6),
        );
        // And Burn's own tanh form.
        got.into_data().assert_approx_eq::<f32>(
            &burn::tensor::activation::gelu_approximate(x).into_data(),
            Tolerance::absolute(1e-6),
        );
    }

    #[test]
    fn layer_norm_gives_zero_mean_unit_variance() {
        let device = Device::default();
        let x = Tensor::<3>::random([2, 5, 16], Distribution::Normal(3.0, 2.0), &device);
        let y = layer_norm(x, 1e-6);
        let (var, mean) = y.var_mean_bias(2);
        mean.into_data().assert_approx_eq::<f32>(
            &TensorData::zeros::<f32, _>([2, 5, 1]),
            Tolerance::absolute(1e-5),
        );
        var.into_data().assert_approx_eq::<f32>(
            &TensorData::ones::<f32, _>([2, 5, 1]),
            Tolerance::absolute(1e-4),
        );
    }

    #[test]
    fn modulate_matches_closed_form() {
        let device = Device::default();
        let x = Tensor::<3>::from_floats([[[1.0, 2.0]], [[3.0, 4.0]]], &device);
        let shift = Tensor::<2>::from_floats([[0.5, 0.0], [1.0, -1.0]], &device);
        let scale = Tensor::<2>::from_floats([[1.0, 0.0], [-1.0, 2.0]], &device);
        let y = modulate(x, shift, scale);
        y.into_data()
            .assert_eq(&TensorData::from([[[2.5f32, 2.0]], [[1.0, 11.0]]]), false);
    }
}
