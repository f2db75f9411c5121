//! Multi-head attention, forward and backward, one rayon task per
//! (sample, head): self-attention on the packed `qkv` projection and
//! cross-attention from queries to packed keys and values, with an optional
//! key-padding mask.
//!
//! A head's queries, keys and values are read in place through strides (from
//! `qkv [batch, tokens, 3·width]` the row stride is `3·width`), so splitting
//! heads copies nothing; the products run on `gemm` without threads
//! of their own. Queries are taken in blocks of [`QUERY_BLOCK`] rows: a block's
//! scores against every key (`[block, keys]`, 64 KiB at 128 keys) stay in
//! cache, are turned into probabilities in place, and multiply the values.
//! The backward pass either reads the probabilities saved by the forward
//! pass or recomputes them from the saved log-sum-exp of each row
//! ([`Probabilities`]); the first costs `batch·heads·queries·keys` floats
//! of memory, the second one more product per block.

use rayon::prelude::*;

use super::{LANES, dot};

/// Query rows per block.
const QUERY_BLOCK: usize = 128;

/// What the forward pass keeps for the backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probabilities {
    /// Keep the softmax probabilities (`batch·heads·queries·keys` floats).
    Save,
    /// Keep only each row's log-sum-exp and recompute the probabilities.
    Recompute,
}

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Samples.
    pub batch: usize,
    /// Query rows per sample.
    pub queries: usize,
    /// Key (and value) rows per sample.
    pub keys: usize,
    /// Channels of q, k and v (`heads · head_dim`).
    pub width: usize,
    /// Attention heads.
    pub heads: usize,
}

impl AttentionShape {
    /// Self-attention over `tokens` tokens.
    pub fn self_attention(batch: usize, tokens: usize, width: usize, heads: usize) -> Self {
        Self {
            batch,
            queries: tokens,
            keys: tokens,
            width,
            heads,
        }
    }

    fn head_dim(&self) -> usize {
        self.width / self.heads
    }
}

/// How q, k and v are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packing {
    /// Self-attention: q, k and v side by side in one `[batch, tokens, 3·width]` slice.
    Qkv,
    /// Cross-attention: q `[batch, queries, width]`, and k, v side by side in
    /// `[batch, keys, 2·width]`.
    QAndKv,
}

/// Where one matrix's rows are: row `r` of sample `b` starts at
/// `offset + b·sample_stride + r·row_stride`.
#[derive(Debug, Clone, Copy)]
struct Rows {
    offset: usize,
    sample_stride: usize,
    row_stride: usize,
}

impl Rows {
    fn at(&self, b: usize, row: usize) -> usize {
        self.offset + b * self.sample_stride + row * self.row_stride
    }
}

/// The rows of q, k, v (before the head's column offset) and of the output.
fn layout(packing: Packing, shape: &AttentionShape) -> [Rows; 4] {
    let AttentionShape {
        queries,
        keys,
        width: w,
        ..
    } = *shape;
    let rows = |offset, sample_stride, row_stride| Rows {
        offset,
        sample_stride,
        row_stride,
    };
    let out = rows(0, queries * w, w);
    match packing {
        Packing::Qkv => [
            rows(0, queries * 3 * w, 3 * w),
            rows(w, keys * 3 * w, 3 * w),
            rows(2 * w, keys * 3 * w, 3 * w),
            out,
        ],
        Packing::QAndKv => [
            rows(0, queries * w, w),
            rows(0, keys * 2 * w, 2 * w),
            rows(w, keys * 2 * w, 2 * w),
            out,
        ],
    }
}

/// Checks the slice sizes against the shape.
fn check_sizes(
    packing: Packing,
    shape: &AttentionShape,
    q: &[f32],
    kv: &[f32],
    valid: Option<&[f32]>,
) {
    let AttentionShape {
        batch,
        queries,
        keys,
        width,
        heads,
    } = *shape;
    assert!(
        heads > 0 && width % heads == 0,
        "attention: heads must divide the width"
    );
    match packing {
        Packing::Qkv => {
            assert_eq!(queries, keys, "self-attention: queries and keys differ");
            assert_eq!(q.len(), batch * queries * 3 * width, "attention: qkv size");
        }
        Packing::QAndKv => {
            assert_eq!(q.len(), batch * queries * width, "attention: q size");
            assert_eq!(kv.len(), batch * keys * 2 * width, "attention: kv size");
        }
    }
    if let Some(valid) = valid {
        assert_eq!(valid.len(), batch * keys, "attention: key mask size");
    }
}

