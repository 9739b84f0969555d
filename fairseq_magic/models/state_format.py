"""What the plugin's models keep in a checkpoint besides fairseq's weights.

The JSON codec of values kept in a state dict (a super-net's search state, a
child's spec), the keys they ride under, the mapping between a search space and
a model config's size fields, and the completion of a ``magic_child`` config
from the spec its weights carry.
"""

import json

import torch
from fairseq.utils import safe_getattr

from ..errors import MagicError
from ..space import SearchSpace

# The format of what the models keep in a state dict, saved there under FORMAT_VERSION_KEY. Raise
# FORMAT_VERSION when it changes, bring older state dicts up to date in upgrade_state, and write a
# fixture of the old format (tests/fixtures/make_format_checkpoints.py) for tests/test_state_format.py.
#   0 (no key): before 2026-12-01; architecture weights saved before layer groups have no mask
#   1: the version is saved
FORMAT_VERSION_KEY = "format_version"
FORMAT_VERSION = 1


def add_format_version(state_dict, prefix: str = "") -> None:
    state_dict[prefix + FORMAT_VERSION_KEY] = torch.tensor(FORMAT_VERSION)


def upgrade_state(state_dict, prefix: str = "", source: str = "this checkpoint") -> None:
    """Bring a model state dict of an earlier format up to today's, in place, and take
    the version out (the models' ``upgrade_state_dict_named`` calls it as fairseq loads)."""
    version = int(state_dict.pop(prefix + FORMAT_VERSION_KEY, 0))
    if version > FORMAT_VERSION:
        raise MagicError(f"{source} was written by a newer fairseq-magic (state format {version}; this one reads "
                         f"formats up to {FORMAT_VERSION}): update fairseq-magic")
    if version < 1:
        arch = prefix + ARCH_WEIGHTS_PREFIX
        if arch + "param" in state_dict and arch + "mask" not in state_dict:  # every candidate of every layer
            state_dict[arch + "mask"] = torch.ones_like(state_dict[arch + "param"], dtype=torch.bool)


class VersionedState:
    """Mixin of the plugin's models: fairseq's upgrade of a loaded state dict brings it to today's format."""

    def upgrade_state_dict_named(self, state_dict, name):
        upgrade_state(state_dict, name + "." if name else "")
        super().upgrade_state_dict_named(state_dict, name)


SEARCH_STATE_KEY = "search_state"  # a super-net's SearchState (models/search_state.py), in its state dict
ARCH_WEIGHTS_PREFIX = "arch_weights."  # theta and its optimiser (training/arch_weights.py), in its state dict
CHILD_SPEC_KEY = "child_spec"  # a magic_child's architecture and sizes, in its state dict
# the model config's size fields and the SearchSpace attributes they hold
SIZE_FIELDS = {"encoder_embed_dim": "hidden_dim", "encoder_ffn_embed_dim": "ffn_dim",
               "attention_qkv_dim": "qkv_dim", "embed_factor_dim": "embed_dim", "attention_head_dim": "head_dim"}


def encode_json(value) -> torch.Tensor:
    """A JSON-able value as a uint8 tensor, to ride along in a state dict."""
    return torch.tensor(list(json.dumps(value, sort_keys=True).encode()), dtype=torch.uint8)


def decode_json(tensor: torch.Tensor):
    return json.loads(bytes(tensor.tolist()).decode())


def arch_weights_state(state_dict, prefix: str = "") -> dict:
    """The architecture weights a super-net's state dict carries (empty if none)."""
    start = prefix + ARCH_WEIGHTS_PREFIX
    return {key[len(start):]: value for key, value in state_dict.items() if key.startswith(start)}


def size_config(space: SearchSpace) -> dict:
    """The model-config size fields of ``space`` (what ``space_sizes`` reads back)."""
    return {key: getattr(space, attr) for key, attr in SIZE_FIELDS.items()}


def space_sizes(cfg) -> dict:
    """``SearchSpace.build``'s size arguments from a model config (fields it lacks are 0)."""
    return {attr: int(safe_getattr(cfg, key, 0) or 0) for key, attr in SIZE_FIELDS.items()}


def supernet_space(cfg) -> SearchSpace:
    """The search space a super-net's model config describes."""
    sizes = space_sizes(cfg)
    sizes.pop("head_dim")  # a super-net derives it (weight-entangled spaces), a child records it
    return SearchSpace.build(num_layers=int(cfg.supernet_layers), candidate_ops=str(cfg.candidate_ops),
                             entangled=bool(safe_getattr(cfg, "weight_entanglement", False)), **sizes)


def child_spec(space: SearchSpace, child) -> dict:
    """What makes a magic_child checkpoint self-contained: its architecture and sizes."""
    return {"child_arch": space.format(child), **size_config(space)}


def spec_space(operators, sizes: dict):
    """(space, child) of a child's operator names and size fields: the space holds just its operators."""
    dims = {SIZE_FIELDS[key]: int(value or 0) for key, value in sizes.items() if key in SIZE_FIELDS}
    space = SearchSpace.build(len(operators), ",".join(dict.fromkeys(operators)), **dims)
    return space, space.parse(",".join(operators))


def complete_child_config(state: dict) -> None:
    """Give a magic_child checkpoint's config the architecture and sizes the model
    saved with its weights. fairseq saves the config as given on the command line,
    where ``--child-arch`` may be a file that is not there when the checkpoint is
    loaded elsewhere; the model's own copy makes the checkpoint self-contained."""
    cfg, weights = state.get("cfg"), state.get("model") or {}
    if cfg is None or CHILD_SPEC_KEY not in weights or getattr(cfg["model"], "get", None) is None \
            or cfg["model"].get("_name") != "magic_child":
        return
    for key, value in decode_json(weights[CHILD_SPEC_KEY]).items():
        cfg["model"][key] = value
