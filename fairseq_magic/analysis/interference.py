"""Interference: cosine similarity of children's gradients on a shared operator
(Sec. 3, App. A.3-A.4, Fig. 2 and 8).

On a frozen super-net and one fixed batch, pick an operator o_g in layer j and
C children that share every layer except j+1 .. j+m (child i takes candidate i
in layer j+1, random candidates in j+2 .. j+m). Each child's gradient of the
masked-LM loss with respect to o_g's weights is flattened; the C x C matrix of
their cosine similarities measures interference (lower = more). Repeated R
times over random o_g and paths, and averaged.

Gradients are taken in eval mode (no dropout), with ``torch.autograd.grad``
on o_g's parameters only: the super-net's weights and ``.grad`` are untouched,
and two runs give identical numbers.
"""

import csv
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ..criterions.magic_mlm import masked_lm_loss
from ..errors import MagicError
from ..models.supernet import train_mode
from ..space import Child
from ..streams import STREAM_INTERFERENCE, rng_for
from ..training.samplers import uniform_child
from .figures import pyplot, save as _save


_TRAINING_SAMPLE = re.compile(r"interference_cos=([-0-9.e]+).*num_updates=(\d+)")


def training_samples(log_path: str) -> Dict[int, float]:
    """{update: interference_cos} from a fairseq-train log in the simple format: the samples
    a run with ``--interference-interval`` logged during training."""
    samples = {}
    with open(log_path) as f:
        for line in f:
            match = _TRAINING_SAMPLE.search(line)
            if match:
                samples[int(match.group(2))] = float(match.group(1))
    return samples


def gradient(supernet, child: Child, params: Sequence[torch.nn.Parameter], batches: Sequence[dict]) -> torch.Tensor:
    """Flattened gradient of the summed masked-LM loss over ``batches`` w.r.t. ``params``,
    without dropout (deterministic) and without touching any ``.grad``."""
    pad = supernet.encoder.dictionary.pad()
    total = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    with train_mode(supernet, training=False), supernet.child_context(child):
        for sample in batches:
            loss = masked_lm_loss(supernet, sample, pad).loss
            for t, g in zip(total, torch.autograd.grad(loss, params)):
                t += g.double()
    return torch.cat([t.flatten() for t in total])


def cosine_matrix(vectors: Sequence[torch.Tensor]) -> np.ndarray:
    """Pairwise cosine similarities of flattened gradients (float64)."""
    stacked = torch.stack([v.double() for v in vectors])
    normed = stacked / stacked.norm(dim=1, keepdim=True).clamp_min(1e-300)
    sim = (normed @ normed.T).cpu().numpy()
    return (sim + sim.T) / 2  # equal up to rounding; made exactly symmetric


def differing_children(base: Child, layer: int, m: int, options: Sequence[Sequence[int]],
                       rng: np.random.Generator) -> List[Child]:
    """Children equal to ``base`` except layers layer+1 .. layer+m: child i takes
    the i-th candidate of layer+1 and random candidates at layer+2 .. layer+m
    (``options``: each layer's candidates)."""
    children = []
    for i in options[layer + 1]:
        child = list(base)
        child[layer + 1] = i
        for n in range(layer + 2, layer + m + 1):
            child[n] = int(options[n][rng.integers(len(options[n]))])
        children.append(tuple(child))
    return children


@dataclass
class InterferenceResult:
    layer: int
    candidates: List[str]  # the candidates of layer+1, in the order of the matrix's rows and columns
    matrix: np.ndarray  # m = 1, averaged over repeats
    mean_by_m: Dict[int, float]  # mean off-diagonal similarity for children differing in m layers
    se_by_m: Dict[int, float]  # its standard error over the repeats (0 with one repeat)
    repeats: int


def off_diagonal_mean(matrix: np.ndarray) -> float:
    mask = ~np.eye(len(matrix), dtype=bool)
    return float(matrix[mask].mean())


def measure(supernet, batches: Sequence[dict], layer: int, max_m: int, repeats: int, seed: int,
            progress=None) -> InterferenceResult:
    """Fig. 2a/2c for o_g in ``layer`` (0-based), averaged over ``repeats`` random o_g and paths;
    ``progress`` (a tqdm bar) counts the ``repeats * max_m`` similarity matrices."""
    space = supernet.space
    if not 0 <= layer < space.num_layers - 1:
        raise MagicError(f"layer {layer} has no next layer to vary (the super-net has {space.num_layers} layers)")
    if not 1 <= max_m <= space.num_layers - 1 - layer:
        raise MagicError(f"m must be between 1 and {space.num_layers - 1 - layer} for layer {layer}, got {max_m}")
    matrices = {m: [] for m in range(1, max_m + 1)}
    for r in range(repeats):
        rng = rng_for(seed, STREAM_INTERFERENCE, layer, r)
        base = uniform_child(space, rng)
        params = supernet.operator_parameters(layer, base[layer])  # o_g
        for m in range(1, max_m + 1):
            children = differing_children(base, layer, m, space.layer_options, rng)
            matrices[m].append(cosine_matrix([gradient(supernet, c, params, batches) for c in children]))
            if progress is not None:
                progress.update()
    return InterferenceResult(
        layer=layer,
        candidates=[space.candidates[c].name for c in space.layer_options[layer + 1]],
        matrix=np.mean(matrices[1], axis=0),
        mean_by_m={m: float(np.mean([off_diagonal_mean(x) for x in ms])) for m, ms in matrices.items()},
        se_by_m={m: float(np.std([off_diagonal_mean(x) for x in ms], ddof=1) / np.sqrt(len(ms))) if len(ms) > 1 else 0.0
                 for m, ms in matrices.items()},
        repeats=repeats,
    )


