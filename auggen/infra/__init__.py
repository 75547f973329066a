"""Infrastructure every other layer may use and that uses none of them: where the work
runs (``runtime``: devices, torchrun, collectives, precision), files (``files``: atomic
writes, JSON, safetensors bundles; ``inert_pickle``: safe loading), fault injection
(``faults``) and the training loop with its guard and log (``training_loop``,
``training_guard``, ``training_log``)."""
