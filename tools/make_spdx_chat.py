#!/usr/bin/env python3
"""Builds examples/data/spdx_chat/{train,valid}.jsonl, chat conversations for
supervised fine-tuning of a decoder (task causal_lm), from the SPDX licence
texts and labels in examples/data/spdx (same split, same licences).

Each conversation: a system turn, the user asking whether the licence text
they paste is OSI-approved, the assistant's yes or no, the user asking for its
family, and the assistant naming it (GNU, Creative Commons, BSD, MIT, or none
of them). The answers follow from the SPDX labels alone. Also
osi_choice.jsonl: the validation licences' first question as multiple choice
(evaluation.multiple_choice: the yes and no answers, the right one's index).
Deterministic: running it again writes the same bytes.

usage: tools/make_spdx_chat.py [SPDX_DIR] [OUT_DIR]"""
import json
import os
import sys

SYSTEM = "You are a licensing assistant. Answer briefly."
FAMILIES = [("gnu", "GNU"), ("creative_commons", "Creative Commons"), ("bsd", "BSD"), ("mit", "MIT")]
ARTICLE = {"MIT": "an"}


def conversation(row):
    labels = set(row.get("labels", []))
    osi = "Yes, it is OSI-approved." if "osi_approved" in labels else "No, it is not OSI-approved."
    family = next((name for key, name in FAMILIES if key in labels), None)
    family = "It is %s %s licence." % (ARTICLE.get(family, "a"), family) if family else "It is none of GNU, Creative Commons, BSD or MIT."
    return {"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Is this licence OSI-approved?\n\n" + row["text"]},
        {"role": "assistant", "content": osi},
        {"role": "user", "content": "Which family is it?"},
        {"role": "assistant", "content": family},
    ]}


def choice(conv):
    """The first question of a conversation as a multiple-choice question."""
    messages = conv["messages"]
    choices = ["Yes, it is OSI-approved.", "No, it is not OSI-approved."]
    return {"messages": messages[:2], "choices": choices, "answer": choices.index(messages[2]["content"])}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "examples", "data", "spdx")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "examples", "data", "spdx_chat")
    os.makedirs(out, exist_ok=True)
    for split in ("train", "valid"):
        with open(os.path.join(src, split + ".jsonl"), encoding="utf-8") as f, \
                open(os.path.join(out, split + ".jsonl"), "w", encoding="utf-8") as g:
            rows = [json.loads(line) for line in f if line.strip()]
            for row in rows:
                g.write(json.dumps(conversation(row), ensure_ascii=False) + "\n")
        if split == "valid":
            with open(os.path.join(out, "osi_choice.jsonl"), "w", encoding="utf-8") as g:
                for row in rows:
                    g.write(json.dumps(choice(conversation(row)), ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
