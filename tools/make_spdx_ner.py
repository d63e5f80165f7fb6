#!/usr/bin/python3
"""Builds examples/data/spdx_ner/ (named-entity tagging of licence texts) from
the licence texts of examples/data/spdx/ and the licence names of the npm
package spdx-license-list@6.12.0 (CC0-1.0).

No hand-labelled legal NER corpus can be had offline here, so the tags are
derived by rules, and a model trained on them learns those rules:

- LICENSE: a licence name as SPDX lists it ("GNU General Public License v2.0
  only"), or that name cut before its first version word ("GNU General Public
  License"), matched word for word, longest first;
- VERSION: "Version" or "version" followed by a number ("Version 2.0");
- YEAR: a four-digit number from 1900 to 2099.

Words are runs of letters and digits (with inner . ' -) and single punctuation
marks; sentences end at ".", "!" or "?" and keep 5 to 60 words; at most 4
sentences per licence, with entity-bearing sentences first. The split is the
one of examples/data/spdx/ (by licence group). Writes train.conll (CoNLL: word
and tag per line) and valid.jsonl ({"id", "words", "tags"}).

usage: make_spdx_ner.py SPDX_FULL_JSON SPDX_DIR OUT_DIR"""
import json
import os
import re
import sys

WORD = re.compile(r"\w+(?:[.'\-]\w+)*|[^\w\s]")
VERSIONISH = re.compile(r"^(v\d.*|\d.*|version)$", re.I)


def words(text):
    return WORD.findall(text)


def name_patterns(licences):
    out = set()
    for lic in licences.values():
        w = words(lic["name"])
        if len(w) >= 2:
            out.add(tuple(w))
        for i, t in enumerate(w):
            if VERSIONISH.match(t) or t == ",":
                if i >= 2:
                    out.add(tuple(w[:i]))
                break
    return sorted(out, key=len, reverse=True)


def tag(ws, patterns, longest):
    tags = ["O"] * len(ws)
    i = 0
    while i < len(ws):
        hit = None
        for n in range(min(longest, len(ws) - i), 1, -1):
            if tuple(ws[i:i + n]) in patterns:
                hit = n
                break
        if hit:
            tags[i:i + hit] = ["B-LICENSE"] + ["I-LICENSE"] * (hit - 1)
            i += hit
            continue
        if ws[i] in ("Version", "version") and i + 1 < len(ws) and re.match(r"^\d+(\.\d+)*$", ws[i + 1]):
            tags[i:i + 2] = ["B-VERSION", "I-VERSION"]
            i += 2
            continue
        if re.match(r"^(19|20)\d\d$", ws[i]):
            tags[i] = "B-YEAR"
        i += 1
    return tags


def sentences(ws):
    cur = []
    for w in ws:
        cur.append(w)
        if w in (".", "!", "?"):
            yield cur
            cur = []
    if cur:
        yield cur


def main(src, spdx_dir, out):
    patterns = name_patterns(json.load(open(src)))
    pset, longest = set(patterns), max(len(p) for p in patterns)
    os.makedirs(out, exist_ok=True)
    for split in ("train", "valid"):
        rows = []
        for line in open(os.path.join(spdx_dir, split + ".jsonl")):
            lic = json.loads(line)
            sents = [s for s in sentences(words(lic["text"])) if 5 <= len(s) <= 60]
            tagged = [(s, tag(s, pset, longest)) for s in sents]
            tagged.sort(key=lambda st: all(t == "O" for t in st[1]))  # stable: entity-bearing first
            rows += [(lic["id"], s, t) for s, t in tagged[:4]]
        counts = {}
        for _, _, t in rows:
            for x in t:
                if x.startswith("B-"):
                    counts[x[2:]] = counts.get(x[2:], 0) + 1
        if split == "train":
            with open(os.path.join(out, "train.conll"), "w") as f:
                f.write("-DOCSTART- O\n\n")
                for _, s, t in rows:
                    f.write("".join(f"{w} {x}\n" for w, x in zip(s, t)) + "\n")
        else:
            with open(os.path.join(out, "valid.jsonl"), "w") as f:
                for i, s, t in rows:
                    f.write(json.dumps({"id": i, "words": s, "tags": t}, ensure_ascii=False) + "\n")
        print(split, len(rows), "sentences; entities:", dict(sorted(counts.items())))


if __name__ == "__main__":
    main(*sys.argv[1:])
