"""Figures: matplotlib without a display, its debug chatter kept out of the log,
every figure written as PNG (to look at) and PDF (to print)."""

import logging


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    return plt


def save(fig, stem: str) -> None:
    """``stem``.png and ``stem``.pdf."""
    fig.savefig(stem + ".png", dpi=150)
    fig.savefig(stem + ".pdf")
