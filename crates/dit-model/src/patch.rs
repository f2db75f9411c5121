//! Spacetime patches: a latent video `[batch, C, F, H, W]` cut into
//! `pt×ph×pw` patches, each flattened in `(C, pt, ph, pw)` order, so that a
//! PyTorch `Conv3d(C, hidden, kernel = stride = (pt, ph, pw))` weight reshaped
//! to `[hidden, C·pt·ph·pw]` is exactly the weight of [`PatchEmbed`]'s Linear.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

use crate::layers::{per_token, xavier_linear};

/// Cuts a video into patch tokens, frame-major then row then column.
///
/// # Shapes
/// - x: `[batch, C, F, H, W]` → `[batch, (F/pt)·(H/ph)·(W/pw), C·pt·ph·pw]`
pub fn patchify(x: Tensor<5>, patch: [usize; 3]) -> Tensor<3> {
    let [b, c, f, h, w] = x.dims();
    let [pt, ph, pw] = patch;
    let (gf, gh, gw) = (f / pt, h / ph, w / pw);
    // At most 6 dimensions, the limit of some backends (ndarray).
    x.reshape([b * c * gf, pt, gh, ph, gw, pw])
        .permute([0, 2, 4, 1, 3, 5]) // [b·c·gf, gh, gw, pt, ph, pw]
        .reshape([b, c, gf * gh * gw, pt * ph * pw])
        .swap_dims(1, 2) // [b, tokens, c, pt·ph·pw]
        .reshape([b, gf * gh * gw, c * pt * ph * pw])
}

/// Inverse of [`patchify`]: tokens back to a video.
///
/// # Shapes
/// - tokens: `[batch, gf·gh·gw, C·pt·ph·pw]` → `[batch, C, gf·pt, gh·ph, gw·pw]`
pub fn unpatchify(
    tokens: Tensor<3>,
    grid: [usize; 3],
    patch: [usize; 3],
    channels: usize,
) -> Tensor<5> {
    let [b, n, _] = tokens.dims();
    let [gf, gh, gw] = grid;
    let [pt, ph, pw] = patch;
    tokens
        .reshape([b, n, channels, pt * ph * pw])
        .swap_dims(1, 2) // [b, c, tokens, pt·ph·pw]
        .reshape([b * channels * gf, gh, gw, pt, ph, pw])
        .permute([0, 3, 1, 4, 2, 5]) // [b·c·gf, pt, gh, ph, gw, pw]
        .reshape([b, channels, gf * pt, gh * ph, gw * pw])
}

/// Linear embedding of spacetime patches (`x_embedder` in DiT).
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// `C·pt·ph·pw → hidden`.
    pub proj: Linear,
    /// Patch shape `[pt, ph, pw]`.
    pub patch: [usize; 3],
}

impl PatchEmbed {
    /// Embeds `channels`-channel patches of shape `patch` into `hidden` channels.
    pub fn new(channels: usize, patch: [usize; 3], hidden: usize, device: &Device) -> Self {
        let patch_dim = channels * patch.iter().product::<usize>();
        Self {
            proj: xavier_linear(patch_dim, hidden, device),
            patch,
        }
    }

    /// # Shapes
    /// - x: `[batch, C, F, H, W]` → `[batch, tokens, hidden]`
    pub fn forward(&self, x: Tensor<5>) -> Tensor<3> {
        per_token(&self.proj, patchify(x, self.patch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn unpatchify_inverts_patchify() {
        let device = Device::default();
        for patch in [[1, 2, 2], [2, 2, 2], [1, 4, 4], [2, 1, 1]] {
            let x = Tensor::<5>::random([2, 3, 4, 8, 8], Distribution::Normal(0.0, 1.0), &device);
            let tokens = patchify(x.clone(), patch);
            let grid = [4 / patch[0], 8 / patch[1], 8 / patch[2]];
            assert_eq!(
                tokens.dims(),
                [
                    2,
                    grid.iter().product(),
                    3 * patch.iter().product::<usize>()
                ]
            );
            unpatchify(tokens, grid, patch, 3)
                .into_data()
                .assert_eq(&x.into_data(), true);
        }
    }

    #[test]
    fn patch_layout_is_channel_frame_row_column() {
        let device = Device::default();
        // x[0, c, f, h, w] = 1000c + 100f + 10h + w
        let mut values = Vec::new();
        for c in 0..2 {
            for f in 0..2 {
                for h in 0..4 {
                    for w in 0..4 {
                        values.push((1000 * c + 100 * f + 10 * h + w) as f32);
                    }
                }
            }
        }
        let x = Tensor::<5>::from_data(TensorData::new(values, [1, 2, 2, 4, 4]), &device);
        let tokens: Vec<f32> = patchify(x, [2, 2, 2]).into_data().try_into_vec().unwrap();
        // Token 1 = frame group 0, row 0, column 1: starts at (c0, f0, h0, w2).
        let token1 = &tokens[16..32];
        assert_eq!(&token1[..4], &[2.0, 3.0, 12.0, 13.0]);
        assert_eq!(token1[4], 102.0); // next frame
        assert_eq!(token1[8], 1002.0); // next channel
    }
}
