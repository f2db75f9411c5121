//! Fixed 3D sin-cos positional embedding over (frame, row, column).
//!
//! The 2D embedding of DiT (from MAE) extended to time: `hidden/4` channels
//! encode the frame index, `3·hidden/8` the row and `3·hidden/8` the column.
//! Each axis uses the 1D embedding `[sin(p·ω_i), cos(p·ω_i)]`,
//! `ω_i = 10000^(-i/(d/2))`, `i = 0..d/2`.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

/// 1D sin-cos embedding of `positions`, `dim` channels each (`dim` even).
///
/// Returns `positions.len() × dim` values, row-major.
pub(crate) fn sincos_1d(dim: usize, positions: &[f64]) -> Vec<f64> {
    assert!(
        dim.is_multiple_of(2),
        "sin-cos embedding needs an even width, got {dim}"
    );
    let half = dim / 2;
    let omega: Vec<f64> = (0..half)
        .map(|i| 1.0 / 10000f64.powf(i as f64 / half as f64))
        .collect();
    let mut out = Vec::with_capacity(positions.len() * dim);
    for &p in positions {
        out.extend(omega.iter().map(|w| (p * w).sin()));
        out.extend(omega.iter().map(|w| (p * w).cos()));
    }
    out
}

/// Channel split `[frames, rows, columns]` of a `hidden`-wide embedding.
pub(crate) fn axis_widths(hidden: usize) -> [usize; 3] {
    let frame = hidden / 4;
    let spatial = (hidden - frame) / 2;
    [frame, spatial, spatial]
}

/// 3D sin-cos embedding of a `[frames, rows, columns]` token grid, tokens in
/// frame-major, then row, then column order.
///
/// Returns `tokens × hidden` values, row-major.
pub fn sincos_3d(hidden: usize, grid: [usize; 3]) -> Vec<f32> {
    let [wf, wr, wc] = axis_widths(hidden);
    let axis =
        |width: usize, n: usize| sincos_1d(width, &(0..n).map(|i| i as f64).collect::<Vec<_>>());
    let (ef, er, ec) = (axis(wf, grid[0]), axis(wr, grid[1]), axis(wc, grid[2]));
    let mut out = Vec::with_capacity(grid.iter().product::<usize>() * hidden);
    for f in 0..grid[0] {
        for r in 0..grid[1] {
            for c in 0..grid[2] {
                out.extend(ef[f * wf..(f + 1) * wf].iter().map(|&v| v as f32));
                out.extend(er[r * wr..(r + 1) * wr].iter().map(|&v| v as f32));
                out.extend(ec[c * wc..(c + 1) * wc].iter().map(|&v| v as f32));
            }
        }
    }
    out
}

/// The 3D embedding of a token grid, computed once (the sines and cosines cost
/// as much as a tenth of a small sampling step if recomputed every forward pass).
///
/// Cheap to clone; not a parameter, so it is not saved in checkpoints.
#[derive(Clone)]
pub struct PositionTable {
    values: Arc<[f32]>,
    tokens: usize,
    hidden: usize,
}

impl PositionTable {
    /// The table of a `[frames, rows, columns]` grid of `hidden`-wide tokens.
    pub fn new(hidden: usize, grid: [usize; 3]) -> Self {
        Self {
            values: sincos_3d(hidden, grid).into(),
            tokens: grid.iter().product(),
            hidden,
        }
    }

    /// The table as a tensor `[tokens, hidden]`.
    pub fn tensor(&self, device: &Device) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(self.values.to_vec(), [self.tokens, self.hidden]),
            device,
        )
    }
}

impl std::fmt::Debug for PositionTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PositionTable([{}, {}])", self.tokens, self.hidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_sum_to_hidden() {
        assert_eq!(axis_widths(128), [32, 48, 48]);
        assert_eq!(axis_widths(1152), [288, 432, 432]);
    }

    #[test]
    fn known_values() {
        // Position 0: sin = 0, cos = 1 on every channel.
        let e = sincos_1d(4, &[0.0, 1.0, 2.0]);
        assert_eq!(&e[0..4], &[0.0, 0.0, 1.0, 1.0]);
        // Position 1, width 4: ω = [1, 1/100].
        let expect = [1f64.sin(), 0.01f64.sin(), 1f64.cos(), 0.01f64.cos()];
        for (got, want) in e[4..8].iter().zip(expect) {
            assert!((got - want).abs() < 1e-12);
        }
        assert!((e[8] - 2f64.sin()).abs() < 1e-12);
    }

    #[test]
    fn token_order_is_frame_row_column() {
        let hidden = 32;
        let grid = [2, 3, 4];
        let emb = sincos_3d(hidden, grid);
        let [wf, wr, _] = axis_widths(hidden);
        let token = |f: usize, r: usize, c: usize| &emb[((f * 3 + r) * 4 + c) * hidden..][..hidden];
        // Token (1, 2, 3): frame part encodes 1, row part 2, column part 3.
        let t = token(1, 2, 3);
        assert!((t[0] as f64 - 1f64.sin()).abs() < 1e-6);
        assert!((t[wf] as f64 - 2f64.sin()).abs() < 1e-6);
        assert!((t[wf + wr] as f64 - 3f64.sin()).abs() < 1e-6);
        // Tokens are all distinct.
        assert_ne!(token(0, 1, 2), token(0, 2, 1));
        assert_eq!(emb.len(), 24 * hidden);
    }
}
