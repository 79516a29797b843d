"""The committee machine's one-step-mean map (popgrad.models.committee.one_step) against the exact chain at
small d, where the d -> inf ODE is off by O(1/d): for linear units with a frozen second layer the mean drift is
affine in the state, so the iterated map is the chain's exact mean (up to the Monte Carlo error of its O(1)
curvature term, carried in its band)."""

import numpy as np
import pytest

import popgrad
from popgrad.dynamics.engine import predict
from popgrad.models.committee.one_step import one_step_mean
from popgrad.models.committee.population import ode_expectations
from popgrad.models.committee.spec import committee_model


def _model(activation="linear", train=False):
    return committee_model(activation, width=2, teacher_width=2, Q0=0.3 * np.eye(2), R0=[[0.1, 0.0], [0.0, 0.05]], train_second_layer=train, noise=0.3, student_second_layer=[0.8, 1.1])


def test_the_drift_has_the_exact_finite_d_noise_term_for_linear_units():
    # linear units, s = 1: F = a_i a_k ((f* - f)^2 + tau^2) with (f* - f)^2 quadratic in u, so by Wick
    # E[F |x|^2] = d E[F] + 2 a_i a_k E[(f* - f)^2] = (d + 2) E[F] - 2 tau^2 a_i a_k exactly; the Monte Carlo
    # estimate of the O(1) term agrees within its standard error
    model = _model()
    Q, R, a = 0.3 * np.eye(2)[None], np.array([[[0.1, 0.0], [0.0, 0.05]]]), np.array([[0.8, 1.1]])
    d, eta = 20, 0.025
    g = np.random.default_rng(0).normal(size=(20, 10_000, 4))
    parts = [one_step_mean(model, d, eta, Q, R, a, batch) for batch in g]
    dQ = np.mean([part[0] for part in parts], axis=0)
    se = np.std([part[0] for part in parts], axis=0, ddof=1) / np.sqrt(len(parts))
    e = ode_expectations(model, Q, R, a)
    exact_Q = eta * (e.delta_lambda + np.swapaxes(e.delta_lambda, -1, -2)) + eta**2 * ((d + 2) * e.delta_delta - 2 * 0.3**2 * np.outer(a[0], a[0]))
    for dR, da in ((part[1], part[2]) for part in parts):
        assert np.abs(dR - eta * e.delta_nu).max() < 1e-15
        assert np.all(da == 0)
    assert np.all(np.abs(dQ - exact_Q) < 4 * se + 1e-15), ((dQ - exact_Q) / se)
    assert np.all(se < 1e-2 * eta**2 * d * np.abs(e.delta_delta))  # the Monte Carlo term is small beside d E[F]


def test_one_step_mean_matches_the_chain_at_d_20_where_the_ode_does_not():
    d = 20
    model = _model()
    run = popgrad.simulate(model, d=d, delta=0.5, checkpoints=[0, 2 * d, 5 * d, 10 * d, 20 * d], trajectories=4000, seed=1)
    p = predict(run, which=["ode", "one_step_mean"])
    assert not p.failures
    squares = {}
    for name in ("Q", "R"):
        x = run.observables[name][:, 1:]
        mean, se = x.mean(0), x.std(0, ddof=1) / np.sqrt(x.shape[0])
        lower, upper = (b[1:] for b in p.bands["one_step_mean"][name])
        mc = (upper - lower) / 4  # the band is 2 Monte Carlo standard errors each side
        z_map = (p.values["one_step_mean"][name].mean(0)[1:] - mean) / np.sqrt(se**2 + mc**2)
        z_ode = (p.values["ode"][name].mean(0)[1:] - mean) / se
        assert np.abs(z_map).max() < 4, (name, z_map)
        squares[name] = (float((z_map**2).sum()), float((z_ode**2).sum()))
    assert squares["Q"][1] > 16 * squares["Q"][0], squares  # the ODE is many standard errors off in Q
    assert np.abs((p.values["ode"]["Q"].mean(0)[1:] - run.observables["Q"][:, 1:].mean(0)) / (run.observables["Q"][:, 1:].std(0, ddof=1) / np.sqrt(4000))).max() > 4
