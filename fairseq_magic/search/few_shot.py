"""Few-shot super-nets (Zhao et al., ICML 2021; GM-NAS, Hu et al., ICLR 2022):
weight sharing split, not removed.

After a shared warm-up, one layer's candidates are split into K groups. Each
group gets a sub-super-net that starts from the warm-up checkpoint (its weights,
optimizer, schedule and place in the data) and trains only the children whose
operator in that layer is in its group; a child is scored by the sub-super-net
that holds it (``search/ensemble.py`` routes it).

Where to split is GM-NAS's rule measured with this project's instrument of
interference (``analysis/interference.py``): for each layer j >= 1, the cosine
similarity of the gradients that j's candidates put on an operator of layer j-1
(m = 1, averaged over random operators and paths). The candidates are
partitioned into K groups of equal size (up to one) so that the mean similarity
between groups is lowest (a balanced min-cut), and the layer whose best cut is
lowest is split: the candidates whose gradients disagree most stop sharing
weights. (GM-NAS takes the gradients on all shared weights; here on the
operator below the split layer, the one the candidates' interference reaches
first.)

    fairseq-magic few-shot --checkpoint warm/checkpoint_last.pt --out few --groups 2
    fairseq-train ... --save-dir few/sub0      # each sub-super-net resumes from the warm-up
    fairseq-train ... --save-dir few/sub1
    fairseq-magic search --checkpoint few/sub0/checkpoint_last.pt+few/sub1/checkpoint_last.pt ...

At equal total forwards with a one-shot run of T updates, a warm-up of W
updates is followed by K sub-super-nets of (T - W) / K updates each.
"""

import itertools
import json
import os
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..analysis.interference import measure
from ..checkpoint import atomic_save, read_checkpoint, torch_load
from ..errors import MagicError
from ..models.state_format import SEARCH_STATE_KEY, decode_json, encode_json
from ..space import Child, SearchSpace

CHECKPOINT = "checkpoint_last.pt"  # what fairseq-train resumes from in a --save-dir


def holds(split: Optional[Dict], child: Child) -> bool:
    """Whether a super-net whose search state records ``split`` (None: not a sub-super-net) trains ``child``."""
    return split is None or int(child[split["layer"]]) in split["group"]


