"""The hub interface of the plugin's models: ``from_pretrained(folder)`` and ``classify``.

fairseq's ``RobertaModel.from_pretrained`` wants the data folder (for the
dictionaries) and the bpe model passed in unless they sit beside the
checkpoint, tries the folder as an archive name first, and logs the whole
config. Here a folder is enough:

* the checkpoint: ``checkpoint_file``, else ``model.pt`` (an export), else a
  training run's ``checkpoint_best.pt`` or ``checkpoint_last.pt``;
* the dictionaries: the folder when it holds them (an export), else the data
  folder the checkpoint was trained on (a fine-tuning run's ``glue-bin/X-bin``);
* the bpe: ``sentencepiece.bpe.model`` (or fastBPE's ``bpecodes``) in the folder,
  else the checkpoint's ``--bpe`` settings, else the one beside the
  checkpoint that fine-tuning restored (``--restore-file child/model.pt``).

Any of them can still be given (``data_name_or_path=``, ``bpe=``,
``sentencepiece_model=``, ...), as with fairseq's loader.

``classify`` turns raw text into label strings and probabilities with a
fine-tuned classification head::

    hub = MagicChildModel.from_pretrained("checkpoints/finetuned")
    hub.classify("Terrible customer service.")          # Prediction(label='0', probability=0.93, ...)
    hub.classify([("A man sleeps.", "A person rests.")])  # sentence pairs, as fine-tuned
"""

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from fairseq import checkpoint_utils
from fairseq.dataclass.utils import overwrite_args_by_name
from fairseq.models.roberta.hub_interface import RobertaHubInterface

from ..errors import MagicError

SENTENCEPIECE_FILE = "sentencepiece.bpe.model"  # the names fairseq's hub_utils.from_pretrained picks up
FASTBPE_FILE = "bpecodes"
CHECKPOINT_NAMES = ("model.pt", "checkpoint_best.pt", "checkpoint_last.pt")

Text = Union[str, Tuple[str, ...]]


@dataclass
class Prediction:
    """A classification of one input: the label, its probability, every label's."""

    label: str
    probability: float
    probabilities: Dict[str, float]


class MagicHubInterface(RobertaHubInterface):
    """fairseq's RoBERTa hub interface, plus ``classify`` (labels, not class indices)."""

    @property
    def labels(self) -> List[str]:
        """The class labels in the head's index order (index i is ``labels[i]``)."""
        dictionary = getattr(self.task, "label_dictionary", None)
        if dictionary is None:
            raise MagicError("this model was not fine-tuned for classification (its task has no label dictionary)")
        classes = int(getattr(self.task.cfg, "num_classes", 0) or 0)  # sentence_prediction adds <mask> after them
        return dictionary.symbols[dictionary.nspecial:dictionary.nspecial + classes]

    def classify(self, texts: Union[Text, Sequence[Text]], head: str = "sentence_classification_head",
                 batch_size: int = 32) -> Union[Prediction, List[Prediction]]:
        """The predicted label of a sentence, a sentence pair (a tuple), or a list of them
        (then a list of predictions). Inputs longer than the model's positions are cut."""
        single = isinstance(texts, (str, tuple))
        items = [texts] if single else list(texts)
        if head not in self.model.classification_heads:
            heads = ", ".join(self.model.classification_heads) or "none"
            raise MagicError(f"no classification head '{head}' in this model (heads: {heads})")
        labels = self.labels
        limit = self.model.max_positions()
        pad = self.task.source_dictionary.pad()
        predictions = []
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                batch = [self._encode_text(item)[:limit] for item in items[start:start + batch_size]]
                tokens = torch.full((len(batch), max(len(t) for t in batch)), pad, dtype=torch.long)
                for row, t in enumerate(batch):
                    tokens[row, :len(t)] = t
                probs = self.predict(head, tokens).exp().float().cpu()
                if probs.size(-1) != len(labels):
                    raise MagicError(f"the head '{head}' has {probs.size(-1)} classes, the label dictionary "
                                     f"{len(labels)}; it is a regression head or another task's")
                for row in probs.tolist():
                    best = max(range(len(row)), key=row.__getitem__)
                    predictions.append(Prediction(labels[best], row[best], dict(zip(labels, row))))
        return predictions[0] if single else predictions

    def _encode_text(self, item: Text) -> torch.Tensor:
        if isinstance(item, str):
            return self.encode(item)
        if not item or not all(isinstance(s, str) for s in item):
            raise MagicError(f"classify takes sentences or tuples of sentences, got {item!r:.80}")
        return self.encode(*item)


