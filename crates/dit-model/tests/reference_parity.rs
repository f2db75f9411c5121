//! Cross-framework parity: the DiT built by `scripts/reference/dit_reference.py`
//! in PyTorch, loaded through the PyTorch-named safetensors import, must give
//! the same output on the same inputs.

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData, Tolerance};
use dit_model::weights::{load_pytorch_safetensors, named_parameters, save_pytorch_safetensors};
use dit_model::{Backend, DitConfig, TextEncoderConfig};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The configuration `CFG` of the reference script.
fn reference_config() -> DitConfig {
    let text = TextEncoderConfig::new(12)
        .with_max_words(6)
        .with_width(16)
        .with_depth(2)
        .with_heads(2);
    DitConfig {
        latent_channels: 4,
        latent_frames: 4,
        latent_size: 8,
        patch_frames: 2,
        patch_size: 2,
        hidden: 32,
        depth: 2,
        heads: 4,
        mlp_ratio: 4.0,
        cross_attention: true,
        text,
    }
}

fn read(tensors: &SafeTensors, name: &str) -> (Vec<usize>, Vec<u8>) {
    let view = tensors
        .tensor(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    (view.shape().to_vec(), view.data().to_vec())
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn reference_parity_with_pytorch() {
    let device = Device::default();
    let dit = reference_config().init(&device).unwrap();
    let dit = load_pytorch_safetensors(dit, &fixture("reference_dit.safetensors")).unwrap();

    let io = std::fs::read(fixture("reference_io.safetensors")).unwrap();
    let io = SafeTensors::deserialize(&io).unwrap();
    let (latent_shape, latent) = read(&io, "latent");
    let (_, t) = read(&io, "t");
    let (token_shape, tokens) = read(&io, "tokens");
    let (eps_shape, eps) = read(&io, "eps");
    let tokens: Vec<i64> = tokens
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();

    let latent = Tensor::<5>::from_data(TensorData::new(floats(&latent), latent_shape), &device);
    let t = Tensor::<1>::from_data(TensorData::new(floats(&t), [3]), &device);
    let tokens = Tensor::<2, Int>::from_data(TensorData::new(tokens, token_shape), &device);

    let text = dit.encode_text(dit_model::PromptInput::Words(tokens));
    let out = dit.forward(latent, t, &text);
    let expected = TensorData::new(floats(&eps), eps_shape);
    // The reference output has std ≈ 1.75; 1e-4 (f32 products) is far below any real
    // discrepancy; a backend with reduced-precision products states its own.
    let tolerance = Backend::of(&device).map_or(1e-4, Backend::parity_tolerance);
    out.into_data()
        .assert_approx_eq::<f32>(&expected, Tolerance::absolute(tolerance));
}

#[test]
fn safetensors_export_round_trips_and_uses_pytorch_names() {
    let device = Device::default();
    let dit = load_pytorch_safetensors(
        reference_config().init(&device).unwrap(),
        &fixture("reference_dit.safetensors"),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.safetensors");
    save_pytorch_safetensors(&dit, &path).unwrap();

    // Same tensor names and bytes as the file PyTorch wrote.
    let ours = std::fs::read(&path).unwrap();
    let theirs = std::fs::read(fixture("reference_dit.safetensors")).unwrap();
    let (ours, theirs) = (
        SafeTensors::deserialize(&ours).unwrap(),
        SafeTensors::deserialize(&theirs).unwrap(),
    );
    let mut names: Vec<String> = ours.names().into_iter().cloned().collect();
    let mut expected: Vec<String> = theirs.names().into_iter().cloned().collect();
    names.sort();
    expected.sort();
    assert_eq!(names, expected);
    for name in [
        "blocks.1.adaLN_modulation.1.weight",
        "t_embedder.mlp.2.bias",
        "x_embedder.proj.weight",
        "text_encoder.layers.0.norm1.weight",
    ] {
        assert_eq!(read(&ours, name), read(&theirs, name), "{name}");
    }

    // And loading the export gives the same parameters.
    let back = load_pytorch_safetensors(reference_config().init(&device).unwrap(), &path).unwrap();
    assert_eq!(named_parameters(&back), named_parameters(&dit));
}

#[test]
fn mismatched_weights_are_an_error() {
    let device = Device::default();
    let wrong = DitConfig {
        hidden: 48,
        heads: 4,
        ..reference_config()
    };
    let err = load_pytorch_safetensors(
        wrong.init(&device).unwrap(),
        &fixture("reference_dit.safetensors"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("reference_dit.safetensors"),
        "{err}"
    );
    let missing = load_pytorch_safetensors(
        reference_config().init(&device).unwrap(),
        &fixture("absent.safetensors"),
    );
    assert!(missing.is_err());
}
