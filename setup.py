"""fairseq-magic: weight-sharing NAS for BERT/RoBERTa encoders, as a fairseq plugin.

fairseq itself is not listed: on Python 3.11 it is ``fairseq-fixed`` built with
``--no-deps --no-build-isolation`` (see scripts/install.sh), which pip cannot
express as a requirement.
"""

from setuptools import find_packages, setup

setup(
    name="fairseq-magic",
    version="0.1.0",
    description="Weight-sharing NAS (SPOS, MAGIC-T/A/AT) for BERT encoders as a fairseq --user-dir plugin",
    packages=find_packages(include=["fairseq_magic", "fairseq_magic.*"]),
    python_requires=">=3.9",
    # tensorboardX: fairseq logs a notice on every command without it (and --tensorboard-logdir uses it)
    install_requires=["numpy", "scipy", "sentencepiece", "tensorboardX", "submitit>=1.5", "hydra-submitit-launcher>=1.2"],
    extras_require={"huggingface": ["transformers>=4.40,<5", "protobuf"]},  # export --format huggingface
    entry_points={"console_scripts": ["fairseq-magic = fairseq_magic.cli:main"]},
    license="MIT",
)
