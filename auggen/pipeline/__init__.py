"""The AugGen pipeline: stages joined by folders on disk (see DESIGN.md)."""
