"""The search space, as plain data (no torch): every other part reads it.

A super-net has ``num_layers`` layers; each layer holds every candidate
operator, and a *child* picks one candidate per layer.  A child is written as
one operator name per layer, ``MHA12,FFN,CONV3,...``, and held in code as a
tuple of candidate indices, which is what samplers produce and models consume.

Layers may differ in their candidates: ``MHA4,MHA8|FFN1024,FFN2048`` gives
layer l the ``l mod 2``-th group (a BERT-like layout, MHA and FFN alternating);
without ``|`` every layer has every candidate. Candidate indices are global
(over the union of the groups, in order of appearance).

Operator names carry their size:

* ``MHA<h>``  multi-head self-attention with ``h`` heads over a Q/K/V width of
  ``qkv_dim`` (the hidden size unless the space says otherwise), or, in a
  space with a fixed ``head_dim``, ``h`` heads of that width each;
* ``FFN``     feed-forward network with the space's default inner size,
  ``FFN<d>`` with inner size ``d``;
* ``CONV<k>`` separable convolution over the sequence with kernel ``k``.

In a *weight-entangled* space (``entangled``) the candidates of one kind share
one weight tensor, that of the kind's largest candidate: ``MHA<h>`` uses its
first ``h`` heads (the head width is fixed, ``qkv_dim`` / the most heads),
``FFN<d>`` its first ``d`` inner units and ``CONV<k>`` the centre ``k`` taps of
its kernel. Children, and so sampling and search, are the same as in an
ordinary space; only the super-net's weights are fewer.

Parameter and FLOP counts follow the modules in ``modules/operators.py``
exactly (a test checks them against the built model), so that limits used in
search are honest.
"""

import contextlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .errors import MagicError

KINDS = ("MHA", "FFN", "CONV")
_OP_RE = re.compile(r"^(MHA|FFN|CONV)(\d*)$")
_OP_SYNTAX = "MHA<heads>, FFN, FFN<inner size> or CONV<kernel>"

Child = Tuple[int, ...]  # one candidate index per layer


# What a description read from a file may ask for: far beyond any encoder (the paper's have 24 layers of
# width 1024), and small enough that a malformed or hostile file is refused before anything is built.
MAX_LAYERS = 1024
MAX_WIDTH = 1 << 20


class SpaceError(MagicError, ValueError):
    """A search space or architecture description that cannot be used."""


@dataclass(frozen=True)
class Operator:
    """One candidate: its kind and size (heads, inner size or kernel)."""

    kind: str
    size: int
    written_default: bool = False  # a bare "FFN": printed without its size

    @property
    def name(self) -> str:
        if self.written_default:
            return self.kind
        return f"{self.kind}{self.size}"

    def __str__(self) -> str:
        return self.name


def parse_operator(token: str, default_ffn_dim: int) -> Operator:
    """Parse one operator name; raise SpaceError naming the problem."""
    text = token.strip()
    match = _OP_RE.match(text)
    if not match:
        raise SpaceError(f"unknown operator '{text}' (expected {_OP_SYNTAX})")
    kind, digits = match.groups()
    if not digits:
        if kind != "FFN":
            raise SpaceError(f"operator '{text}' needs a size ({kind}<n>)")
        return Operator("FFN", default_ffn_dim, written_default=True)
    size = int(digits)
    if size < 1:
        raise SpaceError(f"operator '{text}' has size 0")
    if kind == "CONV" and size % 2 == 0:
        raise SpaceError(f"operator '{text}': the convolution kernel must be odd")
    return Operator(kind, size)


