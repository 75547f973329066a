"""The AugGen pipeline: stages joined by folders on disk (see DESIGN.md).

``python -m auggen.pipeline`` runs ``data -> train_gen -> train_fr -> repro -> grid ->
generate -> train_mix -> evaluate -> report`` under ``runs/<preset>/<stage>``; each stage
writes ``config.json`` first and ``DONE`` last, so a rerun skips finished stages, resumes an
interrupted one and reruns what a config change touched. In Python::

    from auggen.pipeline.driver import run_pipeline
    from auggen.pipeline.presets import PRESETS
    from auggen.pipeline.stages import STAGES

    run_pipeline(PRESETS["micro"], "runs/micro", STAGES)
"""
