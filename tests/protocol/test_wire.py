"""Wire serialization: bitwise round-trips of every dtype and odd shape, size on the wire, speed, bad input.

Run: .venv/bin/python -m pytest tests/protocol/test_wire.py -q -s
"""

from __future__ import annotations

import time

import pytest
import torch

from agent.protocol.wire import (
    WireFormatError,
    supported_dtypes,
    tensor_from_bytes,
    tensor_to_bytes,
    tensors_from_bytes,
    tensors_to_bytes,
)


def _bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same dtype, shape and bytes (so NaN payloads and -0.0 count)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.numel() == 0:
        return True
    a, b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    if a.dtype.is_floating_point or a.dtype.is_complex:
        return torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    return torch.equal(a, b)


def _sample(dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if dtype.is_floating_point or dtype.is_complex:
        values = torch.randn(shape, generator=generator, dtype=torch.float64) * 1e3
        values = values.to(dtype)
        if values.numel() >= 3:
            flat = values.view(-1)
            flat[0], flat[1], flat[2] = float("nan"), float("-inf"), -0.0
        return values
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, shape, generator=generator, dtype=torch.int64).to(dtype)


@pytest.mark.parametrize("dtype", supported_dtypes(), ids=str)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (7,), (2, 3, 4)], ids=str)
def test_every_dtype_and_shape_round_trips_bitwise(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    original = _sample(dtype, shape)
    restored = tensor_from_bytes(tensor_to_bytes(original))
    assert _bitwise_equal(original, restored)


def test_common_dtypes_are_supported() -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.bool):
        assert dtype in supported_dtypes()


def test_non_contiguous_and_grad_tensors_and_owned_memory() -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    for view in (base.t(), base[:, ::2], base.expand(3, 4, 6), base[1:3, 2:5]):
        assert not view.is_contiguous() or view.storage_offset() > 0
        assert _bitwise_equal(tensor_from_bytes(tensor_to_bytes(view)), view.contiguous())
    weight = torch.randn(5, requires_grad=True)
    restored = tensor_from_bytes(tensor_to_bytes(weight))
    assert not restored.requires_grad and torch.equal(restored, weight.detach())
    restored += 1  # the result owns writable memory
    assert not torch.equal(restored, weight.detach())


def test_lists_round_trip_in_order_including_empty_list() -> None:
    tensors = [
        torch.randn(3, 3),
        torch.tensor(True),
        torch.zeros(0, dtype=torch.int64),
        torch.randn(2).bfloat16(),
    ]
    restored = tensors_from_bytes(tensors_to_bytes(tensors))
    assert len(restored) == 4 and all(_bitwise_equal(a, b) for a, b in zip(tensors, restored, strict=True))
    assert tensors_from_bytes(tensors_to_bytes([])) == []


def test_ten_million_floats_take_forty_million_bytes_plus_a_small_header() -> None:
    tensor = torch.randn(10_000_000)
    encode_s = decode_s = float("inf")
    for _ in range(2):  # best of two: the machine is shared
        started = time.perf_counter()
        blob = tensor_to_bytes(tensor)
        encode_s = min(encode_s, time.perf_counter() - started)
        started = time.perf_counter()
        restored = tensor_from_bytes(blob)
        decode_s = min(decode_s, time.perf_counter() - started)
    header = len(blob) - 40_000_000
    print(
        f"10M float32: {len(blob):,} bytes on the wire ({header} header), "
        f"encode {encode_s * 1e3:.0f} ms ({40 / encode_s:.0f} MB/s), "
        f"decode {decode_s * 1e3:.0f} ms ({40 / decode_s:.0f} MB/s)"
    )
    assert header == 14  # magic 3 + version 1 + dtype 1 + ndim 1 + one uint64 dimension
    assert torch.equal(restored, tensor)
    in_list = tensors_to_bytes([tensor])
    assert len(in_list) == 40_000_000 + 14 + 8
    # about 0.1 s each way on an idle 2-core machine; a generous bound for a shared one
    assert encode_s < 3.0 and decode_s < 3.0


def test_truncated_and_corrupt_input_raise_wire_format_errors() -> None:
    blob = tensor_to_bytes(torch.randn(4, 4))
    assert issubclass(WireFormatError, ValueError)
    cases = {
        "truncated tensor data": blob[:-1],
        "truncated tensor header": blob[:3],
        "truncated tensor shape": blob[:10],
        "bad tensor magic": b"XYZ" + blob[3:],
        "unsupported wire version": blob[:3] + b"\x09" + blob[4:],
        "unknown dtype code": blob[:4] + b"\xee" + blob[5:],
        "dimensions": blob[:5] + b"\xff" + blob[6:],
        "unexpected bytes after the tensor": blob + b"\x00",
    }
    for expected, bad in cases.items():
        with pytest.raises(WireFormatError, match=expected):
            tensor_from_bytes(bad)
    listed = tensors_to_bytes([torch.ones(2), torch.ones(3)])
    for bad in (listed[:5], listed[:-2], b"HGT" + listed[3:], listed + b"!"):
        with pytest.raises(WireFormatError):
            tensors_from_bytes(bad)


def test_unsupported_tensors_are_refused_on_the_way_out() -> None:
    with pytest.raises(TypeError, match="to_dense"):
        tensor_to_bytes(torch.eye(3).to_sparse())
    with pytest.raises(TypeError, match="cannot serialize dtype"):
        tensor_to_bytes(torch.zeros(2, dtype=torch.float8_e4m3fn))
