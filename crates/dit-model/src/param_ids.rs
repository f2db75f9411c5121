//! Parameter identifiers taken from the parameter's place in the model, not from chance.
//!
//! Burn gives every parameter a random [`ParamId`] when it is created, writes it into the
//! weights file beside the tensor, keys the optimizer's state by it, and gives it back to the
//! parameter when the file is loaded. With random ids, two runs of the same seed write equal
//! tensors into files that differ in those ids. [`with_path_ids`] replaces every id with a
//! hash of the parameter's path (`blocks.0.attn.qkv.weight`), so a run's weights files are a
//! function of its config and seed, byte for byte. The models call it when they are built
//! ([`crate::DitConfig::init`], [`crate::AutoencoderConfig::init`]).

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::tensor::{Bool, Int, Tensor};

/// Gives every parameter of `module` the id [`path_id`] of its dotted path.
pub fn with_path_ids<M: Module>(module: M) -> M {
    module.map(&mut PathIds::default())
}

/// The id of the parameter at `path` (dotted, as in the weights file): the [`fnv1a`] hash
/// of the path, the same in every process and on every machine.
pub fn path_id(path: &str) -> ParamId {
    ParamId::from(fnv1a(path.as_bytes()))
}

/// The 64-bit FNV-1a hash of `bytes` (Fowler, Noll and Vo): stable, unlike the standard
/// library's hasher, whose output may change between Rust versions.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    })
}

/// Walks a module, keeping the path of the submodule it is in.
#[derive(Default)]
struct PathIds {
    path: Vec<String>,
}

impl PathIds {
    fn id(&self) -> ParamId {
        path_id(&self.path.join("."))
    }
}

impl ModuleMapper for PathIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.id = self.id();
        param
    }

    fn map_int<const D: usize>(
        &mut self,
        mut param: Param<Tensor<D, Int>>,
    ) -> Param<Tensor<D, Int>> {
        param.id = self.id();
        param
    }

    fn map_bool<const D: usize>(
        &mut self,
        mut param: Param<Tensor<D, Bool>>,
    ) -> Param<Tensor<D, Bool>> {
        param.id = self.id();
        param
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AutoencoderConfig, Dit, DitConfig, TextEncoderConfig};
    use burn::module::ModuleVisitor;
    use burn::tensor::Device;

    /// Every parameter's dotted path and id, in visiting order.
    #[derive(Default)]
    struct Ids {
        path: Vec<String>,
        found: Vec<(String, ParamId)>,
    }

    impl ModuleVisitor for Ids {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.found.push((self.path.join("."), param.id));
        }
    }

    fn ids<M: Module>(module: &M) -> Vec<(String, ParamId)> {
        let mut ids = Ids::default();
        module.visit(&mut ids);
        ids.found
    }

    fn dit_config(cross_attention: bool) -> DitConfig {
        DitConfig {
            latent_channels: 4,
            latent_frames: 2,
            latent_size: 4,
            patch_frames: 1,
            patch_size: 2,
            hidden: 32,
            depth: 2,
            heads: 2,
            mlp_ratio: 4.0,
            cross_attention,
            text: TextEncoderConfig::new(40).with_width(16),
        }
    }

    #[test]
    fn fnv1a_matches_its_published_test_vectors() {
        // Test vectors of the FNV-1a 64-bit hash (Fowler, Noll, Vo; IETF draft-eastlake-fnv).
        assert_eq!(path_id("").val(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(path_id("a").val(), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(path_id("foobar").val(), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn built_models_carry_the_ids_of_their_paths_and_no_two_are_equal() {
        let device = Device::default();
        let dit: Dit = dit_config(true).init(&device).unwrap();
        let autoencoder = AutoencoderConfig::new()
            .with_base_channels(8)
            .init(&device)
            .unwrap();
        for found in [ids(&dit), ids(&autoencoder)] {
            assert!(found.len() > 10, "{} parameters", found.len());
            for (path, id) in &found {
                assert_eq!(*id, path_id(path), "{path}");
            }
            let mut distinct: Vec<u64> = found.iter().map(|(_, id)| id.val()).collect();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), found.len());
        }
        let names: Vec<String> = ids(&dit).into_iter().map(|(path, _)| path).collect();
        assert!(
            names.contains(&"blocks.0.cross_attn.q.weight".to_string()),
            "{names:?}"
        );
    }

    #[test]
    fn two_builds_of_one_config_have_equal_ids_and_a_load_keeps_the_files_ids() {
        let device = Device::default();
        let first = dit_config(false).init(&device).unwrap();
        let second = dit_config(false).init(&device).unwrap();
        assert_eq!(ids(&first), ids(&second));
        // Loading gives the parameters the ids written in the file (here other than the
        // path ids), so a resumed run's optimizer state, keyed by them, still matches.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dit.bpk");
        let renamed = first.map(&mut Shifted);
        crate::run::save_module(&renamed, &path).unwrap();
        let loaded = crate::run::load_module(second, &path).unwrap();
        assert_eq!(ids(&loaded), ids(&renamed));
        assert_ne!(ids(&loaded), ids(&dit_config(false).init(&device).unwrap()));
    }

    /// Gives every parameter another id (its path id plus one).
    struct Shifted;

    impl ModuleMapper for Shifted {
        fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.id = ParamId::from(param.id.val().wrapping_add(1));
            param
        }
    }
}
