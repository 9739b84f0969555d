"""Text in, fairseq's data out: the default corpus, sentencepiece and the labelled topic set
(``corpus.py``), GLUE's raw task folders for fine-tuning (``glue.py``).
"""
