"""Compact binary serialization of tensors for the wire: a few header bytes, then the raw data.

One tensor is encoded as::

    magic  b"HGT"        3 bytes
    version              1 byte  (WIRE_VERSION)
    dtype code           1 byte  (see _DTYPES)
    ndim                 1 byte
    shape                ndim x uint64, little-endian
    data                 numel x itemsize bytes, little-endian, C order

A list of tensors is ``b"HGL" + version + uint32 count`` followed by the encoded tensors. A 10M-element
float32 tensor therefore takes 40,000,000 + 14 bytes.

Hand-written rather than safetensors: the wire carries anonymous lists of tensors, for which a per-file
JSON header with names and offsets is overhead and an extra dependency; this format is a dozen lines of
``struct`` and numpy, decodes without parsing text, and is validated field by field below.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence

import numpy as np
import torch

WIRE_VERSION = 1
TENSOR_MAGIC = b"HGT"
LIST_MAGIC = b"HGL"
MAX_NDIM = 32

_TENSOR_HEADER = struct.Struct("<3sBBB")  # magic, version, dtype code, ndim
_LIST_HEADER = struct.Struct("<3sBI")  # magic, version, count
_DIM = struct.Struct("<Q")

# code -> (torch dtype, numpy dtype used to move the bytes). bfloat16 has no numpy type: its bytes
# travel as uint16 and are reinterpreted on arrival. Codes are part of the wire format: never renumber.
_DTYPES: dict[int, tuple[torch.dtype, np.dtype]] = {
    1: (torch.float32, np.dtype("<f4")),
    2: (torch.float64, np.dtype("<f8")),
    3: (torch.float16, np.dtype("<f2")),
    4: (torch.bfloat16, np.dtype("<u2")),
    5: (torch.int8, np.dtype("i1")),
    6: (torch.uint8, np.dtype("u1")),
    7: (torch.int16, np.dtype("<i2")),
    8: (torch.int32, np.dtype("<i4")),
    9: (torch.int64, np.dtype("<i8")),
    10: (torch.bool, np.dtype("?")),
    11: (torch.complex64, np.dtype("<c8")),
    12: (torch.complex128, np.dtype("<c16")),
}
_CODE_OF: dict[torch.dtype, int] = {torch_dtype: code for code, (torch_dtype, _) in _DTYPES.items()}


class WireFormatError(ValueError):
    """Bytes that are not a valid encoding: truncated, corrupt, or from an unknown format version."""


def supported_dtypes() -> list[torch.dtype]:
    """The tensor dtypes this format can carry."""
    return list(_CODE_OF)


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A little-endian, C-contiguous numpy view (or copy) of ``tensor``'s bytes."""
    tensor = tensor.detach()
    if tensor.layout != torch.strided:
        raise TypeError(f"cannot serialize a {tensor.layout} tensor; convert it with .to_dense() first")
    if tensor.dtype not in _CODE_OF:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in _CODE_OF)
        raise TypeError(f"cannot serialize dtype {tensor.dtype}; supported: {allowed}")
    tensor = tensor.cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.view(torch.uint16)
    array = tensor.numpy()
    if sys.byteorder != "little":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.reshape(-1)


def tensor_data(tensor: torch.Tensor) -> memoryview:
    """The tensor's data exactly as it travels on the wire (little-endian, C order), as bytes.

    A view without copying when the tensor is already contiguous on the CPU; used for hashing.
    """
    return memoryview(_to_numpy(tensor).view(np.uint8))


def _encode(tensor: torch.Tensor, parts: list[bytes | memoryview]) -> None:
    code = _CODE_OF.get(tensor.dtype)
    array = _to_numpy(tensor)
    assert code is not None  # _to_numpy rejected unsupported dtypes
    shape = tuple(tensor.shape)
    if len(shape) > MAX_NDIM:
        raise TypeError(f"cannot serialize a tensor with {len(shape)} dimensions; at most {MAX_NDIM}")
    parts.append(_TENSOR_HEADER.pack(TENSOR_MAGIC, WIRE_VERSION, code, len(shape)))
    parts.append(b"".join(_DIM.pack(size) for size in shape))
    # memoryview avoids one copy of the data: b"".join copies it straight into the result.
    parts.append(memoryview(array.view(np.uint8)))


