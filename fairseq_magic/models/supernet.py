"""The weight-sharing super-net, as a fairseq RoBERTa model.

``MagicSupernetModel`` subclasses ``RobertaModel`` and swaps in its parts by
overriding fairseq's factory methods (as ``examples/linformer`` does), so
classification heads, ``register_classification_head``, the hub interface and
fairseq's masked-LM and sentence-prediction recipes keep working:

    RobertaEncoder.build_encoder      -> SupernetTransformerEncoder
      TransformerEncoder.build_encoder_layer -> SupernetLayer (all candidates: CandidateLayer, or
                                              EntangledSupernetLayer in a weight-entangled space)
    RobertaEncoder.build_embedding    -> FactorizedEmbedding (ALBERT style)
    RobertaEncoder.build_lm_head      -> FactorizedLMHead

A forward runs the child chosen with :meth:`MagicSupernetModel.set_child`;
``model(tokens, return_all_hiddens=True)`` also returns every layer's output
H_n in ``extra["inner_states"]`` (fairseq's own mechanism, ``(T, B, C)`` each,
the embedding output first).
"""

import os
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Dict, Iterator, List, Optional, Sequence, Union

import torch
import torch.nn as nn
from fairseq import utils
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.roberta.model import (
    RobertaEncoder,
    RobertaLMHead,
    RobertaModel,
    base_architecture as roberta_base_architecture,
)
from fairseq.models.transformer import TransformerEncoder
from fairseq.modules.transformer_sentence_encoder import init_bert_params
from fairseq.utils import safe_getattr
from omegaconf import II, OmegaConf

from ..checkpoint import check_dictionary
from ..errors import MagicError
from ..modules import CandidateLayer, ChildLayer, SupernetLayer, build_sublayer, embedded
from ..modules.entangled import EntangledSupernetLayer
from ..ranges import check_section
from ..space import Child, SearchSpace, load_child, names_a_file
from .hub import FromPretrained
from .search_state import SearchState
from .state_format import (
    ARCH_WEIGHTS_PREFIX, SEARCH_STATE_KEY, add_format_version, arch_weights_state, decode_json, encode_json, size_config,
    supernet_space, upgrade_state, VersionedState,
)

ACTIVATIONS = ChoiceEnum(utils.get_available_activation_fns())


@dataclass
class EncoderOptions(FairseqDataclass):
    """What both models take beside their architecture: RoBERTa's dropouts, activations and head."""

    dropout: float = field(default=0.1, metadata={"range": "[0, 1)", "help": "dropout on each sub-layer's output"})
    attention_dropout: float = field(default=0.1, metadata={"range": "[0, 1)", "help": "dropout on attention weights"})
    activation_dropout: float = field(default=0.0, metadata={"range": "[0, 1)",
                                                             "help": "dropout after the FFN activation"})
    activation_fn: ACTIVATIONS = field(default="gelu", metadata={"help": "FFN activation"})
    pooler_activation_fn: ACTIVATIONS = field(default="tanh", metadata={"help": "classification head activation"})
    pooler_dropout: float = field(default=0.0, metadata={"range": "[0, 1)", "help": "classification head dropout"})
    untie_weights_roberta: bool = field(default=False, metadata={"help": "untie input and output embeddings"})
    spectral_norm_classification_head: bool = field(default=False, metadata={"help": "spectral norm on the head"})


@dataclass
class MagicSupernetConfig(EncoderOptions):
    supernet_layers: int = field(
        default=26, metadata={"range": "[1, 1024]", "help": "number of super-net layers; each layer runs one operator"}
    )
    candidate_ops: str = field(
        default="MHA12,FFN,CONV3,CONV5",
        metadata={"help": "candidate operators of every layer: MHA<heads>, FFN, FFN<inner>, CONV<kernel>; "
                  "groups separated by | take turns over the layers (MHA4,MHA8|FFN1024,FFN2048)"},
    )
    encoder_embed_dim: int = field(default=768, metadata={"range": "[1, inf)", "help": "hidden size"})
    encoder_ffn_embed_dim: int = field(default=3072, metadata={"range": "[1, inf)", "help": "inner size of a bare FFN"})
    attention_qkv_dim: int = field(
        default=0, metadata={"range": "[0, inf)", "help": "Q/K/V width of every MHA (0: the hidden size)"}
    )
    embed_factor_dim: int = field(
        default=512,
        metadata={"range": "[0, inf)",
                  "help": "factorised token-embedding width, projected to the hidden size (0: no factorisation)"},
    )
    child_arch: str = field(
        default="",
        metadata={"help": "child to run when no sampler chooses one (inference, hub): an architecture string or JSON file"},
    )
    weight_entanglement: bool = field(
        default=False,
        metadata={"help": "weight-entangled space: the candidates of a kind share the largest one's weights "
                  "(MHA<h>: first h heads, FFN<d>: first d units, CONV<k>: centre k taps)"},
    )
    max_positions: int = II("task.tokens_per_sample")


