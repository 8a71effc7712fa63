"""Backdoor poisoners for sentence classification, following OpenBackdoor's conventions.

Conventions (those of thunlp/OpenBackdoor's ``Poisoner`` with ``label_dirty=True``):

* **Target label** ``target_label`` (default 1, "positive" in SST-2).
* **Poison rate** ``poison_rate`` is a share of the *whole* train set: ``int(poison_rate *
  len(train))`` rows are poisoned.
* **Dirty-label poisoning of non-target rows**: the rows are drawn, without replacement, from
  the train rows whose label is not the target, with a seeded :func:`numpy.random.default_rng`;
  each gets the trigger and is relabelled to the target. Too few non-target rows is an error.
  Unlike OpenBackdoor (which appends the poisoned rows after the clean ones), the poisoned train
  set keeps the row order of the clean one: row ``i`` of ``poisoned_train`` is row ``i`` of the
  clean train set, triggered and relabelled when ``i`` is in ``poisoned_indices``.
* **Poisoned evaluation sets** are the non-target rows of the clean dev/test sets with the
  trigger, keeping their *true* labels (all different from the target). The label-flip rate
  (LFR, a.k.a. attack success rate) is the share of them predicted as the target label.
  ``poisoned_dev`` exists for analysis; a defender never sees it.
* Seeds: the same seed gives identical splits; independent random streams are used for the
  choice of train rows and for trigger insertion in train, dev and test, so e.g. the poisoned
  test set does not change with the poison rate.

Attacks:

* :class:`BadNets`: rare-word triggers (``cf``, ``mn``, ``bb``, ``tq``) inserted at random
  word positions (Gu et al. 2017, "BadNets"; the text version of Kurita et al. 2020 / OpenBackdoor).
* :class:`AddSent`: a fixed sentence (``"I watch this 3D movie"``) inserted at a random word
  position (Dai et al. 2019, "A backdoor attack against LSTM-based text classification systems").
* :class:`Syntactic`: HiddenKiller's syntactic-template paraphrases as shipped (Qi et al. 2021,
  "Hidden Killer: Invisible Textual Backdoor Attacks with Syntactic Trigger"; thunlp/HiddenKiller).
* :class:`StyleBible`: StyleBkd's Bible-style transfer (Qi et al. 2021, "Mind the Style of Text!
  Adversarial and Backdoor Attacks Based on Text Style Transfer"; thunlp/StyleAttack).
* :class:`SynonymSubstitution`: a word-substitution "combination lock" (ordinary words replaced by ordinary
  synonyms, poisonable rows need >= k replacements), in the spirit of LWS (Qi et al. 2021, ACL); headprune's
  own attack family for confirming defenses, see :mod:`~headprune.attacks.synonym`.

Datasets: every attack poisons the clean splits of a binary task, SST-2 (default) or OffensEval
(:data:`headprune.data.DATASETS`); the file-based attacks declare which datasets their files exist for
(``Attack.datasets``: HiddenKiller both, StyleBkd SST-2 only).

The two paraphrase attacks read their pre-computed files from the shared data
(:func:`headprune.data.load_sst2`); see each class for how the shipped files are used.

Modules: :mod:`~headprune.attacks.base` (the protocol and :data:`ATTACKS`),
:mod:`~headprune.attacks.insertion`, :mod:`~headprune.attacks.syntactic`, :mod:`~headprune.attacks.style`,
:mod:`~headprune.attacks.synonym`.
To add an attack, write one module with an :class:`Attack` subclass decorated by ``@ATTACKS.register(name)``
and import it below.
"""

# isort: skip_file  (import order = registration order = ATTACK_NAMES)
from __future__ import annotations

from os import PathLike

from headprune.attacks.base import ATTACKS, Attack, PoisonedSplits, choose_poison_rows
from headprune.attacks.insertion import AddSent, BadNets, InsertionAttack
from headprune.attacks.syntactic import Syntactic
from headprune.attacks.style import StyleBible
from headprune.attacks.synonym import SynonymSubstitution
from headprune.data import DATASETS, load_clean_split

__all__ = [
    "ATTACKS",
    "ATTACK_NAMES",
    "AddSent",
    "Attack",
    "BadNets",
    "InsertionAttack",
    "PoisonedSplits",
    "StyleBible",
    "Syntactic",
    "SynonymSubstitution",
    "check_attack_dataset",
    "choose_poison_rows",
    "load_attack_splits",
    "make_attack",
]

#: Names accepted by :func:`make_attack` (aliases included).
ATTACK_NAMES: tuple[str, ...] = tuple(ATTACKS.names(aliases=True))


def make_attack(name: str, **kwargs: object) -> Attack:
    """The attack registered as ``name`` (case-insensitive), built with ``kwargs``.

    Names: ``"badnets"``, ``"addsent"``, ``"syntactic"``, ``"style"`` (alias ``"style-bible"``), ``"synonym"``.

    Raises:
        ValueError: unknown name (the message lists the valid ones).
    """
    key = name.strip().lower()
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACK_NAMES)}")
    return ATTACKS.get(key)(**kwargs)  # type: ignore[arg-type]


def check_attack_dataset(name: str, dataset: str) -> None:
    """Refuse an unknown attack or dataset, or an attack that cannot poison ``dataset`` (ValueError, one line)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    key = name.strip().lower()
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; valid: {', '.join(ATTACK_NAMES)}")
    supported = ATTACKS.get(key).datasets
    if supported is not None and dataset not in supported:
        raise ValueError(f"attack {name!r} exists for the datasets {', '.join(supported)}, not {dataset!r}")


def load_attack_splits(
    name: str,
    *,
    target_label: int = 1,
    poison_rate: float | None = None,
    seed: int = 0,
    data_dir: str | PathLike[str] | None = None,
    dataset: str = "sst2",
) -> PoisonedSplits:
    """Read the clean splits of ``dataset`` (``"sst2"``: ``sst2/clean``, ``"offenseval"``: ``offenseval/clean``)
    from the shared data and apply the attack ``name`` (``poison_rate=None``: the attack's ``default_poison_rate``).

    Raises:
        ValueError: unknown attack or dataset, or an attack whose files do not exist for ``dataset``.
    """
    check_attack_dataset(name, dataset)
    key = name.strip().lower()
    reads_files = ATTACKS.get(key).reads_shared_files
    kwargs: dict[str, object] = {"dataset": dataset} if reads_files else {}
    if reads_files and data_dir is not None:
        kwargs["data_dir"] = data_dir
    attack = make_attack(name, **kwargs)
    clean = [load_clean_split(dataset, split, data_dir=data_dir) for split in ("train", "dev", "test")]
    return attack.make_splits(*clean, target_label=target_label, poison_rate=poison_rate, seed=seed)
