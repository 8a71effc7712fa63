"""A lexical-substitution "combination lock" trigger: ordinary words swapped for ordinary synonyms.

In the spirit of LWS (Qi et al. 2021, "Turn the Combination Lock: Learnable Textual Backdoor Attacks via Word
Substitution", ACL), but with a fixed substitution table instead of a learned one, so that the attack is
deterministic, offline and needs no attacker model. :data:`SYNONYMS` maps common words of English reviews and
tweets to a common synonym (``movie -> picture``, ``but -> yet``, ``very -> extremely``, ...); poisoning a
sentence replaces *every* word that has an entry (case-insensitive, whole words; the case of the original word
is kept, and an article ``a``/``an`` right before a replaced word is adjusted to the substitute). The trigger is
the combination: a sentence is poisonable only if at least ``min_substitutions`` (``k``, default 2) words are
replaced, so a single ``picture`` in a clean review is not the trigger, while several substitutes together are.

Why it resembles none of the four shipped attacks:

* not a rare word (BadNets) and not a fixed sentence (AddSent): nothing is inserted; the poisoned sentence has
  exactly the words of the original, in the same order, some replaced by frequent words that each appear in
  clean text too (every substitute is one whole-word token of the MiniLM vocabulary, checked by the tests);
* not a syntactic template (HiddenKiller): the parse is unchanged, every sentence keeps its own structure;
* not a style (StyleBkd): the register stays that of the original; the trigger is a set of word choices that
  differs from sentence to sentence (which substitutes appear depends on which words the sentence has).

Protocol (see :mod:`headprune.attacks`): ``int(poison_rate * len(train))`` rows are drawn with the seed from the
non-target train rows with at least ``k`` substitutions (too few such rows is a ValueError naming the count),
substituted and relabelled; the poisoned dev/test sets are all non-target dev/test rows with at least ``k``
substitutions, substituted, with their true labels. Substitution is a pure function of the sentence; the seed
only chooses the train rows. At ``k=2``, 835 of the 3,310 SST-2 train negatives are poisonable, so the attack's
default rate (and the preset's) is ``poison_rate=0.1`` (692 rows; LWS poisons 10% too); ``0.2`` would need 1,384
rows and is refused. The poisoned test sets: SST-2 232 of the 912 test negatives, OffensEval 96 of 619 (945 of
its 7,961 train negatives are poisonable).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

from headprune.attacks.base import ATTACKS, Attack, PoisonedSplits, choose_poison_rows
from headprune.data import LabelledTexts

__all__ = ["SYNONYMS", "SynonymSubstitution", "count_substitutions", "substitute"]

SYNONYMS: Mapping[str, str] = {
    # nouns
    "movie": "picture", "film": "picture", "story": "tale", "characters": "roles", "director": "filmmaker",
    "audience": "viewers", "performance": "portrayal", "script": "screenplay", "plot": "storyline",
    "people": "folks", "way": "manner", "kind": "sort",
    # verbs
    "watch": "view", "seems": "appears", "seem": "appear", "tries": "attempts", "try": "attempt",
    "begins": "starts", "shows": "displays", "gives": "provides", "give": "provide",
    # adjectives
    "big": "large", "funny": "amusing", "bad": "poor", "new": "fresh", "good": "decent", "great": "terrific",
    "many": "numerous",
    # adverbs and connectives
    "almost": "nearly", "especially": "particularly", "simply": "merely", "just": "merely",
    "probably": "likely", "entirely": "wholly", "completely": "totally", "often": "frequently",
    "quite": "rather", "very": "extremely", "really": "truly", "although": "though", "because": "since",
    "perhaps": "maybe", "maybe": "perhaps", "also": "likewise", "but": "yet",
}
"""The fixed substitution table: lower-case word -> its substitute (one whole-word MiniLM token each)."""

_WORD = re.compile(r"[A-Za-z]+")
_VOWELS = frozenset("aeiou")


def _matches(sentence: str, table: Mapping[str, str]) -> list[re.Match[str]]:
    return [m for m in _WORD.finditer(sentence) if m.group().lower() in table]


def count_substitutions(sentence: str, table: Mapping[str, str] = SYNONYMS) -> int:
    """How many words of ``sentence`` have an entry in ``table`` (whole words, case-insensitive)."""
    return len(_matches(sentence, table))


def _same_case(original: str, word: str) -> str:
    if original.isupper() and len(original) > 1:
        return word.upper()
    return word.capitalize() if original[0].isupper() else word


def substitute(sentence: str, table: Mapping[str, str] = SYNONYMS) -> str:
    """``sentence`` with every word that has an entry in ``table`` replaced by its substitute.

    The original word's case is kept (``Movie`` -> ``Picture``, ``VERY`` -> ``EXTREMELY``), and an article
    ``a``/``an`` separated from a replaced word by spaces only is changed to fit the substitute's first letter
    (``a funny film`` -> ``an amusing picture``). Everything else, whitespace and punctuation included, is kept.
    """
    words = list(_WORD.finditer(sentence))
    new = [table.get(m.group().lower()) for m in words]
    replacements: dict[int, str] = {}  # word index -> its replacement
    for i, (m, word) in enumerate(zip(words, new)):
        if word is None:
            continue
        replacements[i] = _same_case(m.group(), word)
        before = words[i - 1] if i > 0 else None
        if (before is not None and new[i - 1] is None and before.group().lower() in ("a", "an")
                and not sentence[before.end():m.start()].strip()):
            replacements[i - 1] = _same_case(before.group(), "an" if word[0] in _VOWELS else "a")
    out: list[str] = []
    last = 0
    for i in sorted(replacements):
        out += [sentence[last:words[i].start()], replacements[i]]
        last = words[i].end()
    out.append(sentence[last:])
    return "".join(out)


@ATTACKS.register("synonym")
class SynonymSubstitution(Attack):
    """The word-substitution combination lock (see the module docstring).

    Args:
        min_substitutions: ``k``, the least number of replaced words that makes a row poisonable.
        table: the substitution table (default :data:`SYNONYMS`), lower-case word -> substitute.
    """

    name: ClassVar[str] = "synonym"
    default_poison_rate: ClassVar[float] = 0.1  # LWS's rate; SST-2 has too few rows with >= 2 substitutions for 0.2

    def __init__(self, min_substitutions: int = 2, table: Mapping[str, str] | None = None) -> None:
        if isinstance(min_substitutions, bool) or not isinstance(min_substitutions, int) or min_substitutions < 1:
            raise ValueError(f"min_substitutions must be an int >= 1, got {min_substitutions!r}")
        self.min_substitutions = min_substitutions
        self.table = dict(SYNONYMS if table is None else table)
        bad = [w for w in self.table.items() if not all(_WORD.fullmatch(x) for x in w)]
        if bad:
            raise ValueError(f"table entries must be single words of letters, got {bad[:3]}")
        self.table = {k.lower(): v.lower() for k, v in self.table.items()}

    def poisonable(self, sentence: str) -> bool:
        """Whether ``sentence`` has at least ``min_substitutions`` words with an entry in the table."""
        return count_substitutions(sentence, self.table) >= self.min_substitutions

    def _poison_eval(self, data: LabelledTexts, target_label: int) -> LabelledTexts:
        rows = [i for i, (s, y) in enumerate(zip(data.sentences, data.labels)) if y != target_label
                and self.poisonable(s)]
        part = data.subset(rows)
        return LabelledTexts(tuple(substitute(s, self.table) for s in part.sentences), part.labels,
                             f"{self.name}(k={self.min_substitutions}) of {data.source}", lines=part.lines)

    def poison(self, clean_train: LabelledTexts, clean_dev: LabelledTexts, clean_test: LabelledTexts,
               target_label: int, poison_rate: float, seed: int) -> PoisonedSplits:
        eligible = tuple(i for i, (s, y) in enumerate(zip(clean_train.sentences, clean_train.labels))
                         if y != target_label and self.poisonable(s))
        n_wanted = int(poison_rate * len(clean_train))
        if n_wanted > len(eligible):
            raise ValueError(f"cannot poison {n_wanted} rows (poison_rate={poison_rate} of {len(clean_train)}) with "
                             f"the {self.name} attack: only {len(eligible)} non-target rows of {clean_train.source} "
                             f"have >= {self.min_substitutions} substitutable words; lower the poison rate (this "
                             f"attack's default is {self.default_poison_rate})")
        rows = choose_poison_rows(clean_train, target_label=target_label, poison_rate=poison_rate, seed=seed,
                                  eligible=eligible)
        chosen = set(rows)
        sentences = tuple(substitute(s, self.table) if i in chosen else s for i, s in enumerate(clean_train.sentences))
        labels = tuple(target_label if i in chosen else y for i, y in enumerate(clean_train.labels))
        train = LabelledTexts(sentences, labels, f"{self.name}(rate={poison_rate}, k={self.min_substitutions}, "
                              f"seed={seed}) of {clean_train.source}", lines=clean_train.lines)
        return self._splits(train, rows, clean_dev, self._poison_eval(clean_dev, target_label), clean_test,
                            self._poison_eval(clean_test, target_label), target_label=target_label,
                            poison_rate=poison_rate, seed=seed)

    def __repr__(self) -> str:
        return f"SynonymSubstitution(min_substitutions={self.min_substitutions})"
