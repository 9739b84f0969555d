"""Export a child of a trained super-net (or a child checkpoint: retrained,
fine-tuned) as a stand-alone, self-contained model folder with a model card.

The child inherits the super-net's weights: its chosen operators (keys
``...layers.<i>.candidates.<c>.<rest>`` become ``...layers.<i>.<rest>``), the
embeddings, LM head and any classification heads. The checkpoint's config
names ``--arch magic_child`` with the resolved architecture and sizes and the
plain ``masked_lm`` task, so fairseq's own recipes (``--restore-file`` with
``--reset-optimizer``, ``sentence_prediction``, ``from_pretrained``) load it.

The export is self-contained: the pre-training ``dict.txt`` is written beside
``model.pt``, and with ``sentencepiece_model`` the sentencepiece model too, as
``sentencepiece.bpe.model`` (the name fairseq's hub looks for), with the bpe
settings in the checkpoint, so ``MagicChildModel.from_pretrained(dir)`` needs
no other argument.

``format="roberta"`` writes a child that is a plain Transformer (MHA and FFN
layers alternating, one head count, one FFN size, Q/K/V as wide as the hidden
size, no factorised embedding) as a stock fairseq ``roberta`` checkpoint:
layers ``2j`` and ``2j+1`` become Transformer layer ``j`` (``self_attn``,
``self_attn_layer_norm``, ``fc1``, ``fc2``, ``final_layer_norm``), so fairseq
loads it with no ``--user-dir`` and computes the same features. Any other
child is one error line naming the layers that prevent it.

``format="huggingface"`` writes the same plain-Transformer child as a
``transformers`` RoBERTa folder (``RobertaForMaskedLM``, or
``RobertaForSequenceClassification`` from a fine-tuned checkpoint) with a fast
tokenizer built from the sentencepiece model and the fairseq dictionary
(``AutoModel`` / ``AutoModelForSequenceClassification`` / ``AutoTokenizer``
load it). ``transformers`` is an optional extra.

Every export writes ``README.md``, a model card: the architecture, its size
part by part, and how it was found (super-net, method, search limits, data, seed).
"""

import copy
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Tuple, Union

import torch
from fairseq import checkpoint_utils
from fairseq.tasks.masked_lm import MaskedLMConfig
from omegaconf import OmegaConf

from ..checkpoint import atomic_save, model_name, supernet_of_state, torch_load
from ..errors import MagicError
from ..data.corpus import check_bpe_codes
from ..models.hub import FASTBPE_FILE, SENTENCEPIECE_FILE, bpe_model, restored_folder
from ..models.state_format import (
    ARCH_WEIGHTS_PREFIX, CHILD_SPEC_KEY, FORMAT_VERSION_KEY, SEARCH_STATE_KEY, add_format_version, child_spec,
    decode_json, encode_json, spec_space, upgrade_state,
)
from ..models.supernet import EncoderOptions, resolve_child
from ..modules.entangled import slice_state
from ..space import Child, SearchSpace

_CANDIDATE_KEY = re.compile(r"^(.*\.layers\.(\d+)\.)candidates\.(\d+)\.(.*)$")
_KIND_KEY = re.compile(r"^(.*\.layers\.(\d+)\.)kinds\.([A-Z]+)\.(.*)$")  # weight-entangled layers


def child_state_dict(supernet_state: Dict[str, torch.Tensor], child: Child, space: SearchSpace) -> Dict[str, torch.Tensor]:
    """The super-net's weights that a child uses, under the child's names (in a
    weight-entangled space, the child's slices of the shared tensors)."""
    out = {}
    for key, value in supernet_state.items():
        candidate_key, kind_key = _CANDIDATE_KEY.match(key), _KIND_KEY.match(key)
        if candidate_key:
            prefix, layer, candidate, rest = candidate_key.groups()
            if int(candidate) == child[int(layer)]:
                out[prefix + rest] = value
        elif kind_key:
            prefix, layer, kind, rest = kind_key.groups()
            op = space.candidates[child[int(layer)]]
            if op.kind == kind:
                out[prefix + rest] = slice_state(space, int(layer), op, rest, value).clone()
        elif key not in (SEARCH_STATE_KEY, FORMAT_VERSION_KEY) and not key.startswith(ARCH_WEIGHTS_PREFIX):
            out[key] = value
    return out


