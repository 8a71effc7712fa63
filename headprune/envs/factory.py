"""The entry point of every registered ``HeadPrune`` id: :func:`make_registered_env`.

It announces a victim that is not cached yet (it is then trained inside ``gym.make``, with progress
bars: about a minute for ``tiny``, an hour for a MiniLM preset on a 2-core CPU) and builds a
:class:`~headprune.envs.headprune_env.HeadPruneEnv`. ``gym.make`` keyword arguments override the
variant's (``gym.make("HeadPrune-Tiny-v0", victim=my_victim, budget=2)``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from headprune.envs.headprune_env import HeadPruneEnv
from headprune.victims import PRESETS, Victim, cache_dir
from headprune.victims.card import CARD_FILE

__all__ = ["announce_victim_build", "make_registered_env"]


def announce_victim_build(victim: Victim | str | os.PathLike[str], cache: str | os.PathLike[str] | None) -> bool:
    """Print one line on stderr when ``victim`` is a preset that is not cached yet (it is about to be
    trained); return whether it was announced.

    :param victim: what the env was given (only preset names are ever trained).
    :param cache: the cache root (``HeadPruneConfig.cache``).
    """
    if not isinstance(victim, str) or victim not in PRESETS:
        return False
    folder = cache_dir(cache) / "victims" / PRESETS[victim].name
    if (folder / CARD_FILE).is_file():
        return False
    print(f"headprune: victim {victim!r} is not cached yet: training it and its clean reference now "
          f"(once; cached in {folder.parent})", file=sys.stderr, flush=True)
    return True


def make_registered_env(victim: Victim | str | os.PathLike[str] = "minilm-syntactic", *,
                        render_mode: str | None = None, **kwargs: Any) -> HeadPruneEnv:
    """``HeadPruneEnv(victim, render_mode=render_mode, **kwargs)``, announcing a victim build first.

    :param victim: a :class:`~headprune.victims.Victim`, a preset name or a victim folder.
    :param render_mode: ``None``, ``"ansi"`` or ``"rgb_array"``.
    :param kwargs: :class:`~headprune.envs.config.HeadPruneConfig` fields.
    """
    announce_victim_build(victim, kwargs.get("cache"))
    return HeadPruneEnv(victim, render_mode=render_mode, **kwargs)


make_registered_env.metadata = HeadPruneEnv.metadata  # type: ignore[attr-defined]  # gym.make reads render modes