/// The forward pass's results.
pub struct Attended {
    /// `[batch, queries, width]`, heads side by side.
    pub out: Vec<f32>,
    /// Log-sum-exp of each row of scaled scores, `[batch, heads, queries]`.
    pub lse: Vec<f32>,
    /// Softmax probabilities `[batch, heads, queries, keys]`, when saved.
    pub probs: Option<Vec<f32>>,
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

/// `scores = q·kᵀ·scale` for the `scores.len() / keys` query rows at `q` and
/// the `keys` key rows at `k` (each a pointer and a row stride), `d` columns
/// each: `kᵀ` is `k` read with its strides swapped.
///
/// # Safety
/// The rows addressed must be in bounds.
unsafe fn scaled_scores(
    scores: &mut [f32],
    keys: usize,
    d: usize,
    q: (*const f32, usize),
    k: (*const f32, usize),
    scale: f32,
) {
    let rows = scores.len() / keys;
    // SAFETY: forwarded to the caller; `scores` holds `rows·keys` elements.
    unsafe {
        matmul(
            [rows, keys, d],
            (scores.as_mut_ptr(), keys, 1),
            false,
            (q.0, q.1, 1),
            (k.0, 1, k.1),
            scale,
        );
    }
}

/// `row[j] = e^(row[j] − shift)`, and 0 where `valid[j]` is 0.
#[inline(always)]
fn exp_shifted(row: &mut [f32], shift: f32, valid: Option<&[f32]>) {
    for s in row.iter_mut() {
        *s = super::exp(*s - shift);
    }
    if let Some(valid) = valid {
        for (p, &v) in row.iter_mut().zip(valid) {
            *p *= v;
        }
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
        exp_shifted(row, max, valid);
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
        exp_shifted(row, lse, valid);
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
pub fn valid_keys(padding: &[bool]) -> Vec<f32> {
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
pub fn self_attention(
    qkv: &[f32],
    shape: AttentionShape,
    valid: Option<&[f32]>,
    keep: Probabilities,
) -> Attended {
    attention(Packing::Qkv, qkv, qkv, shape, valid, keep)
}

/// `softmax(q·kᵀ/√d)·v` for every head, from queries and packed keys and values.
///
/// # Shapes
/// - q: `[batch, queries, width]`, kv: `[batch, keys, 2·width]` (keys, values side by side)
/// - valid: `[batch, keys]`, 1.0 for keys that take part, 0.0 for padding
/// - out: `[batch, queries, width]`
pub fn cross_attention(
    q: &[f32],
    kv: &[f32],
    shape: AttentionShape,
    valid: Option<&[f32]>,
    keep: Probabilities,
) -> Attended {
    attention(Packing::QAndKv, q, kv, shape, valid, keep)
}

/// The forward pass for either packing; `q_src` holds the queries, `kv_src`
/// the keys and values (the same slice for [`Packing::Qkv`]).
fn attention(
    packing: Packing,
    q_src: &[f32],
    kv_src: &[f32],
    shape: AttentionShape,
    valid: Option<&[f32]>,
    keep: Probabilities,
) -> Attended {
    check_sizes(packing, &shape, q_src, kv_src, valid);
    let AttentionShape {
        batch,
        queries,
        keys,
        width,
        heads,
    } = shape;
    let d = shape.head_dim();
    let [q_rows, k_rows, v_rows, out_rows] = layout(packing, &shape);
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; batch * queries * width];
    let mut lse = vec![0.0f32; batch * heads * queries];
    let mut probs =
        (keep == Probabilities::Save).then(|| vec![0.0f32; batch * heads * queries * keys]);
    let out_ptr = Disjoint(out.as_mut_ptr());
    let lse_ptr = Disjoint(lse.as_mut_ptr());
    let probs_ptr = probs.as_mut().map(|p| Disjoint(p.as_mut_ptr()));
    let block = QUERY_BLOCK.min(queries);

    (0..batch * heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / heads, task % heads);
        let valid = valid.map(|v| &v[b * keys..(b + 1) * keys]);
        let mut scratch = if probs_ptr.is_none() {
            vec![0.0f32; block * keys]
        } else {
            Vec::new()
        };
        for q0 in (0..queries).step_by(block) {
            let rows = block.min(queries - q0);
            // SAFETY: task (b, h) alone writes rows [q0, q0 + rows) of its
            // probability plane and log-sum-exp row, and head h's columns of
            // sample b's output rows; all offsets are in bounds by `check_sizes`.
            unsafe {
                let scores: &mut [f32] = match probs_ptr {
                    Some(p) => std::slice::from_raw_parts_mut(
                        p.get().add((task * queries + q0) * keys),
                        rows * keys,
                    ),
                    None => &mut scratch[..rows * keys],
                };
                let q = q_src.as_ptr().add(q_rows.at(b, q0) + h * d);
                let k = kv_src.as_ptr().add(k_rows.at(b, 0) + h * d);
                let v = kv_src.as_ptr().add(v_rows.at(b, 0) + h * d);
                scaled_scores(
                    scores,
                    keys,
                    d,
                    (q, q_rows.row_stride),
                    (k, k_rows.row_stride),
                    scale,
                );
                let lse_rows =
                    std::slice::from_raw_parts_mut(lse_ptr.get().add(task * queries + q0), rows);
                softmax_rows(scores, valid, lse_rows);
                matmul(
                    [rows, d, keys],
                    (out_ptr.get().add(out_rows.at(b, q0) + h * d), width, 1),
                    false,
                    (scores.as_ptr(), keys, 1),
                    (v, v_rows.row_stride, 1),
                    1.0,
                );
            }
        }
    });
    Attended { out, lse, probs }
}

/// The saved results of a forward pass that its backward pass reads.
pub struct AttentionSaved<'a> {
    /// The slice the forward pass read the queries from (`qkv` for self-attention).
    pub queries: &'a [f32],
    /// The slice it read keys and values from (`qkv` again for self-attention).
    pub keys_values: &'a [f32],
    /// Its output.
    pub out: &'a [f32],
    /// Its log-sum-exp per row.
    pub lse: &'a [f32],
    /// Its probabilities, when saved.
    pub probs: Option<&'a [f32]>,
    /// The key mask it used.
    pub valid: Option<&'a [f32]>,
}

