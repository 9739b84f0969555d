from .child import MagicChildModel  # noqa: F401
from .supernet import MagicSupernetModel  # noqa: F401