def child_model_cfg(supernet_cfg, space: SearchSpace, child: Child) -> dict:
    """The magic_child model config: the super-net's settings, the child's architecture."""
    keep = (*EncoderOptions.__dataclass_fields__, "max_positions")
    cfg = {k: supernet_cfg[k] for k in keep if k in supernet_cfg}
    cfg.update(_name="magic_child", **child_spec(space, child))
    return cfg


def transformer_layers(space: SearchSpace, child: Child) -> List[Tuple[int, int]]:
    """The (MHA layer, FFN layer) pairs of a child that is a plain Transformer, or
    MagicError naming what makes it something else."""
    ops = [space.candidates[c] for c in child]
    problems = []
    if len(ops) % 2:
        problems.append(f"{len(ops)} layers (each Transformer layer is an MHA,FFN pair)")
    problems += [f"layer {i} is {op.name}, not {'MHA' if i % 2 == 0 else 'FFN'}"
                 for i, op in enumerate(ops) if op.kind != ("MHA" if i % 2 == 0 else "FFN")]
    for kind in ("MHA", "FFN"):
        names = sorted({op.name for op in ops if op.kind == kind})
        if len(names) > 1:
            problems.append(f"{kind} sizes differ ({', '.join(names)}; roberta has one)")
    problems += [f"{name} attends over {width} dimensions, not the hidden size {space.hidden_dim}"
                 for name, width in sorted({(op.name, space.attention_width(op)) for op in ops if op.kind == "MHA"})
                 if width != space.hidden_dim]
    if space.embed_dim != space.hidden_dim:
        problems.append(f"factorised embeddings ({space.embed_dim} -> {space.hidden_dim})")
    if problems:
        raise MagicError(f"{space.format(child)} is not a plain Transformer, so it cannot be a roberta checkpoint: "
                         + "; ".join(problems))
    return [(i, i + 1) for i in range(0, len(ops), 2)]


_CHILD_LAYER_KEY = re.compile(r"^(.*\.layers\.)(\d+)\.(op|layer_norm)\.(.*)$")


def roberta_state_dict(weights: Dict[str, torch.Tensor], pairs: List[Tuple[int, int]]) -> Dict[str, torch.Tensor]:
    """A plain-Transformer child's weights under fairseq's TransformerEncoderLayer names."""
    where = {layer: (j, role) for j, pair in enumerate(pairs) for layer, role in zip(pair, ("attention", "ffn"))}
    names = {("attention", "op"): "self_attn.", ("attention", "layer_norm"): "self_attn_layer_norm.",
             ("ffn", "op"): "", ("ffn", "layer_norm"): "final_layer_norm."}
    out = {}
    for key, value in weights.items():
        match = _CHILD_LAYER_KEY.match(key)
        if match:
            prefix, layer, part, rest = match.groups()
            j, role = where[int(layer)]
            out[f"{prefix}{j}.{names[role, part]}{rest}"] = value
        elif key != CHILD_SPEC_KEY:
            out[key] = value
    return out


def roberta_model_cfg(child_cfg: dict, space: SearchSpace, child: Child) -> dict:
    """fairseq's ``roberta`` config of a plain-Transformer child (magic_child config ``child_cfg``)."""
    ops = [space.candidates[c] for c in child]
    keep = ("dropout", "attention_dropout", "activation_dropout", "activation_fn", "pooler_activation_fn",
            "pooler_dropout", "max_positions", "untie_weights_roberta", "spectral_norm_classification_head")
    return {
        "_name": "roberta", **{k: child_cfg[k] for k in keep if k in child_cfg},
        "encoder_layers": len(ops) // 2, "encoder_embed_dim": space.hidden_dim,
        "encoder_ffn_embed_dim": ops[1].size, "encoder_attention_heads": ops[0].size,
        "encoder_normalize_before": False, "encoder_learned_pos": True, "layernorm_embedding": True,
        "no_scale_embedding": True, "encoder_layerdrop": 0.0,
    }


FORMATS = ("magic_child", "roberta", "huggingface")
LABEL_DICTIONARY = os.path.join("label", "dict.txt")
CARD_FILE = "README.md"


