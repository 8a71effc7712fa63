"""Benchmark: forward time of a gated model (HeadGate hooks) vs the same model compacted (heads removed).

Default: MiniLM (``load_classifier("minilm")``, 6 layers x 12 heads) with a seeded random half of its
72 heads pruned, on a fixed batch of the first 32 clean SST-2 dev sentences. Gated and compacted
forwards alternate (so drifting load on a shared CPU hits both alike) under ``torch.inference_mode()``
after warm-up; prints median times, the speed-up, the max abs logit difference, and the set-up.

    .venv/bin/python benchmarks/bench_compact.py [--prune 36] [--batch-size 32] [--repeats 30] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from headprune.data import read_labelled_text, shared_data_dir
from headprune.engine.export import compact
from headprune.engine.gating import HeadGate, head_grid_shape
from headprune.engine.models import load_classifier


def random_mask(shape: tuple[int, int], num_pruned: int, seed: int) -> torch.Tensor:
    """Mask ``[L, H]`` with ``num_pruned`` zeros at seeded random positions."""
    mask = torch.ones(shape)
    order = torch.randperm(shape[0] * shape[1], generator=torch.Generator().manual_seed(seed))
    mask.view(-1)[order[:num_pruned]] = 0
    return mask


def interleaved_medians(fns: dict[str, Callable[[], torch.Tensor]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn ``warmup + repeats`` times."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for rep in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--data", type=Path, default=None, help="labelled text file (default: SST-2 clean dev)")
    parser.add_argument("--prune", type=int, default=None, help="heads to prune (default: half)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model, tokenizer = load_classifier(args.model, seed=args.seed)
    shape = head_grid_shape(model)
    num_pruned = args.prune if args.prune is not None else shape[0] * shape[1] // 2
    mask = random_mask(shape, num_pruned, args.seed)
    small = compact(model, mask)

    path = args.data if args.data is not None else shared_data_dir() / "sst2" / "clean" / "dev.tsv"
    sentences = list(read_labelled_text(path).sentences[: args.batch_size])
    batch = tokenizer(sentences, return_tensors="pt", padding=True)

    with torch.inference_mode(), HeadGate(model) as gate:
        full = model(**batch).logits
        gate.set_mask(mask)
        gated = model(**batch).logits
        compacted = small(**batch).logits
        medians = interleaved_medians(
            {"gated": lambda: model(**batch).logits, "compacted": lambda: small(**batch).logits},
            args.repeats,
            args.warmup,
        )

    params_full = sum(p.numel() for p in model.parameters())
    params_small = sum(p.numel() for p in small.parameters())
    encoder = params_full - model.get_input_embeddings().weight.numel()
    encoder_small = params_small - small.get_input_embeddings().weight.numel()
    kept = (mask != 0).sum(dim=1).tolist()
    print(f"model           {args.model} ({type(model).__name__}, {shape[0]} layers x {shape[1]} heads, "
          f"attn={model.config._attn_implementation})")
    print(f"pruned          {num_pruned}/{mask.numel()} heads (seeded random, seed {args.seed}); kept per layer {kept}")
    print(f"batch           {tuple(batch['input_ids'].shape)} = first {len(sentences)} sentences of {path}")
    print(f"parameters      {params_full:,} -> {params_small:,} "
          f"(without word embeddings {encoder:,} -> {encoder_small:,}, {encoder_small / encoder:.1%})")
    print(f"gated forward   {medians['gated'] * 1e3:8.2f} ms  (median of {args.repeats}, {args.warmup} warm-up)")
    print(f"compacted       {medians['compacted'] * 1e3:8.2f} ms")
    print(f"speed-up        {medians['gated'] / medians['compacted']:.2f}x")
    print(f"max |logit diff| compacted vs gated {float((compacted - gated).abs().max()):.2e}  "
          f"(gated vs unpruned {float((gated - full).abs().max()):.2e})")
    print(f"set-up          seed {args.seed}, torch {torch.__version__} (threads: {torch.get_num_threads()}), "
          f"transformers {transformers.__version__}, python {platform.python_version()}, {platform.machine()}")


if __name__ == "__main__":
    main()
