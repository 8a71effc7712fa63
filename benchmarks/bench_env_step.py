"""Benchmark: one HeadPrune-v0 step vs a naive step, over the same fixed action sequence.

The env step scores the new mask with :class:`~headprune.envs.incremental.IncrementalForward`
(length-sorted dynamic padding, only the layers from the pruned head's layer on are recomputed,
memoised by mask) plus the proxy. The naive step does what a straightforward implementation would:
a full forward of the evaluation set through :func:`~headprune.engine.evaluator.naive_logits` (original
order, every batch of 32 padded to 128 tokens, no cache) plus a fresh instance of the same proxy with
its memo turned off, and the same reward function. The two reward sequences must be identical to
the last bit (asserted). Steps are interleaved (env step, then naive step for the same mask) so that
both see the same machine load.

Reported: median step time of each, their ratio (target >= 10x), the split of each step into the
accuracy part and the proxy part, and the median env step when an episode retraces masks it has
already seen (the memo). Default victim: ``minilm-syntactic`` (all-MiniLM-L6-v2, 6 x 12 heads).

    .venv/bin/python benchmarks/bench_env_step.py [--victim minilm-syntactic] [--val-size 256]
        [--steps 16] [--proxy NAME] [--seed 0] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import struct
import time
from collections.abc import Callable

import numpy as np
import torch

from headprune.envs.headprune_env import HeadPruneEnv
from headprune.envs.proxies import DEFAULT_PROXY
from headprune.envs.reward import step_reward
from headprune.engine.evaluator import naive_logits
from headprune.common.provenance import environment_info
from headprune.victims import DEFAULT_VICTIM


class Timed:
    """Wraps a callable and records the wall time of each call."""

    def __init__(self, fn: Callable[[torch.Tensor], float]) -> None:
        self.fn = fn
        self.times: list[float] = []

    def __call__(self, mask: torch.Tensor) -> float:
        start = time.perf_counter()
        out = self.fn(mask)
        self.times.append(time.perf_counter() - start)
        return out


def bits(values: list[float]) -> list[bytes]:
    return [struct.pack("<d", v) for v in values]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--victim", default=DEFAULT_VICTIM, help="preset name or victim folder")
    parser.add_argument("--val-size", type=int, default=256)
    parser.add_argument("--stats-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=16, help="length of the fixed action sequence")
    parser.add_argument("--proxy", default=DEFAULT_PROXY)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--cache", default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    build = time.perf_counter()
    env = HeadPruneEnv(args.victim, val_size=args.val_size, stats_size=args.stats_size, proxy=args.proxy,
                       accuracy_floor=0.0, budget=args.steps, max_steps=args.steps, seed=args.seed, cache=args.cache)
    build = time.perf_counter() - build
    L, H = env.head_shape
    actions = [int(a) for a in np.random.default_rng(args.seed).permutation(L * H)[: args.steps]]
    env_proxy = Timed(env.scorer.proxy)
    env.scorer.proxy = env_proxy

    naive_proxy = env.build_proxy(env.model, cache_size=0)
    sentences = list(env.val_data.sentences)
    labels = torch.tensor(env.val_data.labels)
    mask = torch.ones(L, H)
    prev_acc, prev_proxy = env.start_score.accuracy, naive_proxy(mask)
    assert prev_proxy == env.start_score.proxy, "the two proxy instances disagree on the unpruned model"

    env.reset(seed=args.seed)
    env_times, env_rewards, starts = [], [], []
    naive_times, naive_eval, naive_proxy_times, naive_rewards = [], [], [], []
    for a in actions:
        start = time.perf_counter()
        _, reward, terminated, truncated, _ = env.step(a)
        env_times.append(time.perf_counter() - start)
        env_rewards.append(float(reward))
        starts.append(env.scorer.forward.last_start_layer)

        mask.view(-1)[a] = 0.0
        start = time.perf_counter()
        logits = naive_logits(env.model, env.tokenizer, sentences, max_length=128, batch_size=32, mask=mask)
        acc = int((logits.argmax(-1) == labels).sum()) / labels.numel()
        mid = time.perf_counter()
        p = naive_proxy(mask)
        terms = step_reward(prev_acc, prev_proxy, acc, p, invalid=False, crossed_floor=acc < env.accuracy_floor,
                            weights=env.weights)
        end = time.perf_counter()
        naive_rewards.append(terms.total)
        naive_times.append(end - start)
        naive_eval.append(mid - start)
        naive_proxy_times.append(end - mid)
        prev_acc, prev_proxy = acc, p
    assert not terminated, "the floor is 0: no step may terminate"

    identical = bits(env_rewards) == bits(naive_rewards)
    # a second episode over the same actions: every mask is memoised
    env.reset(seed=args.seed)
    replay = []
    for a in actions:
        start = time.perf_counter()
        env.step(a)
        replay.append(time.perf_counter() - start)

    med = statistics.median
    env_proxy_med = med(env_proxy.times) if env_proxy.times else 0.0
    info = environment_info()
    versions = "  ".join(f"{k} {v}" for k, v in info["versions"].items() if v)
    print(f"victim        {env.victim.name}  ({type(env.model).__name__}, {L} layers x {H} heads, "
          f"attn={env.model.config._attn_implementation}, incremental={env.scorer.forward.incremental})")
    print(f"setup         val_size {len(sentences)}  stats_size {len(env.stats_data)}  proxy {env.proxy.name}  "
          f"seed {args.seed}  steps {len(actions)}  env built in {build:.1f} s")
    print(f"machine       python {info['python']}  torch threads {torch.get_num_threads()}  {info['platform']}")
    print(f"versions      {versions}")
    print(f"actions       {actions}")
    print(f"first layer recomputed per step: {starts}")
    print(f"rewards       identical to the last bit: {identical}")
    print(f"env step      median {med(env_times):.4f} s   (accuracy {med(env_times) - env_proxy_med:.4f} s + proxy "
          f"{env_proxy_med:.4f} s)")
    print(f"naive step    median {med(naive_times):.4f} s   (accuracy {med(naive_eval):.4f} s + proxy "
          f"{med(naive_proxy_times):.4f} s)")
    ratio = med(naive_times) / med(env_times)
    print(f"speed-up      {ratio:.1f}x per step (target >= 10x: {'met' if ratio >= 10 else 'NOT met'}); "
          f"accuracy part alone {med(naive_eval) / max(med(env_times) - env_proxy_med, 1e-9):.1f}x")
    print(f"revisited     median env step over an episode retracing the same masks (memo): {med(replay) * 1e3:.3f} ms "
          f"({med(naive_times) / med(replay):.0f}x)")
    if not identical:
        diffs = [(i, e, n) for i, (e, n) in enumerate(zip(env_rewards, naive_rewards, strict=True)) if e != n]
        raise SystemExit(f"reward sequences differ at steps {diffs}")


if __name__ == "__main__":
    main()