@dataclass
class ExportSource:
    """A child to export, read from a super-net (with the architecture) or from a child checkpoint."""

    path: str
    cfg: dict  # the checkpoint's config, as plain containers
    space: SearchSpace
    child: Child
    weights: Dict[str, torch.Tensor]  # under magic_child names, the child spec included
    dictionary: str  # the dict.txt of its inputs
    label_dictionary: str = ""  # a fine-tuned classifier's label/dict.txt
    provenance: Dict = field(default_factory=dict)  # how it was found, for the model card

    @property
    def fine_tuned(self) -> bool:
        return self.cfg["task"].get("_name") == "sentence_prediction"

    @property
    def heads(self) -> Dict[str, int]:
        """Its classification heads and their number of classes."""
        return {key.split(".")[1]: int(value.shape[0]) for key, value in self.weights.items()
                if key.startswith("classification_heads.") and key.endswith(".out_proj.weight")}

    @property
    def vocab_size(self) -> int:
        return int(next(v for k, v in self.weights.items() if k.endswith("embed_tokens.weight")
                        or k.endswith("embed_tokens.table.weight")).shape[0])

    @property
    def max_positions(self) -> int:
        rows = next(v for k, v in self.weights.items() if k.endswith("embed_positions.weight")).shape[0]
        return int(rows) - 2  # fairseq's learned positions start after the padding index

    def size(self, seq_len: int = 128) -> List[Tuple[str, int, int]]:
        return self.space.size(self.child, self.vocab_size, self.max_positions, seq_len, list(self.heads.values()))


def method_name(task_cfg) -> str:
    """The paper's name of how a super-net was trained, from its task config."""
    relaxation = str(task_cfg.get("relaxation", "none") or "none")
    if relaxation != "none":
        return f"gradient-based ({relaxation}, {task_cfg.get('arch_optimizer', 'darts')})"
    sampler = str(task_cfg.get("sampler", "uniform"))
    aligned = float(task_cfg.get("align_lambda", 0) or 0) > 0
    names = {"uniform": "SPOS", "gradual": "MAGIC-T", "fair": "FairNAS", "fair-gradual": "the fair gradual walk"}
    name = names.get(sampler, sampler)
    if aligned:
        name = {"SPOS": "MAGIC-A", "MAGIC-T": "MAGIC-AT"}.get(name, f"{name} with MAGIC-A's alignment")
    return name


def _data_folder(cfg: dict) -> str:
    return str(cfg["task"].get("data") or "").split(os.pathsep)[0]


def _dictionaries(cfg: dict, checkpoint: str) -> Tuple[str, str]:
    """(dict.txt, label dict.txt or '') of a checkpoint: in its data folder, else beside it (an export)."""
    classifier = cfg["task"].get("_name") == "sentence_prediction"
    for folder in (_data_folder(cfg), os.path.dirname(os.path.abspath(checkpoint))):
        inputs = os.path.join(folder, "input0", "dict.txt") if classifier else ""
        inputs = inputs if inputs and os.path.isfile(inputs) else os.path.join(folder, "dict.txt")
        if folder and os.path.isfile(inputs):
            labels = os.path.join(folder, LABEL_DICTIONARY)
            return inputs, labels if classifier and os.path.isfile(labels) else ""
    raise MagicError(f"no dict.txt in {checkpoint}'s data folder ({_data_folder(cfg) or 'none recorded'}) or beside "
                     "it; the export needs the dictionary the model was trained with")


def _search_settings(arch) -> dict:
    """The settings of the search whose best.json ``arch`` names (its search.json), if any."""
    if not isinstance(arch, str) or not arch.endswith(".json"):
        return {}
    record = os.path.join(os.path.dirname(os.path.abspath(arch)), "search.json")
    try:
        with open(record, encoding="utf-8") as f:
            settings = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: settings[k] for k in ("algorithm", "metric", "limits", "seed", "scored", "sentences") if k in settings}


def _recorded_provenance(path: str) -> dict:
    """The provenance an earlier export recorded in ``path`` (a fine-tuning's --restore-file), if readable."""
    try:
        state = torch_load(path, mmap=True)
        return dict((state.get("extra_state") or {}).get("provenance") or {})
    except Exception:  # noqa: BLE001 - an unreadable or moved file only leaves the card shorter
        return {}