def balanced_partitions(items: Sequence[int], k: int) -> Iterator[Tuple[Tuple[int, ...], ...]]:
    """Every partition of ``items`` into ``k`` groups whose sizes differ by at most one, each once
    (groups in the order of their first item)."""
    sizes = {len(items) // k, -(-len(items) // k)}

    def split(rest: Tuple[int, ...], groups: int):
        if groups == 1:
            if len(rest) in sizes:
                yield (rest,)
            return
        first, others = rest[0], rest[1:]
        for size in sorted(sizes):
            for mates in itertools.combinations(others, size - 1):
                group = (first,) + mates
                remaining = tuple(x for x in others if x not in mates)
                for tail in split(remaining, groups - 1):
                    yield (group,) + tail

    yield from split(tuple(items), k)


def between(matrix: np.ndarray, groups: Sequence[Sequence[int]], same: bool) -> float:
    """Mean similarity of the pairs within one group (``same``) or across two groups (rows: positions)."""
    where = {i: g for g, group in enumerate(groups) for i in group}
    values = [matrix[a, b] for a, b in itertools.combinations(sorted(where), 2) if (where[a] == where[b]) == same]
    return float(np.mean(values)) if values else float("nan")


@dataclass
class LayerSplit:
    layer: int  # the split layer j (0-based)
    candidates: List[str]  # its candidates' names, in the order of the matrix
    matrix: List[List[float]]  # their gradient cosine similarity on an operator of layer j-1
    groups: List[List[int]]  # the chosen partition: candidate indices of the space
    cut: float  # mean similarity across groups (lower: more interference removed)
    within: Optional[float]  # mean similarity within groups (None when every group holds one candidate)


def best_partition(layer: int, options: Sequence[int], names: Sequence[str], matrix: np.ndarray,
                   k: int) -> LayerSplit:
    """The balanced partition of layer ``layer``'s candidates ``options`` (rows of ``matrix``) with the lowest cut."""
    positions = list(range(len(options)))
    best = min(balanced_partitions(positions, k), key=lambda groups: (between(matrix, groups, same=False), groups))
    within = between(matrix, best, same=True)
    return LayerSplit(layer=layer, candidates=list(names), matrix=np.asarray(matrix).tolist(),
                      groups=[[int(options[i]) for i in group] for group in best],
                      cut=between(matrix, best, same=False), within=None if np.isnan(within) else within)


def candidates(supernet, layer: int) -> List[int]:
    """The candidates of ``layer`` that the super-net's (possibly shrunk) space allows."""
    allowed = supernet.search_state.allowed
    return [c for c in supernet.space.layer_options[layer] if allowed is None or c in allowed[layer]]


def splittable(supernet, k: int) -> List[int]:
    """The layers that can be split into ``k`` groups (``--layer auto``): from 1 on, with k candidates or more."""
    layers = [j for j in range(1, supernet.space.num_layers) if len(candidates(supernet, j)) >= k]
    if not layers:
        raise MagicError(f"no layer from 1 on has {k} candidates to split into {k} groups")
    return layers


def measure_layers(supernet, batches: Sequence[dict], layers: Sequence[int], k: int, repeats: int, seed: int,
                   progress=None) -> List[LayerSplit]:
    """Each of ``layers``' best balanced partition into ``k`` groups, from the gradient similarity of its
    candidates (those its shrunk space still allows)."""
    space = supernet.space
    splits = []
    for layer in layers:
        if not 1 <= layer < space.num_layers:
            raise MagicError(f"layer {layer} cannot be split: the gradient similarity of a layer's candidates "
                             f"is measured on the layer below, so it must be between 1 and {space.num_layers - 1}")
        options = candidates(supernet, layer)
        if len(options) < k:
            raise MagicError(f"layer {layer} has {len(options)} candidates: too few for {k} groups")
        result = measure(supernet, batches, layer - 1, 1, repeats, seed, progress=progress)
        rows = [list(space.layer_options[layer]).index(c) for c in options]
        matrix = result.matrix[np.ix_(rows, rows)]
        splits.append(best_partition(layer, options, [space.candidates[c].name for c in options], matrix, k))
    return splits


def sub_supernet_paths(out: str, k: int) -> List[str]:
    """Where the ``k`` sub-super-nets go; a folder that holds a checkpoint already is refused."""
    paths = [os.path.join(out, f"sub{i}", CHECKPOINT) for i in range(k)]
    for path in paths:
        if os.path.lexists(path):
            raise MagicError(f"{path} exists (a sub-super-net being trained?): give another --out")
    return paths


def check_one_shot(split: Optional[Dict], checkpoint: str) -> None:
    if split:
        raise MagicError(f"{checkpoint} is a sub-super-net already (layer {split['layer']} split): "
                         f"split its one-shot warm-up instead")


def sub_supernet_state(state: dict, allowed: List[List[int]], layer: int, group: Sequence[int]) -> dict:
    """A copy of a loaded super-net checkpoint whose search state trains only the children with one of
    ``group`` in ``layer`` (the rest of the checkpoint as it was)."""
    model = dict(state["model"])
    search = decode_json(model[SEARCH_STATE_KEY]) if SEARCH_STATE_KEY in model else {}
    search["allowed"] = [list(group) if j == layer else list(options) for j, options in enumerate(allowed)]
    search["split"] = {"layer": layer, "group": [int(c) for c in group]}
    model[SEARCH_STATE_KEY] = encode_json(search)
    return dict(state, model=model)


def write_sub_supernets(checkpoint: str, chosen: LayerSplit, measured: Sequence[LayerSplit], out: str,
                        space: SearchSpace, **settings) -> List[str]:
    """``out``/sub{i}/checkpoint_last.pt for each group of ``chosen`` and ``out``/split.json; the paths.
    A folder that already holds a checkpoint is refused before anything is written."""
    paths = sub_supernet_paths(out, len(chosen.groups))
    state = read_checkpoint(checkpoint, lambda: torch_load(checkpoint))  # as saved: fairseq upgrades it on resume
    search = decode_json(state["model"][SEARCH_STATE_KEY]) if SEARCH_STATE_KEY in state["model"] else {}
    check_one_shot(search.get("split"), checkpoint)
    allowed = search.get("allowed") or [list(o) for o in space.layer_options]
    for path, group in zip(paths, chosen.groups):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_save(sub_supernet_state(state, allowed, chosen.layer, group), path)
    report = {"checkpoint": os.path.abspath(checkpoint), **settings, "layer": chosen.layer,
              "groups": [[space.candidates[c].name for c in g] for g in chosen.groups],
              "sub_supernets": [os.path.abspath(p) for p in paths],
              "estimator": "+".join(paths), "layers": [asdict(s) for s in measured]}
    tmp = os.path.join(out, "split.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, allow_nan=False)
    os.replace(tmp, os.path.join(out, "split.json"))
    return paths


def describe(split: LayerSplit, space: SearchSpace) -> str:
    groups = " | ".join("{" + ", ".join(space.candidates[c].name for c in g) + "}" for g in split.groups)
    within = "" if split.within is None else f", {split.within:.3f} within"
    return f"layer {split.layer}: {groups} (gradient similarity {split.cut:.3f} across groups{within})"
