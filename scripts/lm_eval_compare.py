#!/usr/bin/env python3
"""Compares two lm-evaluation-harness runs of one task: every choice's log-likelihood (within
1e-3) and whether it is the greedy continuation (equal), and the accuracy (equal). Usage: lm_eval_compare.py SERVER_OUTPUT_DIR HF_OUTPUT_DIR TASK"""

import glob
import json
import sys


def samples(root, task):
    files = glob.glob(f"{root}/**/samples_{task}_*.jsonl", recursive=True)
    assert len(files) == 1, f"one samples file for {task} under {root}, found {files}"
    rows = [json.loads(line) for line in open(files[0])]
    return {row["doc_id"]: row for row in rows}


def results(root, task):
    files = glob.glob(f"{root}/**/results_*.json", recursive=True)
    assert len(files) == 1, f"one results file under {root}, found {files}"
    return json.load(open(files[0]))["results"][task]


def main(server_dir, hf_dir, task):
    ours, theirs = samples(server_dir, task), samples(hf_dir, task)
    assert ours.keys() == theirs.keys(), "the same documents"
    worst, choices = 0.0, 0
    for doc_id in sorted(ours):
        for a, b in zip(ours[doc_id]["resps"], theirs[doc_id]["resps"], strict=True):
            (ll_a, greedy_a), (ll_b, greedy_b) = a[0], b[0]
            worst = max(worst, abs(float(ll_a) - float(ll_b)))
            choices += 1
            assert abs(float(ll_a) - float(ll_b)) <= 1e-3, f"doc {doc_id}: {ll_a} vs {ll_b}"
            assert greedy_a == greedy_b, f"doc {doc_id}: is_greedy {greedy_a} vs {greedy_b}"
    acc_a, acc_b = results(server_dir, task)["acc,none"], results(hf_dir, task)["acc,none"]
    print(json.dumps({"task": task, "documents": len(ours), "choices": choices,
                      "max_abs_loglikelihood_diff": worst, "acc_server": acc_a, "acc_hf": acc_b}))
    assert acc_a == acc_b, f"accuracy {acc_a} through the server vs {acc_b} with transformers"


if __name__ == "__main__":
    main(*sys.argv[1:4])
