"""Model-agnostic dynamics engines: ODE solvers and the trajectory driver."""
