"""TensorFlow checkpoints (the tensor-bundle format that ``tf.train.Saver`` writes), read without
TensorFlow, and TF-slim's MobileNet variables in PyTorch's layouts.

A checkpoint ``<prefix>`` is two kinds of file. ``<prefix>.index`` is a LevelDB-style table: a
48-byte footer (the index block's offset and size as varints, then magic 0xdb4775248b80fb57) points
to an index block whose entries point to data blocks; each block holds entries (varint shared-key
length, unshared length, value length, key suffix, value) followed by its restart offsets, and a
5-byte trailer (compression byte, CRC). The entry under the empty key is a ``BundleHeaderProto``
(shard count, byte order); each other is a tensor's name and its ``BundleEntryProto`` (dtype, shape,
shard, offset, size), decoded here by hand. ``<prefix>.data-<shard>-of-<shards>`` holds the raw
tensors. Only what is needed is read: no code in a file is run, no TensorFlow object is built.
"""

from __future__ import annotations

import re
import struct
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..errors import first_line
from ..registry import TF_RANGE

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the magic number
_BLOCK_TRAILER = 5  # compression type (0: none) and a masked CRC32C
ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar")
_DATA_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}$")
# TensorFlow's DataType enum values this reader decodes (little-endian, as the bundle stores them).
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 9: "<i8", 19: "<f2"}
_DTYPE_NAMES = {7: "string", 10: "bool", 14: "bfloat16", 6: "int8", 4: "uint8", 5: "int16", 8: "complex64"}

# What a TF-slim training checkpoint holds beside the model: the step counter, the optimizer's slots
# and accumulators (RMSProp, Momentum, Adam) and the ExponentialMovingAverage shadows. Dropped.
_TRAINING_VARIABLE = re.compile(
    r"(^|/)(global_step|beta[12]_power)$|/(ExponentialMovingAverage|RMSProp(_1)?|Momentum|Adam(_1)?)$"
)
_TORCH_NAMES = {
    "weights": "weight",
    "depthwise_weights": "weight",
    "biases": "bias",
    "gamma": "weight",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
SLIM_IMAGENET_CLASSES = 1001  # slim's ImageNet classifiers: class 0 is the background


def is_archive(path: Path) -> bool:
    """Whether ``path`` is named as a tar archive (``.tgz``, ``.tar.gz``, ``.tar``)."""
    return path.name.endswith(ARCHIVE_SUFFIXES)


def bundle_prefix(path: Path) -> Path | None:
    """The checkpoint prefix that ``path`` names: the prefix itself (``<path>.index`` exists), an
    existing ``.index`` file or an existing ``.data-NNNNN-of-NNNNN`` shard; None for any other path."""
    shard = _DATA_SHARD.search(path.name)
    if path.name.endswith(".index") or shard:
        end = shard.start() if shard else -len(".index")
        return path.with_name(path.name[:end]) if path.is_file() else None
    return path if path.with_name(path.name + ".index").is_file() else None


def read_bundle(prefix: Path, *, skip: re.Pattern[str] | None = None) -> dict[str, np.ndarray]:
    """``{name: array}`` of the checkpoint ``prefix`` (in the file's order), leaving out the names
    that ``skip`` matches (their dtypes are then never looked at).

    Raises ``ValueError`` (one line) for a file that is not a checkpoint, is truncated or damaged,
    uses what this reader does not decode (compressed blocks, big-endian, partitioned variables,
    dtypes other than float16/32/64 and int32/64); ``FileNotFoundError`` for a missing file.
    """
    index = Path(f"{prefix}.index")
    if not index.is_file():
        raise FileNotFoundError(f"checkpoint index {str(index)!r} does not exist")

    def open_shard(suffix: str) -> BinaryIO:
        path = Path(f"{prefix}{suffix}")
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint data {str(path)!r} does not exist (it goes with its .index)")
        return path.open("rb")

    return _read(index.read_bytes(), open_shard, where=str(index), skip=skip)


def read_bundle_archive(path: Path, *, skip: re.Pattern[str] | None = None) -> dict[str, np.ndarray]:
    """:func:`read_bundle` of the one checkpoint in the tar archive ``path`` (slim publishes its
    checkpoints as ``<model>.tgz``), read from the archive: nothing is unpacked."""
    try:
        with tarfile.open(path) as tar:
            members = {member.name: member for member in tar.getmembers() if member.isfile()}
            indexes = [name for name in members if name.endswith(".index")]
            if len(indexes) != 1:
                raise ValueError(
                    f"archive {str(path)!r} holds {len(indexes)} TensorFlow checkpoints (.index files), not one"
                )
            prefix = indexes[0].removesuffix(".index")

            def open_shard(suffix: str) -> BinaryIO:
                if prefix + suffix not in members:
                    raise FileNotFoundError(f"archive {str(path)!r} has no {prefix + suffix} beside its .index")
                return tar.extractfile(members[prefix + suffix])

            index = tar.extractfile(members[indexes[0]]).read()
            return _read(index, open_shard, where=f"{path}:{indexes[0]}", skip=skip)
    except FileNotFoundError:
        raise
    # A damaged archive fails in tarfile, gzip or zlib in many ways.
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        reason = first_line(err)
        raise ValueError(f"weights file {str(path)!r} could not be read as a tar archive: {reason}") from None


def _read(
    index: bytes, open_shard: Callable[[str], BinaryIO], *, where: str, skip: re.Pattern[str] | None
) -> dict[str, np.ndarray]:
    """The tensors of the checkpoint whose index table is ``index``; ``open_shard(".data-...")``
    opens a data file; ``where`` names the index in errors."""
    try:
        header, entries = _read_index(index)
        shards = _check_header(header)
        wanted = {name: entry for name, entry in entries.items() if not (skip and skip.search(name))}
        return _read_tensors(open_shard, wanted, shards)
    except _BundleError as err:
        raise ValueError(f"weights file {where!r} could not be read as a TensorFlow checkpoint: {err}") from None


class _BundleError(Exception):
    """What is wrong with a checkpoint, in a few words."""


def _read_tensors(
    open_shard: Callable[[str], BinaryIO], entries: dict[str, dict[int, list[Any]]], shards: int
) -> dict[str, np.ndarray]:
    arrays, files = {}, {}
    try:
        for name, entry in entries.items():
            dtype, shape = _entry_dtype_and_shape(name, entry)
            shard = _last(entry, 3)
            if not 0 <= shard < shards:
                raise _BundleError(f"tensor {name!r} is in shard {shard} of {shards}")
            suffix = f".data-{shard:05d}-of-{shards:05d}"
            if suffix not in files:
                files[suffix] = open_shard(suffix)
            offset, size = _last(entry, 4), _last(entry, 5)
            if size != int(np.prod(shape, dtype=object)) * dtype.itemsize:
                raise _BundleError(f"tensor {name!r} of shape {shape} has {size} bytes")
            files[suffix].seek(offset)
            data = files[suffix].read(size)
            if len(data) != size:
                raise _BundleError(f"its {suffix[1:]} file is truncated (tensor {name!r} ends past its end)")
            arrays[name] = np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))
    finally:
        for file in files.values():
            file.close()
    return arrays


