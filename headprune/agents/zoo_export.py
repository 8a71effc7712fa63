"""Run headprune's agents through rl-baselines3-zoo's own trainer: export a zoo-native hyperparameter file.

The shipped files (``configs/<algo>.yml``) are in the zoo's format, but an entry also holds keys that only
``headprune train`` reads (``eval_freq``, ``n_eval_episodes``, ``checkpoint_freq``, ``vec_env``: the zoo takes
these as command-line flags) and names its policy by a short name. :func:`zoo_entry` turns one entry into
what ``python -m rl_zoo3.train`` accepts:

* the trainer-only keys are dropped and returned as the zoo flags that replace them (:data:`ZOO_FLAGS`);
* ``policy`` becomes a dotted path (the zoo imports it), the algorithm's variant of the policy class;
* ``policy_kwargs`` needs no ``head_shape``: the policy reads ``(L, H)`` from the observation space (its
  ``"mask"`` is a :class:`~headprune.envs.head_space.HeadFlags`), so exporting builds no env;
* schedules (``lin_<x>``), ``env_kwargs``, ``env_wrapper`` and ``normalize: false`` are the zoo's own and stay.

Usage (plain PPO; MaskablePPO needs action masks, which the zoo's trainer does not pass: use ``headprune
train`` for it)::

    python -m headprune.cli.zoo_export --algo ppo --env HeadPrune-Tiny-v0 --out zoo/ppo.yml
    python -m rl_zoo3.train --algo ppo --env HeadPrune-Tiny-v0 --gym-packages headprune \\
        --conf-file zoo/ppo.yml -n 512 --eval-freq -1
"""

from __future__ import annotations

from typing import Any

from headprune.agents.hyperparams import load_hyperparams
from headprune.agents.policy_network import policy_class

__all__ = ["ZOO_FLAGS", "zoo_entry"]

ZOO_FLAGS: dict[str, str] = {"eval_freq": "--eval-freq", "n_eval_episodes": "--eval-episodes",
                             "checkpoint_freq": "--save-freq", "vec_env": "--vec-env"}
"""``headprune train``'s entry keys and the rl_zoo3 flags that do their job."""


def zoo_entry(algo: str, env_id: str, *, conf_file: str | None = None,
              head_shape: tuple[int, int] | None = None) -> tuple[dict[str, Any], list[str]]:
    """``(entry, flags)``: the zoo-native hyperparameters of ``env_id`` for ``algo`` and the zoo flags for the
    keys it dropped (``["--eval-freq", "2048", ...]``; a frequency of 0 becomes the zoo's ``-1``, "never").

    :param head_shape: ``(L, H)`` to pin in ``policy_kwargs`` (the policy then checks it against the env's
        grid); default: none written, the policy reads the grid from the observation space.
    :raises ValueError: as :func:`~headprune.agents.hyperparams.load_hyperparams`.
    """
    hp = load_hyperparams(algo, env_id, conf_file=conf_file)
    flags: list[str] = []
    for key, flag in ZOO_FLAGS.items():
        if key in hp:
            value = hp.pop(key)
            if key == "vec_env":
                if value not in ("auto", "dummy", "subproc"):
                    raise ValueError(f"vec_env {value!r} has no rl_zoo3 equivalent (the zoo knows dummy, subproc)")
                flags += [] if value == "auto" else [flag, str(value)]
            else:
                flags += [flag, str(-1 if key != "n_eval_episodes" and int(value) == 0 else value)]
    policy = policy_class(str(hp.get("policy", "HeadScoringPolicy")), algo)
    if isinstance(policy, type):
        hp["policy"] = f"{policy.__module__}.{policy.__qualname__}"
    if head_shape is not None:
        hp["policy_kwargs"] = {**dict(hp.get("policy_kwargs") or {}), "head_shape": [int(x) for x in head_shape]}
    return hp, flags
