"""Reference scores of registered HeadPrune ids -> headprune/victims/reference_scores.json (see headprune.victims.scores).

    python benchmarks/reference_scores.py --env-id HeadPrune-Tiny-v0              # seconds per strategy
    python benchmarks/reference_scores.py --env-id HeadPrune-MiniLM-Style-v0      # the lead's CPU runs
    python benchmarks/reference_scores.py --env-id HeadPrune-Tiny-v0 \
        --agent benchmarks/results/agents/minilm-syntactic_maskable_ppo_s0         # with the shipped agent

Per id: the mean return of a uniform random policy over valid actions (``--episodes`` seeded episodes) and
its success rate (``info["is_success"]``, ``--success-episodes`` more seeded episodes; ids whose victim builds
in seconds only, "not measured" elsewhere),
the return of one deterministic episode of every scripted strategy (the best one is kept; on an id that only mixes,
whose episodes have no head action, the scripted mixing baseline below is that strategy), and the
final LFR of ``defend(victim, strategy)`` (its own fine-tune) for random (the ``random`` defense's random heads; on an
id that only mixes, a seeded uniform choice among the valid actions) and the best scripted strategy
on the victim's poisoned test set; on an id whose operation mixes blocks, the same two numbers for the scripted
mixing baseline (:class:`~headprune.defenses.scripted.UniformMixPolicy`: the least-mixed block a step, Fine-mixing's
one p in the env's steps), whose ``defend`` runs its episode's best state (the mixed blocks) into the fine-tune;
with ``--agent``, the same two numbers for the shipped agent (one
deterministic episode; its head-scoring policy is size-agnostic, so the MiniLM-trained agent runs on any id).
Other ids' entries in the file are kept.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import headprune  # noqa: F401
from headprune.defenses import DEFENSES, defend
from headprune.defenses.scripted import GivenPolicyDefense, ScriptedPolicyDefense, UniformMixPolicy
from headprune.envs.registration import VARIANTS
from headprune.victims.scores import NOT_MEASURED, SCORES_FILE


def episode_return(env: Any, choose: Any, seed: int) -> float:
    """The undiscounted return of one episode; ``choose(obs, action_mask) -> action``."""
    return run_episode(env, choose, seed)[0]


def run_episode(env: Any, choose: Any, seed: int) -> tuple[float, bool]:
    """``(undiscounted return, info["is_success"])`` of one episode; ``choose(obs, action_mask) -> action``."""
    obs, info = env.reset(seed=seed)
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(choose(obs, info["action_mask"]))
        total += float(reward)
        done = terminated or truncated
    return total, bool(info["is_success"])


class ValidRandomPolicy:
    """A seeded uniform choice among the valid actions (``action_masks``), in SB3's ``predict`` shape (one env):
    the random entry's episodes, and its defense on an id with no head operation, where the ``random`` defense
    (random heads) has nothing to prune."""

    name = "random-valid"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)

    def config(self) -> dict[str, Any]:
        """The policy's options (for the defense's report)."""
        return {"name": self.name, "seed": self.seed}

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True,
                action_masks: Any = None) -> tuple[np.int64, Any]:
        """``(action, state)``: one valid action, uniformly (``action_masks``: ``[A]`` bool, needed)."""
        if action_masks is None:
            raise ValueError(f"{self.name} needs action_masks")
        return np.int64(self.rng.choice(np.flatnonzero(np.asarray(action_masks, dtype=bool)))), state


def random_returns(env: Any, episodes: int, seed: int = 0) -> list[tuple[float, bool]]:
    """``(return, is_success)`` of ``episodes`` episodes (env seeds ``0..episodes-1``) of one
    :class:`ValidRandomPolicy` seeded ``seed``."""
    policy = ValidRandomPolicy(seed)
    return [run_episode(env, lambda o, m: int(policy.predict(o, action_masks=m)[0]), s) for s in range(episodes)]


def random_success_rate(env: Any, episodes: int, seed: int = 1) -> float:
    """The share of :func:`random_returns`' episodes that end with ``info["is_success"]``."""
    return float(np.mean([success for _, success in random_returns(env, episodes, seed)]))


def final_lfr(env_id: str, strategy: Any, kwargs: dict[str, Any]) -> float:
    """LFR of ``defend(victim, strategy)`` (with its fine-tune) on the victim's poisoned test set."""
    spec_kwargs = {**gym.spec(env_id).kwargs, **kwargs}
    victim = headprune.victims.resolve_victim(spec_kwargs.pop("victim"), cache=spec_kwargs.get("cache"))
    splits = victim.splits()
    result = defend(victim, strategy, spec_kwargs, eval_clean=splits.clean_test, eval_poison=splits.poisoned_test)
    return float(result.metrics["final"]["lfr"])


