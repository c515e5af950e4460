"""Running a model on images: decoding (any image Pillow reads, tar members in place; JPEGs on
the GPU beside the CPU workers), the inputs of a run in one deterministic order, the DataLoader
pipeline that decodes in workers while the model computes, :class:`Classifier` (labels and
pooled features), and the engines that run its forward pass (torch; onnxruntime, on a graph
kept in the cache).

Owns: turning files, PIL images and tensors into batches, and batches into results, one outcome
per input, in input order, bad inputs reported, never dropped.
May use: ``models`` (to build the model), ``export`` (the onnxruntime engine's graph),
``cache`` (where that graph is kept), ``distributed``, ``zoo``, ``errors``, ``_util``.
"""

from __future__ import annotations

from ._batch import Batch
from ._classifier import Classifier, Outcome, Prediction
from ._devdecode import DECODE_MODES, DecodeStats, DeviceDecoder, decoder_for
from ._engines import ENGINES, EngineName, pooled_features
from ._growing import Growing, Mapped
from ._images import ImageSource, expand_paths, image_extensions, load_image, to_rgb, walk_files
from ._inputs import Entry, decode, encode, entry_path, iter_inputs, read_lines
from ._pipeline import (
    ImageInput,
    batch_size_for,
    chunk_for,
    default_workers,
    make_batch_loader,
    make_loader,
    usable_cores,
)
from ._tars import IMAGE_SUFFIXES, TarMember, is_tar, iter_members, split_member_path

__all__ = [
    "DECODE_MODES",
    "ENGINES",
    "IMAGE_SUFFIXES",
    "Batch",
    "Classifier",
    "DecodeStats",
    "DeviceDecoder",
    "EngineName",
    "Entry",
    "Growing",
    "ImageInput",
    "ImageSource",
    "Mapped",
    "Outcome",
    "Prediction",
    "TarMember",
    "batch_size_for",
    "chunk_for",
    "decode",
    "decoder_for",
    "default_workers",
    "encode",
    "entry_path",
    "expand_paths",
    "image_extensions",
    "is_tar",
    "iter_inputs",
    "iter_members",
    "load_image",
    "make_batch_loader",
    "make_loader",
    "pooled_features",
    "read_lines",
    "split_member_path",
    "to_rgb",
    "usable_cores",
    "walk_files",
]
