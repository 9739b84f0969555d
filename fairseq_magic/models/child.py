"""``magic_child``: a found architecture as a stand-alone fairseq RoBERTa model.

It holds only the child's operators (no unused candidates), names them as the
super-net does less the ``candidates.<c>.`` level, and is a ``RobertaModel``,
so fairseq's masked-LM and sentence-prediction recipes, classification heads
and the hub interface work as for RoBERTa:

    fairseq-train data-bin --user-dir fairseq_magic --task masked_lm --criterion masked_lm \\
        --arch magic_child --child-arch found.json ...

``--child-arch`` takes an architecture file (which carries its space: hidden
size, FFN and Q/K/V widths, embedding factorisation) or a string with the
sizes given by the other options. The model saves the resolved architecture
and sizes with its weights, and the plugin's checkpoint loader completes the
config from them, so a checkpoint rebuilds without the architecture file.
"""

import logging
import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model
from fairseq.models.roberta.model import RobertaModel, base_architecture as roberta_base_architecture
from fairseq.utils import safe_getattr
from omegaconf import II
from omegaconf.errors import OmegaConfBaseException

from ..checkpoint import torch_load
from ..errors import MagicError
from ..ranges import check_section
from ..space import Child, SearchSpace, load_child, names_a_file
from .hub import FromPretrained
from .state_format import (
    CHILD_SPEC_KEY, add_format_version, child_spec, decode_json, encode_json, size_config, spec_space, upgrade_state,
    VersionedState,
)
from .supernet import EncoderOptions, build_roberta_model, writable

logger = logging.getLogger("fairseq_magic.models.child")


@dataclass
class MagicChildConfig(EncoderOptions):
    child_arch: str = field(
        default="", metadata={"help": "the child: an architecture file, or a string like MHA12,FFN,CONV3 "
                                      "(default: the architecture of the --restore-file checkpoint)"})
    encoder_embed_dim: Optional[int] = field(
        default=None, metadata={"range": "[1, inf)",
                                "help": "hidden size of a string --child-arch (default: the --restore-file "
                                        "checkpoint's, else 768)"})
    encoder_ffn_embed_dim: Optional[int] = field(
        default=None, metadata={"range": "[1, inf)",
                                "help": "inner size of a bare FFN, string --child-arch (default: as above, else 3072)"})
    attention_qkv_dim: Optional[int] = field(
        default=None, metadata={"range": "[0, inf)",
                                "help": "Q/K/V width of every MHA (default: as above, else the hidden size)"})
    embed_factor_dim: Optional[int] = field(
        default=None, metadata={"range": "[0, inf)",
                                "help": "factorised embedding width (default: as above, else none)"})
    attention_head_dim: Optional[int] = field(
        default=None, metadata={"range": "[0, inf)",
                                "help": "fixed head width: MHA<h> has h heads of this width (default: as above, "
                                        "else the Q/K/V width over h)"})
    max_positions: Optional[int] = field(default=None, metadata={"range": "[1, inf)",
                                                                 "help": "positions (default: the task's)"})
    # where the run restores from (not options of the model): a restored magic_child gives the architecture
    restore_file: str = II("checkpoint.restore_file")
    save_dir: str = II("checkpoint.save_dir")


# the sizes of a string --child-arch given neither on the command line nor by a restored checkpoint (RoBERTa-base)
DEFAULT_SIZES = {"encoder_embed_dim": 768, "encoder_ffn_embed_dim": 3072, "attention_qkv_dim": 0,
                 "embed_factor_dim": 0, "attention_head_dim": 0}


def _config_value(args, key: str):
    """``args.key``, or None where it is missing or an interpolation that does not resolve
    (a config loaded from a checkpoint has no checkpoint section to point into)."""
    try:
        return safe_getattr(args, key, None)
    except OmegaConfBaseException:
        return None


def restored_child_spec(args) -> Optional[Tuple[str, dict]]:
    """(path, child spec) of the magic_child checkpoint this run restores from, if any."""
    path = str(_config_value(args, "restore_file") or "")
    if path == "checkpoint_last.pt":  # fairseq's default: the run's own last checkpoint, if any
        path = os.path.join(str(_config_value(args, "save_dir") or ""), path)
    if not path or not os.path.isfile(path):
        return None
    weights = torch_load(path).get("model") or {}
    return (path, decode_json(weights[CHILD_SPEC_KEY])) if CHILD_SPEC_KEY in weights else None


