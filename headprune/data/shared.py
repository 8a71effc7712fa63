"""The shared data folder (never copied into the repository) and its SST-2 / OffensEval / GLUE SST-2 files."""

from __future__ import annotations

import errno
import functools
import os
from pathlib import Path

from headprune.data.readers import read_labelled_text
from headprune.data.texts import LabelledTexts

__all__ = ["DATASETS", "DATA_DIR_ENV", "GLUE_SPLITS", "OFFENSEVAL_VARIANTS", "SST2_SPLITS", "SST2_VARIANTS",
           "load_clean_split", "load_glue_sst2_from_hub", "load_glue_sst2_train", "load_offenseval", "load_sst2",
           "shared_data_dir"]

_REPO_ROOT = Path(__file__).resolve().parents[2]

DATA_DIR_ENV = "HEADPRUNE_DATA_DIR"
#: Splits of the SST-2 sets in ``<shared>/sst2/<variant>/<split>.tsv``.
SST2_SPLITS: tuple[str, ...] = ("train", "dev", "test")
#: Variants in ``<shared>/sst2/``: clean SST-2, HiddenKiller (syntactic) and StyleBkd (Bible style).
SST2_VARIANTS: tuple[str, ...] = ("clean", "syntactic", "style-bible")
#: Variants in ``<shared>/offenseval/``: clean OffensEval 2019 and HiddenKiller's syntactic poison of it.
OFFENSEVAL_VARIANTS: tuple[str, ...] = ("clean", "syntactic")
#: The binary tasks a victim can be trained on (``VictimConfig.dataset``); each has clean ``train``/``dev``/``test``.
DATASETS: tuple[str, ...] = ("sst2", "offenseval")
#: Splits of GLUE SST-2 on the Hugging Face Hub.
GLUE_SPLITS: tuple[str, ...] = ("train", "validation", "test")

# --------------------------------------------------------------------------------------------
# Shared data


def shared_data_dir() -> Path:
    """The folder holding the shared data (``sst2/``, ``glue-sst2/``, ``README.md``).

    ``$HEADPRUNE_DATA_DIR`` if set (it must exist), else the first existing folder of
    ``<cwd>/../shared/data``, ``<cwd>/shared/data`` and ``<repository root>/../shared/data``.

    Raises:
        FileNotFoundError: none found; the message lists where it looked and how to set
            ``HEADPRUNE_DATA_DIR``.
    """
    env = os.environ.get(DATA_DIR_ENV, "").strip()
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(
                errno.ENOENT, f"${DATA_DIR_ENV} is set to {env!r}, which is not a directory", env
            )
        return p.resolve()
    cwd = Path.cwd()
    candidates = [cwd / ".." / "shared" / "data", cwd / "shared" / "data", _REPO_ROOT / ".." / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    looked = ", ".join(str(c.resolve()) for c in candidates)
    raise FileNotFoundError(
        errno.ENOENT,
        f"cannot find the shared data folder; looked in {looked}. "
        f"Set the environment variable {DATA_DIR_ENV} to the folder that holds sst2/ and glue-sst2/ "
        f"(e.g. export {DATA_DIR_ENV}=/path/to/shared/data)",
    )


@functools.lru_cache(maxsize=32)
def _read_cached(path: str, mtime_ns: int, size: int, allow_empty_sentences: bool) -> LabelledTexts:
    return read_labelled_text(path, allow_empty_sentences=allow_empty_sentences, duplicates="keep")


def _read_shared(path: Path, *, allow_empty_sentences: bool = False) -> LabelledTexts:
    """Read a shared-data file, caching the (immutable) result until the file changes."""
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"shared data file not found: {path}", str(path))
    st = path.stat()
    return _read_cached(str(path), st.st_mtime_ns, st.st_size, allow_empty_sentences)


def _split_path(task: str, folder: str, variants: tuple[str, ...], split: str, variant: str,
                data_dir: str | os.PathLike[str] | None) -> Path:
    """``<data_dir>/<folder>/<variant>/<split>.tsv``, after checking ``split`` and ``variant`` (ValueError naming
    ``task`` and the valid values)."""
    if split not in SST2_SPLITS:
        raise ValueError(f"unknown {task} split {split!r}; valid: {', '.join(SST2_SPLITS)}")
    if variant not in variants:
        raise ValueError(f"unknown {task} variant {variant!r}; valid: {', '.join(variants)}")
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    return root / folder / variant / f"{split}.tsv"


