#!/usr/bin/python3
"""Peak memory of loading a decoder checkpoint: `attune predict --logprobs`
on one short text with a random Llama-shaped safetensors checkpoint of about
--params parameters in --dtype, sampling /proc/PID/status every 5 ms. Prints
the checkpoint's size, the parameters' fp32 bytes (what the model itself
must hold), and attune's peak anonymous memory (RssAnon: what the process
allocated, the file's mapped pages excluded) and peak resident set
(VmHWM: mapped file pages included, which the kernel can drop), so that a
load that held the checkpoint twice would show as anonymous memory above
the parameters by the checkpoint's size.

usage: bench/load_memory.py [--build build] [--hidden 1024] [--layers 16] [--dtype F32|BF16]"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import make_tiny_bert as mb  # noqa: E402

TOKENIZER = os.path.join(ROOT, "tools", "node_modules", "@lenml", "tokenizer-llama3_1", "models")


def status_kib(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--dtype", default="F32", choices=["F32", "BF16"])
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="load_memory_")
    try:
        model = os.path.join(work, "model")
        os.makedirs(model)
        E, heads = a.hidden, a.hidden // 64
        kv, inter, vocab = max(1, heads // 4), a.hidden * 8 // 3 // 64 * 64, 128256
        cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": E,
               "intermediate_size": inter, "num_hidden_layers": a.layers, "num_attention_heads": heads,
               "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 2048,
               "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu", "tie_word_embeddings": False,
               "bos_token_id": 128000, "eos_token_id": 128009, "torch_dtype": "float32"}
        w = {"model.embed_tokens.weight": torch.randn(vocab, E) * 0.02, "lm_head.weight": torch.randn(vocab, E) * 0.02,
             "model.norm.weight": torch.ones(E)}
        for i in range(a.layers):
            p = "model.layers.%d." % i
            for name, shape in (("self_attn.q_proj", (E, E)), ("self_attn.k_proj", (kv * 64, E)),
                                ("self_attn.v_proj", (kv * 64, E)), ("self_attn.o_proj", (E, E)),
                                ("mlp.gate_proj", (inter, E)), ("mlp.up_proj", (inter, E)),
                                ("mlp.down_proj", (E, inter))):
                w[p + name + ".weight"] = torch.randn(*shape) * 0.02
            w[p + "input_layernorm.weight"] = torch.ones(E)
            w[p + "post_attention_layernorm.weight"] = torch.ones(E)
        params = sum(t.numel() for t in w.values())
        dtype = {"F32": torch.float32, "BF16": torch.bfloat16}[a.dtype]
        mb.write_safetensors(os.path.join(model, "model.safetensors"), w, dtype)
        del w
        with open(os.path.join(model, "config.json"), "w") as f:
            json.dump(cfg, f)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(TOKENIZER, name), model)
        with open(os.path.join(work, "in.jsonl"), "w") as f:
            f.write(json.dumps({"text": "The patient was given 325 mg of aspirin"}) + "\n")
        size = os.path.getsize(os.path.join(model, "model.safetensors"))
        p = subprocess.Popen([os.path.join(a.build, "bin", "attune"), "predict", "--model", model, "--input",
                              os.path.join(work, "in.jsonl"), "--output", os.path.join(work, "out.jsonl"),
                              "--logprobs"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        anon = hwm = 0
        while p.poll() is None:
            anon = max(anon, status_kib(p.pid, "RssAnon") or 0)
            hwm = max(hwm, status_kib(p.pid, "VmHWM") or 0)
            time.sleep(0.005)
        err = p.stderr.read().decode()
        if p.returncode != 0:
            sys.exit(err)
        mib = 1 << 20
        print("Llama-shaped, hidden %d, %d layers, vocab %d: %.1fM parameters (%.0f MiB in fp32)"
              % (E, a.layers, vocab, params / 1e6, params * 4 / mib))
        print("checkpoint: model.safetensors, %s, %.0f MiB" % (a.dtype, size / mib))
        print("attune predict --logprobs: peak RssAnon %.0f MiB, peak VmHWM %.0f MiB"
              % (anon * 1024 / mib, hwm * 1024 / mib))
        print("anonymous memory above the fp32 parameters: %.0f MiB (%.2f of the checkpoint's size)"
              % ((anon * 1024 - params * 4) / mib, (anon * 1024 - params * 4) / size))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
