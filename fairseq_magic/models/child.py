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

import os
from dataclasses import dataclass, field
from typing import Optional

from fairseq.dataclass import FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model
from fairseq.models.roberta.model import RobertaModel, base_architecture as roberta_base_architecture
from fairseq.utils import safe_getattr

from ..checkpoint import CHILD_SPEC_KEY, SIZE_FIELDS, child_spec, encode_json, space_sizes
from ..errors import MagicError
from ..space import Child, SearchSpace, load_child
from .supernet import ACTIVATIONS, build_roberta_model, writable


@dataclass
class MagicChildConfig(FairseqDataclass):
    child_arch: str = field(default="", metadata={"help": "the child: an architecture file, or a string like MHA12,FFN,CONV3"})
    encoder_embed_dim: int = field(default=768, metadata={"help": "hidden size (when --child-arch is a string)"})
    encoder_ffn_embed_dim: int = field(default=3072, metadata={"help": "inner size of a bare FFN (string --child-arch)"})
    attention_qkv_dim: int = field(default=0, metadata={"help": "Q/K/V width of every MHA (0: hidden size)"})
    embed_factor_dim: int = field(default=0, metadata={"help": "factorised embedding width (0: none)"})
    attention_head_dim: int = field(
        default=0, metadata={"help": "fixed head width: MHA<h> has h heads of this width (0: Q/K/V width over h)"}
    )
    dropout: float = field(default=0.1, metadata={"help": "dropout on each sub-layer's output"})
    attention_dropout: float = field(default=0.1, metadata={"help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"help": "dropout after the FFN activation"})
    activation_fn: ACTIVATIONS = field(default="gelu", metadata={"help": "FFN activation"})
    pooler_activation_fn: ACTIVATIONS = field(default="tanh", metadata={"help": "classification head activation"})
    pooler_dropout: float = field(default=0.0, metadata={"help": "classification head dropout"})
    max_positions: Optional[int] = field(default=None, metadata={"help": "positions (default: the task's)"})
    untie_weights_roberta: bool = field(default=False, metadata={"help": "untie input and output embeddings"})
    spectral_norm_classification_head: bool = field(default=False, metadata={"help": "spectral norm on the head"})


def child_from_args(args):
    """(space, child) of a magic_child config; the space holds just the child's operators."""
    arch = str(safe_getattr(args, "child_arch", "") or "").strip()
    if not arch:
        raise MagicError("--arch magic_child needs --child-arch (an architecture file or string)")
    if arch.endswith(".json") or os.path.isfile(arch):
        file_space, file_child = load_child(arch)
        ops = [file_space.candidates[c].name for c in file_child]
        dims = {attr: getattr(file_space, attr) for attr in SIZE_FIELDS.values()}
    else:
        ops = [op.strip() for op in arch.split(",")]
        dims = space_sizes(args)
    if any(not op for op in ops):
        raise MagicError(f"empty operator in --child-arch '{arch}'")
    space = SearchSpace.build(len(ops), ",".join(dict.fromkeys(ops)), **dims)
    return space, space.parse(",".join(ops))


def _save_child_spec(module, state_dict, prefix, local_metadata):
    state_dict[prefix + CHILD_SPEC_KEY] = encode_json(child_spec(module.space, module.child))


def _drop_child_spec(module, state_dict, prefix, *args):
    state_dict.pop(prefix + CHILD_SPEC_KEY, None)


@register_model("magic_child", dataclass=MagicChildConfig)
class MagicChildModel(RobertaModel):
    def __init__(self, args, encoder):
        super().__init__(args, encoder)
        self._register_state_dict_hook(_save_child_spec)
        self.register_load_state_dict_pre_hook(_drop_child_spec)

    @classmethod
    def add_args(cls, parser):
        gen_parser_from_dataclass(parser, MagicChildConfig(), delete_default=True)

    @classmethod
    def build_model(cls, args, task):
        with writable(args):
            roberta_base_architecture(args)
            return build_roberta_model(cls, args, task, *child_from_args(args))

    @classmethod
    def from_pretrained(cls, model_name_or_path, checkpoint_file="model.pt", data_name_or_path=".", bpe=None,
                        **kwargs):
        """fairseq's RoBERTa hub loader; ``bpe`` defaults to sentencepiece when the
        directory holds ``sentencepiece.bpe.model`` (a self-contained export)."""
        if bpe is None:
            has_spm = os.path.isfile(os.path.join(str(model_name_or_path), "sentencepiece.bpe.model"))
            bpe = "sentencepiece" if has_spm else "gpt2"  # fairseq's own default otherwise
        return super().from_pretrained(model_name_or_path, checkpoint_file, data_name_or_path, bpe=bpe, **kwargs)

    @property
    def space(self) -> SearchSpace:
        return self.encoder.space

    @property
    def child(self) -> Child:
        return self.encoder.child
