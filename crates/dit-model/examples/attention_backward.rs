//! Times the fused self-attention kernel's forward + backward pass with the
//! softmax probabilities saved by the forward pass against recomputing them
//! from the saved log-sum-exp, at the `tiny` DiT's size and for a long clip.
//!
//! ```sh
//! cargo run --release -p dit-model --example attention_backward
//! ```

use std::time::Instant;

use dit_model::fused::cpu::{
    AttentionSaved, AttentionShape, Probabilities, self_attention, self_attention_backward,
};

fn main() {
    let cases = [
        ("tiny DiT block, batch 32", 32, 128, 128, 4),
        ("long clip, 1024 tokens, batch 4", 4, 1024, 128, 4),
    ];
    for (name, batch, tokens, width, heads) in cases {
        let shape = AttentionShape::self_attention(batch, tokens, width, heads);
        // Deterministic inputs in [-1, 1).
        let wave = |n: usize, k: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * k) % 2003) as f32 / 1001.5) - 1.0)
                .collect()
        };
        let qkv = wave(batch * tokens * 3 * width, 7);
        let grad = wave(batch * tokens * width, 13);
        for keep in [Probabilities::Save, Probabilities::Recompute] {
            let mut times = Vec::new();
            for _ in 0..7 {
                let start = Instant::now();
                let fwd = self_attention(&qkv, shape, None, keep);
                let saved = AttentionSaved {
                    queries: &qkv,
                    keys_values: &qkv,
                    out: &fwd.out,
                    lse: &fwd.lse,
                    probs: fwd.probs.as_deref(),
                    valid: None,
                };
                let dqkv = self_attention_backward(saved, &grad, shape);
                std::hint::black_box(dqkv);
                times.push(start.elapsed().as_secs_f64());
            }
            times.sort_by(f64::total_cmp);
            let saved_mib = match keep {
                Probabilities::Save => {
                    (batch * heads * tokens * tokens * 4) as f64 / (1 << 20) as f64
                }
                Probabilities::Recompute => (batch * heads * tokens * 4) as f64 / (1 << 20) as f64,
            };
            println!(
                "{name}: {keep:?}: forward + backward {:.2} ms (median of 7), kept for backward {saved_mib:.1} MiB",
                times[3] * 1e3
            );
        }
    }
}
