from .operators import CandidateLayer, ChildLayer, SupernetLayer, build_sublayer  # noqa: F401
