"""popgrad: numerical verification of gradient-dynamics theorems for low-rank fine-tuning.

The public API, layer by layer (data flows one way):

* activations — :func:`activation`, :func:`catalogue`, :func:`parse_expression`
* Hermite expansions — :func:`hermite_coefficients` (float64), :func:`exact_hermite_coefficients` (sympy),
  :func:`mpmath_hermite_coefficients`, :func:`verify_hermite`, :func:`information_exponent`,
  :func:`parseval_check`, :func:`precision`
* kernels — :func:`dual_kernel`, :func:`kernel_series`, :func:`kernel_quadrature`, :func:`kernel_mpmath`,
  :func:`kernel_monte_carlo`
* the fine-tuning model — :class:`FineTuningProblem`, :func:`orthonormal_problem`,
  :func:`random_features_problem`, :func:`glm_problem`, :func:`claim2_problem`, :func:`load_problem`,
  :func:`embedding`
* population quantities — :func:`population_drift` (h), :func:`population_loss` (Phi),
  :func:`drift_series`, :func:`paper_drift_series`, :func:`moment_tensor`, :func:`symbolic_drift`,
  :func:`drift_interpolant`, :func:`drift_fixed_points`, :func:`glm_drift`, :func:`lemma6_frequency`,
  :func:`network_loss`, :func:`monte_carlo_gradient`
* dynamics — :func:`solve`, :class:`DriftODE`, :func:`simulate`, :func:`predict`, :func:`noise_estimate`
* comparison — :func:`compare`, :class:`Comparison`

Names are imported on first use, so ``import popgrad`` and the command line start quickly.

Examples
--------
>>> import popgrad
>>> problem = popgrad.orthonormal_problem("relu", k=8, xi=1.0, seed=0)
>>> round(float(popgrad.population_drift(problem, 0.0)), 6)
-0.821565
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "activations": ["Activation", "activation", "catalogue", "CATALOGUE_NAMES"],
    "expressions": ["parse_expression", "ExpressionError"],
    "hermite": ["hermite_coefficients", "exact_hermite_coefficients", "mpmath_hermite_coefficients", "verify_hermite", "information_exponent", "parseval_check", "precision", "NoClosedForm"],
    "kernels": ["dual_kernel", "kernel_series", "kernel_quadrature", "kernel_mpmath", "kernel_monte_carlo"],
    "model": ["FineTuningProblem", "orthonormal_problem", "random_features_problem", "glm_problem", "claim2_problem", "load_problem", "embedding"],
    "population": ["population_drift", "population_loss", "population_loss_derivative", "drift_series", "paper_drift_series", "moment_tensor", "symbolic_drift", "drift_interpolant", "drift_fixed_points", "glm_drift", "lemma6_frequency", "network_loss"],
    "gradients": ["monte_carlo_gradient"],
    "integrators": ["solve", "DriftODE", "Solution"],
    "simulation": ["simulate", "SimulationResult", "SimulationDiverged", "checkpoint_grid"],
    "predictions": ["predict", "noise_estimate", "Predictions"],
    "comparison": ["compare", "Comparison"],
    "tables": ["write_derivations", "stale_derivations"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__"] + sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'popgrad' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
