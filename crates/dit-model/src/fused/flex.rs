//! [`FusedOps`] for Burn's `flex` CPU backend and for autodiff over it: the
//! forward passes call the slice kernels of [`super::cpu`], and each op
//! registers one backward step with hand-written gradients.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Autodiff, Flex, TensorMetadata};
use burn::tensor::TensorData;

use super::FusedOps;
use super::cpu::{self, AttentionSaved, AttentionShape, Probabilities};

/// What the attention forward pass keeps for the backward pass: recomputing
/// the probabilities from the log-sum-exp measured as fast as saving them
/// (`examples/attention_backward.rs`, docs/performance.md) and keeps
/// `tokens` times less memory.
const KEEP: Probabilities = Probabilities::Recompute;

/// The tensor's values as one contiguous `f32` slice (copied only when the
/// tensor is a strided view).
fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused kernels take contiguous f32 tensors")
}

fn dims<const D: usize>(t: &FlexTensor) -> [usize; D] {
    t.shape().dims()
}

fn tensor(values: Vec<f32>, shape: impl Into<Vec<usize>>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// `valid` (1.0 / 0.0 per key) of a key-padding mask, true at padding.
fn valid_keys(padding: BoolTensor<Flex>) -> Vec<f32> {
    let padding: Vec<bool> = padding
        .into_data()
        .try_to_vec()
        .expect("a key-padding mask holds booleans");
    cpu::valid_keys(&padding)
}

fn attention_shape(qkv: &FlexTensor, heads: usize) -> AttentionShape {
    let [batch, tokens, width3] = dims(qkv);
    assert!(
        width3 % 3 == 0,
        "attention: qkv width {width3} is not 3·width"
    );
    AttentionShape::self_attention(batch, tokens, width3 / 3, heads)
}

/// LayerNorm + modulate: the contiguous `x` and `scale` (what the backward pass
/// keeps), `x`'s shape and the kernel's results.
fn norm_modulate(
    x: FlexTensor,
    shift: FlexTensor,
    scale: FlexTensor,
    eps: f64,
) -> (FlexTensor, FlexTensor, [usize; 3], cpu::NormModulated) {
    let (x, shift, scale) = (contiguous(x), contiguous(shift), contiguous(scale));
    let shape = dims(&x);
    let out = cpu::layer_norm_modulate(
        values(&x),
        values(&shift),
        values(&scale),
        shape,
        eps as f32,
    );
    (x, scale, shape, out)
}

/// Self-attention on the packed projection: the contiguous input, its shape and
/// the kernel's results.
fn packed_attention(
    qkv: FlexTensor,
    heads: usize,
    valid: Option<&[f32]>,
) -> (FlexTensor, AttentionShape, cpu::Attended) {
    let qkv = contiguous(qkv);
    let shape = attention_shape(&qkv, heads);
    let out = cpu::self_attention(values(&qkv), shape, valid, KEEP);
    (qkv, shape, out)
}

/// The attention output `[batch, queries, width]` as a tensor.
fn attention_output(out: Vec<f32>, shape: AttentionShape) -> FlexTensor {
    tensor(out, [shape.batch, shape.queries, shape.width])
}

fn cross_attention_shape(q: &FlexTensor, kv: &FlexTensor, heads: usize) -> AttentionShape {
    let [batch, queries, width] = dims(q);
    let [_, keys, width2] = dims(kv);
    assert_eq!(
        width2,
        2 * width,
        "cross-attention: kv width is not 2·width"
    );
    AttentionShape {
        batch,
        queries,
        keys,
        width,
        heads,
    }
}

impl FusedOps for Flex {
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = contiguous(x);
        let (y, _) = cpu::silu(values(&x), false);
        tensor(y, x.shape())
    }

    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = contiguous(x);
        tensor(cpu::gelu_tanh(values(&x)), x.shape())
    }

    fn layer_norm_modulate(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let (_, _, shape, out) = norm_modulate(x, shift, scale, eps);
        tensor(out.y, shape)
    }

    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x, weight, bias) = (contiguous(x), contiguous(weight), contiguous(bias));
        let [rows, d_in] = dims(&x);
        let [_, d_out] = dims(&weight);
        let y = cpu::linear(
            values(&x),
            values(&weight),
            values(&bias),
            [rows, d_in, d_out],
        );
        tensor(y, [rows, d_out])
    }

    fn self_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        let (_, shape, out) = packed_attention(qkv, heads, None);
        attention_output(out.out, shape)
    }

    fn self_attention_masked(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let valid = valid_keys(key_padding);
        let (_, shape, out) = packed_attention(qkv, heads, Some(&valid));
        attention_output(out.out, shape)
    }

    fn cross_attention(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let (q, kv) = (contiguous(q), contiguous(kv));
        let shape = cross_attention_shape(&q, &kv, heads);
        let valid = valid_keys(key_padding);
        let out = cpu::cross_attention(values(&q), values(&kv), shape, Some(&valid), KEEP);
        attention_output(out.out, shape)
    }
}

