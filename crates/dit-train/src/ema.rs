//! Exponential moving average of the DiT's weights, the copy used for sampling.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

/// Every float parameter of a module, flattened, by id.
struct Collect(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.0.insert(param.id, value.reshape([n]));
    }
}

/// `ema ← decay·ema + (1 − decay)·current`, matching parameters by id.
struct Update {
    current: HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Update {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let current = self
            .current
            .remove(&param.id)
            .expect("the EMA copy has the model's parameters");
        let decay = self.decay;
        param.map(|ema| {
            let shape = ema.shape();
            ema * decay + current.reshape(shape) * (1.0 - decay)
        })
    }
}

/// Moves `ema` towards `current` (a copy of the same module, same parameter ids).
pub fn update<M: Module>(ema: M, current: &M, decay: f64) -> M {
    let mut collect = Collect(HashMap::new());
    current.visit(&mut collect);
    ema.map(&mut Update {
        current: collect.0,
        decay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, TensorData};

    #[test]
    fn ema_follows_the_closed_form() {
        let device = Device::default();
        let model: Linear = LinearConfig::new(2, 1).init(&device);
        let ema = model.clone();
        let mut moved = model.clone();
        moved.weight = moved.weight.map(|w| w + 1.0);
        let ema = update(ema, &moved, 0.9);
        // ema = 0.9·w + 0.1·(w + 1) = w + 0.1
        let expected = model.weight.val() + 0.1;
        ema.weight.val().into_data().assert_approx_eq::<f32>(
            &expected.into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
        // An unchanged parameter stays put (up to rounding of 0.9·b + 0.1·b).
        let bias: TensorData = ema.bias.unwrap().val().into_data();
        bias.assert_approx_eq::<f32>(
            &model.bias.unwrap().val().into_data(),
            burn::tensor::Tolerance::absolute(1e-6),
        );
    }
}
