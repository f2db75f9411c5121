//! Fused operations of the DiT block: tanh-GELU, LayerNorm + adaLN modulation
//! and multi-head attention (self-attention on the packed `qkv` projection,
//! cross-attention to packed keys and values); SiLU, the autoencoder's and
//! the conditioning's activation; and the Linear layer, whose product `flex`
//! would write into a zero-filled copy (its backward pass is Burn's own).
//!
//! Each is one op with a hand-written backward pass on Burn's `flex` CPU
//! backend (and autodiff over it), added through Burn's backend extension
//! mechanism ([`FusedOps`]), where the composite versions would record 7 to
//! 10 autodiff ops each on the largest activations. On every other backend,
//! and for tensors that are not `f32`, the functions here run the composite
//! versions ([`ops::gelu_tanh`], [`ops::layer_norm`] + [`ops::modulate`],
//! [`ops::multi_head_attention`]), which are also the references the fused ops
//! are tested against. The model calls these functions; `ops` imports nothing
//! of the model.
//!
//! The kernels are in [`cpu`] (slices, SIMD, rayon) and wired to Burn in
//! `flex`; see `docs/performance.md` for what each one gained.

#[cfg(feature = "flex")]
pub mod cpu;
#[cfg(feature = "flex")]
mod flex;

use burn::nn::Linear;
use burn::tensor::{Bool, Tensor, activation};

use crate::ops;

#[cfg(feature = "flex")]
use burn::backend::tensor::{BoolTensor, FloatTensor};
#[cfg(feature = "flex")]
use burn::backend::{Backend, Dispatch, backend_extension};

/// Fused DiT ops as a Burn backend extension, implemented for `flex` and
/// autodiff over `flex`; callers go through the functions of this module,
/// which send other backends to the composite versions.
#[cfg(feature = "flex")]
#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait FusedOps: Backend {
    /// SiLU `x·σ(x)`, element by element.
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// tanh-GELU, element by element.
    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `LayerNorm(x)·(1 + scale) + shift` over the last axis, without affine
    /// parameters. x: `[batch, tokens, width]`; shift, scale: `[batch, width]`.
    fn layer_norm_modulate(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;

    /// A Linear layer `x·weight + bias`: x `[rows, d_in]`, weight `[d_in, d_out]`,
    /// bias `[d_out]`, to `[rows, d_out]` (the bits of Burn's `linear`).
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// Multi-head self-attention from `qkv [batch, tokens, 3·width]` to `[batch, tokens, width]`.
    fn self_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self>;

    /// [`Self::self_attention`] ignoring the keys where `key_padding [batch, tokens]` is true.
    fn self_attention_masked(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;

    /// Multi-head cross-attention from `q [batch, queries, width]` to the keys and
    /// values of `kv [batch, keys, 2·width]`, ignoring keys where `key_padding
    /// [batch, keys]` is true; to `[batch, queries, width]`.
    fn cross_attention(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self>;
}

/// Whether the fused ops run this tensor: `f32` on `flex` (with or without autodiff).
#[cfg(feature = "flex")]
fn runs_fused<const D: usize>(x: &Tensor<D>) -> bool {
    use burn::backend::DispatchDevice;
    let device = x.device();
    let on_flex = match device.as_dispatch() {
        DispatchDevice::Flex(_) => true,
        DispatchDevice::Autodiff(inner) => matches!(**inner, DispatchDevice::Flex(_)),
        #[allow(unreachable_patterns)]
        _ => false,
    };
    on_flex && x.dtype() == burn::tensor::DType::F32
}

/// SiLU `x·σ(x)` (Burn's [`activation::silu`]), with the same bits as Burn's
/// composite on `flex` in one pass forward and one backward, where the composite
/// takes two passes with `exp` and five more.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if runs_fused(&x) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::silu(x.into_dispatch()));
    }
    activation::silu(x)
}

/// tanh-GELU (PyTorch's `GELU(approximate="tanh")`); see [`ops::gelu_tanh`].
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if runs_fused(&x) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::gelu_tanh(x.into_dispatch()));
    }
    ops::gelu_tanh(x)
}

