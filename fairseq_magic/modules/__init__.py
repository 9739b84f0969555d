from .operators import CandidateLayer, ChildLayer, SupernetLayer, build_sublayer, embedded  # noqa: F401
