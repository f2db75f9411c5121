//! Multi-head self-attention on the packed `qkv` projection, forward and
//! backward, one rayon task per (sample, head).
//!
//! A head's queries, keys and values are read in place from `qkv
//! [batch, tokens, 3·width]` through strides (row stride `3·width`), so
//! splitting heads copies nothing; the products run on `gemm` without threads
//! of their own. Queries are taken in blocks of [`QUERY_BLOCK`] rows: a block's
//! scores against every key (`[block, keys]`, 64 KiB at 128 keys) stay in
//! cache, are turned into probabilities in place, and multiply the values.
//! The backward pass either reads the probabilities saved by the forward
//! pass or recomputes them from the saved log-sum-exp of each row
//! ([`Probabilities`]); the first costs `batch·heads·tokens²` floats of
//! memory, the second one more product per block.

use rayon::prelude::*;

use super::{LANES, dot};

/// Query rows per block.
const QUERY_BLOCK: usize = 128;

/// What the forward pass keeps for the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probabilities {
    /// Keep the softmax probabilities (`batch·heads·tokens²` floats).
    Save,
    /// Keep only each row's log-sum-exp and recompute the probabilities.
    Recompute,
}

/// Sizes of one self-attention call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttentionShape {
    /// Samples.
    pub(crate) batch: usize,
    /// Tokens per sample (queries and keys).
    pub(crate) tokens: usize,
    /// Channels of q, k and v (`heads · head_dim`).
    pub(crate) width: usize,
    /// Attention heads.
    pub(crate) heads: usize,
}

impl AttentionShape {
    fn head_dim(&self) -> usize {
        self.width / self.heads
    }

    /// Offset of row `token` of sample `b` in `qkv`, plus the column offset `column`.
    fn qkv_at(&self, b: usize, token: usize, column: usize) -> usize {
        (b * self.tokens + token) * 3 * self.width + column
    }

    /// Offset of row `token` of sample `b` in `out`, plus `column`.
    fn out_at(&self, b: usize, token: usize, column: usize) -> usize {
        (b * self.tokens + token) * self.width + column
    }
}

/// The forward pass's results.
pub(crate) struct Attended {
    /// `[batch, tokens, width]`, heads side by side.
    pub(crate) out: Vec<f32>,
    /// Log-sum-exp of each row of scaled scores, `[batch, heads, tokens]`.
    pub(crate) lse: Vec<f32>,
    /// Softmax probabilities `[batch, heads, tokens, tokens]`, when saved.
    pub(crate) probs: Option<Vec<f32>>,
}

/// A raw pointer that rayon tasks may share because each writes its own elements.
#[derive(Clone, Copy)]
struct Disjoint(*mut f32);
// SAFETY: tasks write disjoint elements (one (sample, head) pair each), and the
// buffers outlive the parallel loops that use them.
unsafe impl Send for Disjoint {}
unsafe impl Sync for Disjoint {}

