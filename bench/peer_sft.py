#!/usr/bin/python3
"""The PyTorch peer for bench/sft_throughput.py: an eager SFT loop of a
Llama-shaped decoder (RMSNorm, rotary positions, grouped-query attention,
SwiGLU, tied embeddings; the modules HF's LlamaForCausalLM has) on the
conversations `attune tokenize` rendered, the loss on the assistant tokens
(token-weighted over the step), AdamW with decay on the weight matrices only,
gradient clipping at 1.0.

Batches: `--packing 0`: `--batch` conversations in a shuffled order, padded to
the longest; `--packing 1`: conversations packed into sequences of
`--max_length` (best fit decreasing, as Attune packs), each attending only to
itself with positions restarting, `--batch` sequences a step.
`--head all`: the LM head at every position and the loss ignoring untrained
ones (what HF's LlamaForCausalLM does); `--head trained`: the head at the
trained positions only (what Attune does).

Prints JSON: real (non-pad) tokens/s over the timed steps, the padding
fraction of the batches, and the steps timed."""
import argparse
import json
import math
import random
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(h)), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Layer(nn.Module):
    def __init__(self, h, heads, kv, ffn, eps):
        super().__init__()
        self.heads, self.kv, self.d = heads, kv, h // heads
        self.q_proj = nn.Linear(h, heads * self.d, bias=False)
        self.k_proj = nn.Linear(h, kv * self.d, bias=False)
        self.v_proj = nn.Linear(h, kv * self.d, bias=False)
        self.o_proj = nn.Linear(heads * self.d, h, bias=False)
        self.gate_proj, self.up_proj = nn.Linear(h, ffn, bias=False), nn.Linear(h, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, h, bias=False)
        self.n1, self.n2 = RMSNorm(h, eps), RMSNorm(h, eps)

    def forward(self, x, bias, cos, sin):
        b, t, _ = x.shape
        y = self.n1(x)
        q = self.q_proj(y).view(b, t, self.heads, self.d).transpose(1, 2)
        k = self.k_proj(y).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(y).view(b, t, self.kv, self.d).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = self.heads // self.kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.d) + bias, -1)
        x = x + self.o_proj((att @ v).transpose(1, 2).reshape(b, t, -1))
        y = self.n2(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class Decoder(nn.Module):
    def __init__(self, vocab, h, layers, heads, kv, ffn, theta=10000.0, eps=1e-6):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, h)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        self.layers = nn.ModuleList(Layer(h, heads, kv, ffn, eps) for _ in range(layers))
        self.norm = RMSNorm(h, eps)
        self.d, self.theta = h // heads, theta

    def hidden(self, ids, segments, positions):
        """segments: [B, T], 0 for padding, else the example's number in its row."""
        inv = 1.0 / (self.theta ** (torch.arange(0, self.d, 2, dtype=torch.float32) / self.d))
        ang = positions[..., None].float() * inv
        emb = torch.cat((ang, ang), dim=-1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        t = ids.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
        allowed = (causal[None] & same) | torch.eye(t, dtype=torch.bool)[None]  # a pad row attends to itself
        bias = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x, bias, cos, sin)
        return self.norm(x)


def best_fit_decreasing(examples, max_length):
    """Attune's packing: longest first (ties in data order), each into the
    fullest sequence with room, else a new one."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))
    seqs, room = [], []
    for i in order:
        n = len(examples[i][0])
        best = None
        for s, free in enumerate(room):
            if free >= n and (best is None or free < room[best]):
                best = s
        if best is None:
            seqs.append([])
            room.append(max_length)
            best = len(seqs) - 1
        seqs[best].append(examples[i])
        room[best] -= n
    return seqs


def collate(rows):
    """rows: lists of (ids, labels) examples sharing a row. Returns tensors."""
    t = max(sum(len(e[0]) for e in row) for row in rows)
    ids = torch.zeros(len(rows), t, dtype=torch.long)
    labels = torch.full((len(rows), t), -100, dtype=torch.long)
    seg = torch.zeros(len(rows), t, dtype=torch.long)
    pos = torch.zeros(len(rows), t, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for s, (e_ids, e_labels) in enumerate(row):
            n = len(e_ids)
            ids[r, at:at + n] = torch.tensor(e_ids)
            # The label of position k is the token k + 1 when that is trained.
            shifted = e_labels[1:] + [-100]
            labels[r, at:at + n] = torch.tensor(shifted)
            seg[r, at:at + n] = s + 1
            pos[r, at:at + n] = torch.arange(n)
            at += n
    return ids, labels, seg, pos


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="attune tokenize's lines: ids, assistant_mask")
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=688)
    ap.add_argument("--max_length", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--packing", type=int, default=0)
    ap.add_argument("--head", default="trained", choices=["trained", "all"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    examples = []
    with open(a.data) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            ids, mask = r["ids"][:a.max_length], r["assistant_mask"][:a.max_length]
            labels = [i if m else -100 for i, m in zip(ids, mask)]
            if len(ids) >= 2 and any(l != -100 for l in labels[1:]):
                examples.append((ids, labels))
    rng = random.Random(0)
    if a.packing:
        rows = best_fit_decreasing(examples, a.max_length)
        rng.shuffle(rows)
    else:
        rng.shuffle(examples)
        rows = [[e] for e in examples]
    batches = [rows[i:i + a.batch] for i in range(0, len(rows), a.batch)]
    need = a.warmup + a.steps
    batches = (batches * (need // len(batches) + 1))[:need]
    model = Decoder(a.vocab, a.hidden, a.layers, a.heads, a.kv, a.ffn)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    real = padded = 0
    timed_tokens, start = 0, None
    for step, batch in enumerate(batches):
        if step == a.warmup:
            start = time.perf_counter()
        ids, labels, seg, pos = collate(batch)
        tokens = int((seg > 0).sum())
        real += tokens
        padded += ids.numel()
        h = model.hidden(ids, seg, pos)
        w = model.embed_tokens.weight
        if a.head == "all":
            logits = h @ w.t()
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100,
                                   reduction="sum")
        else:
            at = labels.view(-1) != -100
            logits = h.reshape(-1, h.shape[-1])[at] @ w.t()
            loss = F.cross_entropy(logits, labels.view(-1)[at], reduction="sum")
        loss = loss / max(int((labels != -100).sum()), 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= a.warmup:
            timed_tokens += tokens
    secs = time.perf_counter() - start
    print(json.dumps({"tokens_per_second": timed_tokens / secs, "padding_fraction": 1 - real / padded,
                      "steps": a.steps, "seconds": secs}))


if __name__ == "__main__":
    main()
