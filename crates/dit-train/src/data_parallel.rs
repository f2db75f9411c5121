//! Data-parallel training through Burn: one replica of the DiT per device, each
//! computing the gradients of its share of the batch.
//!
//! The replicas are forks of the model on the first device ([`Module::fork`]: same
//! parameter ids, fresh autodiff leaves), each run on its own thread. Their gradients
//! come back with Burn's [`GradientsParams::to_device`] and are summed, in replica
//! order, by its [`GradientsAccumulator`] — the multi-device path of burn-train's
//! learner. Each share's loss is its mean divided by the number of replicas, so the
//! sum is the gradient of the whole batch's mean: one optimiser step, then the EMA,
//! evaluation and checkpoints, all on the first device.
//!
//! Every sample's random draws come from its index in the whole batch
//! ([`StepBatch`]), so a run depends on the number of devices only through the
//! order in which floating-point gradients are summed.

use std::thread;

use anyhow::{Result, anyhow, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor};
use dit_model::Dit;

use crate::loss::StepBatch;

/// The devices a step's batch is shared between; the first holds the model.
#[derive(Debug, Clone)]
pub struct Replicas {
    devices: Vec<Device>,
}

impl Replicas {
    /// One replica per device of `devices` (autodiff devices; at least one).
    pub fn new(devices: Vec<Device>) -> Self {
        assert!(!devices.is_empty(), "data parallelism needs a device");
        Self { devices }
    }

    /// The device that holds the model, its optimiser and its EMA.
    pub fn main(&self) -> &Device {
        &self.devices[0]
    }

    /// The loss of `batch` (its mean over every sample) and its gradients for `dit`,
    /// on the main device. One replica is the plain single-device step; a batch that
    /// does not split evenly between the replicas is an error.
    pub fn gradients(&self, dit: &Dit, batch: &StepBatch) -> Result<(f64, GradientsParams)> {
        if !batch.len().is_multiple_of(self.devices.len()) {
            bail!(
                "a batch of {} does not split evenly between {} devices",
                batch.len(),
                self.devices.len()
            );
        }
        if self.devices.len() == 1 {
            let loss = batch.loss(dit, self.main());
            let value = loss.clone().into_scalar::<f32>() as f64;
            return Ok((value, GradientsParams::from_grads(loss.backward(), dit)));
        }
        let replicas = self.devices.len();
        let shares = batch.split(replicas);
        materialise(dit);
        let results: Vec<thread::Result<(f32, GradientsParams)>> = thread::scope(|scope| {
            let workers: Vec<_> = shares
                .iter()
                .zip(&self.devices)
                .map(|(share, device)| {
                    let replica = dit.clone();
                    scope.spawn(move || {
                        let replica = replica.fork(device);
                        let loss = share.loss(&replica, device).div_scalar(replicas as f64);
                        let value = loss.clone().into_scalar::<f32>();
                        (
                            value,
                            GradientsParams::from_grads(loss.backward(), &replica),
                        )
                    })
                })
                .collect();
            workers.into_iter().map(|worker| worker.join()).collect()
        });
        let mut accumulator = GradientsAccumulator::<Dit>::new();
        let mut value = 0.0;
        for (index, result) in results.into_iter().enumerate() {
            let (loss, grads) =
                result.map_err(|_| anyhow!("the replica on device {index} failed"))?;
            value += loss as f64;
            accumulator.accumulate(dit, grads.to_device(self.main(), dit));
        }
        Ok((value, accumulator.grads()))
    }
}

/// Draws the initial value of every parameter of `dit` still waiting for it (Burn
/// initialises parameters on first use), in module order on this thread: otherwise the
/// replicas' threads would draw them from the shared generator in whatever order they
/// ran, and a run would depend on scheduling.
fn materialise(dit: &Dit) {
    struct Materialise;
    impl ModuleVisitor for Materialise {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.is_initialized() {
                let _ = param.val();
            }
        }
    }
    dit.visit(&mut Materialise);
}