/// A Linear layer on rows, `x·W + b` (Burn's [`Linear::forward`] on a 2-D input,
/// with the same bits): on `flex`, the product is written straight into the output
/// and the bias added in place, without the zero fill, copy and second op that
/// `flex`'s matmul and add cost.
///
/// # Shapes
/// - x: `[rows, d_in]` → `[rows, d_out]`
pub fn linear(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if let Some(bias) = &layer.bias
        && runs_fused(&x)
    {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::linear(
            x.into_dispatch(),
            layer.weight.val().into_dispatch(),
            bias.val().into_dispatch(),
        ));
    }
    layer.forward(x)
}

/// LayerNorm without affine parameters, then adaLN modulation:
/// `LayerNorm(x)·(1 + scale) + shift`.
///
/// # Shapes
/// - x: `[batch, tokens, hidden]`
/// - shift, scale: `[batch, hidden]`
pub fn layer_norm_modulate(
    x: Tensor<3>,
    shift: Tensor<2>,
    scale: Tensor<2>,
    eps: f64,
) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if runs_fused(&x) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::layer_norm_modulate(
            x.into_dispatch(),
            shift.into_dispatch(),
            scale.into_dispatch(),
            eps,
        ));
    }
    ops::modulate(ops::layer_norm(x, eps), shift, scale)
}

/// Multi-head self-attention `softmax(q·kᵀ/√d)·v` from the packed projection.
///
/// # Shapes
/// - qkv: `[batch, tokens, 3·width]`: queries, keys and values side by side
/// - key_padding: `[batch, tokens]`, true where a key must be ignored
/// - output: `[batch, tokens, width]`
pub fn self_attention(
    qkv: Tensor<3>,
    heads: usize,
    key_padding: Option<Tensor<2, Bool>>,
) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if runs_fused(&qkv) {
        let out = match key_padding {
            None => <Dispatch as FusedOps>::self_attention(qkv.into_dispatch(), heads),
            Some(mask) => <Dispatch as FusedOps>::self_attention_masked(
                qkv.into_dispatch(),
                mask.into_dispatch(),
                heads,
            ),
        };
        return Tensor::from_dispatch(out);
    }
    let [q, k, v]: [Tensor<3>; 3] = qkv.chunk(3, 2).try_into().expect("qkv splits into three");
    ops::multi_head_attention(q, k, v, heads, key_padding)
}