/// Backward step of SiLU; keeps the input and its sigmoid.
#[derive(Debug)]
struct SiluBackward;

impl Backward<Flex, 1> for SiluBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        if let Some(parent) = parent {
            let (x, sigmoid) = &ops.state;
            // Added to the input's gradient in the composite's order (see `silu_backward`).
            for term in cpu::silu_backward(values(x), values(sigmoid), values(&grad)) {
                grads.register::<Flex>(parent.id, tensor(term, x.shape()));
            }
        }
    }
}

/// Backward step of tanh-GELU; keeps the input.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        if let Some(parent) = parent {
            let x = &ops.state;
            let dx = cpu::gelu_tanh_backward(values(x), values(&grad));
            grads.register::<Flex>(parent.id, tensor(dx, x.shape()));
        }
    }
}

/// What the LayerNorm + modulate backward step keeps.
#[derive(Debug, Clone)]
struct NormModulateState {
    x: FlexTensor,
    scale: FlexTensor,
    mean: FlexTensor,
    rstd: FlexTensor,
}

/// Backward step of LayerNorm + modulate (parents: x, shift, scale).
#[derive(Debug)]
struct NormModulateBackward;

impl Backward<Flex, 3> for NormModulateBackward {
    type State = NormModulateState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, shift_node, scale_node] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let s = &ops.state;
        let shape: [usize; 3] = dims(&s.x);
        let g = cpu::layer_norm_modulate_backward(
            values(&s.x),
            values(&s.mean),
            values(&s.rstd),
            values(&s.scale),
            values(&grad),
            shape,
        );
        let params = [shape[0], shape[2]];
        if let Some(node) = x_node {
            grads.register::<Flex>(node.id, tensor(g.x, shape));
        }
        if let Some(node) = shift_node {
            grads.register::<Flex>(node.id, tensor(g.shift, params));
        }
        if let Some(node) = scale_node {
            grads.register::<Flex>(node.id, tensor(g.scale, params));
        }
    }
}

/// Backward step of a Linear layer (parents: x, weight, bias): Burn's own
/// gradients of `linear` (`ModuleOps::linear_*_backward`), as its autodiff
/// computes them. Keeps `x` when the weight needs a gradient and the weight
/// when `x` does.
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = (Option<FlexTensor>, Option<FlexTensor>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, weight_node, bias_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, weight) = ops.state;
        if let (Some(node), Some(weight)) = (x_node, weight) {
            grads.register::<Flex>(node.id, Flex::linear_x_backward(weight, grad.clone()));
        }
        if let (Some(node), Some(x)) = (weight_node, x) {
            grads.register::<Flex>(node.id, Flex::linear_weight_backward(x, grad.clone()));
        }
        if let Some(node) = bias_node {
            grads.register::<Flex>(node.id, Flex::linear_bias_backward(grad));
        }
    }
}

/// What the attention backward step keeps.
#[derive(Debug, Clone)]
struct AttentionState {
    qkv: FlexTensor,
    out: FlexTensor,
    lse: FlexTensor,
    probs: Option<FlexTensor>,
    valid: Option<Vec<f32>>,
    heads: usize,
}

/// Backward step of self-attention on the packed projection.
#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        if let Some(parent) = parent {
            let s = &ops.state;
            let shape = attention_shape(&s.qkv, s.heads);
            let saved = AttentionSaved {
                queries: values(&s.qkv),
                keys_values: values(&s.qkv),
                out: values(&s.out),
                lse: values(&s.lse),
                probs: s.probs.as_ref().map(values),
                valid: s.valid.as_deref(),
            };
            let dqkv = cpu::self_attention_backward(saved, values(&grad), shape);
            grads.register::<Flex>(parent.id, tensor(dqkv, s.qkv.shape()));
        }
    }
}

