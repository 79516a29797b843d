"""Parameter sweeps: specifications (TOML/JSON), a resumable store keyed by content hash, a Dask executor,
and reports (tables, scaling fits, phase diagrams)."""
