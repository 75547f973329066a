"""Analysis and figures below the pipeline: the leakage audit (nearest real image of each
generated one), feature distances (FD/KD between the sets), labelled montages and the
matplotlib helpers. They take sources, embedders and paths, never a stage or a run."""
