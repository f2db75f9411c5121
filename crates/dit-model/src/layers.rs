//! Small building blocks shared by the networks: Linear layers applied per token, their
//! initialisers and the pointwise MLP. (The parameter-free operations are in
//! [`crate::ops`].)

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

/// A Linear layer applied to every token: `[batch, tokens, d_in] → [batch, tokens, d_out]`.
///
/// The tokens of all samples go through as one `[batch·tokens, d_in]` matrix
/// product, rather than one product per sample as `Linear` does on a 3-D
/// input, which repacks the weight for every sample on CPU backends.
pub fn per_token(linear: &Linear, x: Tensor<3>) -> Tensor<3> {
    let [batch, tokens, width] = x.dims();
    let y = crate::fused::linear(linear, x.reshape([batch * tokens, width]));
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