def read_source(checkpoint: str, arch: Union[str, Child, None] = None, dictionaries: bool = True) -> ExportSource:
    """The child to export: ``arch`` of a super-net checkpoint, or the child a magic_child
    checkpoint holds (an export, a retrained or a fine-tuned child); ``dictionaries``: find
    them too (an error if they are gone)."""
    state = checkpoint_utils.load_checkpoint_to_cpu(checkpoint)
    name = model_name(state)
    cfg = OmegaConf.to_container(state["cfg"], resolve=True)
    updates = state["optimizer_history"][-1].get("num_updates") if state.get("optimizer_history") else None
    if name.startswith("magic_supernet"):
        if arch is None or arch == "":
            raise MagicError(f"{checkpoint} is a super-net: give --arch, the child to export (a string or a search's "
                             "best.json)")
        model_cfg, space = supernet_of_state(state, checkpoint)
        child = resolve_child(arch, space)
        spec = child_spec(space, child)
        weights = child_state_dict(state["model"], child, space)
        weights[CHILD_SPEC_KEY] = encode_json(spec)
        cfg["model"] = child_model_cfg(model_cfg, space, child)
        provenance = {"supernet": os.path.abspath(checkpoint), "supernet_updates": updates,
                      "method": method_name(cfg["task"]), "seed": cfg["common"].get("seed"),
                      "data": _data_folder(cfg), "search": _search_settings(arch)}
        provenance["training"] = {k: cfg["task"].get(k) for k in (
            "sampler", "gradual_k", "align_lambda", "relaxation") if k in cfg["task"]}
        space, child = spec_space(spec["child_arch"].split(","), spec)  # the child's own space: its operators
    elif name == "magic_child":
        weights = dict(state["model"])
        upgrade_state(weights, source=checkpoint)
        spec = decode_json(weights[CHILD_SPEC_KEY])
        space, child = spec_space(spec["child_arch"].split(","), spec)
        if arch not in (None, "") and space.format(resolve_child(arch, space)) != space.format(child):
            raise MagicError(f"{checkpoint} holds the child {space.format(child)}; leave --arch out to export it")
        weights[CHILD_SPEC_KEY] = encode_json(child_spec(space, child))
        restored = restored_folder(cfg)
        provenance = _recorded_provenance(os.path.join(restored, os.path.basename(
            str(cfg["checkpoint"].get("restore_file"))))) if restored else {}
        provenance.update(child_checkpoint=os.path.abspath(checkpoint), child_updates=updates,
                          child_task=cfg["task"].get("_name"), child_data=_data_folder(cfg),
                          child_seed=cfg["common"].get("seed"))
    else:
        raise MagicError(f"{checkpoint} is not a fairseq-magic super-net or magic_child checkpoint "
                         f"(its model is '{name or 'unknown'}')")
    dictionary, labels = _dictionaries(cfg, checkpoint) if dictionaries else ("", "")
    return ExportSource(checkpoint, cfg, space, child, weights, dictionary, labels, provenance)


def export_child(checkpoint: str, arch: Union[str, Child, None], out: str, sentencepiece_model: str = "",
                 format: str = "magic_child", bpe_codes: str = "") -> dict:
    """Write the child (``arch`` of super-net ``checkpoint``, or the child checkpoint's own) as
    ``format``: a checkpoint file ``out`` (magic_child, roberta) or a folder ``out``
    (huggingface), with the dictionaries, the sentencepiece model (or fastBPE codes) and a model card."""
    if format not in FORMATS:
        raise MagicError(f"unknown export format '{format}' (known: {', '.join(FORMATS)})")
    if sentencepiece_model and bpe_codes:
        raise MagicError("give --sentencepiece-model or --bpe-codes, not both")
    if sentencepiece_model and not os.path.isfile(sentencepiece_model):
        raise MagicError(f"sentencepiece model not found: {sentencepiece_model}")
    if bpe_codes:
        check_bpe_codes(bpe_codes)
    source = read_source(checkpoint, arch)
    if not sentencepiece_model and not bpe_codes:
        found = bpe_model(os.path.dirname(os.path.abspath(checkpoint)), restored_folder(source.cfg))
        sentencepiece_model = found[2] if found and found[0] == "sentencepiece" else ""
        bpe_codes = found[2] if found and found[0] == "fastbpe" else ""
    if format == "huggingface":
        from .huggingface import write_huggingface

        out_dir = out
        pairs = transformer_layers(source.space, source.child)
        if not sentencepiece_model:
            raise MagicError("--format huggingface needs the sentencepiece model (--sentencepiece-model) for its "
                             "tokenizer" + (" (fastBPE codes have no fast tokenizer here)" if bpe_codes else ""))
        write_huggingface(source, out_dir, sentencepiece_model, roberta_state_dict(source.weights, pairs))
    else:
        out_dir = os.path.dirname(os.path.abspath(out))
        write_fairseq(source, out, format, sentencepiece_model, bpe_codes)
    write_card(source, out_dir, format, "fastbpe" if bpe_codes else "sentencepiece")
    size = source.size()
    return {"arch": source.space.format(source.child), "params": sum(row[1] for row in size), "size": size,
            "out": out}