impl Disjoint {
    /// The pointer (a method, so closures capture the whole `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `dst = (accumulate ? dst : 0) + alpha · lhs · rhs`, single-threaded, with
/// each matrix given by a pointer and its (row, column) strides in elements.
///
/// # Safety
/// Every element addressed by the sizes and strides must be in bounds, and no
/// other thread may access `dst`'s elements meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    [m, n, k]: [usize; 3],
    dst: (*mut f32, usize, usize),
    accumulate: bool,
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    alpha: f32,
) {
    // SAFETY: forwarded to the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Turns each row of scaled scores into probabilities in place and returns
/// the rows' log-sum-exp. Keys whose `valid` entry is 0 get probability 0; a
/// row with no valid key becomes all zeros (log-sum-exp −∞).
#[inline(always)]
fn softmax_rows_body(scores: &mut [f32], valid: Option<&[f32]>, lse: &mut [f32]) {
    let keys = scores.len() / lse.len();
    for (row, lse) in scores.chunks_exact_mut(keys).zip(lse.iter_mut()) {
        if let Some(valid) = valid {
            for (s, &v) in row.iter_mut().zip(valid) {
                *s = if v > 0.0 { *s } else { f32::NEG_INFINITY };
            }
        }
        let mut lanes = [f32::NEG_INFINITY; LANES];
        let chunks = row.chunks_exact(LANES);
        let tail = chunks.remainder();
        for chunk in chunks {
            for (lane, &s) in lanes.iter_mut().zip(chunk) {
                *lane = lane.max(s);
            }
        }
        let max = lanes
            .iter()
            .chain(tail)
            .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            *lse = f32::NEG_INFINITY;
            continue;
        }
        for s in row.iter_mut() {
            *s = super::exp(*s - max);
        }
        if let Some(valid) = valid {
            for (p, &v) in row.iter_mut().zip(valid) {
                *p *= v;
            }
        }
        let total = super::sum(row);
        let inverse = 1.0 / total;
        for p in row.iter_mut() {
            *p *= inverse;
        }
        *lse = max + total.ln();
    }
}

multiversion! {
    fn softmax_rows(scores: &mut [f32], valid: Option<&[f32]>, lse: &mut [f32]) = softmax_rows_body;
}

/// Recomputes probabilities from scaled scores and each row's log-sum-exp.
#[inline(always)]
fn probabilities_from_lse_body(scores: &mut [f32], valid: Option<&[f32]>, lse: &[f32]) {
    let keys = scores.len() / lse.len();
    for (row, &lse) in scores.chunks_exact_mut(keys).zip(lse) {
        if lse == f32::NEG_INFINITY {
            row.fill(0.0);
            continue;
        }
        for s in row.iter_mut() {
            *s = super::exp(*s - lse);
        }
        if let Some(valid) = valid {
            for (p, &v) in row.iter_mut().zip(valid) {
                *p *= v;
            }
        }
    }
}

multiversion! {
    fn probabilities_from_lse(scores: &mut [f32], valid: Option<&[f32]>, lse: &[f32]) = probabilities_from_lse_body;
}

/// `dS = P ⊙ (dP − D)`, row by row, in place of `dP`.
#[inline(always)]
fn softmax_backward_rows_body(probs: &[f32], dprobs: &mut [f32], row_dots: &[f32]) {
    let keys = probs.len() / row_dots.len();
    for ((p, dp), &d) in probs
        .chunks_exact(keys)
        .zip(dprobs.chunks_exact_mut(keys))
        .zip(row_dots)
    {
        for (dp, &p) in dp.iter_mut().zip(p) {
            *dp = p * (*dp - d);
        }
    }
}

multiversion! {
    fn softmax_backward_rows(probs: &[f32], dprobs: &mut [f32], row_dots: &[f32]) = softmax_backward_rows_body;
}

/// 1.0 for each key that takes part, 0.0 for padding, per sample.
pub(crate) fn valid_keys(padding: &[bool]) -> Vec<f32> {
    padding
        .iter()
        .map(|&pad| if pad { 0.0 } else { 1.0 })
        .collect()
}

