//! Backend selection: the one place where a [`Device`] is chosen.
//!
//! Backends are compiled in by cargo features (`flex`, the default, `ndarray`,
//! `wgpu`, `vulkan`, `cuda`; the GPU ones with Burn's kernel fusion and autotuning);
//! binaries pick one of the compiled ones at run time with `--backend`.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A Burn backend this project can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Burn's pure-Rust CPU backend (fastest CPU backend here).
    Flex,
    /// The ndarray CPU backend.
    Ndarray,
    /// wgpu: Vulkan, Metal, DX12 or WebGPU, whichever the machine offers.
    Wgpu,
    /// wgpu pinned to Vulkan (SPIR-V kernels, tensor cores where the driver has them).
    Vulkan,
    /// CUDA.
    Cuda,
}

impl Backend {
    /// Every backend, compiled in or not.
    pub const ALL: [Backend; 5] = [
        Backend::Flex,
        Backend::Ndarray,
        Backend::Wgpu,
        Backend::Vulkan,
        Backend::Cuda,
    ];

    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
            Backend::Vulkan => "vulkan",
            Backend::Cuda => "cuda",
        }
    }

    /// Whether this build includes the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::Ndarray => cfg!(feature = "ndarray"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
            Backend::Vulkan => cfg!(feature = "vulkan"),
            Backend::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// The backends this build includes, fastest CPU backend first.
    pub fn compiled() -> Vec<Backend> {
        Self::ALL.into_iter().filter(|b| b.is_compiled()).collect()
    }

    /// The default: the first compiled backend (`flex` in a default build).
    pub fn default_compiled() -> Backend {
        Self::compiled()
            .into_iter()
            .next()
            .expect("at least one backend feature is enabled")
    }

    /// The device of this backend (inference; call `.autodiff()` to train).
    pub fn device(self) -> Result<Device, String> {
        match self {
            #[cfg(feature = "flex")]
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            Backend::Ndarray => Ok(Device::ndarray()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(feature = "vulkan")]
            Backend::Vulkan => Ok(Device::vulkan(Default::default())),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[allow(unreachable_patterns)]
            other => Err(format!(
                "backend `{other}` is not compiled into this binary; rebuild with `--features {other}` (compiled in: {})",
                compiled_names()
            )),
        }
    }

    /// The compiled backend whose default device is `device` (a test's `Device::default()`,
    /// which `BURN_DEVICE` picks), if any.
    pub fn of(device: &Device) -> Option<Backend> {
        Self::compiled()
            .into_iter()
            .find(|b| b.device().is_ok_and(|d| d == *device))
    }

    /// The absolute difference a parity test allows between this backend's DiT outputs
    /// (values of order one) and an f32 reference: 1e-4 where matrix products run in f32,
    /// 2e-2 on CUDA, whose autotuned matrix products may run in TF32 (a 10-bit mantissa,
    /// relative error ≈ 5e-4 per product) as PyTorch's do on recent NVIDIA GPUs.
    pub fn parity_tolerance(self) -> f32 {
        match self {
            Backend::Cuda => 2e-2,
            _ => 1e-4,
        }
    }

    /// `count` devices of this backend for data-parallel training, the first being
    /// [`Self::device`]: GPUs `0..count` (wgpu: the discrete ones), or for a CPU
    /// backend, which has one device, that device `count` times (its replicas then
    /// share the same cores: the path is exercised, not sped up).
    pub fn devices(self, count: usize) -> Result<Vec<Device>, String> {
        if count == 0 {
            return Err("the number of devices must be positive".into());
        }
        if count == 1 {
            return Ok(vec![self.device()?]);
        }
        match self {
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok((0..count)
                .map(|i| Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(i)))
                .collect()),
            #[cfg(feature = "vulkan")]
            Backend::Vulkan => Ok((0..count)
                .map(|i| Device::vulkan(burn::tensor::DeviceKind::DiscreteGpu(i)))
                .collect()),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok((0..count).map(Device::cuda).collect()),
            cpu => Ok(vec![cpu.device()?; count]),
        }
    }
}

fn compiled_names() -> String {
    Backend::compiled()
        .iter()
        .map(|b| b.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                format!(
                    "unknown backend `{s}`; known: flex, ndarray, wgpu, vulkan, cuda (compiled in: {})",
                    compiled_names()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
        assert!(
            "tpu"
                .parse::<Backend>()
                .unwrap_err()
                .contains("unknown backend `tpu`")
        );
    }

    #[test]
    fn a_cpu_backend_lends_its_one_device_to_every_replica() {
        let b = Backend::default_compiled();
        let devices = b.devices(3).unwrap();
        assert_eq!(devices.len(), 3);
        if matches!(b, Backend::Flex | Backend::Ndarray) {
            assert!(devices.iter().all(|d| *d == b.device().unwrap()));
        }
        assert!(b.devices(0).unwrap_err().contains("positive"));
    }

    #[test]
    fn a_backend_is_known_by_its_device() {
        for b in Backend::compiled() {
            if b == Backend::Vulkan || b == Backend::Wgpu && Backend::Vulkan.is_compiled() {
                continue; // Vulkan is a wgpu device too: the two may compare equal.
            }
            assert_eq!(Backend::of(&b.device().unwrap()), Some(b));
        }
    }

    #[test]
    fn default_is_compiled_and_has_a_device() {
        let b = Backend::default_compiled();
        assert!(b.is_compiled());
        assert!(b.device().is_ok());
    }
}