def _entry_dtype_and_shape(name: str, entry: dict[int, list[Any]]) -> tuple[np.dtype, tuple[int, ...]]:
    """A ``BundleEntryProto``'s dtype (field 1) and shape (field 2, a ``TensorShapeProto``)."""
    if 7 in entry:
        raise _BundleError(f"tensor {name!r} is a partitioned variable (slices), which this reader does not join")
    code = _last(entry, 1)
    if code not in _DTYPES:
        kind = _DTYPE_NAMES.get(code, f"DataType {code}")
        raise _BundleError(f"tensor {name!r} has dtype {kind} (readable: float16/32/64, int32/64)")
    shape_fields = _fields(_last(entry, 2, b""))
    if _last(shape_fields, 3):
        raise _BundleError(f"tensor {name!r} has an unknown rank")
    dims = tuple(_last(_fields(dim), 1) for dim in shape_fields.get(2, []))
    if any(size < 0 or size >= 1 << 40 for size in dims):
        raise _BundleError(f"tensor {name!r} has an invalid shape {dims}")
    return np.dtype(_DTYPES[code]), dims


def _check_header(header: bytes | None) -> int:
    """The shard count of a ``BundleHeaderProto`` (fields num_shards 1, endianness 2: 0 little)."""
    if header is None:
        raise _BundleError("no bundle header (it is a table, but not a checkpoint index)")
    fields = _fields(header)
    if _last(fields, 2) != 0:
        raise _BundleError("it is big-endian, which this reader does not decode")
    shards = _last(fields, 1, 1)
    if not 1 <= shards <= 100_000:
        raise _BundleError(f"its header gives {shards} shards")
    return shards


def _read_index(table: bytes) -> tuple[bytes | None, dict[str, dict[int, list[Any]]]]:
    """(the header entry, ``{tensor name: its BundleEntryProto fields}``) of an index table."""
    if len(table) < _FOOTER_SIZE or struct.unpack_from("<Q", table, len(table) - 8)[0] != _TABLE_MAGIC:
        raise _BundleError("no table footer (too short, truncated or another kind of file)")
    footer = table[-_FOOTER_SIZE:]
    _, position = _varint(footer, 0)  # the metaindex block's handle: unused
    _, position = _varint(footer, position)
    index_offset, position = _varint(footer, position)
    index_size, _ = _varint(footer, position)
    header, entries = None, {}
    for _, handle in _block(table, index_offset, index_size):
        offset, position = _varint(handle, 0)
        size, _ = _varint(handle, position)
        for key, value in _block(table, offset, size):
            if not key:
                header = value
                continue
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                raise _BundleError(f"a tensor name is not UTF-8: {key[:40]!r}") from None
            entries[name] = _fields(value)
    return header, entries


