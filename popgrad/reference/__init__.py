"""Slow, independent reference routes (mpmath, quadrature, Monte Carlo). Fast evaluation code never
imports this package; tests and verification reports do."""
