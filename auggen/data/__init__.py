"""Face datasets: image folders, RecordIO, verification .bin, the bundled ORL faces;
``open_dataset(path)`` says which one is at a path and opens it."""

from auggen.data.dataset import dataset_kind, open_dataset
from auggen.data.image_codec import decode_image, encode_image
from auggen.data.image_folder import read_image_folder, write_image_folder
from auggen.data.orl import load_orl, orl_root
from auggen.data.recordio import read_recordio, write_recordio
from auggen.data.tinyface import read_identification_split, read_tinyface
from auggen.data.transforms import center_crop_square, resize_images
from auggen.data.types import LabeledImages
from auggen.data.verification_bin import read_verification_bin, write_verification_bin

__all__ = [
    "LabeledImages",
    "center_crop_square",
    "dataset_kind",
    "decode_image",
    "encode_image",
    "load_orl",
    "open_dataset",
    "orl_root",
    "read_identification_split",
    "read_image_folder",
    "read_recordio",
    "read_tinyface",
    "read_verification_bin",
    "resize_images",
    "write_image_folder",
    "write_recordio",
    "write_verification_bin",
]