def resolve_child(arch: Union[str, Sequence[int]], space: SearchSpace) -> Child:
    """An architecture string, a JSON architecture file, or candidate indices."""
    if isinstance(arch, str):
        if names_a_file(arch):
            return load_child(arch.strip(), space)[1]
        return space.parse(arch)
    return space.validate(arch)


class FactorizedEmbedding(nn.Module):
    """ALBERT-style token embedding: a (V, E) table times an (E, H) projection."""

    def __init__(self, num_embeddings: int, factor_dim: int, embedding_dim: int, padding_idx: int):
        super().__init__()
        self.table = nn.Embedding(num_embeddings, factor_dim, padding_idx)
        self.proj = nn.Linear(factor_dim, embedding_dim, bias=False)
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx

    @property
    def weight(self):  # tied to the LM head's output projection, (V, E)
        return self.table.weight

    def forward(self, tokens):
        return self.proj(self.table(tokens))


class FactorizedLMHead(RobertaLMHead):
    """RoBERTa's LM head whose dense layer maps H -> E, to meet a (V, E) tied table."""

    def __init__(self, embed_dim: int, factor_dim: int, output_dim: int, activation_fn: str, weight=None):
        super().__init__(factor_dim, output_dim, activation_fn, weight)
        self.dense = nn.Linear(embed_dim, factor_dim)


class SupernetTransformerEncoder(TransformerEncoder):
    """fairseq's TransformerEncoder whose layers are super-net layers, or, given a
    child, that child's operators only (a stand-alone ``magic_child``)."""

    def __init__(self, args, dictionary, embed_tokens, space: SearchSpace, child: Optional[Child] = None):
        # read by build_encoder_layer, which fairseq calls once per layer during super().__init__
        self.space, self.child, self._layers_built = space, child, 0
        super().__init__(args, dictionary, embed_tokens)

    def build_encoder_layer(self, args):
        layer = self._layers_built
        self._layers_built += 1
        if self.child is None:
            return (EntangledSupernetLayer if self.space.entangled else CandidateLayer)(self.space, args, layer)
        return build_sublayer(self.space.candidates[self.child[layer]], self.space, args, cls=ChildLayer)


class SupernetEncoder(RobertaEncoder):
    """RoBERTa's encoder with super-net (or child) layers and factorised embeddings."""

    def __init__(self, args, dictionary, space: SearchSpace, child: Optional[Child] = None):
        self.space, self.child = space, child  # read by the build_* factories during super().__init__
        super().__init__(args, dictionary)

    @property
    def factorised(self) -> bool:
        return self.space.embed_dim != self.space.hidden_dim

    def build_embedding(self, vocab_size, embedding_dim, padding_idx):
        if not self.factorised:
            return super().build_embedding(vocab_size, embedding_dim, padding_idx)
        return FactorizedEmbedding(vocab_size, self.space.embed_dim, embedding_dim, padding_idx)

    def build_encoder(self, args, dictionary, embed_tokens):
        encoder = SupernetTransformerEncoder(args, dictionary, embed_tokens, self.space, self.child)
        encoder.apply(init_bert_params)
        return encoder

    def build_lm_head(self, embed_dim, output_dim, activation_fn, weight):
        if not self.factorised:
            return super().build_lm_head(embed_dim, output_dim, activation_fn, weight)
        return FactorizedLMHead(embed_dim, self.space.embed_dim, output_dim, activation_fn, weight)


@contextmanager
def writable(cfg):
    """Let a build fill in fields of an omegaconf config (as RobertaModel.build_model does)."""
    if OmegaConf.is_config(cfg):
        OmegaConf.set_struct(cfg, False)
    try:
        yield cfg
    finally:
        if OmegaConf.is_config(cfg):
            OmegaConf.set_struct(cfg, True)


