#!/usr/bin/env python3
"""PyTorch counterpart of `dit-bench`: DiT training-step and sampling speed.

Builds the reference DiT of `dit_reference.py` with the sizes of an experiment
config (TOML) and times the same work as `crates/dit-train/src/bin/dit-bench.rs`,
printing one JSON line per measurement in the same schema:

  {"config":"tiny","backend":"pytorch-cpu","what":"train_step","batch":32,
   "median_s":0.77529,"samples_per_s":41.27,"gflops":29.63}

What is timed
-------------
train_step (batch B, default the config's `dit_training.batch_size`): one full
  AdamW step, draws included: B clips drawn from a pool of 256 random latents
  [C, F, H, W] with fixed captions, t uniform in [0, T), 10% of the caption
  rows replaced by the null prompt (all zeros), x_t = q_sample(x_0, ε, t) on the
  linear β schedule, ε prediction, per-sample MSE weighted by min-SNR-γ
  (min(snr, γ)/snr), backward, clipping by global gradient norm, optimiser
  step. 3 warm-up steps, then the median of `--repeats` steps.
sample_clip (1 and 16 clips): 50 DDIM (η = 0) steps over the respaced
  schedule with classifier-free guidance (conditional and null prompts batched,
  2B clips per network call when `guidance` ≠ 1); the prompt is encoded once.
  One warm-up run, then the median of ceil(repeats / 2) runs, as in the Rust
  bench. The Rust number also includes the autoencoder decode of the final
  latent; that is left out here (it is one small conv-net pass, against 50
  DiT passes).

FLOP count (ported exactly from `forward_flops` in dit-bench.rs)
-----------------------------------------------------------------
2 FLOPs per multiply-add of every matrix product, element-wise work not counted.
With h = hidden, n = tokens, m = MLP width, L = words, w = text width, P = patch dim:

  per_token_block  = 4h² + 2hm + 2nh          (qkv, proj, MLP, QKᵀ and AV)
  per_sample_block = 6h²                      (adaLN modulation)
  cross            = n(2h² + 2Lh) + 2Lwh      (0 without cross-attention)
  blocks           = depth · (n·per_token_block + per_sample_block + cross)
  ends             = 2nPh + 2h² + 256h + h²   (patch embed, final layer, t-embedder)
  text             = text_depth · L(12w² + 2Lw) + wh
  forward(B)       = 2B · (blocks + ends + text)

train_step = 3 · forward(B); sample_clip = 50 · forward(2B) with guidance
(forward(B) without). GFLOP/s = that count / median seconds / 1e9.

Usage: bench_torch.py --config configs/tiny.toml [--repeats N] [--threads 2]
       [--batch B] [--device cpu|cuda] [--precision fp32|tf32|bf16]
       [--sample-clips 1,16] [--sampling-only]
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
import tomllib

# OpenMP's default wait policy lets a thread spin at a barrier before it sleeps: on an idle
# machine that is what makes PyTorch fast at this model's small operations (thousands per
# clip), and benchmarks run on an idle machine. On a busy one spinning threads are ~50×
# slower (0.43 s instead of 8 ms per tiny forward next to a training job): set
# OMP_WAIT_POLICY=PASSIVE there. Must precede `import torch`.

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit_reference import CFG, DiT  # noqa: E402

# A config takes its vocabulary from the data: the Moving Shapes vocabulary has 42
# words, plus id 0 for padding.
MOVING_SHAPES_VOCAB = 43
SAMPLE_STEPS = 50


def load_config(path):
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    d, text = raw["model"]["dit"], raw["model"]["dit"]["text"]
    # The latent shape is derived as dit-train derives it (`ExperimentConfig::latent_shape`):
    # [autoencoder latent channels, clip frames, clip size / 2^downsamplings].
    ae, shapes = raw["model"]["autoencoder"], raw["data"]["shapes"]
    cfg = dict(CFG)
    cfg.update(
        latent_channels=ae["latent_channels"],
        latent_frames=shapes["frames"],
        latent_size=shapes["size"] >> ae["downsamplings"],
        patch_frames=d["patch_frames"], patch_size=d["patch_size"],
        hidden=d["hidden"], depth=d["depth"], heads=d["heads"], mlp_ratio=float(d["mlp_ratio"]),
        cross_attention=bool(d["cross_attention"]),
        vocab_size=MOVING_SHAPES_VOCAB, max_words=text["max_words"],
        text_width=text["width"], text_depth=text["depth"], text_heads=text["heads"],
    )
    return cfg, raw


def forward_flops(c, batch, words):
    """Multiply-add count ×2 of one forward pass (dit-bench.rs `forward_flops`)."""
    h = float(c["hidden"])
    n = float((c["latent_frames"] // c["patch_frames"]) * (c["latent_size"] // c["patch_size"]) ** 2)
    mlp = float(math.floor(c["hidden"] * c["mlp_ratio"] + 0.5))  # Rust f64::round
    patch_dim = float(c["latent_channels"] * c["patch_frames"] * c["patch_size"] ** 2)
    per_token_block = 4.0 * h * h + 2.0 * h * mlp + 2.0 * n * h
    per_sample_block = 6.0 * h * h
    if c["cross_attention"]:
        w = float(c["text_width"])
        cross = n * (2.0 * h * h + 2.0 * words * h) + words * 2.0 * w * h
    else:
        cross = 0.0
    blocks = c["depth"] * (n * per_token_block + per_sample_block + cross)
    ends = n * 2.0 * patch_dim * h + 2.0 * h * h + 256.0 * h + h * h
    w = float(c["text_width"])
    text = c["text_depth"] * words * (12.0 * w * w + 2.0 * words * w) + w * h
    return 2.0 * batch * (blocks + ends + text)


def alphas_cumprod(diffusion):
    """ᾱ_t of the linear β schedule, in float64 like the Rust NoiseSchedule."""
    if diffusion.get("schedule", "Linear") != "Linear":
        raise SystemExit("bench_torch.py: only the Linear β schedule is implemented")
    steps = diffusion["steps"]
    betas = torch.linspace(diffusion["beta_start"], diffusion["beta_end"], steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, 0)


def respace(total, steps):
    """`steps` training steps from T-1 down to 0, evenly spaced (sampler.rs `respace`)."""
    if steps == 1:
        return [total - 1]
    out = []
    for i in range(steps):
        t = int(math.floor((total - 1) * i / (steps - 1) + 0.5))  # Rust rounds half away from 0
        if not out or out[-1] != t:
            out.append(t)
    return out[::-1]


def dit_forward(model, latent, t, text):
    """`DiT.forward` with the prompt already encoded (the sampler encodes it once)."""
    x = model.x_embedder(latent) + model.pos_embed
    c = model.t_embedder(t) + text[2]
    for block in model.blocks:
        x = block(x, c, text)
    return model.unpatchify(model.final_layer(x, c))


def autocast(device, precision):
    """bf16 autocast for `--precision bf16` (matrix products and SDPA in bfloat16, reductions
    in float32), else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(cfg, raw, device, batch, repeats, precision, compiled):
    tr = raw["dit_training"]
    model = DiT(cfg).to(device).train()
    forward = torch.compile(model) if compiled else model
    optim = torch.optim.AdamW(model.parameters(), lr=tr["learning_rate"], weight_decay=tr["weight_decay"])
    clip = tr.get("grad_clip", 0.0)
    gamma = tr.get("min_snr_gamma", 0.0)
    dropout = tr.get("caption_dropout", 0.1)
    words, vocab = cfg["max_words"], cfg["vocab_size"]
    shape = (cfg["latent_channels"], cfg["latent_frames"], cfg["latent_size"], cfg["latent_size"])

    # The pool of the Rust bench: 256 random latents, 6-word captions padded with 0.
    pool = torch.randn(256, *shape, device=device)
    captions = torch.tensor([[1 + (i + w) % (vocab - 1) if w < 6 else 0 for w in range(words)]
                             for i in range(256)], device=device)
    a_bar = alphas_cumprod(raw["diffusion"])
    snr = a_bar / (1.0 - a_bar)
    weight = (snr.clamp(max=gamma) / snr if gamma > 0 else torch.ones_like(snr)).float().to(device)
    signal, sigma = a_bar.sqrt().float().to(device), (1.0 - a_bar).sqrt().float().to(device)
    steps = a_bar.numel()

    times = []
    for step in range(repeats + 3):
        sync(device)
        start = time.perf_counter()
        clips = torch.randint(0, 256, (batch,), device=device)
        t = torch.randint(0, steps, (batch,), device=device)
        dropped = torch.rand(batch, device=device) < dropout
        x0 = pool[clips]
        tokens = captions[clips].masked_fill(dropped[:, None], 0)
        noise = torch.randn_like(x0)
        x_t = signal[t].view(-1, 1, 1, 1, 1) * x0 + sigma[t].view(-1, 1, 1, 1, 1) * noise
        with autocast(device, precision):
            predicted = forward(x_t, t.float(), tokens)
        per_sample = F.mse_loss(predicted.float(), noise, reduction="none").flatten(1).mean(1)
        loss = (per_sample * weight[t]).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optim.step()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median_high(times[3:]), times[0]


