"""Searching a trained super-net: children scored with the shared weights (``scoring.py``),
evolution and random search under size limits (``evolution.py``), and a found child written
as a stand-alone checkpoint (``export.py``).
"""
