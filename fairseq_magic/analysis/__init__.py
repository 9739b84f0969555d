"""The paper's instruments on trained super-nets: rank correlation against stand-alone
training (``rank_correlation.py``), gradient-similarity interference (``interference.py``),
and their figures (``figures.py``).
"""
