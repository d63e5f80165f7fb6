#!/usr/bin/python3
"""Builds examples/data/spdx/ (multi-label licence tagging) from the npm package
spdx-license-list@6.12.0 (CC0-1.0): one JSONL row per licence, {"id", "text",
"labels"}. How each label is decided:

- osi_approved: SPDX's own osiApproved flag (curated by SPDX from the OSI list);
- gnu, creative_commons, bsd, mit: the licence's SPDX identifier belongs
  to that family (a rule on the identifier's prefix, listed in FAMILIES).

A licence may carry several labels or none. The text is the licence text with
whitespace collapsed, cut to its first 1,500 characters. Licences are split by
group: the identifier without version numbers and without -only/-or-later, so
that versions and variants of one licence (GPL-2.0-only, GPL-3.0-or-later;
CC-BY-SA-3.0, CC-BY-SA-4.0) never straddle train and validation.

usage: make_spdx_multilabel.py SPDX_FULL_JSON OUT_DIR"""
import hashlib
import json
import os
import re
import sys

FAMILIES = {
    "gnu": ("GPL-", "LGPL-", "AGPL-", "GFDL-"),
    "creative_commons": ("CC-", "CC0-"),
    "bsd": ("BSD-", "0BSD"),
    "mit": ("MIT",),
}


def group(spdx_id):
    g = re.sub(r"-(only|or-later)$", "", spdx_id)
    return re.sub(r"[-.]?\d+(\.\d+)*", "", g).lower()


def main(src, out):
    licences = json.load(open(src))
    rows = {"train": [], "valid": []}
    for spdx_id in sorted(licences):
        lic = licences[spdx_id]
        text = " ".join(lic["licenseText"].split())[:1500]
        if not text:
            continue
        labels = ["osi_approved"] if lic.get("osiApproved") else []
        labels += [name for name, prefixes in FAMILIES.items() if spdx_id.startswith(prefixes)]
        # One group in five (by a hash of its name) is held out for validation.
        split = "valid" if int(hashlib.sha256(group(spdx_id).encode()).hexdigest(), 16) % 5 == 0 else "train"
        rows[split].append({"id": spdx_id, "text": text, "labels": labels})
    os.makedirs(out, exist_ok=True)
    for split, items in rows.items():
        with open(os.path.join(out, split + ".jsonl"), "w") as f:
            for r in items:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        counts = {}
        for r in items:
            for l in r["labels"]:
                counts[l] = counts.get(l, 0) + 1
        print(split, len(items), dict(sorted(counts.items())))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