def bench_sample(cfg, raw, device, clips, repeats, precision, compiled):
    model = DiT(cfg).to(device).eval()
    step = torch.compile(dit_forward) if compiled else dit_forward
    guidance = float(raw.get("guidance", 1.0))
    guided = guidance != 1.0
    words = cfg["max_words"]
    # Stands in for "a red circle moving right": 5 word ids, then padding.
    prompt = torch.tensor([[1 + w if w < 5 else 0 for w in range(words)]] * clips, device=device)
    a_bar = alphas_cumprod(raw["diffusion"]).tolist()
    timesteps = respace(len(a_bar), SAMPLE_STEPS)
    shape = (clips, cfg["latent_channels"], cfg["latent_frames"], cfg["latent_size"], cfg["latent_size"])

    def run():
        tokens = torch.cat([prompt, torch.zeros_like(prompt)]) if guided else prompt
        with autocast(device, precision):
            text = model.text_encoder(tokens)
        x = torch.randn(shape, device=device)
        n = 2 * clips if guided else clips
        for i, t in enumerate(timesteps):
            a_t = a_bar[t]
            a_prev = a_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
            with autocast(device, precision):
                out = step(model, torch.cat([x, x]) if guided else x,
                                  torch.full((n,), float(t), device=device), text).float()
            if guided:
                cond, uncond = out[:clips], out[clips:]
                eps = uncond + (cond - uncond) * guidance
            else:
                eps = out
            x0 = (x - eps * math.sqrt(1.0 - a_t)) / math.sqrt(a_t)
            x = x0 * math.sqrt(a_prev) + eps * math.sqrt(max(1.0 - a_prev, 0.0))  # DDIM, η = 0
        # (The Rust pipeline decodes `x` with the autoencoder here; not timed.)
        return x

    times = []
    with torch.inference_mode():
        for i in range(-(-repeats // 2) + 1):
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times.append(time.perf_counter() - start)
    return statistics.median_high(times[1:]), times[0], (2 if guided else 1)


def line(config, backend, what, batch, median_s, first_s, flops):
    # Same field order and precision as dit-bench's `line`.
    print(f'{{"config":{json.dumps(config)},"backend":"{backend}","what":"{what}","batch":{batch},'
          f'"median_s":{median_s:.5f},"samples_per_s":{batch / median_s:.2f},'
          f'"gflops":{flops / median_s / 1e9:.2f},"first_s":{first_s:.5f}}}', flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tiny.toml")
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions (after warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, help="training batch (default: the config's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sampling-only", action="store_true")
    parser.add_argument("--sample-clips", default="1,16",
                        help="clips generated together in the sampling measurements")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model (the first step then includes compiling)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"],
                        help="fp32; tf32 matrix products (CUDA); bf16 autocast")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_torch.py: CUDA is not available, measuring the CPU", file=sys.stderr)
        args.device = "cpu"
    device = torch.device(args.device)
    torch.set_float32_matmul_precision("high" if args.precision == "tf32" else "highest")
    backend = (f"pytorch-{device.type}" + ("" if args.precision == "fp32" else f"-{args.precision}")
               + ("-compiled" if args.compile else ""))

    cfg, raw = load_config(args.config)
    name = os.path.splitext(os.path.basename(args.config))[0]
    batch = args.batch or raw["dit_training"]["batch_size"]
    words = cfg["max_words"]
    if not args.sampling_only:
        s, first = bench_train(cfg, raw, device, batch, args.repeats, args.precision, args.compile)
        line(name, backend, "train_step", batch, s, first, 3.0 * forward_flops(cfg, batch, words))
    for clips in (int(c) for c in args.sample_clips.split(",")):
        s, first, guided = bench_sample(cfg, raw, device, clips, args.repeats, args.precision, args.compile)
        line(name, backend, "sample_clip", clips, s, first,
             SAMPLE_STEPS * forward_flops(cfg, guided * clips, words))


if __name__ == "__main__":
    main()
