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
* one engine for every model (the model protocol, :mod:`popgrad.dynamics.protocol`) — :func:`simulate`
  (-> :class:`Run`), :func:`predict` (-> :class:`Predictions`), :func:`compare` (-> :class:`Comparison`),
  :func:`load_comparison`, :func:`model_from_dict`; ODEs — :func:`solve`, :class:`DriftODE`,
  :func:`noise_estimate`; figures — :func:`plot_population` (h and Phi), :meth:`Comparison.plot`
* the fine-tuning model (joint c_hat, free u_hat, rank r, alpha, output scale, linearised student; a
  problem is the model with every switch at its default) — :func:`general_model`, :func:`load_general_model`,
  :func:`state_observables`, :func:`state_population_loss`
* LoRA in the NTK regime (Jang, Lee, Ryu) — :func:`ntk_problem`, :func:`gaussian_ntk_problem`,
  :func:`network_ntk_problem`, :func:`load_ntk_problem`, :func:`ntk_objective`, :func:`ntk_gradient`,
  :func:`ntk_hvp`, :func:`ntk_hessian`, :func:`ntk_certificate`, :func:`ntk_convex_optimum`, :func:`ntk_lbfgs`,
  :func:`ntk_gradient_descent`, :func:`ntk_gradient_flow`, :func:`ntk_landscape`, :func:`ntk_threshold_study`,
  :func:`ntk_spurious_example`
* LoRA on a real network (the 8x8 digits, issue 24) — :func:`digits_data`, :func:`digits_task`,
  :func:`pretrained_network`, :func:`load_network`, :func:`lora_fine_tune`, :func:`lora_step`,
  :func:`full_fine_tune`, :func:`alignment_error`, :func:`layer_jacobian`, :func:`digits_ntk_arrays`,
  :func:`measurement_bases`, :func:`network_lora_minimise`, :func:`linearisation_error`
* sweeps — :func:`load_sweep_spec`, :func:`open_store`, :func:`run_sweep`, :func:`write_sweep_report`,
  :func:`sweep_dataset`; scaling fits — :func:`power_law_fit`

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

#: the modules whose ``__all__`` make up the public API (names are imported on first use)
PUBLIC_MODULES = (
    "gaussian.activations",
    "gaussian.expressions",
    "gaussian.hermite",
    "gaussian.kernels",
    "reference.hermite",
    "reference.kernels",
    "reference.estimate",
    "models.finetuning.spec",
    "models.finetuning.geometry",
    "models.finetuning.population",
    "models.finetuning.series",
    "models.finetuning.checks",
    "models.finetuning.references",
    "models.finetuning.noise",
    "models.finetuning.predictions",
    "models.finetuning.odes",
    "models.finetuning.model",
    "models.finetuning.observables",
    "models.matrix_factorization.spec",
    "models.matrix_factorization.flow",
    "models.matrix_factorization.theory",
    "models.ntk_lora.spec",
    "models.ntk_lora.landscape",
    "models.ntk_lora.convex",
    "models.ntk_lora.optimise",
    "models.ntk_lora.study",
    "models.ntk_lora.examples",
    "models.digits.data",
    "models.digits.network",
    "models.digits.lora",
    "models.digits.jacobian",
    "models.committee.spec",
    "models.committee.population",
    "models.committee.ode",
    "models.committee.fixed_points",
    "gaussian.pair_kernels",
    "dynamics.protocol",
    "dynamics.engine",
    "dynamics.solve",
    "dynamics.solvers.base",
    "analysis.comparison",
    "analysis.scaling",
    "report.tables",
    "report.plots",
    "sweeps.spec",
    "sweeps.store",
    "sweeps.executor",
    "sweeps.report",
)
_where: dict = {}


def _index() -> dict:
    if not _where:
        for module in PUBLIC_MODULES:
            for name in import_module(f".{module}", __name__).__all__:
                _where.setdefault(name, module)
    return _where


def __getattr__(name: str):
    if name == "__all__":
        return ["__version__"] + sorted(_index())
    module = _index().get(name) if not name.startswith("__") else None
    if module is None:
        raise AttributeError(f"module 'popgrad' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return ["__version__"] + sorted(_index())