def build_roberta_model(cls, args, task, space: SearchSpace, child: Optional[Child] = None):
    """The end of both models' build_model: sizes from the space, the encoder, the model."""
    for key, value in size_config(space).items():
        if key != "attention_head_dim" or safe_getattr(args, key, None) is not None:  # the super-net has none
            setattr(args, key, value)
    args.encoder_layers = space.num_layers
    if safe_getattr(args, "max_positions", None) is None:
        args.max_positions = safe_getattr(args, "tokens_per_sample", None) or task.max_positions()
    model = cls(args, SupernetEncoder(args, task.source_dictionary, space, child))
    model.dictionary_file = dictionary_file(task)
    model.register_load_state_dict_pre_hook(_check_dictionary)
    return model


def dictionary_file(task) -> Optional[str]:
    """Where ``task``'s dictionary came from: DATA/dict.txt, or DATA/input0/dict.txt (sentence_prediction)."""
    data = safe_getattr(getattr(task, "cfg", None), "data", None)
    if not data:
        return None
    first = str(data).split(os.pathsep)[0]
    sentences = os.path.join(first, "input0", "dict.txt")
    return sentences if os.path.isfile(sentences) else os.path.join(first, "dict.txt")


def _check_dictionary(module, state_dict, prefix, *args):
    """Load pre-hook: the checkpoint's token embedding fits the model's dictionary."""
    check_dictionary(state_dict, prefix, len(module.encoder.dictionary), module.dictionary_file)


def _save_search_state(module, state_dict, prefix, local_metadata):
    """State-dict hook: the search state (and architecture weights) are saved with the weights."""
    add_format_version(state_dict, prefix)
    state_dict[prefix + SEARCH_STATE_KEY] = encode_json(module.search_state.to_dict())
    if module.arch_weights is not None:
        for key, value in module.arch_weights.state_dict().items():
            state_dict[prefix + ARCH_WEIGHTS_PREFIX + key] = value


def _load_search_state(module, state_dict, prefix, *args):
    """Load pre-hook: take the search state out before parameters are matched."""
    upgrade_state(state_dict, prefix)  # done already when fairseq loads; not when torch's load_state_dict is called
    encoded = state_dict.pop(prefix + SEARCH_STATE_KEY, None)
    if encoded is not None:
        module.search_state.load_dict(decode_json(encoded))
    arch = arch_weights_state(state_dict, prefix)
    for key in arch:
        del state_dict[prefix + ARCH_WEIGHTS_PREFIX + key]
    if arch and module.arch_weights is not None:
        module.arch_weights.load_state_dict(arch)
    elif arch:  # loaded before the task attached its architecture weights
        module._pending_arch_state = arch


