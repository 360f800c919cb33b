"""Hyper-parameter optimization: search space, samplers (Optuna's and our evolutionary one),
K-fold trials, the ask/tell driver, the MPI coordinator, study storage and reports."""

from scaletrain.hpo.evolution import EvolutionSampler
from scaletrain.hpo.study import Options, StudyResult, load_study, optimize

__all__ = ["EvolutionSampler", "Options", "StudyResult", "load_study", "optimize"]