def _decode(buffer: memoryview, offset: int) -> tuple[torch.Tensor, int]:
    """Decode one tensor starting at ``offset``; return it and the offset just past it."""
    end_of_header = offset + _TENSOR_HEADER.size
    if len(buffer) < end_of_header:
        raise WireFormatError(
            f"truncated tensor header at byte {offset}: need {_TENSOR_HEADER.size} bytes, "
            f"have {len(buffer) - offset}"
        )
    magic, version, code, ndim = _TENSOR_HEADER.unpack_from(buffer, offset)
    if magic != TENSOR_MAGIC:
        raise WireFormatError(
            f"bad tensor magic {bytes(magic)!r} at byte {offset}; expected {TENSOR_MAGIC!r}"
        )
    if version != WIRE_VERSION:
        raise WireFormatError(f"unsupported wire version {version}; this agent reads version {WIRE_VERSION}")
    if code not in _DTYPES:
        raise WireFormatError(f"unknown dtype code {code} at byte {offset}")
    if ndim > MAX_NDIM:
        raise WireFormatError(f"tensor claims {ndim} dimensions (at most {MAX_NDIM}); the data is corrupt")
    offset = end_of_header
    if len(buffer) < offset + ndim * _DIM.size:
        raise WireFormatError(f"truncated tensor shape at byte {offset}")
    shape = tuple(_DIM.unpack_from(buffer, offset + i * _DIM.size)[0] for i in range(ndim))
    offset += ndim * _DIM.size
    torch_dtype, numpy_dtype = _DTYPES[code]
    numel = 1
    for size in shape:
        numel *= size
    nbytes = numel * numpy_dtype.itemsize
    if len(buffer) - offset < nbytes:
        raise WireFormatError(
            f"truncated tensor data: shape {list(shape)} of {torch_dtype} needs {nbytes} bytes, "
            f"have {len(buffer) - offset}"
        )
    # copy: the result must own writable memory, not alias the received bytes
    array = np.frombuffer(buffer, dtype=numpy_dtype, count=numel, offset=offset).copy()
    tensor = torch.from_numpy(array.astype(array.dtype.newbyteorder("="), copy=False))
    if torch_dtype == torch.bfloat16:
        tensor = tensor.view(torch.bfloat16)
    return tensor.reshape(shape), offset + nbytes


def tensor_to_bytes(tensor: torch.Tensor) -> bytes:
    """Encode one tensor (any device, contiguous or not, 0-d or empty) as header + raw bytes."""
    parts: list[bytes | memoryview] = []
    _encode(tensor, parts)
    return b"".join(parts)


def tensor_from_bytes(data: bytes | bytearray | memoryview) -> torch.Tensor:
    """Decode bytes made by :func:`tensor_to_bytes` into a new CPU tensor that owns its memory.

    Raises :class:`WireFormatError` on truncated, corrupt or trailing data.
    """
    buffer = memoryview(data).cast("B")
    tensor, end = _decode(buffer, 0)
    if end != len(buffer):
        raise WireFormatError(f"{len(buffer) - end} unexpected bytes after the tensor")
    return tensor


def tensors_to_bytes(tensors: Sequence[torch.Tensor]) -> bytes:
    """Encode a list of tensors in order; the result is one ``bytes`` object."""
    parts: list[bytes | memoryview] = [_LIST_HEADER.pack(LIST_MAGIC, WIRE_VERSION, len(tensors))]
    for tensor in tensors:
        _encode(tensor, parts)
    return b"".join(parts)


def tensors_from_bytes(data: bytes | bytearray | memoryview) -> list[torch.Tensor]:
    """Decode bytes made by :func:`tensors_to_bytes`. Raises :class:`WireFormatError` when invalid."""
    buffer = memoryview(data).cast("B")
    if len(buffer) < _LIST_HEADER.size:
        raise WireFormatError(f"truncated tensor list: {len(buffer)} bytes, header needs {_LIST_HEADER.size}")
    magic, version, count = _LIST_HEADER.unpack_from(buffer, 0)
    if magic != LIST_MAGIC:
        raise WireFormatError(f"bad tensor-list magic {bytes(magic)!r}; expected {LIST_MAGIC!r}")
    if version != WIRE_VERSION:
        raise WireFormatError(f"unsupported wire version {version}; this agent reads version {WIRE_VERSION}")
    offset = _LIST_HEADER.size
    tensors = []
    for _ in range(count):
        tensor, offset = _decode(buffer, offset)
        tensors.append(tensor)
    if offset != len(buffer):
        raise WireFormatError(f"{len(buffer) - offset} unexpected bytes after {count} tensors")
    return tensors