/// `softmax(q·kᵀ/√d)·v` for every head, from the packed projection.
///
/// # Shapes
/// - qkv: `[batch, tokens, 3·width]` (queries, keys, values side by side)
/// - valid: `[batch, tokens]`, 1.0 for keys that take part, 0.0 for padding
/// - out: `[batch, tokens, width]`
pub(crate) fn self_attention(
    qkv: &[f32],
    shape: AttentionShape,
    valid: Option<&[f32]>,
    keep: Probabilities,
) -> Attended {
    let AttentionShape {
        batch,
        tokens,
        width,
        heads,
    } = shape;
    let d = shape.head_dim();
    assert!(
        heads > 0 && width % heads == 0,
        "attention: heads must divide the width"
    );
    assert_eq!(qkv.len(), batch * tokens * 3 * width, "attention: qkv size");
    if let Some(valid) = valid {
        assert_eq!(valid.len(), batch * tokens, "attention: key mask size");
    }
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; batch * tokens * width];
    let mut lse = vec![0.0f32; batch * heads * tokens];
    let mut probs =
        (keep == Probabilities::Save).then(|| vec![0.0f32; batch * heads * tokens * tokens]);
    let out_ptr = Disjoint(out.as_mut_ptr());
    let lse_ptr = Disjoint(lse.as_mut_ptr());
    let probs_ptr = probs.as_mut().map(|p| Disjoint(p.as_mut_ptr()));
    let block = QUERY_BLOCK.min(tokens);

    (0..batch * heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / heads, task % heads);
        let valid = valid.map(|v| &v[b * tokens..(b + 1) * tokens]);
        let mut scratch = if probs_ptr.is_none() {
            vec![0.0f32; block * tokens]
        } else {
            Vec::new()
        };
        for q0 in (0..tokens).step_by(block) {
            let rows = block.min(tokens - q0);
            // SAFETY: task (b, h) alone writes rows [q0, q0 + rows) of its
            // probability plane and log-sum-exp row, and head h's columns of
            // sample b's output rows; all offsets are in bounds by the size checks.
            unsafe {
                let scores: &mut [f32] = match probs_ptr {
                    Some(p) => std::slice::from_raw_parts_mut(
                        p.get().add((task * tokens + q0) * tokens),
                        rows * tokens,
                    ),
                    None => &mut scratch[..rows * tokens],
                };
                let q = qkv.as_ptr().add(shape.qkv_at(b, q0, h * d));
                let k = qkv.as_ptr().add(shape.qkv_at(b, 0, width + h * d));
                let v = qkv.as_ptr().add(shape.qkv_at(b, 0, 2 * width + h * d));
                // scores = q·kᵀ/√d: kᵀ is k read with its strides swapped.
                matmul(
                    [rows, tokens, d],
                    (scores.as_mut_ptr(), tokens, 1),
                    false,
                    (q, 3 * width, 1),
                    (k, 1, 3 * width),
                    scale,
                );
                let lse_rows =
                    std::slice::from_raw_parts_mut(lse_ptr.get().add(task * tokens + q0), rows);
                softmax_rows(scores, valid, lse_rows);
                matmul(
                    [rows, d, tokens],
                    (out_ptr.get().add(shape.out_at(b, q0, h * d)), width, 1),
                    false,
                    (scores.as_ptr(), tokens, 1),
                    (v, 3 * width, 1),
                    1.0,
                );
            }
        }
    });
    Attended { out, lse, probs }
}

/// The saved results of [`self_attention`] that its backward pass reads.
pub(crate) struct AttentionSaved<'a> {
    /// The packed projection the forward pass read.
    pub(crate) qkv: &'a [f32],
    /// Its output.
    pub(crate) out: &'a [f32],
    /// Its log-sum-exp per row.
    pub(crate) lse: &'a [f32],
    /// Its probabilities, when saved.
    pub(crate) probs: Option<&'a [f32]>,
    /// The key mask it used.
    pub(crate) valid: Option<&'a [f32]>,
}

