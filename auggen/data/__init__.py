"""Face datasets: image folders, RecordIO, verification .bin, the bundled ORL faces."""

from auggen.data.orl import load_orl, orl_root
from auggen.data.transforms import center_crop_square, resize_images
from auggen.data.types import LabeledImages

__all__ = ["LabeledImages", "center_crop_square", "load_orl", "orl_root", "resize_images"]
