"""Many identities at once: one job per identity, run on a Dask distributed cluster."""
