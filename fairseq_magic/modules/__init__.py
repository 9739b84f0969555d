from .operators import SupernetLayer, build_sublayer  # noqa: F401
