"""Face datasets: image folders, RecordIO, verification .bin, the bundled ORL faces."""

from auggen.data.types import LabeledImages

__all__ = ["LabeledImages"]