/// The gradient of [`self_attention`] with respect to `qkv`, for the output
/// gradient `grad` (`[batch, tokens, width]`).
///
/// With `P` the probabilities, `O` the output and `G` its gradient:
/// `dV = Pᵀ·G`, `dS = P ⊙ (G·Vᵀ − rowsum(G ⊙ O))`, `dQ = dS·K/√d`,
/// `dK = dSᵀ·Q/√d`, each written into its place of the packed gradient.
pub(crate) fn self_attention_backward(
    saved: AttentionSaved<'_>,
    grad: &[f32],
    shape: AttentionShape,
) -> Vec<f32> {
    let AttentionShape {
        batch,
        tokens,
        width,
        heads,
    } = shape;
    let d = shape.head_dim();
    assert_eq!(
        grad.len(),
        batch * tokens * width,
        "attention backward: grad size"
    );
    let scale = 1.0 / (d as f32).sqrt();
    let mut dqkv = vec![0.0f32; saved.qkv.len()];
    let dqkv_ptr = Disjoint(dqkv.as_mut_ptr());
    let block = QUERY_BLOCK.min(tokens);

    (0..batch * heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / heads, task % heads);
        let valid = saved.valid.map(|v| &v[b * tokens..(b + 1) * tokens]);
        let mut recomputed = if saved.probs.is_none() {
            vec![0.0f32; block * tokens]
        } else {
            Vec::new()
        };
        let mut dscores = vec![0.0f32; block * tokens];
        let mut row_dots = vec![0.0f32; block];
        for q0 in (0..tokens).step_by(block) {
            let rows = block.min(tokens - q0);
            let plane = (task * tokens + q0) * tokens;
            // SAFETY: reads are within the saved buffers (sizes checked by the
            // forward pass); task (b, h) alone writes head h's q, k and v
            // columns of sample b's rows of `dqkv`.
            unsafe {
                let q = saved.qkv.as_ptr().add(shape.qkv_at(b, q0, h * d));
                let k = saved.qkv.as_ptr().add(shape.qkv_at(b, 0, width + h * d));
                let v = saved
                    .qkv
                    .as_ptr()
                    .add(shape.qkv_at(b, 0, 2 * width + h * d));
                let lse = &saved.lse[task * tokens + q0..task * tokens + q0 + rows];
                let probs: &[f32] = match saved.probs {
                    Some(p) => &p[plane..plane + rows * tokens],
                    None => {
                        let scores = &mut recomputed[..rows * tokens];
                        matmul(
                            [rows, tokens, d],
                            (scores.as_mut_ptr(), tokens, 1),
                            false,
                            (q, 3 * width, 1),
                            (k, 1, 3 * width),
                            scale,
                        );
                        probabilities_from_lse(scores, valid, lse);
                        scores
                    }
                };
                // D = rowsum(G ⊙ O) over this head's columns.
                for (i, dot_i) in row_dots[..rows].iter_mut().enumerate() {
                    let at = shape.out_at(b, q0 + i, h * d);
                    *dot_i = dot(&grad[at..at + d], &saved.out[at..at + d]);
                }
                let g = grad.as_ptr().add(shape.out_at(b, q0, h * d));
                // dV (+)= Pᵀ·G
                matmul(
                    [tokens, d, rows],
                    (
                        dqkv_ptr.get().add(shape.qkv_at(b, 0, 2 * width + h * d)),
                        3 * width,
                        1,
                    ),
                    q0 > 0,
                    (probs.as_ptr(), 1, tokens),
                    (g, width, 1),
                    1.0,
                );
                // dP = G·Vᵀ, then dS = P ⊙ (dP − D)
                let ds = &mut dscores[..rows * tokens];
                matmul(
                    [rows, tokens, d],
                    (ds.as_mut_ptr(), tokens, 1),
                    false,
                    (g, width, 1),
                    (v, 1, 3 * width),
                    1.0,
                );
                softmax_backward_rows(probs, ds, &row_dots[..rows]);
                // dQ = dS·K/√d
                matmul(
                    [rows, d, tokens],
                    (dqkv_ptr.get().add(shape.qkv_at(b, q0, h * d)), 3 * width, 1),
                    false,
                    (ds.as_ptr(), tokens, 1),
                    (k, 3 * width, 1),
                    scale,
                );
                // dK (+)= dSᵀ·Q/√d
                matmul(
                    [tokens, d, rows],
                    (
                        dqkv_ptr.get().add(shape.qkv_at(b, 0, width + h * d)),
                        3 * width,
                        1,
                    ),
                    q0 > 0,
                    (ds.as_ptr(), 1, tokens),
                    (q, 3 * width, 1),
                    scale,
                );
            }
        }
    });
    dqkv
}