/// The gradient of [`self_attention`] with respect to `qkv`, for the output
/// gradient `grad` (`[batch, tokens, width]`).
pub fn self_attention_backward(
    saved: AttentionSaved<'_>,
    grad: &[f32],
    shape: AttentionShape,
) -> Vec<f32> {
    let mut dqkv = vec![0.0f32; saved.queries.len()];
    let ptr = Disjoint(dqkv.as_mut_ptr());
    attention_backward(Packing::Qkv, saved, grad, shape, ptr, ptr);
    dqkv
}

/// The gradients of [`cross_attention`] with respect to `q` and `kv`, for the
/// output gradient `grad` (`[batch, queries, width]`).
pub fn cross_attention_backward(
    saved: AttentionSaved<'_>,
    grad: &[f32],
    shape: AttentionShape,
) -> (Vec<f32>, Vec<f32>) {
    let mut dq = vec![0.0f32; saved.queries.len()];
    let mut dkv = vec![0.0f32; saved.keys_values.len()];
    let (dq_ptr, dkv_ptr) = (Disjoint(dq.as_mut_ptr()), Disjoint(dkv.as_mut_ptr()));
    attention_backward(Packing::QAndKv, saved, grad, shape, dq_ptr, dkv_ptr);
    (dq, dkv)
}