@dataclass(frozen=True)
class SearchSpace:
    """Layers, candidates and the dimensions every operator shares."""

    num_layers: int
    candidates: Tuple[Operator, ...]
    hidden_dim: int
    ffn_dim: int
    qkv_dim: int
    embed_dim: int  # factorised embedding width; == hidden_dim when not factorised
    head_dim: int = 0  # > 0: MHA<h> has h heads of this width (Q/K/V width h * head_dim)
    entangled: bool = False  # candidates of a kind share the weights of its largest
    groups: Tuple[Tuple[int, ...], ...] = ()  # per layer group, its candidates; () = all, in every layer

    @classmethod
    def build(
        cls,
        num_layers: int,
        candidate_ops: str,
        hidden_dim: int,
        ffn_dim: int,
        qkv_dim: int = 0,
        embed_dim: int = 0,
        head_dim: int = 0,
        entangled: bool = False,
    ) -> "SearchSpace":
        """Build from command-line style values; ``0`` means "the hidden size".

        An entangled space fixes the head width at ``qkv_dim`` over the largest
        MHA's heads, unless ``head_dim`` gives it."""
        if num_layers < 1:
            raise SpaceError(f"a super-net needs at least one layer, got {num_layers}")
        if hidden_dim < 1 or ffn_dim < 1:
            raise SpaceError("hidden and FFN sizes must be positive")
        group_ops = []
        for group in str(candidate_ops or "").split("|"):
            tokens = group.split(",")
            if not group.strip() or any(not t.strip() for t in tokens):
                raise SpaceError(f"empty candidate operator in '{candidate_ops}'")
            parsed, seen = [], {}
            for op in (parse_operator(t, ffn_dim) for t in tokens):
                key = (op.kind, op.size)
                if key in seen:
                    raise SpaceError(f"candidate '{op}' is listed twice (as '{seen[key]}')")
                seen[key] = op.name
                parsed.append(op)
            group_ops.append(parsed)
        if len(group_ops) > num_layers:
            raise SpaceError(f"{len(group_ops)} candidate groups for {num_layers} layers")
        union = {}
        for op in (op for group in group_ops for op in group):
            union.setdefault((op.kind, op.size), op)
        ops = tuple(union.values())
        index = {key: i for i, key in enumerate(union)}
        groups = tuple(tuple(index[(op.kind, op.size)] for op in group) for group in group_ops)
        qkv_dim = qkv_dim or hidden_dim
        heads = [op.size for op in ops if op.kind == "MHA"]
        if entangled and not head_dim and heads:
            if qkv_dim % max(heads):
                raise SpaceError(
                    f"entangled space: {max(heads)} heads (the largest MHA) do not divide the Q/K/V width {qkv_dim}"
                )
            head_dim = qkv_dim // max(heads)
        if head_dim < 0:
            raise SpaceError(f"head width must be positive, got {head_dim}")
        space = cls(
            num_layers=num_layers,
            candidates=ops,
            hidden_dim=hidden_dim,
            ffn_dim=ffn_dim,
            qkv_dim=qkv_dim,
            embed_dim=embed_dim or hidden_dim,
            head_dim=head_dim,
            entangled=bool(entangled),
            groups=groups if len(groups) > 1 else (),
        )
        for op in ops:
            if op.kind == "MHA" and not head_dim and space.qkv_dim % op.size:
                raise SpaceError(
                    f"'{op}': {op.size} heads do not divide the Q/K/V width {space.qkv_dim}"
                )
        return space

    # ------------------------------------------------------------------ children
    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    @cached_property
    def layer_options(self) -> Tuple[Tuple[int, ...], ...]:
        """The candidates of each layer (indices)."""
        groups = self.groups or (tuple(range(self.num_candidates)),)
        return tuple(groups[layer % len(groups)] for layer in range(self.num_layers))

    @property
    def num_children(self) -> int:
        return math.prod(len(options) for options in self.layer_options)

    @property
    def candidate_names(self) -> Tuple[str, ...]:
        return tuple(op.name for op in self.candidates)

    def parse(self, arch: str) -> Child:
        """``"MHA12,FFN,..."`` -> candidate indices, or SpaceError naming the problem."""
        if arch is None or not str(arch).strip():
            raise SpaceError("empty architecture string")
        tokens = str(arch).split(",")
        if len(tokens) != self.num_layers:
            raise SpaceError(
                f"architecture has {len(tokens)} layers, the space has {self.num_layers}"
            )
        index = {(op.kind, op.size): i for i, op in enumerate(self.candidates)}
        child = []
        for layer, token in enumerate(tokens):
            if not token.strip():
                raise SpaceError(f"empty operator at layer {layer}")
            try:
                op = parse_operator(token, self.ffn_dim)
            except SpaceError as err:
                raise SpaceError(f"layer {layer}: {err}") from None
            c = index.get((op.kind, op.size))
            if c is None or c not in self.layer_options[layer]:
                where = "layer" if c is not None else "space"
                names = ", ".join(self.candidates[o].name for o in self.layer_options[layer])
                raise SpaceError(
                    f"layer {layer}: operator '{token.strip()}' is not a candidate of this {where} (candidates: {names})"
                )
            child.append(c)
        return tuple(child)

    def validate(self, child: Sequence[int]) -> Child:
        """Check a child given as indices; return it as a tuple."""
        child = tuple(int(c) for c in child)
        if len(child) != self.num_layers:
            raise SpaceError(f"architecture has {len(child)} layers, the space has {self.num_layers}")
        for layer, c in enumerate(child):
            if not 0 <= c < self.num_candidates:
                raise SpaceError(f"layer {layer}: candidate index {c} out of range")
            if c not in self.layer_options[layer]:
                raise SpaceError(f"layer {layer}: '{self.candidates[c].name}' is not a candidate of this layer")
        return child

    def format(self, child: Sequence[int]) -> str:
        return ",".join(self.candidates[c].name for c in self.validate(child))

    # ------------------------------------------------------------------ sizes
    def attention_width(self, op: Operator) -> int:
        """Q/K/V width of an MHA candidate."""
        return op.size * self.head_dim if self.head_dim else self.qkv_dim

    def largest(self, kind: str, layer: int) -> Optional[Operator]:
        """A layer's largest candidate of a kind (whose weights an entangled space shares)."""
        ops = [self.candidates[c] for c in self.layer_options[layer] if self.candidates[c].kind == kind]
        return max(ops, key=lambda op: op.size) if ops else None

    def kinds(self, layer: int) -> Tuple[str, ...]:
        """The operator kinds among a layer's candidates, in the order they first appear."""
        return tuple(dict.fromkeys(self.candidates[c].kind for c in self.layer_options[layer]))

    def operator_params(self, op: Operator) -> int:
        """Parameters of one sub-layer: the operator plus its LayerNorm."""
        h, q = self.hidden_dim, self.attention_width(op)
        layer_norm = 2 * h
        if op.kind == "MHA":
            body = 3 * (h * q + q) + (q * h + h)
        elif op.kind == "FFN":
            body = (h * op.size + op.size) + (op.size * h + h)
        else:  # CONV: pointwise in, depthwise k, pointwise out
            body = (h * h + h) + (op.size * h + h) + (h * h + h)
        return body + layer_norm

    def operator_flops(self, op: Operator, seq_len: int) -> int:
        """Forward FLOPs (2 per multiply-add) of one operator over ``seq_len`` tokens."""
        h, q, n = self.hidden_dim, self.attention_width(op), seq_len
        if op.kind == "MHA":
            return 2 * n * h * 3 * q + 2 * 2 * n * n * q + 2 * n * q * h
        if op.kind == "FFN":
            return 2 * 2 * n * h * op.size
        return 2 * 2 * n * h * h + 2 * n * op.size * h

    def layer_params(self, child: Sequence[int]) -> int:
        """Parameters of a child's layers (what differs between children)."""
        return sum(self.operator_params(self.candidates[c]) for c in self.validate(child))

    def embedding_params(self, vocab_size: int, max_positions: int) -> int:
        """Parameters of the embeddings: the token table (with the ALBERT-style
        factorisation when ``embed_dim < hidden_dim``), learned positions with
        fairseq's padding offset, and the embedding LayerNorm."""
        h, e, v = self.hidden_dim, self.embed_dim, vocab_size
        table = v * e + (e * h if e != h else 0)
        positions = (max_positions + 2) * h  # padding_idx + 1 offset rows
        return table + positions + 2 * h

    def lm_head_params(self, vocab_size: int) -> int:
        """Parameters of the masked-LM head: dense, LayerNorm and the output bias; its
        output matrix is the token table (tied, as in RoBERTa), counted once, with the embeddings."""
        h, e = self.hidden_dim, self.embed_dim
        return (h * e + e) + 2 * e + vocab_size

    def shared_params(self, vocab_size: int, max_positions: int) -> int:
        """Parameters every child has: the embeddings and the masked-LM head."""
        return self.embedding_params(vocab_size, max_positions) + self.lm_head_params(vocab_size)

    def classification_head_params(self, num_classes: int) -> int:
        """fairseq's RoBERTa classification head: dense (H x H) and the projection to the classes."""
        h = self.hidden_dim
        return (h * h + h) + (h * num_classes + num_classes)

    def params(self, child: Sequence[int], vocab_size: int = 0, max_positions: int = 0) -> int:
        """Total parameters of a child; embeddings and the masked-LM head are counted when ``vocab_size`` is given."""
        total = self.layer_params(child)
        if vocab_size:
            total += self.shared_params(vocab_size, max_positions)
        return total

    def head_flops(self, vocab_size: int, seq_len: int) -> int:
        """Forward FLOPs of the masked-LM head over ``seq_len`` tokens: the dense
        transform (H x H) and the output projection over the vocabulary (through
        the factorised width E when E < H), as the paper's Table 2 counts them."""
        h, e, n = self.hidden_dim, self.embed_dim, seq_len
        return 2 * n * h * h + (2 * n * h * e if e != h else 0) + 2 * n * e * vocab_size

    def flops(self, child: Sequence[int], seq_len: int = 128, vocab_size: int = 0) -> int:
        """Forward FLOPs (2 per multiply-add) of a child for one sequence of ``seq_len``
        tokens: its layers, and with ``vocab_size`` the masked-LM head too (what the
        paper reports: BERT-base 2.9e10, RoBERTa-base 3.3e10 at 128 tokens).
        Embedding lookups, LayerNorms, softmax and activations are not counted."""
        layers = sum(self.operator_flops(self.candidates[c], seq_len) for c in self.validate(child))
        return layers + (self.head_flops(vocab_size, seq_len) if vocab_size else 0)

    def size(self, child: Sequence[int], vocab_size: int, max_positions: int, seq_len: int = 128,
             classes: Sequence[int] = ()) -> List[Tuple[str, int, int]]:
        """(part, parameters, forward FLOPs over ``seq_len`` tokens) of a child, part by part:
        embeddings (lookups: no FLOPs counted), layers, the masked-LM head, and a
        classification head of each of ``classes`` (applied to the first token);
        the sums are what ``params`` and ``flops`` give, and what the model holds."""
        h = self.hidden_dim
        rows = [("embeddings", self.embedding_params(vocab_size, max_positions), 0),
                ("layers", self.layer_params(child), self.flops(child, seq_len)),
                ("masked-LM head", self.lm_head_params(vocab_size), self.head_flops(vocab_size, seq_len))]
        for c in classes:
            rows.append((f"classification head ({c} classes)", self.classification_head_params(c),
                         2 * (h * h + h * c)))
        return rows

    def supernet_params(self) -> int:
        """Parameters of all layers of the super-net: every candidate of every
        layer, or in an entangled space the largest candidate of each kind."""
        if self.entangled:
            return sum(self.operator_params(self.largest(kind, layer))
                       for layer in range(self.num_layers) for kind in self.kinds(layer))
        return sum(self.operator_params(self.candidates[c]) for options in self.layer_options for c in options)

    # ------------------------------------------------------------------ I/O
    @property
    def candidate_ops(self) -> str:
        """The candidates as written on the command line (with ``|`` between groups)."""
        if not self.groups:
            return ",".join(self.candidate_names)
        return "|".join(",".join(self.candidates[c].name for c in group) for group in self.groups)

    def to_dict(self) -> Dict:
        d = asdict(self)
        d["candidates"] = list(self.candidate_names)
        d["groups"] = [[self.candidates[c].name for c in group] for group in self.groups]
        return d

    @classmethod
    def from_dict(cls, d: Dict) -> "SearchSpace":
        """The space of an architecture file or checkpoint; SpaceError naming a malformed field."""
        if not isinstance(d, dict):
            raise SpaceError(f"malformed search space description: expected an object, got {type(d).__name__}")

        def integer(key: str, default: Optional[int] = None) -> int:
            if key not in d and default is not None:
                return default
            if key not in d:
                raise SpaceError(f"malformed search space description: no '{key}'")
            value = d[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise SpaceError(f"malformed search space description: '{key}' must be an integer, got {value!r}")
            most = MAX_LAYERS if key == "num_layers" else MAX_WIDTH
            if not (1 if default is None else 0) <= value <= most:  # before anything is built of that size
                raise SpaceError(f"malformed search space description: '{key}' must be between "
                                 f"{1 if default is None else 0} and {most}, got {value}")
            return value

        groups = d.get("groups") or [d.get("candidates")]
        if not isinstance(groups, list) or not all(
                isinstance(g, list) and g and all(isinstance(op, str) for op in g) for g in groups):
            raise SpaceError("malformed search space description: 'candidates' must be a list of operator names "
                             "('groups': a list of such lists)")
        return cls.build(
            num_layers=integer("num_layers"),
            candidate_ops="|".join(",".join(group) for group in groups),
            hidden_dim=integer("hidden_dim"),
            ffn_dim=integer("ffn_dim"),
            qkv_dim=integer("qkv_dim", 0),
            embed_dim=integer("embed_dim", 0),
            head_dim=integer("head_dim", 0),
            entangled=bool(d.get("entangled", False)),
        )

    def describe(self) -> str:
        return (
            f"{self.num_layers} layers x {{{self.candidate_ops.replace(',', ', ').replace('|', ' | ')}}}"
            f"{' (weight-entangled)' if self.entangled else ''}, "
            f"hidden {self.hidden_dim}, {self.num_children:.3g} children"
        )


def write_whole(path: str, text: str) -> None:
    """``text`` at ``path``, whole or not at all: written beside it and renamed into place, so a full disk,
    a file-size limit or a kill leaves the previous file (one line saying why)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise MagicError(f"cannot write {path}: {err.strerror or err}") from None


def save_child(path: str, space: SearchSpace, child: Sequence[int], **extra) -> None:
    """Write a child and the space it belongs to as JSON (whole or not at all)."""
    record = {"arch": space.format(child), "space": space.to_dict()}
    record.update(extra)
    write_whole(path, json.dumps(record, indent=2) + "\n")


def names_a_file(arch: str) -> bool:
    """Whether an architecture given on the command line names a file (or a folder) rather than
    being a string of operators: it ends in .json or is an existing path."""
    arch = arch.strip()
    return arch.endswith(".json") or os.path.exists(arch)


def load_child(path: str, space: Optional[SearchSpace] = None) -> Tuple[SearchSpace, Child]:
    """Read an architecture file; check it against ``space`` when one is given."""
    if os.path.isdir(path):
        raise SpaceError(f"{path} is a folder, not an architecture file (a .json file or a string like MHA4,FFN)")
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read())
    except FileNotFoundError:
        raise SpaceError(f"architecture file not found: {path}") from None
    except OSError as err:
        raise SpaceError(f"cannot read architecture file {path}: {err.strerror}") from None
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SpaceError(f"architecture file {path} is not valid JSON: {reason}") from None
    if not isinstance(record, dict) or "arch" not in record or "space" not in record:
        raise SpaceError(f"architecture file {path} needs 'arch' and 'space' entries")
    if not isinstance(record["arch"], str):
        raise SpaceError(f"architecture file {path}: 'arch' must be a string of operator names, one per layer")
    file_space = SearchSpace.from_dict(record["space"])
    if space is not None and file_space != space:
        raise SpaceError(
            f"architecture file {path} belongs to another space "
            f"({file_space.describe()}; expected {space.describe()})"
        )
    return file_space, file_space.parse(record["arch"])


def hamming(a: Iterable[int], b: Iterable[int]) -> int:
    """Number of layers in which two children differ."""
    return sum(x != y for x, y in zip(a, b))
