//! Backend selection: the one place where a [`Device`] is chosen.
//!
//! Backends are compiled in by cargo features (`flex`, the default, `ndarray`,
//! `wgpu`, `cuda`); binaries pick one of the compiled ones at run time with
//! `--backend`.

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
    /// wgpu: Vulkan, Metal, DX12 or WebGPU.
    Wgpu,
    /// CUDA.
    Cuda,
}

impl Backend {
    /// Every backend, compiled in or not.
    pub const ALL: [Backend; 4] = [
        Backend::Flex,
        Backend::Ndarray,
        Backend::Wgpu,
        Backend::Cuda,
    ];

    /// Name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
            Backend::Cuda => "cuda",
        }
    }

    /// Whether this build includes the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Backend::Flex => cfg!(feature = "flex"),
            Backend::Ndarray => cfg!(feature = "ndarray"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
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
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[allow(unreachable_patterns)]
            other => Err(format!(
                "backend `{other}` is not compiled into this binary; rebuild with `--features {other}` (compiled in: {})",
                compiled_names()
            )),
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
                    "unknown backend `{s}`; known: flex, ndarray, wgpu, cuda (compiled in: {})",
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
    fn default_is_compiled_and_has_a_device() {
        let b = Backend::default_compiled();
        assert!(b.is_compiled());
        assert!(b.device().is_ok());
    }
}
