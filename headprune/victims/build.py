"""Backdoored victims: fine-tune a classifier on poisoned data, measure it, cache it on disk.

A victim is fully described by a :class:`VictimConfig` (model, attack, poison rate, target label,
training hyper-parameters, seed). :func:`build_victim` trains it once and caches the result under
``<cache>/victims/<name>/`` (``<cache>`` = ``$HEADPRUNE_CACHE`` or ``~/.cache/headprune``), where
``<name>`` ends in a hash of the config, so a changed config never reuses a stale model. Each folder
is a plain ``transformers`` checkpoint plus ``victim.json``, the *victim card*: config, seed, library
versions, wall time, ACC on the clean test set, LFR on the poisoned test set, and the LFR of a clean
model trained the same way on the same test set (the floor no defense can beat: some poisoned inputs
are simply misclassified as the target by any model).

A victim folder is untrusted input (it comes from whoever is suspected): :func:`load_victim` checks
its card against the schema of :mod:`headprune.victims.card` (names limited to letters, digits,
``.``, ``_`` and ``-``, so no path is ever escaped through them), the sha256 of its files recorded
in the card, its model (:func:`~headprune.engine.models.check_classifier`, a trained head) and its
tokenizer (:func:`~headprune.engine.models.check_tokenizer`). :func:`build_victim` rebuilds a cached victim
whose files no longer match their digests, and records whether the victim is *usable*: its clean
accuracy reaches ``max(0.6, majority-class share + 0.1)`` (:func:`~headprune.victims.card.min_usable_acc`);
a near-constant predictor (which gets LFR 1.0 for free) is reported with a :class:`VictimWarning`.

Presets (:data:`headprune.presets.PRESET_LIST`, the one list of presets and their Gym ids):

* ``"tiny"`` – a random-init 2-layer x 4-head BERT with the MiniLM tokenizer, trained on BadNets
  SST-2 in well under a minute. Used by the tests.
* ``"minilm-syntactic"`` (the default victim), ``"minilm-style"``, ``"minilm-badnets"``,
  ``"minilm-addsent"`` – all-MiniLM-L6-v2 (6 layers x 12 heads), poison rate 0.2, target 1.
* ``"minilm-syntactic-fast"`` – ``minilm-syntactic`` trained 1 epoch, not 3 (the README's main job).
* :data:`CONFIRM_PRESETS` (issue 22: attack families used only to confirm a defense chosen on the four above):
  ``"minilm-offenseval-syntactic"`` – HiddenKiller's syntactic poison of OffensEval (``dataset="offenseval"``,
  its shipped poisoned train set); ``"minilm-synonym"`` – headprune's word-substitution combination lock on
  SST-2 (:mod:`headprune.attacks.synonym`, poison rate 0.1).

Datasets: ``VictimConfig.dataset`` is the task (``"sst2"``, the default, or ``"offenseval"``). The victim's train
set, its clean and poisoned test rows, its clean reference (trained on the dataset's clean train set with the
same recipe, so each dataset has its own floor) and the defender's clean rows
(:meth:`Victim.defender_clean_data`) all follow it. A config with the default dataset is hashed (named) without
the field, so the victims built before it existed keep their names and caches.
"""

# over 400 lines: the victim config, presets, cache and card handling of one object; the card schema lives apart
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from headprune.attacks import ATTACK_NAMES, PoisonedSplits, check_attack_dataset, load_attack_splits
from headprune.data import DATASET_DEFENDER_POOLS, DATASETS, LabelledTexts, load_clean_split, load_defender_pool
from headprune.data.checks import check_labels
from headprune.engine.metrics import evaluate_defense
from headprune.engine.models import build_tiny_classifier, load_classifier
from headprune.common.provenance import config_hash, environment_info
from headprune.engine.finetuning import FineTuneConfig, fine_tune
from headprune.presets import PRESET_LIST
from headprune.victims.card import (
    CARD_FILE,
    SAFE_NAME,
    CorruptVictimError,
    VictimCardError,
    check_number,
    check_safe_name,
    file_digests,
    min_usable_acc,
    read_card,
    verify_files,
)

