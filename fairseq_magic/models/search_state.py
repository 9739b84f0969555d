"""What a search needs to continue exactly after a resume, in one object.

fairseq's Trainer restores the model from a checkpoint but not the task, so
the super-net model owns its ``SearchState`` and saves it inside its state dict
(as JSON, under ``search_state``); the training strategies and MAGIC-A's
anchor (``training/anchor.py``) read and write it. The child being trained lives here and nowhere else: the
strategy sets the model's layers from it before every forward.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Optional

# the JSON names of the fields, as checkpoints have always stored them
_SAVED_AS = {"update": "last_update", "child": "last_child"}


@dataclass
class AnchorState:
    """MAGIC-A's anchor as a checkpoint stores it (under ``anchor``, these names);
    its rules and decisions are ``training/anchor.py``'s."""

    arch: Optional[str] = None  # the anchor's architecture string (None: not chosen yet)
    score: Optional[float] = None  # its last Val score (higher is better; None: not scored since chosen)
    replacements: int = 0  # how many times a better child replaced it
    percentile: Optional[float] = None  # top-p policy: its place in the last ranking (0 = best)

    def to_dict(self) -> Dict:
        """Fields never set are left out; an anchor never chosen is saved as nothing."""
        return {} if self.arch is None else {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, saved: Dict) -> "AnchorState":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})  # keys of other versions are ignored


@dataclass
class SearchState:
    update: Optional[int] = None  # the update whose child is ``child``
    child: Optional[str] = None  # the architecture string of the child trained at ``update``
    micro: Optional[int] = None  # --sampler fair: the micro-batch of ``update`` that ``child`` is for
    visits: Optional[Dict] = None  # training counts per (layer, operator) and adjacent pair (training/training_share.py)
    allowed: Optional[List[List[int]]] = None  # each layer's candidates left by shrinking (None: all)
    shrink_epoch: Optional[int] = None  # the epoch whose start last shrank the space
    anchor: AnchorState = field(default_factory=AnchorState)  # MAGIC-A's anchor (training/anchor.py)
    top_p_epoch: Optional[int] = None  # the epoch whose start last ran the anchor's top-p choice
    split: Optional[Dict] = None  # a few-shot sub-super-net: {"layer": j, "group": [its candidates of layer j]}

    def to_dict(self) -> Dict:
        """The JSON a checkpoint stores (fields never set are left out)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            value = value.to_dict() if isinstance(value, AnchorState) else value
            if value is not None and value != {}:
                out[_SAVED_AS.get(f.name, f.name)] = value
        return out

    def load_dict(self, saved: Dict) -> None:
        """Replace the contents in place (holders of this object see the loaded state)."""
        names = {_SAVED_AS.get(f.name, f.name): f.name for f in fields(self)}
        fresh = SearchState()
        for key, value in saved.items():
            if key in names:  # keys of other versions are ignored
                setattr(fresh, names[key], AnchorState.from_dict(value) if key == "anchor" else value)
        for f in fields(self):
            setattr(self, f.name, getattr(fresh, f.name))