@register_model("magic_supernet", dataclass=MagicSupernetConfig)
class MagicSupernetModel(FromPretrained, VersionedState, RobertaModel):
    """Chain-styled super-net: each layer chooses one of the candidate operators.

    ``search_state`` holds what training needs to resume a search exactly
    (previous child, anchor, ...). It is saved inside the model's state dict,
    because fairseq's Trainer restores the model on resume but not the task.
    """

    def __init__(self, args, encoder):
        super().__init__(args, encoder)
        self.search_state = SearchState()
        self.arch_weights = None  # relaxation.ArchitectureWeights, when a gradient-based search runs
        self._pending_arch_state: Optional[Dict] = None
        self._register_state_dict_hook(_save_search_state)
        self.register_load_state_dict_pre_hook(_load_search_state)

    @classmethod
    def add_args(cls, parser):
        # RobertaModel.add_args is argparse-only; take ours from the dataclass,
        # without defaults so that named architectures can fill them.
        gen_parser_from_dataclass(parser, MagicSupernetConfig(), delete_default=True)

    @classmethod
    def build_model(cls, args, task):
        check_section(args, MagicSupernetConfig)
        with writable(args):
            magic_supernet_base(args)
            model = build_roberta_model(cls, args, task, supernet_space(args))
        if safe_getattr(args, "child_arch", ""):
            model.set_child(args.child_arch)
        return model

    # ------------------------------------------------------------ children
    @property
    def space(self) -> SearchSpace:
        return self.encoder.space

    @property
    def layers(self) -> List[SupernetLayer]:
        return list(self.encoder.sentence_encoder.layers)

    @property
    def child(self) -> Optional[Child]:
        active = [layer.active for layer in self.layers]
        return None if any(a is None for a in active) else tuple(active)

    def set_child(self, arch: Union[str, Sequence[int]]) -> Child:
        """Choose the child every following forward runs; returns its indices."""
        child = resolve_child(arch, self.space)
        for layer, choice in zip(self.layers, child):
            layer.active = choice
        return child

    def set_mixture(self, weights: torch.Tensor, run: Sequence[Sequence[int]]) -> None:
        """Run the weighted mixture of candidates (gradient-based search):
        layer ``l`` outputs ``sum_c weights[l, c] * candidate_c(x)`` over the
        candidates ``run[l]``. Replaces any chosen child."""
        if tuple(weights.shape) != (self.space.num_layers, self.space.num_candidates):
            raise MagicError(f"mixture weights of shape {tuple(weights.shape)} for a space of "
                             f"{self.space.num_layers} x {self.space.num_candidates}")
        empty = [l for l, candidates in enumerate(run) if not candidates]
        if empty:
            raise MagicError(f"mixture: layer {empty[0]} has no candidate with a positive weight")
        device = next(self.parameters()).device
        weights = weights.to(device)
        for l, layer in enumerate(self.layers):
            layer.active = None
            layer.mixture = (weights[l], list(run[l]))

    def attach_arch_weights(self, arch_weights) -> None:
        """Keep ``arch_weights`` with the model, so that it is saved in and
        restored from checkpoints; state loaded before it was attached is applied."""
        self.arch_weights = arch_weights
        if self._pending_arch_state is not None:
            arch_weights.load_state_dict(self._pending_arch_state)
            self._pending_arch_state = None

    @contextmanager
    def child_context(self, arch) -> Iterator[Child]:
        """Run a different child inside a ``with`` block, then restore the previous one."""
        previous = self.child
        child = self.set_child(arch)
        try:
            yield child
        finally:
            for layer, choice in zip(self.layers, previous or [None] * len(self.layers)):
                layer.active = choice

    def padding_mask(self, src_tokens: torch.Tensor) -> Optional[torch.Tensor]:
        """(B, T), True at padding; None when the batch has none (as fairseq's layers are called)."""
        pads = src_tokens.eq(self.encoder.sentence_encoder.padding_idx)
        return pads if pads.any() else None

    def embed(self, src_tokens: torch.Tensor):
        """(H_0, padding mask or None): the start of fairseq's TransformerEncoder
        forward, up to the first layer."""
        return embedded(self.encoder.sentence_encoder, src_tokens)

    def hidden_states(self, src_tokens: torch.Tensor, upto: int, prefix: Sequence[torch.Tensor] = ()) -> List[torch.Tensor]:
        """H_0..H_upto of the current child, ``(T, B, C)`` each, without running
        the layers above ``upto`` or the LM head: the forward that alignment
        targets need. ``prefix``: H_0..H_p already computed by a child that shares
        the first p layers with this one (and ran in the same mode); they are
        reused, and only the layers above p run."""
        if prefix:
            states, padding_mask = list(prefix), self.padding_mask(src_tokens)
        else:
            x, padding_mask = self.embed(src_tokens)
            states = [x]
        for layer in self.encoder.sentence_encoder.layers[len(states) - 1:upto]:
            states.append(layer(states[-1], encoder_padding_mask=padding_mask))
        return states[:upto + 1]

    def run_layer(self, layer: int, candidate: int, x: torch.Tensor, padding_mask) -> torch.Tensor:
        """H_{layer+1} from H_layer with ``candidate`` in ``layer`` (whatever child is set)."""
        return self.layers[layer].run_choice(candidate, x, padding_mask)

    def lm_logits(self, last: torch.Tensor, masked_tokens: Optional[torch.Tensor]) -> torch.Tensor:
        """The LM head on H_N (``(T, B, C)``), as the end of the model's forward computes it."""
        encoder = self.encoder.sentence_encoder
        if encoder.layer_norm is not None:
            last = encoder.layer_norm(last)
        return self.encoder.output_layer(last.transpose(0, 1), masked_tokens)

    def operator_parameters(self, layer: int, candidate: int) -> List[nn.Parameter]:
        return self.layers[layer].candidate_parameters(candidate)

    def unused_by(self, children: Sequence[Child]) -> List[nn.Parameter]:
        """Parameters that none of ``children`` computes with (an operator any of them uses is kept)."""
        unused = []
        for layer_index, layer in enumerate(self.layers):
            unused += layer.unused_parameters(sorted({child[layer_index] for child in children}))
        return unused

    def inactive_parameters(self) -> List[nn.Parameter]:
        """Parameters that the current child (or mixture) does not compute with."""
        unused = []
        for layer in self.layers:
            if layer.active is not None:
                unused += layer.unused_parameters([layer.active])
            elif layer.mixture is not None:
                unused += layer.unused_parameters(layer.mixture[1])
            else:
                raise MagicError("no child selected")
        return unused


