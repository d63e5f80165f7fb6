#!/usr/bin/python3
"""The PyTorch peer for bench/train_throughput.sh: an eager training loop of a
BERT classifier (same shapes as Attune's, HF-style modules), AdamW with two
parameter groups, linear warmup/decay, gradient clipping, dropout 0.1, on
fixed-length random token ids. Prints JSON with samples/s and peak RSS.

--mlm masked | full trains BertForMaskedLM instead: HF's collator (15% of the
tokens, 80/10/10) on every step, the head's transform and the decoder tied to
the word embeddings, computed at the masked positions only (masked) or at
every position with the loss ignoring the rest (full: what HF's
BertForMaskedLM does)."""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Layer(nn.Module):
    def __init__(self, h, heads, ffn, p):
        super().__init__()
        self.h, self.heads = h, heads
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        self.attn_out, self.attn_ln = nn.Linear(h, h), nn.LayerNorm(h, eps=1e-12)
        self.inter, self.out, self.out_ln = nn.Linear(h, ffn), nn.Linear(ffn, h), nn.LayerNorm(h, eps=1e-12)
        self.drop = nn.Dropout(p)

    def forward(self, x, bias):
        b, t, _ = x.shape
        d = self.h // self.heads
        q, k, v = (m(x).view(b, t, self.heads, d).transpose(1, 2) for m in (self.query, self.key, self.value))
        att = self.drop(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, -1))
        ctx = (att @ v).transpose(1, 2).reshape(b, t, self.h)
        x = self.attn_ln(self.drop(self.attn_out(ctx)) + x)
        return self.out_ln(self.drop(self.out(F.gelu(self.inter(x)))) + x)


class Bert(nn.Module):
    def __init__(self, vocab, h, layers, heads, ffn, maxpos, labels, p=0.1):
        super().__init__()
        self.word, self.pos, self.token_type = nn.Embedding(vocab, h), nn.Embedding(maxpos, h), nn.Embedding(2, h)
        self.ln, self.drop = nn.LayerNorm(h, eps=1e-12), nn.Dropout(p)
        self.layers = nn.ModuleList(Layer(h, heads, ffn, p) for _ in range(layers))
        self.pooler, self.classifier = nn.Linear(h, h), nn.Linear(h, labels)
        self.mlm_dense, self.mlm_ln = nn.Linear(h, h), nn.LayerNorm(h, eps=1e-12)
        self.mlm_bias = nn.Parameter(torch.zeros(vocab))

    def encode(self, ids, types, mask):
        t = ids.shape[1]
        x = self.drop(self.ln(self.word(ids) + self.pos(torch.arange(t, device=ids.device)[None]) + self.token_type(types)))
        bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, bias)
        return x

    def forward(self, ids, types, mask):
        return self.classifier(self.drop(torch.tanh(self.pooler(self.encode(ids, types, mask)[:, 0]))))

    def mlm(self, x):
        return self.mlm_ln(F.gelu(self.mlm_dense(x))) @ self.word.weight.T + self.mlm_bias


def main():
    ap = argparse.ArgumentParser()
    for k, v in (("hidden", 256), ("layers", 4), ("heads", 4), ("ffn", 1024), ("vocab", 8192), ("seq", 128),
                 ("batch", 16), ("steps", 30), ("warmup_steps", 5), ("threads", 1), ("world", 1), ("rank", 0),
                 ("port", 0), ("allreduce_bytes", 0)):
        ap.add_argument("--" + k, type=int, default=v)
    ap.add_argument("--mlm", choices=["", "masked", "full"], default="")
    ap.add_argument("--bf16", action="store_true", help="torch.autocast(bfloat16) around forward and loss")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (tools/gpu_check)")
    a = ap.parse_args()
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.world > 1:
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{a.port}", rank=a.rank, world_size=a.world)
        if a.allreduce_bytes:
            # Raw Gloo allreduce of one float32 buffer of this size: the bandwidth reference.
            buf = torch.zeros(a.allreduce_bytes // 4)
            times = []
            for _ in range(a.steps):
                t0 = time.perf_counter()
                dist.all_reduce(buf)
                times.append(time.perf_counter() - t0)
            med = sorted(times)[len(times) // 2]
            if a.rank == 0:
                print(json.dumps({"allreduce_seconds": med, "bus_gbps": a.allreduce_bytes / med / 1e9}))
            return
    m = Bert(a.vocab, a.hidden, a.layers, a.heads, a.ffn, 512, 2)
    if a.mlm:
        del m.pooler, m.classifier
    else:
        del m.mlm_dense, m.mlm_ln, m.mlm_bias
    m.to(dev)
    if a.world > 1:
        m = torch.nn.parallel.DistributedDataParallel(m)
    decay = [p for n, p in m.named_parameters() if not (n.endswith("bias") or "ln" in n)]
    no_decay = [p for n, p in m.named_parameters() if n.endswith("bias") or "ln" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4)
    total = a.steps + a.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / 10, (total - s) / max(1, total - 10)))
    ids = torch.randint(5, a.vocab, (a.batch, a.seq)).to(dev)
    types, mask = torch.zeros_like(ids), torch.ones_like(ids)
    labels = torch.randint(0, 2, (a.batch,)).to(dev)
    m.train()
    times = []
    for step in range(total):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = forward_loss(a, m, ids, types, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sched.step()
        sync()
        times.append(time.perf_counter() - t0)
    steady = sorted(times[a.warmup_steps:])
    median = steady[len(steady) // 2]
    if a.rank != 0:
        return
    print(json.dumps({"samples_per_second": a.batch * a.world / median, "device": a.device,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def forward_loss(a, m, ids, types, mask, labels):
    """One step's loss: the classifier's, or MLM's at 15% of the tokens."""
    if a.mlm:
        # DataCollatorForLanguageModeling, without specials (the ids hold none).
        chosen = torch.bernoulli(torch.full(ids.shape, 0.15, device=ids.device)).bool()
        target = torch.where(chosen, ids, torch.full_like(ids, -100))
        inp = ids.clone()
        to_mask = torch.bernoulli(torch.full(ids.shape, 0.8, device=ids.device)).bool() & chosen
        inp[to_mask] = 4
        to_random = torch.bernoulli(torch.full(ids.shape, 0.5, device=ids.device)).bool() & chosen & ~to_mask
        inp[to_random] = torch.randint(a.vocab, ids.shape, device=ids.device)[to_random]
        x = m.encode(inp, types, mask)
        if a.mlm == "masked":
            loss = F.cross_entropy(m.mlm(x[chosen]), ids[chosen])
        else:
            loss = F.cross_entropy(m.mlm(x).view(-1, a.vocab), target.view(-1), ignore_index=-100)
    else:
        loss = F.cross_entropy(m(ids, types, mask), labels)
    return loss


if __name__ == "__main__":
    main()