/// Multi-head cross-attention from queries to packed keys and values.
///
/// # Shapes
/// - q: `[batch, queries, width]`, kv: `[batch, keys, 2·width]` (keys, values side by side)
/// - key_padding: `[batch, keys]`, true where a key must be ignored
/// - output: `[batch, queries, width]`
pub fn cross_attention(
    q: Tensor<3>,
    kv: Tensor<3>,
    heads: usize,
    key_padding: Tensor<2, Bool>,
) -> Tensor<3> {
    #[cfg(feature = "flex")]
    if runs_fused(&q) {
        return Tensor::from_dispatch(<Dispatch as FusedOps>::cross_attention(
            q.into_dispatch(),
            kv.into_dispatch(),
            key_padding.into_dispatch(),
            heads,
        ));
    }
    let [k, v]: [Tensor<3>; 2] = kv.chunk(2, 2).try_into().expect("kv splits into two");
    ops::multi_head_attention(q, k, v, heads, Some(key_padding))
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution, TensorData};

    fn device() -> Device {
        Device::flex().autodiff()
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec().unwrap()
    }

    /// Largest difference relative to the largest reference value.
    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
        got.iter()
            .zip(want)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale
    }

    fn assert_close<const D: usize>(got: Tensor<D>, want: Tensor<D>, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shape");
        let err = relative_error(&values(got), &values(want));
        assert!(err <= 1e-5, "{what}: relative error {err:e}");
    }

    fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<D> {
        Device::seed(&device(), seed);
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &device())
    }

    /// Runs `op` on leaf copies of `inputs` and returns the output and each input's
    /// gradient of `Σ output · weights`.
    fn output_and_grads<const D: usize, const O: usize>(
        inputs: &[Tensor<D>],
        weights: &Tensor<O>,
        op: impl Fn(Vec<Tensor<D>>) -> Tensor<O>,
    ) -> (Tensor<O>, Vec<Tensor<D>>) {
        let leaves: Vec<_> = inputs
            .iter()
            .map(|t| t.clone().detach().require_grad())
            .collect();
        let out = op(leaves.clone());
        let grads = (out.clone() * weights.clone()).sum().backward();
        let input_grads = leaves
            .iter()
            .map(|t| t.grad(&grads).expect("input has a gradient"))
            .map(|g| Tensor::from_data(g.into_data(), &device()))
            .collect();
        (out, input_grads)
    }

    #[test]
    fn fused_gelu_matches_composite_forward_and_backward() {
        for (i, shape) in [[3, 7, 37], [1, 1, 1], [2, 128, 64]]
            .into_iter()
            .enumerate()
        {
            let x = random(shape, i as u64) * 3.0;
            let w = random(shape, 100 + i as u64);
            let (y, gx) =
                output_and_grads(std::slice::from_ref(&x), &w, |v| gelu_tanh(v[0].clone()));
            let (y_ref, gx_ref) = output_and_grads(&[x], &w, |v| ops::gelu_tanh(v[0].clone()));
            assert_close(y, y_ref, "gelu forward");
            assert_close(gx[0].clone(), gx_ref[0].clone(), "gelu dx");
        }
    }

    #[test]
    fn fused_linear_gives_the_bits_of_burns_linear_forward_and_backward() {
        use burn::module::Param;
        use burn::nn::LinearConfig;
        // Below and above flex's threading threshold (192³ multiply-adds), one row,
        // one input feature.
        for (i, [rows, d_in, d_out]) in [[256, 128, 384], [4096, 256, 768], [1, 3, 5], [7, 1, 2]]
            .into_iter()
            .enumerate()
        {
            let seed = 10 * i as u64;
            let layer = |device: &Device| {
                let mut layer = LinearConfig::new(d_in, d_out).init(device);
                layer.weight = Param::from_tensor(Tensor::from_data(
                    random([d_in, d_out], 300 + seed).into_data(),
                    device,
                ));
                layer.bias = Some(Param::from_tensor(Tensor::from_data(
                    random([d_out], 301 + seed).into_data(),
                    device,
                )));
                layer
            };
            let tracked = layer(&device());
            let x = random([rows, d_in], 302 + seed);
            let w = random([rows, d_out], 303 + seed);
            let run = |fused: bool| {
                let x = x.clone().detach().require_grad();
                let y = if fused {
                    linear(&tracked, x.clone())
                } else {
                    tracked.forward(x.clone())
                };
                let grads = (y.clone() * w.clone()).sum().backward();
                let bias = tracked.bias.as_ref().expect("the layer has a bias");
                [
                    values(y),
                    values(x.grad(&grads).expect("x has a gradient")),
                    values(
                        tracked
                            .weight
                            .grad(&grads)
                            .expect("the weight has a gradient"),
                    ),
                    values(bias.grad(&grads).expect("the bias has a gradient")),
                ]
            };
            let [fused, reference] = [run(true), run(false)];
            for (what, (got, want)) in ["y", "dx", "dweight", "dbias"]
                .iter()
                .zip(fused.iter().zip(&reference))
            {
                assert_eq!(got, want, "linear {what} for {rows}×{d_in}→{d_out}");
            }
            assert!(
                fused[0].iter().any(|v| *v != 0.0),
                "the product is not all zeros"
            );
            // Without autodiff too.
            let plain = layer(&Device::flex());
            let x = Tensor::<2>::from_data(x.into_data(), &Device::flex());
            assert_eq!(
                values(linear(&plain, x.clone())),
                values(plain.forward(x)),
                "linear forward without autodiff"
            );
        }
    }

    #[test]
    fn fused_silu_gives_the_bits_of_burns_silu_forward_and_backward() {
        // Large enough for several rayon chunks; both signs, zero and saturation.
        for (i, shape) in [[2, 16, 4099], [1, 1, 1], [3, 7, 37]]
            .into_iter()
            .enumerate()
        {
            let x = random(shape, 7 + i as u64) * 6.0;
            let x = x.slice_fill([0..1, 0..1, 0..1], 0.0);
            let x = if shape[2] > 3 {
                x.slice_fill([0..1, 0..1, 1..2], -100.0)
                    .slice_fill([0..1, 0..1, 2..3], 100.0)
            } else {
                x
            };
            let w = random(shape, 200 + i as u64);
            let (y, gx) = output_and_grads(std::slice::from_ref(&x), &w, |v| silu(v[0].clone()));
            let (y_ref, gx_ref) = output_and_grads(std::slice::from_ref(&x), &w, |v| {
                activation::silu(v[0].clone())
            });
            assert_eq!(values(y), values(y_ref), "silu forward");
            assert_eq!(values(gx[0].clone()), values(gx_ref[0].clone()), "silu dx");
            // A residual connection around it, as in the autoencoder's blocks: the
            // input's gradient has three terms, added in the composite's order.
            let (_, gx) = output_and_grads(std::slice::from_ref(&x), &w, |v| {
                v[0].clone() + silu(v[0].clone()) * 3.0
            });
            let (_, gx_ref) = output_and_grads(std::slice::from_ref(&x), &w, |v| {
                v[0].clone() + activation::silu(v[0].clone()) * 3.0
            });
            assert_eq!(
                values(gx[0].clone()),
                values(gx_ref[0].clone()),
                "residual dx"
            );
            // Without autodiff too.
            let plain = Tensor::<3>::from_data(x.into_data(), &Device::flex());
            assert_eq!(
                values(silu(plain.clone())),
                values(activation::silu(plain)),
                "silu forward without autodiff"
            );
        }
    }

    #[test]
    fn fused_layer_norm_modulate_matches_composite_forward_and_backward() {
        for (i, [batch, tokens, width]) in [[2, 5, 24], [1, 3, 19], [3, 33, 128], [1, 1, 7]]
            .into_iter()
            .enumerate()
        {
            let seed = 10 * i as u64;
            let x = random([batch, tokens, width], seed) * 2.0 + 0.5;
            // Shift and scale as [batch, 1, width] so one helper handles all three inputs.
            let shift = random([batch, 1, width], seed + 1);
            let scale = random([batch, 1, width], seed + 2) * 0.5;
            let w = random([batch, tokens, width], seed + 3);
            let run = |fused: bool| {
                output_and_grads(&[x.clone(), shift.clone(), scale.clone()], &w, |v| {
                    let shift = v[1].clone().squeeze_dim(1);
                    let scale = v[2].clone().squeeze_dim(1);
                    if fused {
                        layer_norm_modulate(v[0].clone(), shift, scale, 1e-6)
                    } else {
                        ops::modulate(ops::layer_norm(v[0].clone(), 1e-6), shift, scale)
                    }
                })
            };
            let (y, g) = run(true);
            let (y_ref, g_ref) = run(false);
            assert_close(y, y_ref, "norm-modulate forward");
            for (name, (got, want)) in ["dx", "dshift", "dscale"]
                .iter()
                .zip(g.into_iter().zip(g_ref))
            {
                assert_close(got, want, name);
            }
        }
    }

    fn padding(batch: usize, tokens: usize) -> Tensor<2, Bool> {
        // Sample b pads its last b keys (sample 0 none), never all of them.
        let mask: Vec<bool> = (0..batch)
            .flat_map(|b| (0..tokens).map(move |t| t + b.min(tokens - 1) >= tokens))
            .collect();
        Tensor::from_data(TensorData::new(mask, [batch, tokens]), &device())
    }

    #[test]
    fn fused_self_attention_matches_composite_forward_and_backward() {
        let cases = [
            // batch, tokens, width, heads, masked
            (2, 7, 12, 3, false),
            (1, 5, 8, 1, false),
            (3, 9, 16, 4, true),
            (1, 1, 4, 2, false),
            (2, 130, 32, 2, false), // more tokens than one query block
            (2, 131, 24, 3, true),
        ];
        for (i, (batch, tokens, width, heads, masked)) in cases.into_iter().enumerate() {
            let qkv = random([batch, tokens, 3 * width], 7 * i as u64);
            let w = random([batch, tokens, width], 7 * i as u64 + 1);
            let mask = masked.then(|| padding(batch, tokens));
            let (y, g) = output_and_grads(std::slice::from_ref(&qkv), &w, |v| {
                self_attention(v[0].clone(), heads, mask.clone())
            });
            let (y_ref, g_ref) = output_and_grads(&[qkv], &w, |v| {
                let [q, k, v]: [Tensor<3>; 3] = v[0].clone().chunk(3, 2).try_into().unwrap();
                ops::multi_head_attention(q, k, v, heads, mask.clone())
            });
            let case = format!("case {i} (b{batch} t{tokens} w{width} h{heads} mask {masked})");
            assert_close(y, y_ref, &format!("attention forward, {case}"));
            assert_close(
                g[0].clone(),
                g_ref[0].clone(),
                &format!("attention dqkv, {case}"),
            );
        }
    }

    #[test]
    fn fused_cross_attention_matches_composite_forward_and_backward() {
        let cases = [
            // batch, queries, keys, width, heads
            (2, 7, 5, 12, 3),
            (1, 130, 12, 8, 1),
            (3, 9, 1, 16, 4),
        ];
        for (i, (batch, queries, keys, width, heads)) in cases.into_iter().enumerate() {
            let seed = 40 + 5 * i as u64;
            // q and kv as one [batch, queries + keys, 2·width] input so one helper tracks both.
            let q = random([batch, queries, 2 * width], seed);
            let kv = random([batch, keys, 2 * width], seed + 1);
            let both = Tensor::cat(vec![q, kv], 1);
            let w = random([batch, queries, width], seed + 2);
            let mask = padding(batch, keys);
            let run = |fused: bool| {
                output_and_grads(std::slice::from_ref(&both), &w, |v| {
                    let q = v[0].clone().narrow(1, 0, queries).narrow(2, 0, width);
                    let kv = v[0].clone().narrow(1, queries, keys);
                    if fused {
                        cross_attention(q, kv, heads, mask.clone())
                    } else {
                        let [k, v]: [Tensor<3>; 2] = kv.chunk(2, 2).try_into().unwrap();
                        ops::multi_head_attention(q, k, v, heads, Some(mask.clone()))
                    }
                })
            };
            let ((y, g), (y_ref, g_ref)) = (run(true), run(false));
            let case = format!("case {i} (b{batch} q{queries} k{keys} w{width} h{heads})");
            assert_close(y, y_ref, &format!("cross-attention forward, {case}"));
            assert_close(
                g[0].clone(),
                g_ref[0].clone(),
                &format!("cross-attention grads, {case}"),
            );
        }
        let q = random([2, 5, 8], 60);
        let kv = random([2, 3, 16], 61);
        check_finite_differences(
            q,
            random([2, 5, 8], 62),
            |q| cross_attention(q, kv.clone(), 2, padding(2, 3)),
            "cross-attention",
        );
    }

    #[test]
    fn attention_backward_is_the_same_from_saved_or_recomputed_probabilities() {
        let shape = cpu::AttentionShape::self_attention(2, 150, 16, 2);
        let qkv = values(random([2, 150, 48], 3));
        let grad = values(random([2, 150, 16], 4));
        let valid = cpu::valid_keys(
            &(0..300)
                .map(|i| i % 150 >= 140 && i >= 150)
                .collect::<Vec<_>>(),
        );
        let saved = cpu::self_attention(&qkv, shape, Some(&valid), cpu::Probabilities::Save);
        let recomputed =
            cpu::self_attention(&qkv, shape, Some(&valid), cpu::Probabilities::Recompute);
        assert_eq!(saved.out, recomputed.out);
        assert_eq!(saved.lse, recomputed.lse);
        let backward = |probs: Option<&[f32]>| {
            cpu::self_attention_backward(
                cpu::AttentionSaved {
                    queries: &qkv,
                    keys_values: &qkv,
                    out: &saved.out,
                    lse: &saved.lse,
                    probs,
                    valid: Some(&valid),
                },
                &grad,
                shape,
            )
        };
        let from_saved = backward(saved.probs.as_deref());
        let from_lse = backward(None);
        let err = relative_error(&from_lse, &from_saved);
        assert!(err <= 1e-6, "relative difference {err:e}");
    }

    /// Central differences of `Σ f(x)·w` at a few elements of `x` against the
    /// fused backward pass.
    fn check_finite_differences<const D: usize>(
        x: Tensor<D>,
        w: Tensor<D>,
        f: impl Fn(Tensor<D>) -> Tensor<D>,
        what: &str,
    ) {
        let (_, grads) = output_and_grads(std::slice::from_ref(&x), &w, |v| f(v[0].clone()));
        let analytic = values(grads[0].clone());
        let base = values(x.clone());
        let shape = x.dims();
        let loss = |xs: &[f32]| -> f64 {
            let x = Tensor::<D>::from_data(TensorData::new(xs.to_vec(), shape), &device());
            values(f(x))
                .iter()
                .zip(values(w.clone()))
                .map(|(&y, w)| y as f64 * w as f64)
                .sum()
        };
        let h = 1e-2f32;
        let n = base.len();
        for index in [0, n / 3, n / 2, n - 1] {
            let mut plus = base.clone();
            let mut minus = base.clone();
            plus[index] += h;
            minus[index] -= h;
            let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h as f64);
            let got = analytic[index] as f64;
            assert!(
                (numeric - got).abs() <= 2e-2 * numeric.abs().max(0.1),
                "{what}: element {index}: finite differences {numeric}, backward {got}"
            );
        }
    }

    #[test]
    fn fused_backward_passes_agree_with_finite_differences() {
        let x = random([2, 6, 20], 50);
        let w = random([2, 6, 20], 51);
        check_finite_differences(x.clone(), w.clone(), gelu_tanh, "gelu");
        check_finite_differences(x.clone(), w.clone(), silu, "silu");
        let shift = random([2, 20], 52);
        let scale = random([2, 20], 53);
        check_finite_differences(
            x,
            w.clone(),
            |x| layer_norm_modulate(x, shift.clone(), scale.clone(), 1e-6),
            "norm-modulate",
        );
        let qkv = random([2, 6, 60], 54);
        check_finite_differences(
            qkv,
            w,
            |qkv| self_attention(qkv, 4, Some(padding(2, 6))),
            "attention",
        );
    }

    #[test]
    fn vectorised_exp_is_within_two_ulp() {
        let (mut worst, mut at) = (0.0f64, 0.0f32);
        for i in -86_990..=87_990 {
            let x = i as f32 * 1e-3;
            let want = (x as f64).exp();
            let got = cpu::exp(x) as f64;
            if (got - want).abs() / want > worst {
                (worst, at) = ((got - want).abs() / want, x);
            }
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e} at {at}");
        assert!(cpu::exp(f32::NEG_INFINITY) < 1e-37);
        assert!(cpu::exp(f32::NAN).is_nan());
    }

    #[test]
    fn other_backends_are_not_routed_to_the_fused_ops() {
        // The routing decision itself: flex (with or without autodiff) and f32 only.
        let x = Tensor::<2>::zeros([2, 2], &Device::flex());
        assert!(runs_fused(&x));
        assert!(runs_fused(&Tensor::<2>::zeros([2, 2], &device())));
        assert!(!runs_fused(&x.cast(burn::tensor::DType::F64)));
    }
}
