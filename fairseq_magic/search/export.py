"""Export a child of a trained super-net as a stand-alone ``magic_child`` checkpoint.

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
"""

import os
import re
import shutil
from typing import Dict, List, Tuple, Union

import torch
from fairseq.tasks.masked_lm import MaskedLMConfig
from omegaconf import OmegaConf

from ..checkpoint import atomic_save, load_supernet_checkpoint
from ..errors import MagicError
from ..models.state_format import (
    ARCH_WEIGHTS_PREFIX, CHILD_SPEC_KEY, FORMAT_VERSION_KEY, SEARCH_STATE_KEY, add_format_version, child_spec,
    encode_json,
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


SENTENCEPIECE_FILE = "sentencepiece.bpe.model"  # the name fairseq's hub_utils.from_pretrained picks up
FORMATS = ("magic_child", "roberta")


def export_child(checkpoint: str, arch: Union[str, Child], out: str, sentencepiece_model: str = "",
                 format: str = "magic_child") -> dict:
    """Write ``out``: the child ``arch`` of super-net ``checkpoint`` as a magic_child
    (or plain roberta) checkpoint, with ``dict.txt`` (and ``sentencepiece_model``) beside it."""
    if format not in FORMATS:
        raise MagicError(f"unknown export format '{format}' (known: {', '.join(FORMATS)})")
    if sentencepiece_model and not os.path.isfile(sentencepiece_model):
        raise MagicError(f"sentencepiece model not found: {sentencepiece_model}")
    state, model_cfg, space = load_supernet_checkpoint(checkpoint)
    dictionary = os.path.join(str(state["cfg"]["task"]["data"]).split(os.pathsep)[0], "dict.txt")
    if not os.path.isfile(dictionary):
        raise MagicError(f"no dict.txt in the super-net's data directory ({dictionary}); the export needs it beside "
                         "model.pt")
    child = resolve_child(arch, space)
    cfg = OmegaConf.to_container(state["cfg"], resolve=True)
    cfg["model"] = child_model_cfg(model_cfg, space, child)
    masked_lm_fields = set(MaskedLMConfig.__dataclass_fields__)
    cfg["task"] = {k: v for k, v in cfg["task"].items() if k in masked_lm_fields}
    cfg["task"]["_name"] = "masked_lm"
    cfg["criterion"] = {"_name": "masked_lm", "tpu": False}
    weights = child_state_dict(state["model"], child, space)
    weights[CHILD_SPEC_KEY] = encode_json(child_spec(space, child))
    if format == "roberta":
        pairs = transformer_layers(space, child)
        cfg["model"] = roberta_model_cfg(cfg["model"], space, child)
        cfg["common"]["user_dir"] = None  # stock fairseq loads it
        weights = roberta_state_dict(weights, pairs)
    else:
        add_format_version(weights)
    exported = {
        "args": None,
        "cfg": cfg,
        "model": weights,
        "optimizer_history": [
            {"criterion_name": "MaskedLmLoss", "optimizer_name": "none", "lr_scheduler_state": {"best": None}, "num_updates": 0}
        ],
        "extra_state": {"exported_from": checkpoint, "supernet_updates": state["optimizer_history"][-1].get("num_updates")},
    }
    out_dir = os.path.dirname(os.path.abspath(out))
    if sentencepiece_model:
        exported["cfg"]["bpe"] = {"_name": "sentencepiece", "sentencepiece_model": SENTENCEPIECE_FILE}
        shutil.copyfile(sentencepiece_model, os.path.join(out_dir, SENTENCEPIECE_FILE))
    if os.path.abspath(dictionary) != os.path.join(out_dir, "dict.txt"):
        shutil.copyfile(dictionary, os.path.join(out_dir, "dict.txt"))
    atomic_save(exported, out)  # a magic_child's config gets the note stock fairseq prints without the plugin
    params = sum(v.numel() for k, v in weights.items() if v.is_floating_point() and not k.endswith(".version"))
    return {"arch": space.format(child), "params": params, "out": out}