def write_fairseq(source: ExportSource, out: str, format: str, sentencepiece_model: str, bpe_codes: str = "") -> None:
    """A magic_child (or stock roberta) checkpoint at ``out``, its dictionaries beside it."""
    cfg = copy.deepcopy(source.cfg)
    if not source.fine_tuned and cfg["task"].get("_name") != "masked_lm":  # a super-net's magic_masked_lm
        masked_lm_fields = set(MaskedLMConfig.__dataclass_fields__)
        cfg["task"] = {k: v for k, v in cfg["task"].items() if k in masked_lm_fields}
        cfg["task"]["_name"] = "masked_lm"
        cfg["criterion"] = {"_name": "masked_lm", "tpu": False}
    weights = dict(source.weights)
    if format == "roberta":
        pairs = transformer_layers(source.space, source.child)
        cfg["model"] = roberta_model_cfg(cfg["model"], source.space, source.child)
        cfg["common"]["user_dir"] = None  # stock fairseq loads it
        weights = roberta_state_dict(weights, pairs)
    else:
        add_format_version(weights)
    exported = {
        "args": None,
        "cfg": cfg,
        "model": weights,
        "optimizer_history": [
            {"criterion_name": "MaskedLmLoss" if not source.fine_tuned else "SentencePredictionCriterion",
             "optimizer_name": "none", "lr_scheduler_state": {"best": None}, "num_updates": 0}
        ],
        "extra_state": {"exported_from": os.path.abspath(source.path), "provenance": source.provenance},
    }
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    if sentencepiece_model:
        exported["cfg"]["bpe"] = {"_name": "sentencepiece", "sentencepiece_model": SENTENCEPIECE_FILE}
        _copy(sentencepiece_model, os.path.join(out_dir, SENTENCEPIECE_FILE))
    elif bpe_codes:
        exported["cfg"]["bpe"] = {"_name": "fastbpe", "bpe_codes": FASTBPE_FILE}
        _copy(bpe_codes, os.path.join(out_dir, FASTBPE_FILE))
    _copy(source.dictionary, os.path.join(out_dir, "dict.txt"))
    if source.fine_tuned:  # where sentence_prediction reads them: from_pretrained(folder) needs nothing else
        _copy(source.dictionary, os.path.join(out_dir, "input0", "dict.txt"))
        if source.label_dictionary:
            _copy(source.label_dictionary, os.path.join(out_dir, LABEL_DICTIONARY))
    atomic_save(exported, out)  # a magic_child's config gets the note stock fairseq prints without the plugin


def _copy(src: str, dst: str) -> None:
    if os.path.abspath(src) != os.path.abspath(dst):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)


# what makes markdown or HTML of text (a backslash escapes each); '_' is left as it is: identifiers are full of
# it, and the most it can do is emphasis
_MARKUP = re.compile(r"([\\`*\[\]()<>#!|~&{}])")


def _text(value) -> str:
    """Recorded text (paths, settings, labels: anyone's data) as markdown that renders as that text:
    on one line, every mark of markup escaped, so no heading, link, HTML or emphasis comes of it."""
    return _MARKUP.sub(r"\\\1", " ".join(str(value).split()))