def resolve_child_arch(args) -> Tuple[List[str], dict, str]:
    """(operator names, size fields, where they came from) of a magic_child config. An architecture file gives
    both; a string gives the operators, and sizes left out come from the checkpoint the
    run restores from, or RoBERTa-base's; no ``--child-arch`` means the restored
    checkpoint's architecture. A restored checkpoint that disagrees is an error."""
    arch = str(_config_value(args, "child_arch") or "").strip()
    if arch and names_a_file(arch):
        file_space, file_child = load_child(arch)
        return [file_space.candidates[c].name for c in file_child], size_config(file_space), f"the file {arch}"
    given = {key: int(v) for key in DEFAULT_SIZES if (v := _config_value(args, key)) is not None}
    restored = restored_child_spec(args) if not arch or len(given) < len(DEFAULT_SIZES) else None
    if restored is None:
        if not arch:
            raise MagicError("--arch magic_child needs --child-arch (an architecture file or string) or a "
                             "--restore-file of a magic_child checkpoint, which carries its architecture")
        source = "the config" + (", RoBERTa-base's for the sizes not given" if len(given) < len(DEFAULT_SIZES) else "")
        return [op.strip() for op in arch.split(",")], {**DEFAULT_SIZES, **given}, source
    path, spec = restored
    ops = [op.strip() for op in (arch or spec["child_arch"]).split(",")]
    sizes = {key: int(spec.get(key, DEFAULT_SIZES[key]) or 0) for key in DEFAULT_SIZES}
    differ = [f"{key} {given[key]} (checkpoint: {sizes[key]})" for key in given if given[key] != sizes[key]]
    if ops != spec["child_arch"].split(","):
        differ.insert(0, f"--child-arch {','.join(ops)} (checkpoint: {spec['child_arch']})")
    if differ:
        raise MagicError(f"the model asked for differs from --restore-file {path}: {'; '.join(differ)}; "
                         "leave --child-arch and the sizes out to take the checkpoint's")
    return ops, sizes, f"the restored checkpoint {path}"


def child_from_args(args):
    """(space, child) of a magic_child config; the space holds just the child's operators."""
    ops, sizes, source = resolve_child_arch(args)
    if any(not op for op in ops):
        raise MagicError(f"empty operator in --child-arch '{','.join(ops)}'")
    logger.info(f"magic_child {','.join(ops)}: {', '.join(f'{k} {v}' for k, v in sizes.items())} (from {source})")
    return spec_space(ops, sizes)


def _save_child_spec(module, state_dict, prefix, local_metadata):
    add_format_version(state_dict, prefix)
    state_dict[prefix + CHILD_SPEC_KEY] = encode_json(child_spec(module.space, module.child))


def _drop_child_spec(module, state_dict, prefix, *args):
    upgrade_state(state_dict, prefix)  # done already when fairseq loads; not when torch's load_state_dict is called
    state_dict.pop(prefix + CHILD_SPEC_KEY, None)


@register_model("magic_child", dataclass=MagicChildConfig)
class MagicChildModel(FromPretrained, VersionedState, RobertaModel):
    def __init__(self, args, encoder):
        super().__init__(args, encoder)
        self._register_state_dict_hook(_save_child_spec)
        self.register_load_state_dict_pre_hook(_drop_child_spec)

    @classmethod
    def add_args(cls, parser):
        gen_parser_from_dataclass(parser, MagicChildConfig(), delete_default=True)

    @classmethod
    def build_model(cls, args, task):
        check_section(args, MagicChildConfig)
        space, child = child_from_args(args)
        with writable(args):
            for key, value in size_config(space).items():  # the sizes the model has, for the saved config
                setattr(args, key, value)
            if not _config_value(args, "child_arch"):
                args.child_arch = space.format(child)
            roberta_base_architecture(args)
            return build_roberta_model(cls, args, task, space, child)

    @property
    def space(self) -> SearchSpace:
        return self.encoder.space

    @property
    def child(self) -> Child:
        return self.encoder.child