/// The backward pass for either packing, writing the query gradient through
/// `dq_ptr` and the key and value gradients through `dkv_ptr` (laid out as the
/// forward pass's inputs; the same buffer for [`Packing::Qkv`]).
///
/// With `P` the probabilities, `O` the output and `G` its gradient:
/// `dV = Pᵀ·G`, `dS = P ⊙ (G·Vᵀ − rowsum(G ⊙ O))`, `dQ = dS·K/√d`,
/// `dK = dSᵀ·Q/√d`.
fn attention_backward(
    packing: Packing,
    saved: AttentionSaved<'_>,
    grad: &[f32],
    shape: AttentionShape,
    dq_ptr: Disjoint,
    dkv_ptr: Disjoint,
) {
    check_sizes(
        packing,
        &shape,
        saved.queries,
        saved.keys_values,
        saved.valid,
    );
    let AttentionShape {
        batch,
        queries,
        keys,
        width,
        heads,
    } = shape;
    let d = shape.head_dim();
    assert_eq!(
        grad.len(),
        batch * queries * width,
        "attention backward: grad size"
    );
    assert_eq!(
        saved.out.len(),
        grad.len(),
        "attention backward: output size"
    );
    assert_eq!(
        saved.lse.len(),
        batch * heads * queries,
        "attention backward: lse size"
    );
    if let Some(p) = saved.probs {
        assert_eq!(
            p.len(),
            batch * heads * queries * keys,
            "attention backward: probs size"
        );
    }
    let [q_rows, k_rows, v_rows, out_rows] = layout(packing, &shape);
    let scale = 1.0 / (d as f32).sqrt();
    let block = QUERY_BLOCK.min(queries);

    (0..batch * heads).into_par_iter().for_each(|task| {
        let (b, h) = (task / heads, task % heads);
        let valid = saved.valid.map(|v| &v[b * keys..(b + 1) * keys]);
        let mut recomputed = if saved.probs.is_none() {
            vec![0.0f32; block * keys]
        } else {
            Vec::new()
        };
        let mut dscores = vec![0.0f32; block * keys];
        let mut row_dots = vec![0.0f32; block];
        for q0 in (0..queries).step_by(block) {
            let rows = block.min(queries - q0);
            let plane = (task * queries + q0) * keys;
            // SAFETY: reads are within the saved buffers (sizes checked above);
            // task (b, h) alone writes head h's columns of sample b's rows of
            // the gradients.
            unsafe {
                let q = saved.queries.as_ptr().add(q_rows.at(b, q0) + h * d);
                let k = saved.keys_values.as_ptr().add(k_rows.at(b, 0) + h * d);
                let v = saved.keys_values.as_ptr().add(v_rows.at(b, 0) + h * d);
                let lse = &saved.lse[task * queries + q0..task * queries + q0 + rows];
                let probs: &[f32] = match saved.probs {
                    Some(p) => &p[plane..plane + rows * keys],
                    None => {
                        let scores = &mut recomputed[..rows * keys];
                        let (q, k) = ((q, q_rows.row_stride), (k, k_rows.row_stride));
                        scaled_scores(scores, keys, d, q, k, scale);
                        probabilities_from_lse(scores, valid, lse);
                        scores
                    }
                };
                // D = rowsum(G ⊙ O) over this head's columns.
                for (i, dot_i) in row_dots[..rows].iter_mut().enumerate() {
                    let at = out_rows.at(b, q0 + i) + h * d;
                    *dot_i = dot(&grad[at..at + d], &saved.out[at..at + d]);
                }
                let g = grad.as_ptr().add(out_rows.at(b, q0) + h * d);
                // dV (+)= Pᵀ·G
                matmul(
                    [keys, d, rows],
                    (
                        dkv_ptr.get().add(v_rows.at(b, 0) + h * d),
                        v_rows.row_stride,
                        1,
                    ),
                    q0 > 0,
                    (probs.as_ptr(), 1, keys),
                    (g, width, 1),
                    1.0,
                );
                // dP = G·Vᵀ, then dS = P ⊙ (dP − D)
                let ds = &mut dscores[..rows * keys];
                matmul(
                    [rows, keys, d],
                    (ds.as_mut_ptr(), keys, 1),
                    false,
                    (g, width, 1),
                    (v, 1, v_rows.row_stride),
                    1.0,
                );
                softmax_backward_rows(probs, ds, &row_dots[..rows]);
                // dQ = dS·K/√d
                matmul(
                    [rows, d, keys],
                    (
                        dq_ptr.get().add(q_rows.at(b, q0) + h * d),
                        q_rows.row_stride,
                        1,
                    ),
                    false,
                    (ds.as_ptr(), keys, 1),
                    (k, k_rows.row_stride, 1),
                    scale,
                );
                // dK (+)= dSᵀ·Q/√d
                matmul(
                    [keys, d, rows],
                    (
                        dkv_ptr.get().add(k_rows.at(b, 0) + h * d),
                        k_rows.row_stride,
                        1,
                    ),
                    q0 > 0,
                    (ds.as_ptr(), 1, keys),
                    (q, q_rows.row_stride, 1),
                    scale,
                );
            }
        }
    });
}