@contextmanager
def train_mode(module: nn.Module, training: bool) -> Iterator[None]:
    """``module`` in train (``training``) or eval mode inside a ``with`` block, then as it was."""
    was = module.training
    module.train(training)
    try:
        yield
    finally:
        module.train(was)


def wrappers(model) -> Iterator[nn.Module]:
    """``model`` and each module fairseq's distributed wrappers hold inside it (``.module``), outermost first."""
    yield model
    while hasattr(model, "module"):
        model = model.module
        yield model


def unwrap(model) -> MagicSupernetModel:
    """The super-net inside fairseq's distributed wrappers."""
    model = next((m for m in wrappers(model) if isinstance(m, MagicSupernetModel)), model)
    if not isinstance(model, MagicSupernetModel):
        raise MagicError(
            f"task magic_masked_lm trains a super-net (--arch magic_supernet*), got {type(model).__name__}"
        )
    return model


def _set_defaults(args, **defaults):
    for name, value in defaults.items():
        setattr(args, name, safe_getattr(args, name, value))


# ``--arch magic_supernet`` itself is registered by register_model (dataclass
# defaults, which are these); build_model applies this function as well.
def magic_supernet_base(args):
    """The config's defaults for what the command line and a named architecture left unset
    (the space's fields; RoBERTa-base's for the rest)."""
    own = [f for f in fields(MagicSupernetConfig) if f.name not in EncoderOptions.__dataclass_fields__]
    _set_defaults(args, **{f.name: f.default for f in own if not str(f.default).startswith("${")})
    roberta_base_architecture(args)


@register_model_architecture("magic_supernet", "magic_supernet_base")
def magic_supernet_base_architecture(args):
    magic_supernet_base(args)


@register_model_architecture("magic_supernet", "magic_supernet_compress")
def magic_supernet_compress(args):
    # Hidden 512 (the paper's compression space). 512 is not divisible by 12
    # heads, so attention keeps BERT's head width of 64: 8 heads.
    _set_defaults(
        args,
        encoder_embed_dim=512,
        encoder_ffn_embed_dim=2048,
        candidate_ops="MHA8,FFN,CONV3,CONV5",
        embed_factor_dim=0,
    )
    magic_supernet_base(args)


@register_model_architecture("magic_supernet", "magic_supernet_analysis")
def magic_supernet_analysis(args):
    # Table 6: every operator ~1.18M parameters at hidden 768.
    _set_defaults(
        args,
        supernet_layers=12,
        candidate_ops="MHA6,MHA8,FFN,FFN832,CONV3,CONV5",
        encoder_ffn_embed_dim=768,
        attention_qkv_dim=384,
    )
    magic_supernet_base(args)


@register_model_architecture("magic_supernet", "magic_supernet_tangle_tiny")
def magic_supernet_tangle_tiny(args):
    # A weight-entangled space at CPU scale, one elastic operator per layer: attention
    # (2 or 4 heads), FFN (256 or 512), convolution (kernel 3 or 5), FFN, and again.
    _set_defaults(
        args,
        supernet_layers=8,
        candidate_ops="MHA2,MHA4|FFN256,FFN512|CONV3,CONV5|FFN256,FFN512",
        encoder_embed_dim=128,
        encoder_ffn_embed_dim=512,
        embed_factor_dim=0,
        weight_entanglement=True,
    )
    magic_supernet_base(args)


@register_model_architecture("magic_supernet", "magic_supernet_tiny")
def magic_supernet_tiny(args):
    # Small enough to train on two CPU cores in minutes.
    _set_defaults(
        args,
        supernet_layers=8,
        candidate_ops="MHA4,FFN,CONV3,CONV5",
        encoder_embed_dim=128,
        encoder_ffn_embed_dim=512,
        embed_factor_dim=0,
    )
    magic_supernet_base(args)