/// Self-attention under autodiff: the forward pass, and its backward step when tracked.
fn tracked_attention<C: CheckpointStrategy>(
    qkv: FloatTensor<Autodiff<Flex, C>>,
    valid: Option<Vec<f32>>,
    heads: usize,
) -> FloatTensor<Autodiff<Flex, C>> {
    let prepared = AttentionBackward
        .prepare::<C>([qkv.node()])
        .compute_bound()
        .stateful();
    let (input, shape, out) = packed_attention(qkv.into_primitive(), heads, valid.as_deref());
    let output = attention_output(out.out, shape);
    match prepared {
        OpsKind::Tracked(prep) => {
            let state = AttentionState {
                qkv: input,
                out: output.clone(),
                lse: tensor(out.lse, [shape.batch, shape.heads, shape.queries]),
                probs: out
                    .probs
                    .map(|p| tensor(p, [shape.batch, shape.heads, shape.queries, shape.keys])),
                valid,
                heads,
            };
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// What the cross-attention backward step keeps.
#[derive(Debug, Clone)]
struct CrossAttentionState {
    q: FlexTensor,
    kv: FlexTensor,
    out: FlexTensor,
    lse: FlexTensor,
    valid: Vec<f32>,
    heads: usize,
}

/// Backward step of cross-attention (parents: q, kv).
#[derive(Debug)]
struct CrossAttentionBackward;

impl Backward<Flex, 2> for CrossAttentionBackward {
    type State = CrossAttentionState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [q_node, kv_node] = ops.parents;
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let s = &ops.state;
        let shape = cross_attention_shape(&s.q, &s.kv, s.heads);
        let saved = AttentionSaved {
            queries: values(&s.q),
            keys_values: values(&s.kv),
            out: values(&s.out),
            lse: values(&s.lse),
            probs: None,
            valid: Some(&s.valid),
        };
        let (dq, dkv) = cpu::cross_attention_backward(saved, values(&grad), shape);
        if let Some(node) = q_node {
            grads.register::<Flex>(node.id, tensor(dq, s.q.shape()));
        }
        if let Some(node) = kv_node {
            grads.register::<Flex>(node.id, tensor(dkv, s.kv.shape()));
        }
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match SiluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let input = contiguous(x.primitive().clone());
                let (y, sigmoid) = cpu::silu(values(&input), true);
                let shape = input.shape();
                let sigmoid = tensor(sigmoid.expect("kept"), shape.clone());
                prep.finish((input, sigmoid), tensor(y, shape))
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::silu(x.into_primitive())),
        }
    }

    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let input = contiguous(x.primitive().clone());
                let output = Flex::gelu_tanh(input.clone());
                prep.finish(input, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::gelu_tanh(x.into_primitive())),
        }
    }

    fn layer_norm_modulate(
        x: FloatTensor<Self>,
        shift: FloatTensor<Self>,
        scale: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let prepared = NormModulateBackward
            .prepare::<C>([x.node(), shift.node(), scale.node()])
            .compute_bound()
            .stateful();
        let (x, scale, shape, out) = norm_modulate(
            x.into_primitive(),
            shift.into_primitive(),
            scale.into_primitive(),
            eps,
        );
        let output = tensor(out.y, shape);
        match prepared {
            OpsKind::Tracked(prep) => {
                let rows = [shape[0], shape[1]];
                let state = NormModulateState {
                    x,
                    scale,
                    mean: tensor(out.mean, rows),
                    rstd: tensor(out.rstd, rows),
                };
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x_tracked, weight_tracked) = (x.is_tracked(), weight.is_tracked());
        let prepared = LinearBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        let (x, weight) = (x.into_primitive(), weight.into_primitive());
        // The weight's gradient needs x, x's gradient needs the weight.
        let state = (
            weight_tracked.then(|| x.clone()),
            x_tracked.then(|| weight.clone()),
        );
        let output = <Flex as FusedOps>::linear(x, weight, bias.into_primitive());
        match prepared {
            OpsKind::Tracked(prep) => prep.finish(state, output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn self_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        tracked_attention::<C>(qkv, None, heads)
    }

    fn self_attention_masked(
        qkv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        tracked_attention::<C>(qkv, Some(valid_keys(key_padding)), heads)
    }

    fn cross_attention(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        let prepared = CrossAttentionBackward
            .prepare::<C>([q.node(), kv.node()])
            .compute_bound()
            .stateful();
        let (q, kv) = (
            contiguous(q.into_primitive()),
            contiguous(kv.into_primitive()),
        );
        let shape = cross_attention_shape(&q, &kv, heads);
        let valid = valid_keys(key_padding);
        let out = cpu::cross_attention(values(&q), values(&kv), shape, Some(&valid), KEEP);
        let output = attention_output(out.out, shape);
        match prepared {
            OpsKind::Tracked(prep) => {
                let state = CrossAttentionState {
                    q,
                    kv,
                    out: output.clone(),
                    lse: tensor(out.lse, [shape.batch, shape.heads, shape.queries]),
                    valid,
                    heads,
                };
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}
