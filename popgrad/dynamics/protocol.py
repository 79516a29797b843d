"""The model protocol: what a model family provides, and what consumes it.

One engine serves every model. A *model family* is one package under ``popgrad/models/`` and one entry of
:data:`FAMILY_MODULES`; its module calls :func:`register_family` with a :class:`ModelFamily` and
:func:`register_predictor` once per prediction. Nothing else is written per family: the simulator, the
record, the predictions, the comparison, its JSON and NetCDF files, the command line's ``simulate`` /
``compare`` / ``run``, the sweep cells and the reproductions all go through this protocol.

What a family provides
----------------------
``name``
    Its key, written as ``"model"`` in spec files (a file without the key is a fine-tuning model).
``from_dict(data)``
    Its model from a JSON/TOML object. The model has ``to_dict()`` (the JSON round trip:
    ``from_dict(model.to_dict()) == model``), equality and a hash by content (canonical JSON,
    :class:`popgrad._io.ContentEqual`), ``family = name`` and a one-line ``describe()``.
``as_model(value)``
    The family's model for a value it accepts besides its model (e.g. a fine-tuning *problem*, which is the
    general model with every switch at its default), else None.
``methods``
    The simulation methods it offers (``chain``: an exact dimension-free chain on the state; ``fast``:
    SGD in dimension d with the structure rotated onto the first coordinates; ``full``: SGD in dimension d
    in the model's own, or a randomly embedded, geometry).
``stepper(model, d, eta, *, method, trajectories, seed, first_trajectory, m0, level, stop_when_hit, fast_path)``
    A :class:`~popgrad.dynamics.engine.Stepper` (``fast_path=False``: the model's general route even where it
    reduces, to check the fast paths against): the state of ``trajectories`` trajectories and the kernels that advance it, record
    it at a checkpoint and turn the records into named observables (and the state, where it does not reduce
    to the observables). ``m0`` is refused there, naming the reason, where it does not make sense.
``labels``
    observable -> (label, units) of the observables its runs record.

The model itself has ``check_dimension(d, method, fast_path)`` (d checked for a run, or refused naming the
reason) besides ``to_dict``, ``family`` and ``describe``.

Predictions are registered apart (:func:`register_predictor`), each saying which models it serves and
which options it takes, so that :func:`popgrad.dynamics.engine.predict` runs every prediction that
serves a run's model.

What consumes it
----------------
:func:`popgrad.dynamics.engine.simulate` → :class:`~popgrad.dynamics.engine.Run`;
:func:`popgrad.dynamics.engine.predict` → :class:`~popgrad.dynamics.engine.Predictions`;
:func:`popgrad.analysis.comparison.compare` → :class:`~popgrad.analysis.comparison.Comparison`;
``popgrad simulate|compare|run``; the sweep cells (:mod:`popgrad.sweeps.tasks`); the reproductions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Callable

from .._validation import InvalidArgument

__all__ = ["ModelFamily", "Predictor", "FAMILY_MODULES", "register_family", "register_predictor", "family_of", "family_named", "model_from_dict", "predictors_for", "PREDICTORS"]

#: family name -> the module that registers it (imported on first use): the one line a new family adds
FAMILY_MODULES = {"finetuning": "popgrad.models.finetuning.family", "committee": "popgrad.models.committee.family"}

_FAMILIES: dict = {}
#: (family, prediction name) -> Predictor, in registration order (families may reuse a name: each has its own
#: ``gradient_flow``)
PREDICTORS: dict = {}


@dataclass(frozen=True)
class ModelFamily:
    """A model family's part of the protocol (see the module's text).

    Attributes
    ----------
    name : str
    model_type : type
        The family's model class (``isinstance`` decides which family a model belongs to).
    from_dict : callable
        ``data -> model``.
    stepper : callable
        ``(model, d, eta, **settings) -> Stepper``.
    methods : tuple of str
    labels : dict
        observable -> (label, units).
    record_bytes : callable
        ``(model, fast_path) -> int``: bytes one trajectory's record takes per checkpoint (checked against
        the memory before anything is allocated).
    as_model : callable
        ``value -> model or None``.
    """

    name: str
    model_type: type
    from_dict: Callable
    stepper: Callable
    methods: tuple
    labels: dict
    record_bytes: Callable
    as_model: Callable = lambda value: None


@dataclass(frozen=True)
class Predictor:
    """A deterministic (or Monte Carlo) prediction of a run's observables.

    Attributes
    ----------
    name : str
    family : str
        The family whose models it predicts.
    serves : callable
        ``model -> None`` when it serves the model, else the reason it does not (a sentence).
    compute : callable
        ``(run, **options) -> dict`` with ``values`` (observable -> ndarray (starts, checkpoints)), and
        optionally ``bands`` (observable -> (lower, upper) of the mean over starts), ``hitting_steps``
        (ndarray (starts,), inf where not reached), ``settings`` (what it used) and ``exact_mean``
        (True where the starts are a quadrature of the initial law rather than a sample of it: no
        standard error over starts).
    options : dict
        option -> default: the keyword arguments it takes.
    default : callable
        ``model -> bool``: whether :func:`~popgrad.dynamics.engine.predict` runs it when no ``which`` is given.
    description : str
    check : callable
        ``(model, options) -> None``: refuses (``InvalidArgument`` naming the option) values it cannot take,
        before any simulation.
    """

    name: str
    family: str
    serves: Callable
    compute: Callable
    options: dict = field(default_factory=dict)
    default: Callable = lambda model: True
    description: str = ""
    check: Callable = lambda model, options: None


def register_family(family: ModelFamily) -> ModelFamily:
    """Register a model family (its module calls this once, on import).

    Parameters
    ----------
    family : ModelFamily

    Returns
    -------
    ModelFamily
        ``family`` itself.
    """
    _FAMILIES[family.name] = family
    return family


def register_predictor(predictor: Predictor) -> Predictor:
    """Register a prediction (the family's prediction modules call this once, on import).

    Parameters
    ----------
    predictor : Predictor

    Returns
    -------
    Predictor
        ``predictor`` itself.
    """
    PREDICTORS[(predictor.family, predictor.name)] = predictor
    return predictor


def family_named(name: str) -> ModelFamily:
    """The family registered as ``name`` (importing its module on first use).

    Parameters
    ----------
    name : str

    Returns
    -------
    ModelFamily
    """
    if name not in _FAMILIES:
        if not isinstance(name, str) or name not in FAMILY_MODULES:
            raise InvalidArgument(f"model must be one of {', '.join(sorted(FAMILY_MODULES))}, got {name!r}", "model")
        import_module(FAMILY_MODULES[name])
    return _FAMILIES[name]


def family_of(model) -> ModelFamily:
    """The family of ``model`` (a family's model, or a value some family turns into one).

    Parameters
    ----------
    model : object

    Returns
    -------
    ModelFamily
    """
    name = getattr(model, "family", None)
    if isinstance(name, str) and name in FAMILY_MODULES:
        return family_named(name)
    raise InvalidArgument(f"model must be a model of a registered family ({', '.join(sorted(FAMILY_MODULES))}), got {type(model).__name__}", "model")


def model_from_dict(data: dict):
    """A model from its JSON/TOML object: the family named by its ``"model"`` key (default
    ``"finetuning"``) reads the rest.

    Parameters
    ----------
    data : dict

    Returns
    -------
    model

    Examples
    --------
    >>> import popgrad
    >>> model = popgrad.general_model(popgrad.orthonormal_problem("relu", 3, 1.0, seed=0), train_c_hat=True)
    >>> model_from_dict(model.to_dict()) == model
    True
    """
    if not isinstance(data, dict):
        raise InvalidArgument(f"a model must be a JSON object, got {type(data).__name__}", "model")
    name = data.get("model", "finetuning")
    if not isinstance(name, str):
        raise InvalidArgument(f"model must be the name of a family ({', '.join(sorted(FAMILY_MODULES))}), got {type(name).__name__}", "model")
    return family_named(name).from_dict(data)


def predictors_for(model) -> dict:
    """name -> (Predictor, None or the reason it does not serve ``model``) for the model's family.

    Parameters
    ----------
    model : object

    Returns
    -------
    dict
    """
    family = family_of(model)
    model = family.as_model(model) or model
    return {name: (predictor, predictor.serves(model)) for (owner, name), predictor in PREDICTORS.items() if owner == family.name}