def agent_scores(env_id: str, env: Any, policy_path: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The shipped agent's entry: the return of one deterministic episode (seed 0) in ``env`` and the LFR
    of ``defend(victim, AgentDefense(policy_path))``; ``policy_path`` is a run folder or model ``.zip``
    (safe format; its trained env layout must fit the id's env)."""
    from headprune.agents import AgentDefense, load_policy

    policy = load_policy(policy_path, env)
    ret = episode_return(env, lambda o, m: int(policy.predict(o, action_masks=m, deterministic=True)[0]), 0)
    return {"policy": str(policy_path), "return": ret, "lfr": final_lfr(env_id, AgentDefense(policy_path), kwargs)}


def scores_of(env_id: str, episodes: int, kwargs: dict[str, Any], agent: str | None = None,
              success_episodes: int = 200) -> dict[str, Any]:
    env = gym.make(env_id, **kwargs).unwrapped
    quick = next(v for v in VARIANTS if v.env_id == env_id).builds_in_seconds
    randoms = [ret for ret, _ in random_returns(env, episodes)]
    heads = env.operations.acts_on_heads
    entry: dict[str, Any] = {
        "random": {"return": float(np.mean(randoms)), "return_std": float(np.std(randoms)), "episodes": episodes,
                   "lfr": final_lfr(env_id, "random" if heads else GivenPolicyDefense(ValidRandomPolicy(0)), kwargs),
                   "success_rate": random_success_rate(env, success_episodes) if quick else NOT_MEASURED,
                   "success_episodes": success_episodes if quick else NOT_MEASURED},
        "agent": NOT_MEASURED if agent is None else agent_scores(env_id, env, agent, kwargs),
    }
    if env.operations.mixes:  # the scripted mixing baseline, on the ids that mix only
        mixer = UniformMixPolicy()
        entry["mixing"] = {"name": mixer.name,
                           "return": episode_return(env, lambda o, m: int(mixer.predict(o, action_masks=m)[0]), 0),
                           "best_mix_levels": [int(v) for v in env.state("best")[2]],
                           "lfr": final_lfr(env_id, GivenPolicyDefense(mixer), kwargs)}
    if not heads:  # the mixing baseline is the one scripted strategy
        entry["scripted"] = {**entry["mixing"], "all_returns": {mixer.name: entry["mixing"]["return"]}}
        return entry
    scripted = {}
    for name in DEFENSES.names():
        cls = DEFENSES.get(name)
        if isinstance(cls, type) and issubclass(cls, ScriptedPolicyDefense) and name != "random":
            policy = cls().build_policy(env)
            scripted[name] = episode_return(
                env, lambda o, m: int(policy.predict(o, action_masks=m, deterministic=True)[0]), 0)
    best = max(scripted, key=scripted.__getitem__)
    entry["scripted"] = {"name": best, "return": scripted[best], "lfr": final_lfr(env_id, best, kwargs),
                         "all_returns": scripted}
    return entry


def same_spec_ids(env_id: str) -> list[str]:
    """The other registered ids whose spec has the same kwargs and ``max_episode_steps`` as ``env_id``'s: the
    same env (only the entry point differs, e.g. the class vs the lazy factory), so the same scores."""
    spec = gym.spec(env_id)
    return [v.env_id for v in VARIANTS if v.env_id != env_id
            and gym.spec(v.env_id).kwargs == spec.kwargs
            and gym.spec(v.env_id).max_episode_steps == spec.max_episode_steps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", action="append", help="registered id (repeatable; default HeadPrune-Tiny-v0)")
    parser.add_argument("--episodes", type=int, default=20, help="random-policy episodes")
    parser.add_argument("--success-episodes", type=int, default=200,
                        help="random-policy episodes for its is_success rate (ids that build in seconds)")
    parser.add_argument("--cache", default=None, help="victim cache root")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(SCORES_FILE))
    parser.add_argument("--agent", default=None, metavar="RUN_OR_ZIP",
                        help="the shipped agent to score (a run folder or model .zip in headprune's safe format); "
                             "default: its entry stays 'not measured'")
    parser.add_argument("--markdown", action="store_true",
                        help="measure nothing: print the README's table of the committed scores")
    args = parser.parse_args()
    if args.markdown:
        from headprune.victims.scores import markdown_table

        print(markdown_table())
        return
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    table = json.loads(open(args.out).read()) if args.out and __import__("os").path.exists(args.out) else {}
    table.setdefault("scores", {v.env_id: {"random": NOT_MEASURED, "scripted": NOT_MEASURED, "agent": NOT_MEASURED}
                                for v in VARIANTS})
    kwargs = {"progress": False} if args.cache is None else {"progress": False, "cache": args.cache}
    for env_id in args.env_id or ["HeadPrune-Tiny-v0"]:
        start = time.perf_counter()
        table["scores"][env_id] = scores_of(env_id, args.episodes, kwargs, args.agent, args.success_episodes)
        table["scores"][env_id]["seconds"] = round(time.perf_counter() - start, 1)
        print(env_id, json.dumps(table["scores"][env_id]), flush=True)
        for twin in same_spec_ids(env_id):  # e.g. HeadPrune-v0 and HeadPrune-MiniLM-Syntactic-v0
            table["scores"][twin] = {**table["scores"][env_id], "same_spec_as": env_id}
            print(f"{twin}: same victim, kwargs and max_episode_steps as {env_id}; entry copied", flush=True)
    table["note"] = ("returns: undiscounted, default config of the id; random: uniform over valid actions; "
                     "lfr: defend(victim, strategy) with its fine-tune, poisoned test set; random success_rate: "
                     "share of info['is_success'] (return >= 0.55) over success_episodes seeded episodes, measured "
                     "on the ids whose victim builds in seconds")
    with open(args.out, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