def _block(table: bytes, offset: int, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of the block at ``offset`` (``size`` bytes, then its trailer)."""
    if offset + size + _BLOCK_TRAILER > len(table) - _FOOTER_SIZE:
        raise _BundleError("a block lies past the end of the index (truncated)")
    compression = table[offset + size]
    if compression != 0:
        what = "snappy-compressed" if compression == 1 else f"compression type {compression}"
        raise _BundleError(f"its blocks are {what}; TensorFlow writes checkpoints uncompressed")
    block = table[offset : offset + size]
    if size < 4:
        raise _BundleError("a block is too short")
    restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * restarts
    if end < 0:
        raise _BundleError("a block's restart count is larger than the block")
    entries, key, position = [], b"", 0
    while position < end:
        shared, position = _varint(block, position)
        unshared, position = _varint(block, position)
        length, position = _varint(block, position)
        if shared > len(key) or position + unshared + length > end:
            raise _BundleError("a block entry is damaged")
        key = key[:shared] + block[position : position + unshared]
        position += unshared
        entries.append((key, block[position : position + length]))
        position += length
    return entries


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The unsigned varint at ``position`` and the position after it."""
    value = 0
    for shift in range(0, 70, 7):
        if position >= len(data):
            raise _BundleError("a number runs past the end of its data (truncated)")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
    raise _BundleError("a number is longer than 10 bytes (damaged)")


def _fields(message: bytes) -> dict[int, list[Any]]:
    """``{field number: [values]}`` of a protobuf message: varints as ints (64-bit two's complement),
    length-delimited fields as bytes, fixed-size fields as ints."""
    fields: dict[int, list[Any]] = {}
    position = 0
    while position < len(message):
        tag, position = _varint(message, position)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value, position = _varint(message, position)
            value = value - (1 << 64) if value >= 1 << 63 else value
        elif wire == 2:
            length, position = _varint(message, position)
            if position + length > len(message):
                raise _BundleError("a protobuf field runs past its message (damaged)")
            value, position = message[position : position + length], position + length
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if position + width > len(message):
                raise _BundleError("a protobuf field runs past its message (damaged)")
            value = int.from_bytes(message[position : position + width], "little")
            position += width
        else:
            raise _BundleError(f"a protobuf field has wire type {wire} (damaged)")
        fields.setdefault(field, []).append(value)
    return fields


def _last(fields: dict[int, list[Any]], number: int, default: Any = 0) -> Any:
    """A singular protobuf field's value (the last one given, as protobuf reads it), else its default."""
    return fields[number][-1] if number in fields else default


# --- TF-slim's MobileNets ---------------------------------------------------------------------


def read_slim_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, info) of a TF-slim checkpoint (its prefix, or a tar archive holding it), keyed
    ``"<scope>.<PyTorch name>"`` (``MobilenetV1/Conv2d_0.weight``,
    ``MobilenetV1/Conv2d_0/BatchNorm.running_mean``...) for a family's ``"tf-slim"`` layout.

    Kernels HWIO -> OIHW, depthwise (H, W, C, M) -> (C·M, 1, H, W); a BatchNorm without ``gamma``
    (slim's ``scale=False``, as in MobileNet V1) gets weight 1, and each gets ``num_batches_tracked``
    0. The training variables (``global_step``, optimizer slots, ExponentialMovingAverage shadows)
    are dropped. ``info`` records what reproduces TF: TF "SAME" padding, BatchNorm epsilon 1e-3,
    inputs in [-1, 1], and ``background_class`` when the classifier has slim's 1001 ImageNet classes
    (class 0 the background, which ``load_model(..., num_classes=1000)`` drops).
    """
    state: dict[str, torch.Tensor] = {}
    read = read_bundle_archive if is_archive(path) else read_bundle
    for name, value in read(path, skip=_TRAINING_VARIABLE).items():
        scope, _, variable = name.rpartition("/")
        tensor = torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))
        if variable == "depthwise_weights" and tensor.dim() == 4:
            tensor = tensor.permute(2, 3, 0, 1).reshape(-1, 1, *tensor.shape[:2])
        elif variable == "weights" and tensor.dim() == 4:
            tensor = tensor.permute(3, 2, 0, 1)
        state[f"{scope}.{_TORCH_NAMES.get(variable, variable)}"] = tensor.contiguous()
    if not state:
        raise ValueError(f"weights file {str(path)!r} is a TensorFlow checkpoint without model variables")
    for key in [key for key in state if key.endswith(".running_var")]:
        scope = key.removesuffix(".running_var")
        state.setdefault(f"{scope}.weight", torch.ones_like(state[key]))
        state[f"{scope}.num_batches_tracked"] = torch.tensor(0)
    info: dict[str, Any] = {"model_args": {"batchnorm": "tf", "padding": "same"}, **TF_RANGE}
    logits = [value for key, value in state.items() if key.endswith("/Logits/Conv2d_1c_1x1.bias")]
    if any(len(bias) == SLIM_IMAGENET_CLASSES for bias in logits):
        info["background_class"] = True
    return state, info
