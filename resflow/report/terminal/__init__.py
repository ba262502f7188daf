"""Rich tables, titles and headlines for runs, sweeps, compares, training and the demos."""