def sample_similarity(supernet, batches: Sequence[dict], rng: np.random.Generator, allowed=None) -> Tuple[int, float]:
    """One cheap sample of Fig. 2a, for use during training: a random layer j whose
    next layer has a choice, a random o_g in it, and two children equal everywhere
    but layer j+1; returns (j, cosine of their gradients on o_g)."""
    space = supernet.space
    options = allowed or space.layer_options
    layers = [j for j in range(space.num_layers - 1) if len(options[j + 1]) > 1]
    if not layers:
        raise MagicError("interference needs a layer followed by a layer with two or more candidates")
    j = layers[int(rng.integers(len(layers)))]
    base = list(uniform_child(space, rng, allowed))
    pair = rng.choice(list(options[j + 1]), size=2, replace=False)
    children = [tuple(base[: j + 1] + [int(c)] + base[j + 2:]) for c in pair]
    params = supernet.operator_parameters(j, base[j])
    return j, float(cosine_matrix([gradient(supernet, c, params, batches) for c in children])[0, 1])


def write_report(results: Dict[Tuple[str, int], InterferenceResult], out: str) -> str:
    """Write Fig. 2a/2b (heatmaps, one row per layer, one column per super-net),
    Fig. 2c / 8 (mean similarity against m), their CSV files and
    ``interference.json`` to ``out``; return the table of means by m.
    ``results`` is keyed by (super-net label, layer)."""
    plt = pyplot()
    labels = list(dict.fromkeys(label for label, _ in results))
    layers = list(dict.fromkeys(layer for _, layer in results))
    max_m = max(max(res.mean_by_m) for res in results.values())
    os.makedirs(out, exist_ok=True)
    for (label, layer), res in results.items():
        with open(os.path.join(out, f"{label}_layer{layer}_similarity.csv"), "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["candidate at layer j+1"] + res.candidates)
            writer.writerows([[n] + [f"{v:.6f}" for v in row] for n, row in zip(res.candidates, res.matrix)])

    # Fig. 2a/2b: one heatmap per (layer, super-net); cosines lie in [-1, 1], so a diverging scale centred on 0
    fig, axes = plt.subplots(len(layers), len(labels), figsize=(4.4 * len(labels), 4.0 * len(layers)), squeeze=False)
    for (label, layer), res in results.items():
        ax = axes[layers.index(layer)][labels.index(label)]
        names = res.candidates
        image = ax.imshow(res.matrix, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_xticks(range(len(names)), names, rotation=45)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel(f"candidate in layer {layer + 1}")
        ax.set_ylabel(f"candidate in layer {layer + 1}")
        ax.set_title(f"{label}: o_g in layer {layer}, m = 1, {_repeats(res.repeats)}", fontsize=9)
        for i in range(len(names)):
            for k in range(len(names)):
                value = res.matrix[i, k]
                ax.text(k, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(value) > 0.6 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046, label="gradient cosine similarity")
    fig.tight_layout()
    _save(fig, os.path.join(out, "similarity_heatmaps"))
    plt.close(fig)

    # Fig. 2c / Fig. 8: mean similarity against m, with its standard error over the repeats
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    with open(os.path.join(out, "similarity_vs_m.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["supernet", "layer", "m", "mean_similarity", "standard_error", "repeats"])
        for (label, layer), res in results.items():
            ms = sorted(res.mean_by_m)
            writer.writerows([[label, layer, m, f"{res.mean_by_m[m]:.6f}", f"{res.se_by_m[m]:.6f}", res.repeats]
                              for m in ms])
            ax.errorbar(ms, [res.mean_by_m[m] for m in ms], yerr=[res.se_by_m[m] for m in ms], marker="o",
                        capsize=3, label=f"{label}, o_g in layer {layer}")
    ax.set_xticks(range(1, max_m + 1))
    ax.set_xlabel("m (layers in which the children differ)")
    ax.set_ylabel("mean gradient cosine similarity")
    ax.set_title(f"mean +/- standard error over {_repeats(max(r.repeats for r in results.values()))}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, os.path.join(out, "similarity_vs_m"))
    plt.close(fig)
    with open(os.path.join(out, "interference.json"), "w") as f:
        json.dump({f"{label}/layer{layer}": {"matrix": res.matrix.tolist(), "mean_by_m": res.mean_by_m,
                                             "se_by_m": res.se_by_m, "repeats": res.repeats,
                                             "candidates": res.candidates}
                   for (label, layer), res in results.items()}, f, indent=1)
    lines = [f"{'super-net':<16}{'layer':>6}" + "".join(f"{'m=' + str(m):>9}" for m in range(1, max_m + 1))]
    for (label, layer), res in results.items():
        lines.append(f"{label:<16}{layer:>6}" + "".join(f"{res.mean_by_m[m]:>9.4f}" for m in range(1, max_m + 1)))
    return "\n".join(lines)


def _repeats(n: int) -> str:
    return f"{n} repeat" + ("" if n == 1 else "s")
