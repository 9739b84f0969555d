"""Figures: matplotlib without a display, its debug chatter kept out of the log,
every figure written as PNG (to look at) and PDF (to print)."""

import logging


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only; no display needed)."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # before the import, which logs at DEBUG
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, stem: str) -> None:
    """``stem``.png and ``stem``.pdf."""
    fig.savefig(stem + ".png", dpi=150)
    fig.savefig(stem + ".pdf")