def _code(value) -> str:
    """Recorded text as an inline code span (shown verbatim; the fence outgrows any backticks inside)."""
    text = " ".join(str(value).split())
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def write_card(source: ExportSource, out_dir: str, format: str, bpe: str = "sentencepiece") -> None:
    """``README.md``: what the exported model is, its size, how it was found and how to load it. What was
    recorded elsewhere (paths, search settings, labels) is escaped: the card is data, not markup."""
    space, child, p = source.space, source.child, source.provenance
    rows = source.size()
    lines = [f"# {space.format(child)}", "",
             f"A child found by weight-sharing architecture search with fairseq-magic, exported as `{format}`"
             + (" after fine-tuning" if source.fine_tuned else "") + ".", "",
             "## Architecture", "",
             f"- layers: {space.format(child)} ({len(child)} sub-layers)",
             f"- hidden size {space.hidden_dim}; embeddings {space.embed_dim} wide"
             + (f"; attention heads {space.head_dim} wide" if space.head_dim else "")
             + f"; vocabulary {source.vocab_size:,}; {source.max_positions} positions", "",
             "| part | parameters | forward FLOPs at 128 tokens |", "|---|---:|---:|"]
    lines += [f"| {name} | {params:,} | {flops:.3g} |" for name, params, flops in rows]
    lines += [f"| total (the output matrix is the token table, counted once) | {sum(r[1] for r in rows):,} | "
              f"{sum(r[2] for r in rows):.3g} |", "", "## How it was found", ""]
    if p.get("supernet"):
        lines.append(f"- super-net: {_code(p['supernet'])}, {_text(p.get('supernet_updates'))} updates, trained "
                     f"with {_text(p.get('method'))} (seed {_text(p.get('seed'))}) on {_code(p.get('data'))}")
        training = p.get("training")
        if isinstance(training, dict) and training:
            lines.append("- training options: " + ", ".join(_code(f"--{str(k).replace('_', '-')} {v}")
                                                            for k, v in training.items()))
        search = p.get("search") if isinstance(p.get("search"), dict) else {}
        if search:
            limits = search.get("limits") if isinstance(search.get("limits"), dict) else {}
            shown = ", ".join(f"{_text(k)} {v:g}" for k, v in limits.items()
                              if isinstance(v, (int, float)) and v not in (0, float("inf")) and k != "seq_len")
            lines.append(f"- search: {_text(search.get('algorithm'))} by {_text(search.get('metric'))}, "
                         f"{_text(search.get('scored'))} children scored on {_text(search.get('sentences'))} "
                         f"sentences (seed {_text(search.get('seed'))}); limits: {shown or 'none'}")
    else:
        lines.append("- not recorded (the checkpoint was not exported from a super-net by this version)")
    if p.get("child_checkpoint"):
        lines.append(f"- then trained as a child ({_text(p.get('child_task'))}, {_text(p.get('child_updates'))} "
                     f"updates, seed {_text(p.get('child_seed'))}) on {_code(p.get('child_data'))}: "
                     f"{_code(p['child_checkpoint'])}")
    if source.heads:
        labels = _labels(source.label_dictionary)
        for head, classes in source.heads.items():
            lines.append(f"- classification head {_code(head)}: {classes} classes"
                         + (f", labels in index order: {', '.join(_text(label) for label in labels)}"
                            if labels else ""))
    lines += ["", "## Loading", "", "```python"]
    if format == "huggingface":
        auto = "AutoModelForSequenceClassification" if source.heads else "AutoModelForMaskedLM"
        lines += [f"from transformers import AutoTokenizer, {auto}",
                  f"tokenizer = AutoTokenizer.from_pretrained({out_dir!r})",
                  f"model = {auto}.from_pretrained({out_dir!r})"]
    elif format == "roberta":
        lines += ["from fairseq.models.roberta import RobertaModel  # stock fairseq, no plugin",
                  f"model = RobertaModel.from_pretrained({out_dir!r}, 'model.pt', bpe={bpe!r})"]
    else:
        lines += ["from fairseq_magic.models.child import MagicChildModel",
                  f"model = MagicChildModel.from_pretrained({out_dir!r})"]
        if source.heads:
            lines.append("model.classify('A sentence to classify.')  # label and probabilities")
    lines += ["```", ""]
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, CARD_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


def _labels(label_dictionary: str) -> List[str]:
    if not label_dictionary:
        return []
    with open(label_dictionary, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]
