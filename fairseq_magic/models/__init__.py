from .supernet import MagicSupernetModel  # noqa: F401