def load_sst2(split: str, variant: str = "clean", *, data_dir: str | os.PathLike[str] | None = None) -> LabelledTexts:
    """One split of the SST-2 sets used in the backdoor literature (label 1 = positive).

    Args:
        split: ``"train"``, ``"dev"`` or ``"test"``.
        variant: ``"clean"`` (SST-2, 6920/872/1821 rows), ``"syntactic"`` (HiddenKiller
            files as shipped, 6920/427/912; their dev/test labels are 1 by construction but the
            true labels are 0: use :class:`headprune.attacks.Syntactic`) or ``"style-bible"``
            (StyleBkd Bible-style transfer of every clean sentence, same order and labels).
        data_dir: the shared data folder; default :func:`shared_data_dir`.

    The ``style-bible`` files are read with ``allow_empty_sentences=True`` so that they stay
    row-aligned with ``clean``: five rows of ``style-bible/test.tsv`` (lines 253, 325, 708, 724
    and 1544, all labelled 1) have an empty styled sentence.

    Raises:
        ValueError: unknown split or variant (the message lists the valid ones).
        FileNotFoundError: the shared data or the file is missing.
    """
    path = _split_path("SST-2", "sst2", SST2_VARIANTS, split, variant, data_dir)
    return _read_shared(path, allow_empty_sentences=variant == "style-bible")


def load_offenseval(split: str, variant: str = "clean", *,
                    data_dir: str | os.PathLike[str] | None = None) -> LabelledTexts:
    """One split of OffensEval 2019 as HiddenKiller ships it (tweets; label 1 = offensive, the attacks' target).

    Args:
        split: ``"train"``, ``"dev"`` or ``"test"``.
        variant: ``"clean"`` (11,915 / 1,323 / 859 rows; values padded with spaces around the tab, LF; the
            reader strips them) or ``"syntactic"`` (HiddenKiller's files as shipped, CRLF, 11,916 / 877 / 620
            rows: ``train`` is a ready poisoned training set, shuffled and NOT row-aligned with the clean one;
            ``dev``/``test`` hold paraphrases of non-offensive rows stored with label 1 although their true label
            is 0: use :class:`headprune.attacks.Syntactic` with ``dataset="offenseval"``).
        data_dir: the shared data folder; default :func:`shared_data_dir`.

    Raises:
        ValueError: unknown split or variant (the message lists the valid ones).
        FileNotFoundError: the shared data or the file is missing.
    """
    return _read_shared(_split_path("OffensEval", "offenseval", OFFENSEVAL_VARIANTS, split, variant, data_dir))


def load_clean_split(dataset: str, split: str, *, data_dir: str | os.PathLike[str] | None = None) -> LabelledTexts:
    """The clean ``split`` (``"train"``, ``"dev"``, ``"test"``) of ``dataset`` (one of :data:`DATASETS`).

    Raises:
        ValueError: unknown dataset or split (the message lists the valid ones).
    """
    if dataset == "sst2":
        return load_sst2(split, "clean", data_dir=data_dir)
    if dataset == "offenseval":
        return load_offenseval(split, "clean", data_dir=data_dir)
    raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(DATASETS)}")


def load_glue_sst2_train(*, data_dir: str | os.PathLike[str] | None = None) -> LabelledTexts:
    """The full GLUE SST-2 train set (67,349 phrases and sentences) from the shared data.

    A defender's clean pool; its header is ``label\\tsentence`` (columns swapped).
    """
    root = Path(data_dir) if data_dir is not None else shared_data_dir()
    return _read_shared(root / "glue-sst2" / "train.tsv")


def load_glue_sst2_from_hub(split: str = "train") -> LabelledTexts:
    """GLUE SST-2 from the Hugging Face Hub (needs the optional ``datasets`` package and internet).

    Args:
        split: ``"train"``, ``"validation"`` (alias ``"dev"``) or ``"test"`` (whose labels are -1).

    Raises:
        ImportError: ``datasets`` is not installed (``pip install headprune[hub]``).
        RuntimeError: the download failed (e.g. offline); use :func:`load_glue_sst2_train`,
            which reads the local copy, instead.
        ValueError: unknown split.
    """
    hub_split = "validation" if split == "dev" else split
    if hub_split not in GLUE_SPLITS:
        raise ValueError(f"unknown GLUE SST-2 split {split!r}; valid: {', '.join(GLUE_SPLITS)} (or 'dev')")
    from headprune.data.hub import load_hub_dataset

    try:
        return load_hub_dataset(f"datasets:nyu-mll/glue,sst2@{hub_split}")
    except RuntimeError as e:
        raise RuntimeError(f"{e}; for GLUE SST-2 train, headprune.data.load_glue_sst2_train() reads the local "
                           "file glue-sst2/train.tsv from the shared data") from e

