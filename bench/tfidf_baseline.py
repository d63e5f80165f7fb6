#!/usr/bin/python3
"""The baseline every Attune report is held against: TF-IDF (word 1-2-grams,
sublinear tf) + logistic regression, one-vs-rest for multi-label data, with
scikit-learn. Prints the metrics Attune reports for the task, on the same
validation file.

usage: tfidf_baseline.py single|multi TRAIN VALID TEXT_COLUMN LABEL_COLUMN"""
import csv
import json
import sys

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, roc_auc_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import MultiLabelBinarizer


def rows(path):
    if path.endswith(".csv"):
        return list(csv.DictReader(open(path, newline="")))
    return [json.loads(l) for l in open(path) if l.strip()]


def main(kind, train_path, valid_path, text, label):
    train, valid = rows(train_path), rows(valid_path)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    xt = vec.fit_transform([r[text] for r in train])
    xv = vec.transform([r[text] for r in valid])
    if kind == "multi":
        mlb = MultiLabelBinarizer()
        yt = mlb.fit_transform([r[label] for r in train])
        yv = mlb.transform([r[label] for r in valid])
        clf = OneVsRestClassifier(LogisticRegression(max_iter=2000, C=10)).fit(xt, yt)
        p = clf.predict_proba(xv)
        pred = (p > 0.5).astype(int)
        out = {"micro_f1": f1_score(yv, pred, average="micro", zero_division=0),
               "macro_f1": f1_score(yv, pred, average="macro", zero_division=0),
               "subset_accuracy": accuracy_score(yv, pred), "hamming_loss": hamming_loss(yv, pred),
               "micro_roc_auc": roc_auc_score(yv, p, average="micro"), "labels": list(mlb.classes_)}
    else:
        labels = sorted({r[label] for r in train})
        yt = np.array([labels.index(r[label]) for r in train])
        yv = np.array([labels.index(r[label]) for r in valid])
        clf = LogisticRegression(max_iter=2000, C=10).fit(xt, yt)
        p = clf.predict_proba(xv)
        pred = p.argmax(1)
        avg = "binary" if len(labels) == 2 else "macro"
        out = {"accuracy": accuracy_score(yv, pred), "f1": f1_score(yv, pred, average=avg),
               "roc_auc": roc_auc_score(yv, p[:, 1]) if len(labels) == 2 else
               roc_auc_score(yv, p, multi_class="ovr", average="macro"), "labels": labels}
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main(*sys.argv[1:6])