def _has_dictionaries(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "dict.txt")) or os.path.isfile(os.path.join(folder, "input0", "dict.txt"))


def _checkpoint_path(folder: str, checkpoint_file: Optional[str]) -> str:
    if not os.path.isdir(folder):
        raise MagicError(f"model folder not found: {folder} (from_pretrained takes an export's or a training "
                         "run's folder)")
    names = [checkpoint_file] if checkpoint_file else list(CHECKPOINT_NAMES)
    for name in names:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    if checkpoint_file:
        raise MagicError(f"no {checkpoint_file} in {folder}: give checkpoint_file= the name of the checkpoint")
    raise MagicError(f"no {', '.join(CHECKPOINT_NAMES)} in {folder}: give checkpoint_file= the checkpoint's name")


BPE_FILES = ((SENTENCEPIECE_FILE, "sentencepiece", "sentencepiece_model"), (FASTBPE_FILE, "fastbpe", "bpe_codes"))


def restored_folder(cfg) -> str:
    """The folder of the checkpoint a training run restored (fine-tuning's ``--restore-file``), or ''."""
    restored = str((cfg.get("checkpoint") or {}).get("restore_file") or "")
    return os.path.dirname(os.path.abspath(restored)) if restored not in ("", "checkpoint_last.pt") else ""


def bpe_model(*folders: str) -> Optional[Tuple[str, str, str]]:
    """(fairseq's --bpe, its option, the file) of the first bpe model file in ``folders``."""
    for folder in filter(None, folders):
        for name, bpe, option in BPE_FILES:
            if os.path.isfile(os.path.join(folder, name)):
                return bpe, option, os.path.join(folder, name)
    return None


def _bpe_overrides(folder: str, cfg, overrides: dict) -> dict:
    """The bpe model: given, else the folder's file, else the checkpoint's own ``--bpe`` settings,
    else the file beside the checkpoint that fine-tuning restored."""
    if overrides.get("bpe"):
        return overrides
    found = bpe_model(folder)
    if found is None and not (cfg.get("bpe") or {}).get("_name"):
        found = bpe_model(restored_folder(cfg))
    if found is None:
        return overrides
    bpe, option, path = found
    return {"bpe": bpe, option: path, **overrides}


def from_pretrained(model_name_or_path, checkpoint_file: Optional[str] = None, data_name_or_path: Optional[str] = None,
                    **overrides) -> MagicHubInterface:
    """A hub interface for a plugin checkpoint in ``model_name_or_path`` (see the module's docstring)."""
    folder = str(model_name_or_path)
    path = _checkpoint_path(folder, checkpoint_file)
    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    cfg = state.get("cfg") or {}
    if data_name_or_path is not None:
        data = os.path.abspath(os.path.join(folder, data_name_or_path) if str(data_name_or_path).startswith(".")
                               else data_name_or_path)
    elif _has_dictionaries(folder):
        data = os.path.abspath(folder)
    else:
        data = str((cfg.get("task") or {}).get("data") or "").split(os.pathsep)[0]
        if not data or not _has_dictionaries(data):
            raise MagicError(f"{path} was trained on {data or 'no recorded data'}, which holds no dictionary now: "
                             "give data_name_or_path= the data folder, or export the checkpoint "
                             "(fairseq-magic export) to make a self-contained folder")
    overrides.pop("user_dir", None)  # the plugin is loaded already
    overrides = _bpe_overrides(folder, cfg, {"data": data, **overrides})
    overwrite_args_by_name(state["cfg"], overrides)  # as fairseq's load does when it reads the file itself
    models, args, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides, state=state)
    return MagicHubInterface(args, task, models[0])


class FromPretrained:
    """``Model.from_pretrained(folder)`` for the plugin's models (mixed in before fairseq's RobertaModel)."""

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file: Optional[str] = None,
                        data_name_or_path: Optional[str] = None, **overrides) -> MagicHubInterface:
        return from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, **overrides)
