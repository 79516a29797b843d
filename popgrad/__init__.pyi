"""Static view of popgrad's lazily imported public API (for type checkers and IDEs).

Kept in step with ``PUBLIC_MODULES`` by tests/test_layers.py."""

from .gaussian.activations import (
    Activation as Activation,
    activation as activation,
    catalogue as catalogue,
    CATALOGUE_NAMES as CATALOGUE_NAMES,
)
from .gaussian.expressions import (
    Z as Z,
    ExpressionError as ExpressionError,
    parse_expression as parse_expression,
    UnaryFunction as UnaryFunction,
    UNARY_FUNCTIONS as UNARY_FUNCTIONS,
    MACROS as MACROS,
    ALLOWED_FUNCTIONS as ALLOWED_FUNCTIONS,
)
from .gaussian.hermite import (
    exact_hermite_coefficients as exact_hermite_coefficients,
    hermite_coefficients as hermite_coefficients,
    hermite_recurrence as hermite_recurrence,
    second_moment as second_moment,
    information_exponent as information_exponent,
    exact_scale as exact_scale,
    NoClosedForm as NoClosedForm,
)
from .gaussian.kernels import (
    dual_kernel as dual_kernel,
    kernel_series as kernel_series,
    KernelSpec as KernelSpec,
    kernel_spec as kernel_spec,
    hermite_series as hermite_series,
    SeriesValue as SeriesValue,
)
from .reference.hermite import (
    mpmath_hermite_coefficients as mpmath_hermite_coefficients,
    verify_hermite as verify_hermite,
    HermiteVerification as HermiteVerification,
    parseval_check as parseval_check,
    precision as precision,
    agreeing_digits as agreeing_digits,
)
from .reference.kernels import (
    kernel_quadrature as kernel_quadrature,
    kernel_mpmath as kernel_mpmath,
    kernel_monte_carlo as kernel_monte_carlo,
)
from .reference.estimate import (
    Estimate as Estimate,
)
from .models.finetuning.spec import (
    FineTuningProblem as FineTuningProblem,
    CONVENTIONS as CONVENTIONS,
    orthonormal_problem as orthonormal_problem,
    random_features_problem as random_features_problem,
    glm_problem as glm_problem,
    claim2_problem as claim2_problem,
    draw_signs as draw_signs,
    load_problem as load_problem,
)
from .models.finetuning.geometry import (
    Embedding as Embedding,
    embedding as embedding,
)
from .models.finetuning.population import (
    population_drift as population_drift,
    population_loss as population_loss,
    population_loss_derivative as population_loss_derivative,
    drift_interpolant as drift_interpolant,
    DriftInterpolant as DriftInterpolant,
    drift_fixed_points as drift_fixed_points,
    FixedPoints as FixedPoints,
    glm_drift as glm_drift,
)
from .models.finetuning.series import (
    drift_series as drift_series,
    moment_tensor as moment_tensor,
    paper_drift_series as paper_drift_series,
    symbolic_drift as symbolic_drift,
)
from .models.finetuning.checks import (
    lemma6_frequency as lemma6_frequency,
    example1 as example1,
)
from .models.finetuning.references import (
    network_loss as network_loss,
    monte_carlo_gradient as monte_carlo_gradient,
)
from .models.finetuning.noise import (
    NoiseEstimate as NoiseEstimate,
    noise_estimate as noise_estimate,
)
from .models.finetuning.predictions import (
    PREDICTIONS as PREDICTIONS,
    initial_points as initial_points,
    predicted_hitting_steps as predicted_hitting_steps,
)
from .models.finetuning.odes import (
    DriftODE as DriftODE,
)
from .models.finetuning.model import (
    GeneralModel as GeneralModel,
    general_model as general_model,
    general_model_from_dict as general_model_from_dict,
    load_general_model as load_general_model,
    OUTPUT_SCALES as OUTPUT_SCALES,
)
from .models.finetuning.observables import (
    OBSERVABLES as OBSERVABLES,
    LABELS as LABELS,
    state_observables as state_observables,
    overlap_observables as overlap_observables,
    closed_form_loss as closed_form_loss,
    state_population_loss as state_population_loss,
    state_population_losses as state_population_losses,
    state_loss_monte_carlo as state_loss_monte_carlo,
    neuron_vectors as neuron_vectors,
)
from .models.matrix_factorization.spec import (
    MFProblem as MFProblem,
    mf_problem as mf_problem,
    paper_mf_problem as paper_mf_problem,
    load_mf_problem as load_mf_problem,
    MF_PAIRS as MF_PAIRS,
)
from .models.matrix_factorization.flow import (
    MFState as MFState,
    mf_initial_states as mf_initial_states,
    mf_loss as mf_loss,
    mf_gradient as mf_gradient,
    mf_gradient_descent as mf_gradient_descent,
    mf_gradient_flow as mf_gradient_flow,
    MFRun as MFRun,
    MF_OBSERVABLES as MF_OBSERVABLES,
    MF_INITS as MF_INITS,
)
from .models.matrix_factorization.theory import (
    alignment_closed_form as alignment_closed_form,
    derive_alignment_solution as derive_alignment_solution,
    derive_scalar_flow as derive_scalar_flow,
    spectral_scalar_flow as spectral_scalar_flow,
    theorem41_t1 as theorem41_t1,
    stationary_example as stationary_example,
    spectral_directions as spectral_directions,
)
from .models.ntk_lora.spec import (
    NTKProblem as NTKProblem,
    ntk_problem as ntk_problem,
    gaussian_ntk_problem as gaussian_ntk_problem,
    network_ntk_problem as network_ntk_problem,
    load_ntk_problem as load_ntk_problem,
    NTK_LOSSES as NTK_LOSSES,
    NTK_ACTIVATIONS as NTK_ACTIVATIONS,
)
from .models.ntk_lora.landscape import (
    ntk_objective as ntk_objective,
    ntk_gradient as ntk_gradient,
    ntk_hvp as ntk_hvp,
    ntk_hessian as ntk_hessian,
    ntk_certificate as ntk_certificate,
    ntk_balance as ntk_balance,
    ntk_loss_gradient as ntk_loss_gradient,
)
from .models.ntk_lora.convex import (
    ConvexSolution as ConvexSolution,
    ntk_convex_optimum as ntk_convex_optimum,
    ntk_dual_value as ntk_dual_value,
)
from .models.ntk_lora.optimise import (
    NTK_INITS as NTK_INITS,
    NTKRuns as NTKRuns,
    ntk_initial_points as ntk_initial_points,
    ntk_lbfgs as ntk_lbfgs,
    ntk_gradient_descent as ntk_gradient_descent,
    ntk_gradient_flow as ntk_gradient_flow,
)
from .models.ntk_lora.study import (
    Landscape as Landscape,
    ntk_landscape as ntk_landscape,
    ntk_threshold_study as ntk_threshold_study,
)
from .models.ntk_lora.examples import (
    SpuriousExample as SpuriousExample,
    ntk_spurious_example as ntk_spurious_example,
    verify_spurious_exactly as verify_spurious_exactly,
)
from .models.digits.data import (
    DigitsTask as DigitsTask,
    digits_data as digits_data,
    digits_task as digits_task,
    DIGITS_FILE as DIGITS_FILE,
)
from .models.digits.network import (
    one_blas_thread as one_blas_thread,
    MLP as MLP,
    mlp_forward as mlp_forward,
    mlp_loss as mlp_loss,
    mlp_gradients as mlp_gradients,
    mlp_accuracy as mlp_accuracy,
    init_mlp as init_mlp,
    train_mlp as train_mlp,
    pretrained_network as pretrained_network,
    load_network as load_network,
    cache_folder as cache_folder,
    NETWORK_VERSION as NETWORK_VERSION,
)
from .models.digits.lora import (
    LORA_INITS as LORA_INITS,
    LoRARun as LoRARun,
    lora_layers as lora_layers,
    lora_initial_factors as lora_initial_factors,
    lora_objective as lora_objective,
    lora_step as lora_step,
    lora_fine_tune as lora_fine_tune,
    full_fine_tune as full_fine_tune,
    lora_accuracy as lora_accuracy,
    alignment_error as alignment_error,
    target_direction as target_direction,
)
from .models.digits.jacobian import (
    layer_jacobian as layer_jacobian,
    digits_ntk_arrays as digits_ntk_arrays,
    measurement_bases as measurement_bases,
    network_lora_minimise as network_lora_minimise,
    linearisation_error as linearisation_error,
)
from .models.committee.spec import (
    CommitteeModel as CommitteeModel,
    committee_model as committee_model,
    committee_model_from_dict as committee_model_from_dict,
    load_committee_model as load_committee_model,
    COMMITTEE_CONVENTIONS as COMMITTEE_CONVENTIONS,
    COMMITTEE_CONSTRAINTS as COMMITTEE_CONSTRAINTS,
    COMMITTEE_INIT_KINDS as COMMITTEE_INIT_KINDS,
    COMMITTEE_PARAMETRISATIONS as COMMITTEE_PARAMETRISATIONS,
    finetuning_committee_model as finetuning_committee_model,
)
from .models.committee.population import (
    Committee as Committee,
    committee_arrays as committee_arrays,
    generalisation_error as generalisation_error,
    expectation_route as expectation_route,
    ODEExpectations as ODEExpectations,
    ode_expectations as ode_expectations,
    population_flow as population_flow,
    pack_parameters as pack_parameters,
    ROUTE_ERF as ROUTE_ERF,
    ROUTE_NUMERIC as ROUTE_NUMERIC,
)
from .models.committee.ode import (
    CommitteeODESolution as CommitteeODESolution,
    integrate_ode as integrate_ode,
    initial_state as initial_state,
    committee_rhs as committee_rhs,
    ode_parameters as ode_parameters,
)
from .models.committee.fixed_points import (
    FixedPoint as FixedPoint,
    fixed_point as fixed_point,
    symmetric_plateau as symmetric_plateau,
    specialised_solution as specialised_solution,
    jacobian_eigenvalues as jacobian_eigenvalues,
)
from .gaussian.pair_kernels import (
    PairForm as PairForm,
    pair_form as pair_form,
    PairKernel as PairKernel,
    pair_kernel as pair_kernel,
    polynomial_hermite_coefficients as polynomial_hermite_coefficients,
    scaled_hermite_coefficients as scaled_hermite_coefficients,
)
from .dynamics.protocol import (
    ModelFamily as ModelFamily,
    Predictor as Predictor,
    FAMILY_MODULES as FAMILY_MODULES,
    register_family as register_family,
    register_predictor as register_predictor,
    family_of as family_of,
    family_named as family_named,
    model_from_dict as model_from_dict,
    predictors_for as predictors_for,
    PREDICTORS as PREDICTORS,
)
from .dynamics.engine import (
    Stepper as Stepper,
    Run as Run,
    simulate as simulate,
    Predictions as Predictions,
    predict as predict,
    chosen_predictions as chosen_predictions,
    PredictionFailed as PredictionFailed,
    RUN_SCHEMA as RUN_SCHEMA,
    checkpoint_grid as checkpoint_grid,
    observable_axes as observable_axes,
)
from .dynamics.solve import (
    ODE as ODE,
    Solution as Solution,
    solve as solve,
    SolverFailed as SolverFailed,
)
from .dynamics.solvers.base import (
    RHS_SIGNATURE as RHS_SIGNATURE,
    RHS_TYPE as RHS_TYPE,
    right_hand_side as right_hand_side,
)
from .analysis.comparison import (
    Comparison as Comparison,
    compare as compare,
    load_comparison as load_comparison,
    load_run as load_run,
    save_report as save_report,
    COMPARISON_SCHEMA as COMPARISON_SCHEMA,
    QUANTILES as QUANTILES,
)
from .analysis.scaling import (
    PowerLawFit as PowerLawFit,
    power_law_fit as power_law_fit,
    censored_median as censored_median,
)
from .report.tables import (
    joint_flow_table as joint_flow_table,
    example1_table as example1_table,
    Table as Table,
    hermite_table as hermite_table,
    drift_table as drift_table,
    symbolic_drift_table as symbolic_drift_table,
    lemma6_table as lemma6_table,
    committee_ode_table as committee_ode_table,
    derivation_files as derivation_files,
    write_derivations as write_derivations,
    stale_derivations as stale_derivations,
)
from .report.plots import (
    plot_population as plot_population,
)
from .sweeps.spec import (
    SweepSpec as SweepSpec,
    load_sweep_spec as load_sweep_spec,
    sweep_spec_from_dict as sweep_spec_from_dict,
    cell_key as cell_key,
    cell_seed as cell_seed,
    numerics_version as numerics_version,
)
from .sweeps.store import (
    SweepStore as SweepStore,
    open_store as open_store,
    remove_empty_store as remove_empty_store,
)
from .sweeps.executor import (
    run_sweep as run_sweep,
    check_sweep as check_sweep,
    default_workers as default_workers,
)
from .sweeps.report import (
    sweep_records as sweep_records,
    sweep_dataset as sweep_dataset,
    sweep_fits as sweep_fits,
    write_sweep_report as write_sweep_report,
    plot_scaling as plot_scaling,
    plot_phase as plot_phase,
)

__version__: str
