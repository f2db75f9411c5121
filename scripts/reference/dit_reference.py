#!/usr/bin/env python3
"""Independent PyTorch implementation of the project's text-to-video DiT.

Builds a tiny DiT with the same architecture as `crates/dit-model`, draws random
weights (including the adaLN and final layers, which the Rust model
zero-initialises, so that every path contributes to the output), runs it on
fixed inputs, and writes under tests/fixtures/:

  reference_dit.safetensors  weights, PyTorch names (x_embedder.proj, t_embedder.mlp.0,
                             blocks.N.attn.qkv, blocks.N.adaLN_modulation.1, ...)
  reference_io.safetensors   inputs (latent, t, tokens) and the output (eps)

The Rust test `reference_parity` loads both and checks the outputs agree.
Regenerate with `scripts/reference/make-fixtures.sh`.
"""
import argparse
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

# The tiny configuration of the parity test (mirrored in the Rust test).
CFG = dict(
    latent_channels=4, latent_frames=4, latent_size=8, patch_frames=2, patch_size=2,
    hidden=32, depth=2, heads=4, mlp_ratio=4.0, cross_attention=True,
    vocab_size=12, max_words=6, text_width=16, text_depth=2, text_heads=2,
)


def sincos_1d(dim, positions):
    """MAE/DiT 1D sin-cos embedding: [sin(p*w), cos(p*w)], w_i = 10000^(-i/(dim/2))."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("p,d->pd", positions.astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_3d(hidden, grid):
    """hidden/4 channels for the frame, 3*hidden/8 for the row, 3*hidden/8 for the column."""
    wf = hidden // 4
    ws = (hidden - wf) // 2
    f, r, c = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), np.arange(grid[2]), indexing="ij")
    parts = [sincos_1d(wf, f.reshape(-1)), sincos_1d(ws, r.reshape(-1)), sincos_1d(ws, c.reshape(-1))]
    return np.concatenate(parts, axis=1).astype(np.float32)  # [tokens, hidden]


def timestep_embedding(t, dim=256):
    half = dim // 2
    # The exponent in float32, as the official DiT's TimestepEmbedder computes it; its exp
    # rounded correctly from float64 (float32 exp implementations differ by one ulp on a
    # few frequencies, 1e-4 rad of phase at t = 999).
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / half
    freqs = torch.exp(exponent.double()).float()
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def attention(q, k, v, heads, key_padding=None):
    """q: [B, Nq, W], k/v: [B, Nk, W]; key_padding: [B, Nk] True = ignore."""
    b, nq, w = q.shape
    nk = k.shape[1]
    q = q.reshape(b, nq, heads, w // heads).transpose(1, 2)
    k = k.reshape(b, nk, heads, w // heads).transpose(1, 2)
    v = v.reshape(b, nk, heads, w // heads).transpose(1, 2)
    mask = None
    if key_padding is not None:
        mask = ~key_padding[:, None, None, :]  # torch: True = attend
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, nq, w)


class SelfAttention(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x, key_padding=None):
        b, n, w = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, w)  # timm layout: (3, heads, head_dim)
        return self.proj(attention(qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], self.heads, key_padding))


class CrossAttention(nn.Module):
    def __init__(self, width, text_width, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(text_width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x, context, padding):
        k, v = self.kv(context).chunk(2, dim=-1)
        return self.proj(attention(self.q(x), k, v, self.heads, padding))


class Mlp(nn.Module):
    def __init__(self, width, hidden):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        return self.mlp(timestep_embedding(t))


class TextEncoderLayer(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = Mlp(width, 4 * width)

    def forward(self, x, padding):
        x = x + self.attn(self.norm1(x), padding)
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    def __init__(self, vocab, max_words, width, depth, heads, hidden):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, width)
        self.position_embedding = nn.Parameter(torch.zeros(max_words, width))
        self.layers = nn.ModuleList([TextEncoderLayer(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.pooled_proj = nn.Linear(width, hidden)
        self.null_tokens = nn.Parameter(torch.zeros(1, width))
        self.null_pooled = nn.Parameter(torch.zeros(hidden))

    def forward(self, tokens):
        b, n = tokens.shape
        is_pad = tokens == 0
        is_null = is_pad.all(dim=1)  # [B]
        x = self.token_embedding(tokens) + self.position_embedding[:n][None]
        # The null prompt reads the learned null features at its first position only.
        x[is_null, 0] = self.null_tokens[0]
        padding = is_pad.clone()
        padding[is_null, 0] = False
        for layer in self.layers:
            x = layer(x, padding)
        x = self.norm(x)
        real = (~is_pad).float()
        mean = (x * real[..., None]).sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        pooled = self.pooled_proj(mean)
        pooled[is_null] = self.null_pooled
        return x, padding, pooled


class DiTBlock(nn.Module):
    def __init__(self, hidden, heads, mlp_hidden, text_width=None):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(hidden, heads)
        self.cross_attn = CrossAttention(hidden, text_width, heads) if text_width else None
        self.norm_cross = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c, text):
        sh_msa, sc_msa, g_msa, sh_mlp, sc_mlp, g_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + g_msa[:, None] * self.attn(modulate(self.norm1(x), sh_msa, sc_msa))
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), text[0], text[1])
        return x + g_mlp[:, None] * self.mlp(modulate(self.norm2(x), sh_mlp, sc_mlp))


class FinalLayer(nn.Module):
    def __init__(self, hidden, patch_dim):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch_dim)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class PatchEmbed(nn.Module):
    """A Conv3d with kernel = stride = patch; exported as a Linear over (C, pt, ph, pw)."""

    def __init__(self, channels, patch, hidden):
        super().__init__()
        self.conv = nn.Conv3d(channels, hidden, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.conv(x).flatten(2).transpose(1, 2)  # [B, tokens, hidden], frame-major


class DiT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.patch = (c["patch_frames"], c["patch_size"], c["patch_size"])
        self.grid = (c["latent_frames"] // self.patch[0], c["latent_size"] // self.patch[1],
                     c["latent_size"] // self.patch[2])
        h = c["hidden"]
        self.x_embedder = PatchEmbed(c["latent_channels"], self.patch, h)
        self.t_embedder = TimestepEmbedder(h)
        self.text_encoder = TextEncoder(c["vocab_size"], c["max_words"], c["text_width"],
                                        c["text_depth"], c["text_heads"], h)
        tw = c["text_width"] if c["cross_attention"] else None
        self.blocks = nn.ModuleList([DiTBlock(h, c["heads"], int(h * c["mlp_ratio"]), tw)
                                     for _ in range(c["depth"])])
        self.final_layer = FinalLayer(h, c["latent_channels"] * math.prod(self.patch))
        self.register_buffer("pos_embed", torch.from_numpy(sincos_3d(h, self.grid))[None])

    def unpatchify(self, x):
        b = x.shape[0]
        ch = self.c["latent_channels"]
        gf, gh, gw = self.grid
        pt, ph, pw = self.patch
        x = x.reshape(b, gf, gh, gw, ch, pt, ph, pw)
        x = torch.einsum("bfhwcpqr->bcfphqwr", x)
        return x.reshape(b, ch, gf * pt, gh * ph, gw * pw)

    def forward(self, latent, t, tokens):
        text = self.text_encoder(tokens)
        x = self.x_embedder(latent) + self.pos_embed
        c = self.t_embedder(t) + text[2]
        for block in self.blocks:
            x = block(x, c, text)
        return self.unpatchify(self.final_layer(x, c))

    def export_state(self):
        """State dict in the project's names (patch Conv3d as a Linear, no buffers)."""
        out = {}
        for name, value in self.state_dict().items():
            if name == "pos_embed":
                continue
            if name.startswith("x_embedder.conv."):
                suffix = name.split(".")[-1]
                value = value.reshape(value.shape[0], -1) if suffix == "weight" else value
                name = "x_embedder.proj." + suffix
            out[name] = value.detach().clone().contiguous()
        return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    parser.add_argument("--out", default=os.path.join(root, "tests", "fixtures"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = DiT(CFG)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    latent = torch.randn(3, CFG["latent_channels"], CFG["latent_frames"], CFG["latent_size"], CFG["latent_size"])
    t = torch.tensor([3.0, 517.0, 999.0])
    # Two prompts (one padded) and the null prompt.
    tokens = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0], [0, 0, 0, 0, 0]])
    with torch.no_grad():
        eps = model(latent, t, tokens)
    os.makedirs(args.out, exist_ok=True)
    save_file(model.export_state(), os.path.join(args.out, "reference_dit.safetensors"))
    save_file({"latent": latent, "t": t, "tokens": tokens.to(torch.int64), "eps": eps.contiguous()},
              os.path.join(args.out, "reference_io.safetensors"))
    print(f"wrote {args.out}: eps mean {eps.mean():.6f}, std {eps.std():.6f}")


if __name__ == "__main__":
    main()