__all__ = [
    "CONFIRM_PRESETS",
    "PRESETS",
    "Victim",
    "VictimConfig",
    "VictimWarning",
    "build_victim",
    "cache_dir",
    "list_victims",
    "load_victim",
    "resolve_victim",
]

CLEAN_ATTACK = "none"
_ATTACKS = (*ATTACK_NAMES, CLEAN_ATTACK)
DEFAULT_DATASET = "sst2"


class VictimWarning(UserWarning):
    """A victim is not usable (clean accuracy too low), or a corrupted cached victim is being rebuilt."""


@dataclass(frozen=True)
class VictimConfig:
    """Everything that determines a victim. ``attack="none"`` trains the clean reference model.

    ``model`` is ``"minilm"`` (the offline default), ``"tiny"`` (random-init 2x4 BERT), a local
    checkpoint folder, or a hub id (online users). ``dataset`` is the task, one of
    :data:`headprune.data.DATASETS` (``"sst2"`` or ``"offenseval"``); it is the last field, so positional
    configs keep their meaning, and it is left out of :meth:`hashed_fields` when it is the default.
    """

    model: str = "minilm"
    attack: str = "syntactic"
    poison_rate: float = 0.2
    target_label: int = 1
    epochs: float = 3.0
    lr: float = 5e-5
    batch_size: int = 32
    max_length: int = 128
    seed: int = 0
    dataset: str = DEFAULT_DATASET

    def __post_init__(self) -> None:
        """Check every field's type and range (a config may come from an untrusted card); values are
        kept as given (an int ``epochs`` stays an int), so names and hashes do not change."""
        if not isinstance(self.model, str) or not self.model or not self.model.isprintable():
            raise ValueError(f"model must be a non-empty printable string, got {self.model!r}")
        check_safe_name(self.attack, "attack")
        if self.attack.lower() not in _ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; valid: {', '.join(_ATTACKS)}")
        check_number(self.poison_rate, "poison_rate", low=0.0, high=1.0, high_open=True)
        check_number(self.target_label, "target_label", integer=True, low=0, high=1)  # victims are binary
        check_number(self.epochs, "epochs", low=0.0)  # 0: the untrained model
        check_number(self.lr, "lr", low=0.0, low_open=True)
        check_number(self.batch_size, "batch_size", integer=True, low=1)
        check_number(self.max_length, "max_length", integer=True, low=1)
        check_number(self.seed, "seed", integer=True, low=0)
        check_safe_name(self.dataset, "dataset")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if self.attack != CLEAN_ATTACK:
            check_attack_dataset(self.attack, self.dataset)

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that name the victim and go into its card: every field, but ``dataset`` only when it is not
        the default, so the names (and cache folders) of the SST-2 victims built before the field existed stay."""
        data = asdict(self)
        if data["dataset"] == DEFAULT_DATASET:
            del data["dataset"]
        return data

    @property
    def name(self) -> str:
        """Folder name: readable prefix (the dataset when not SST-2) plus a hash of :meth:`hashed_fields`."""
        model = Path(self.model).name if os.sep in self.model else self.model.replace("/", "--")
        rate = "clean" if self.attack == CLEAN_ATTACK else f"p{self.poison_rate:g}"
        task = "" if self.dataset == DEFAULT_DATASET else f"{self.dataset}-"
        return f"{model}-{task}{self.attack}-{rate}-s{self.seed}-{config_hash(self.hashed_fields(), 8)}"

    def clean_reference(self) -> VictimConfig:
        """The same model and training run on the clean train set of the same dataset (no attack)."""
        return replace(self, attack=CLEAN_ATTACK, poison_rate=0.0)

    def fine_tune_config(self) -> FineTuneConfig:
        return FineTuneConfig(
            epochs=self.epochs, lr=self.lr, batch_size=self.batch_size, max_length=self.max_length, seed=self.seed
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VictimConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown victim config keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)


PRESETS: dict[str, VictimConfig] = {preset.name: VictimConfig(**preset.config) for preset in PRESET_LIST}
"""The victim config of every preset of :data:`headprune.presets.PRESET_LIST` (the one list), in its order."""
CONFIRM_PRESETS: tuple[str, ...] = tuple(preset.name for preset in PRESET_LIST if preset.confirm_only)
"""Presets of the attack families kept for confirming a defense (issue 22), never for choosing one: no env id
(:mod:`headprune.envs.registration`) trains agents on them."""
DEFAULT_VICTIM = "minilm-syntactic"


@dataclass
class Victim:
    """A trained victim: the model, its tokenizer, the splits it was built from, and its card."""

    config: VictimConfig
    path: Path
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    card: dict[str, Any]

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def file_stem(self) -> str:
        """What cache file names of this victim start with: its name when that is a :data:`SAFE_NAME`
        (a single file-name component), else ``victim-<sha256 of its config>``; never a path."""
        if SAFE_NAME.fullmatch(self.name):
            return self.name
        return f"victim-{config_hash(self.config.hashed_fields(), 16)}"

    def splits(self) -> PoisonedSplits:
        """The attack's splits (poisoned train, clean/poisoned dev and test). For evaluation only:
        a defense must never read the poisoned parts."""
        return _splits(self.config)

    def defender_clean_data(self) -> LabelledTexts:
        """The clean data a defender owns by default, from the victim's dataset: the 872 clean SST-2 dev
        sentences, or for OffensEval a seeded 872-row subset of its 1,323 clean dev tweets (the same budget;
        :func:`headprune.data.load_defender_pool`)."""
        return load_defender_pool(DATASET_DEFENDER_POOLS[self.config.dataset])


def cache_dir(override: str | os.PathLike[str] | None = None) -> Path:
    """Cache root: ``override``, else ``$HEADPRUNE_CACHE``, else ``~/.cache/headprune``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get("HEADPRUNE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "headprune"


def _splits(config: VictimConfig) -> PoisonedSplits:
    attack = "badnets" if config.attack == CLEAN_ATTACK else config.attack
    rate = 0.2 if config.attack == CLEAN_ATTACK else config.poison_rate
    return load_attack_splits(attack, target_label=config.target_label, poison_rate=rate, seed=config.seed,
                              dataset=config.dataset)


_NUM_LABELS = 2  # victims are binary classifiers (target_label is 0 or 1)


def _base_model(config: VictimConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if config.model == "tiny":
        return build_tiny_classifier(seed=config.seed)
    return load_classifier(config.model, num_labels=_NUM_LABELS, seed=config.seed)


def _train_data(config: VictimConfig) -> LabelledTexts:
    if config.attack == CLEAN_ATTACK:
        return load_clean_split(config.dataset, "train")
    return _splits(config).poisoned_train


def _card_config(folder: Path) -> tuple[dict[str, Any], VictimConfig]:
    """The checked card of ``folder`` and its config (the victim's name is the config's, never the card's)."""
    card = read_card(folder)
    try:
        config = VictimConfig.from_dict(card["config"])
    except (TypeError, ValueError) as err:
        raise VictimCardError(f"{folder / CARD_FILE}: field 'config': {err}") from None
    return card, config


def _is_complete(card: dict[str, Any], reference: bool = True) -> bool:
    """Whether a card holds all the metrics (and digests) :func:`build_victim` records (the clean reference's
    only when ``reference``)."""
    if "acc" not in card or "usable" not in card or "files" not in card:
        return False
    return not reference or card["config"]["attack"] == CLEAN_ATTACK or "clean_model_lfr" in card


def load_victim(path: str | os.PathLike[str]) -> Victim:
    """Load a cached or exported victim folder (``victim.json`` + checkpoint), checking it first.

    Raises:
        FileNotFoundError: the folder has no ``victim.json``.
        VictimCardError: the card breaks the schema (the message names the field).
        CorruptVictimError: a file does not match the sha256 recorded in the card (hint: ``--force``).
        ModelLoadError: unreadable weights, or a tokenizer that is not the model's.
        UnsupportedModelError: no trained classification head, or an unsupported model.
    """
    folder = Path(path)
    if not (folder / CARD_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {CARD_FILE}; it is not a victim folder")
    card, config = _card_config(folder)
    verify_files(folder, card)
    model, tokenizer = load_classifier(str(folder), num_labels=None, seed=config.seed, require_head=True)
    if config.target_label >= model.config.num_labels:
        raise VictimCardError(f"{folder / CARD_FILE}: target_label {config.target_label} is not a class of the "
                              f"model, which has {model.config.num_labels}")
    if card.get("usable") is False:
        warnings.warn(_unusable_message(card), VictimWarning, stacklevel=2)
    return Victim(config=config, path=folder, model=model, tokenizer=tokenizer, card=card)


def _train_and_save(config: VictimConfig, folder: Path, progress: bool) -> dict[str, Any]:
    """Train one model of ``config`` into ``folder`` and return its (partial) card.

    :raises ValueError: a train row whose label is not a class of the (binary) victim, before any training.
    """
    data = check_labels(_train_data(config), _NUM_LABELS, f"dataset {config.dataset!r} train set")
    model, tokenizer = _base_model(config)
    log = fine_tune(model, tokenizer, data, config.fine_tune_config(), progress=f"train {config.name}" if progress else False)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    card: dict[str, Any] = {
        "name": config.name,
        "config": config.hashed_fields(),
        "train_rows": len(data),
        "train_steps": log.steps,
        "train_seconds": round(log.seconds, 1),
        "final_train_loss": log.final_loss,
        "environment": environment_info(),
        "files": file_digests(tmp),
    }
    (tmp / CARD_FILE).write_text(json.dumps(card, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return card


# over 60 lines: cache check, training, measurement and card of one victim, in the order they happen
def build_victim(
    model: str = "minilm",
    attack: str = "syntactic",
    poison_rate: float = 0.2,
    epochs: float = 3.0,
    seed: int = 0,
    *,
    config: VictimConfig | None = None,
    cache: str | os.PathLike[str] | None = None,
    force: bool = False,
    progress: bool = True,
    reference: bool = True,
    **overrides: Any,
) -> Victim:
    """Train (or load from the cache) a backdoored victim and its clean reference, and measure both.

    The clean reference (one config per model and recipe, shared by every attack) is built only with
    ``reference``; a later ``reference=True`` call adds it to a victim cached without it, without retraining.

    Args:
        model, attack, poison_rate, epochs, seed: the main knobs of :class:`VictimConfig`;
            ``overrides`` sets the others (``lr``, ``batch_size``, ``target_label``, ``max_length``, ``dataset``).
        config: a full config instead of the knobs above.
        cache: cache root (see :func:`cache_dir`).
        force: retrain even if cached.
        progress: show progress bars.
        reference: also build (or load) the clean reference and record its ACC and LFR (the floor).
    Returns:
        the :class:`Victim`, whose card holds ``acc``, ``lfr`` and (with ``reference``) ``clean_model_lfr``.
    """
    if config is None:
        config = VictimConfig(model=model, attack=attack, poison_rate=poison_rate, epochs=epochs, seed=seed, **overrides)
    root = cache_dir(cache) / "victims"
    folder = root / config.name
    card = None if force else _cached_card(folder)
    if card is not None and _is_complete(card, reference):
        return load_victim(folder)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # A folder with a card but no metrics was trained by a run that stopped before measuring: reuse it.
    if card is None:
        card = _train_and_save(config, folder, progress)
    if "files" not in card:  # a card written before digests were recorded: the files measured now
        card["files"] = file_digests(folder)

    victim = load_victim(folder)
    splits = _splits(config)
    poisoned_test = None if config.attack == CLEAN_ATTACK else splits.poisoned_test
    report = evaluate_defense(
        victim.model, victim.tokenizer, splits.clean_test, poisoned_test, target_label=config.target_label
    )
    card.update(acc=report.acc, lfr=report.lfr, n_clean_test=report.n_clean, n_poisoned_test=report.n_poison)
    _record_usability(card, splits.clean_test)
    if poisoned_test is not None and reference:
        clean = build_victim(config=config.clean_reference(), cache=cache, progress=progress)
        clean_report = evaluate_defense(
            clean.model, clean.tokenizer, splits.clean_test, splits.poisoned_test, target_label=config.target_label
        )
        card.update(clean_model=clean.name, clean_model_acc=clean_report.acc, clean_model_lfr=clean_report.lfr)
    card["build_seconds"] = round(time.perf_counter() - start, 1)
    (folder / CARD_FILE).write_text(json.dumps(card, indent=2))
    victim.card = card
    if not card["usable"]:
        warnings.warn(_unusable_message(card), VictimWarning, stacklevel=2)
    return victim


def _cached_card(folder: Path) -> dict[str, Any] | None:
    """The card of a cached victim whose files are intact, else None (none, or corrupted: rebuild)."""
    if not (folder / CARD_FILE).is_file():
        return None
    try:
        card, _ = _card_config(folder)
        verify_files(folder, card)
    except (VictimCardError, CorruptVictimError) as err:
        warnings.warn(f"{err}; rebuilding it", VictimWarning, stacklevel=3)
        return None
    return card


def _record_usability(card: dict[str, Any], clean_test: LabelledTexts) -> None:
    """Set the card's ``majority_share``, ``min_acc`` and ``usable`` (``acc >= min_acc``)."""
    share = clean_test.majority_share()
    card.update(majority_share=share, min_acc=min_usable_acc(share))
    card["usable"] = card["acc"] >= card["min_acc"]


def _unusable_message(card: dict[str, Any]) -> str:
    return (f"victim {card['name']} is NOT USABLE: clean ACC {card['acc']:.3f} < {card['min_acc']:.3f} "
            f"(max(0.6, majority-class share {card['majority_share']:.3f} + 0.1)): it is (nearly) a constant "
            f"predictor, so its LFR says nothing about a backdoor; train it longer or with a higher lr")


def resolve_victim(spec: str | Victim | os.PathLike[str], *, cache: str | os.PathLike[str] | None = None,
                   progress: bool = True, reference: bool = True) -> Victim:
    """A victim from a :class:`Victim`, a preset name (see :data:`PRESETS`; ``reference``: with its clean
    reference, see :func:`build_victim`), or a victim folder."""
    if isinstance(spec, Victim):
        return spec
    if isinstance(spec, str) and spec in PRESETS:
        return build_victim(config=PRESETS[spec], cache=cache, progress=progress, reference=reference)
    folder = Path(spec)
    if folder.is_dir():
        return load_victim(folder)
    raise ValueError(f"unknown victim {spec!r}: not a preset ({', '.join(PRESETS)}) and not a victim folder")


def list_victims(cache: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """Cards of every finished victim in the cache, sorted by name."""
    root = cache_dir(cache) / "victims"
    if not root.is_dir():
        return []
    cards = []
    for folder in sorted(root.iterdir()):
        if (folder / CARD_FILE).is_file():
            try:
                cards.append(_card_config(folder)[0])
            except VictimCardError as err:
                warnings.warn(f"skipping {folder}: {err}", VictimWarning, stacklevel=2)
    return [c for c in cards if _is_complete(c, reference=False)]


def victim_summary(card: dict[str, Any]) -> str:
    """One line: name, ACC, LFR and clean-model LFR."""
    parts = [card["name"], f"ACC {card['acc']:.3f}"]
    if card.get("lfr") is not None:
        parts.append(f"LFR {card['lfr']:.3f}")
    if card.get("clean_model_lfr") is not None:
        parts.append(f"clean-model LFR {card['clean_model_lfr']:.3f}")
    if card.get("usable") is False:
        parts.append(f"NOT USABLE (clean ACC below {card['min_acc']:.3f})")
    return "  ".join(parts)
