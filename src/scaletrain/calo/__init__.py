"""Physics validation of calorimeter showers: observables, scores, plots and report.

result = compare(generated, reference)       # dicts of arrays, as read_showers returns
result.fidelity, result.scores["bins"]["100 GeV"]["auc"]
validate_files("gen.h5", "ref.h5", "report/")  # + report.md/html, scores.json, PNGs
"""

from .observables import DEFAULT_THRESHOLD, Observables, compute_observables
from .validation import ValidationResult, compare, fidelity_score, validate_files

__all__ = [
    "DEFAULT_THRESHOLD",
    "Observables",
    "ValidationResult",
    "compare",
    "compute_observables",
    "fidelity_score",
    "validate_files",
]
