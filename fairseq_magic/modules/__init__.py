from .operators import ChildLayer, SupernetLayer, build_sublayer  # noqa: F401
