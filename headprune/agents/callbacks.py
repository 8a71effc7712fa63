"""Training callbacks of a run folder's logs: :class:`ProgressLog` (``progress.jsonl``, one line per rollout)
and :class:`WallClockLimit` (``--max-minutes``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

__all__ = ["INFO_KEYWORDS", "ProgressLog", "WallClockLimit"]

INFO_KEYWORDS: tuple[str, ...] = ("clean_accuracy", "proxy", "heads_pruned", "best_accuracy", "best_proxy",
                                  "best_heads_pruned")
"""``HeadPrune-v0`` info entries the Monitor records at the end of every episode."""


class ProgressLog(BaseCallback):
    """After every rollout: one JSON line (``session``, ``num_timesteps``, ``episodes``, the means of
    the recent episodes' return, length and :data:`INFO_KEYWORDS`, ``seconds``) appended to ``path``,
    and the info means recorded to the SB3 logger (``rollout/ep_<key>_mean``, TensorBoard)."""

    def __init__(self, path: Path, session: int) -> None:
        super().__init__()
        self.path, self.session = path, int(session)
        self._start = time.perf_counter()
        self.episodes = 0  # finished episodes, counted from the Monitor's info["episode"] (on-policy
        # algorithms never update _episode_num); resumed sessions start from the last row's count

    def _on_training_start(self) -> None:
        if self.path.is_file():
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.episodes = int(rows[-1].get("episodes", 0)) if rows else 0

    def _on_step(self) -> bool:
        self.episodes += sum("episode" in info for info in self.locals.get("infos", ()))
        return True

    def _on_rollout_end(self) -> None:
        buffer = list(self.model.ep_info_buffer or [])
        row: dict[str, Any] = {"session": self.session, "num_timesteps": int(self.num_timesteps),
                               "episodes": int(self.episodes),
                               "seconds": round(time.perf_counter() - self._start, 3)}
        for key in ("r", "l", *INFO_KEYWORDS):
            values = [float(ep[key]) for ep in buffer if key in ep]
            if values:
                row[f"ep_{key}_mean"] = float(np.mean(values))
                if key in INFO_KEYWORDS:
                    self.logger.record(f"rollout/ep_{key}_mean", row[f"ep_{key}_mean"])
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


class WallClockLimit(BaseCallback):
    """Stop training once ``seconds`` of wall time have passed since the session started."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = float(seconds)
        self._start = time.perf_counter()
        self.reached = False

    def _on_training_start(self) -> None:
        self._start = time.perf_counter()

    def _on_step(self) -> bool:
        self.reached = time.perf_counter() - self._start >= self.seconds
        return not self.reached
