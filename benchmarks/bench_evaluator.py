"""Benchmark: Evaluator (length-sorted, dynamically padded) vs the naive PURE-style loop.

Default: MiniLM (``load_classifier("minilm")``) on the 872 clean SST-2 dev sentences. Asserts that
both give identical predictions, prints the median times, the speed-up, threads and versions.

    .venv/bin/python benchmarks/bench_evaluator.py [--model minilm] [--repeats 3] [--limit N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import transformers

from headprune.data import load_sst2
from headprune.engine.evaluator import Evaluator, naive_logits
from headprune.engine.models import load_classifier


def median_time(fn: Callable[[], torch.Tensor], repeats: int) -> tuple[float, torch.Tensor]:
    """Median wall time of ``repeats`` calls (after one warm-up call) and the last result."""
    out = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="first N sentences only")
    parser.add_argument("--batch-size", type=int, default=64, help="Evaluator batch size (naive: 32, as PURE)")
    args = parser.parse_args(argv)

    model, tokenizer = load_classifier(args.model)
    data = load_sst2(args.split)
    sentences = list(data.sentences[: args.limit])
    L_H = Evaluator(model, tokenizer, sentences[:1]).head_shape

    build_start = time.perf_counter()
    ev = Evaluator(model, tokenizer, sentences, batch_size=args.batch_size)
    build = time.perf_counter() - build_start
    t_fast, fast = median_time(ev.logits, args.repeats)
    t_naive, naive = median_time(lambda: naive_logits(model, tokenizer, sentences), args.repeats)

    same = torch.equal(fast.argmax(-1), naive.argmax(-1))
    max_diff = float((fast - naive).abs().max())
    lengths = [b.seq_len for b in ev.batches]
    print(f"model            {args.model}  ({type(model).__name__}, {L_H[0]} layers x {L_H[1]} heads, "
          f"attn={model.config._attn_implementation})")
    print(f"data             sst2/clean/{args.split}.tsv  n={len(sentences)}")
    print(f"versions         python {platform.python_version()}  torch {torch.__version__}  "
          f"transformers {transformers.__version__}")
    print(f"threads          torch.get_num_threads()={torch.get_num_threads()}  device=cpu")
    print(f"evaluator        batch {args.batch_size}, {len(ev.batches)} batches, padded lengths "
          f"{min(lengths)}..{max(lengths)} (mean {statistics.mean(lengths):.1f}); tokenize+batch once {build:.3f}s")
    print("naive            batch 32, padded to 128, unsorted")
    print(f"time evaluator   {t_fast:.3f}s  (median of {args.repeats})")
    print(f"time naive       {t_naive:.3f}s  (median of {args.repeats})")
    print(f"speed-up         {t_naive / t_fast:.2f}x")
    print(f"predictions      identical={same}  max |logit diff|={max_diff:.2e}")
    assert same, "Evaluator and naive predictions differ"


if __name__ == "__main__":
    main()
