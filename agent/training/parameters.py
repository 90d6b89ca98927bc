"""Parameter packages: a model's tensors with a version and a hash, checked before anything uses them.

A :class:`ParameterPackage` snapshots ``model.state_dict()`` (parameters and buffers, e.g. BatchNorm
statistics) in order, with names, shapes and dtypes, a ``version`` (the round or update number it
belongs to) and a sha256 over all of it. :func:`unpack_into` refuses a package whose hash, names or
shapes do not match the model, or that holds NaN/Inf: such tensors are logged on ``hypergpu.params``
and never loaded. :func:`validate_gradients` does the same for gradients before they are averaged.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from agent.protocol.wire import WireFormatError, tensor_data, tensors_from_bytes, tensors_to_bytes

log = logging.getLogger("hypergpu.params")

PACKAGE_MAGIC = b"HGPP1"
_HEADER_LENGTH = struct.Struct("<I")
_MAX_LISTED = 5  # names shown in one error line; the log gets all of them


class ParameterMismatchError(ValueError):
    """A package does not fit a model: other names, shapes or model."""


class PackageIntegrityError(ValueError):
    """A package's bytes or tensors do not match its hash or header."""


class NonFiniteError(ValueError):
    """Tensors hold NaN or Inf. ``names`` lists which ones."""

    def __init__(self, message: str, names: list[str]) -> None:
        super().__init__(message)
        self.names = names


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


NamedTensors = Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | Iterable[tuple[str, torch.Tensor]]


def _named(tensors: NamedTensors) -> list[tuple[str, torch.Tensor]]:
    if isinstance(tensors, Mapping):
        return list(tensors.items())
    items = list(tensors)
    if all(isinstance(item, torch.Tensor) for item in items):
        return [(f"#{index}", tensor) for index, tensor in enumerate(items)]
    return [(str(name), tensor) for name, tensor in items]


def find_non_finite(tensors: NamedTensors) -> list[str]:
    """Names of the floating-point tensors that hold NaN or Inf (``#i`` for an unnamed list)."""
    return [
        name
        for name, tensor in _named(tensors)
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all())
    ]


def validate_finite(tensors: NamedTensors, what: str = "parameters", source: str = "local") -> None:
    """Raise :class:`NonFiniteError` (and log a warning) if any tensor holds NaN or Inf.

    ``what``: e.g. "parameters" or "gradients"; ``source``: where they came from (a peer id, "local").
    """
    bad = find_non_finite(tensors)
    if bad:
        log.warning("rejected %s from %s: NaN/Inf in %s", what, source, ", ".join(bad))
        raise NonFiniteError(f"{what} from {source} hold NaN/Inf in {_listed(bad)}; not used", bad)


def validate_gradients(model: nn.Module, source: str = "local") -> None:
    """Raise :class:`NonFiniteError` if a gradient of ``model`` holds NaN or Inf (missing grads are fine)."""
    validate_finite(
        [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None], "gradients", source
    )


@dataclass(frozen=True)
class ParameterPackage:
    """Versioned, hashed snapshot of a model's state. ``shapes[i]``/``dtypes[i]`` describe
    ``tensors[i]`` named ``names[i]``; ``sha256`` covers version, model name, header and data."""

    version: int
    model_name: str
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    sha256: str
    tensors: tuple[torch.Tensor, ...]

    def header(self) -> dict[str, object]:
        """Everything but the tensors and the hash, as JSON-ready values."""
        return {
            "version": self.version,
            "model_name": self.model_name,
            "names": list(self.names),
            "shapes": [list(shape) for shape in self.shapes],
            "dtypes": list(self.dtypes),
        }

    def compute_sha256(self) -> str:
        """Hash of the header (canonical JSON) followed by each tensor's wire bytes."""
        digest = hashlib.sha256(json.dumps(self.header(), sort_keys=True).encode())
        for tensor in self.tensors:
            digest.update(tensor_data(tensor))
        return digest.hexdigest()

    def verify(self) -> None:
        """Raise :class:`PackageIntegrityError` if the tensors do not match the header or the hash."""
        if not len(self.names) == len(self.shapes) == len(self.dtypes) == len(self.tensors):
            raise PackageIntegrityError(
                f"package v{self.version} lists {len(self.names)} names "
                f"but carries {len(self.tensors)} tensors"
            )
        for name, shape, dtype, tensor in zip(
            self.names, self.shapes, self.dtypes, self.tensors, strict=True
        ):
            if tuple(tensor.shape) != shape or str(tensor.dtype) != dtype:
                raise PackageIntegrityError(
                    f"package v{self.version}: {name} is {tuple(tensor.shape)} {tensor.dtype}, "
                    f"header says {shape} {dtype}"
                )
        if self.compute_sha256() != self.sha256:
            raise PackageIntegrityError(
                f"package v{self.version} of {self.model_name} fails its sha256; it was corrupted in transit"
            )

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data (the wire adds a few header bytes per tensor)."""
        return sum(t.numel() * t.element_size() for t in self.tensors)

    def to_bytes(self) -> bytes:
        """uint32 header length, JSON header with the hash, then the tensors in wire format."""
        header = json.dumps({**self.header(), "sha256": self.sha256}, sort_keys=True).encode()
        return PACKAGE_MAGIC + _HEADER_LENGTH.pack(len(header)) + header + tensors_to_bytes(self.tensors)

    @classmethod
    def from_header(
        cls, header: Mapping[str, Any], sha256: str, tensors: Sequence[torch.Tensor]
    ) -> ParameterPackage:
        """Rebuild a package from :meth:`header` output, its hash and its tensors (not yet verified:
        call :meth:`verify` or :func:`unpack_into`). Raises KeyError/TypeError/ValueError if malformed."""
        return cls(
            version=int(header["version"]),
            model_name=str(header["model_name"]),
            names=tuple(str(name) for name in header["names"]),
            shapes=tuple(tuple(int(size) for size in shape) for shape in header["shapes"]),
            dtypes=tuple(str(dtype) for dtype in header["dtypes"]),
            sha256=sha256,
            tensors=tuple(tensors),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ParameterPackage:
        """Decode :meth:`to_bytes` output and verify it; raises PackageIntegrityError when invalid."""
        start = len(PACKAGE_MAGIC) + _HEADER_LENGTH.size
        if data[: len(PACKAGE_MAGIC)] != PACKAGE_MAGIC or len(data) < start:
            raise PackageIntegrityError("not a parameter package (bad magic or truncated header)")
        (header_length,) = _HEADER_LENGTH.unpack_from(data, len(PACKAGE_MAGIC))
        try:
            header = json.loads(data[start : start + header_length])
            tensors = tensors_from_bytes(memoryview(data)[start + header_length :])
            package = cls.from_header(header, str(header["sha256"]), tensors)
        except (ValueError, KeyError, TypeError, WireFormatError) as error:
            raise PackageIntegrityError(f"corrupt parameter package: {error}") from error
        package.verify()
        return package


def _model_name(model: nn.Module, model_name: str | None) -> str:
    return model_name or getattr(model, "registry_name", None) or type(model).__name__


def pack(
    model: nn.Module, version: int, model_name: str | None = None, *, check_finite: bool = True
) -> ParameterPackage:
    """Snapshot ``model.state_dict()`` (copied, detached, on the CPU) as package ``version`` (>= 0).

    ``model_name`` defaults to the registry name set by ``build_model``. With ``check_finite`` a model
    holding NaN/Inf raises :class:`NonFiniteError` instead of being packed for peers.
    """
    if version < 0:
        raise ValueError(f"package version must be >= 0, got {version}")
    state = model.state_dict()
    if check_finite:
        validate_finite(state, "parameters", "this agent's model")
    tensors = tuple(t.detach().to("cpu", copy=True) for t in state.values())
    unsigned = ParameterPackage(
        version=version,
        model_name=_model_name(model, model_name),
        names=tuple(state),
        shapes=tuple(tuple(t.shape) for t in tensors),
        dtypes=tuple(str(t.dtype) for t in tensors),
        sha256="",
        tensors=tensors,
    )
    return replace(unsigned, sha256=unsigned.compute_sha256())


def unpack_into(model: nn.Module, package: ParameterPackage, source: str = "peer") -> None:
    """Load ``package`` into ``model`` in place, after checking hash, model, names, shapes and finiteness.

    ``source`` names the sender in errors and logs. Nothing is copied unless every check passes.
    Raises PackageIntegrityError, ParameterMismatchError or NonFiniteError.
    """
    package.verify()
    expected_name = getattr(model, "registry_name", None)
    if expected_name is not None and package.model_name != expected_name:
        raise ParameterMismatchError(
            f"package v{package.version} from {source} is for model {package.model_name!r}, "
            f"this agent trains {expected_name!r}; both must use the same training.model"
        )
    state = model.state_dict()
    missing = [name for name in state if name not in set(package.names)]
    unexpected = [name for name in package.names if name not in state]
    if missing or unexpected:
        raise ParameterMismatchError(
            f"package v{package.version} from {source} does not fit {package.model_name}: "
            + "; ".join(
                part
                for part in (
                    f"missing {_listed(missing)}" if missing else "",
                    f"unexpected {_listed(unexpected)}" if unexpected else "",
                )
                if part
            )
        )
    wrong = [
        f"{name} {tuple(state[name].shape)} vs {shape}"
        for name, shape in zip(package.names, package.shapes, strict=True)
        if tuple(state[name].shape) != shape
    ]
    if wrong:
        raise ParameterMismatchError(
            f"package v{package.version} from {source} has other shapes (model vs package): {_listed(wrong)}"
        )
    validate_finite(zip(package.names, package.tensors, strict=True), "parameters", source)
    with torch.no_grad():
        for name, tensor in zip(package.names, package.tensors, strict=True):
            state[name].copy_(tensor)


@contextlib.contextmanager
def parameters_swapped(model: nn.Module, values: Sequence[torch.Tensor] | None) -> Iterator[None]:
    """Temporarily load ``values`` into ``model``'s parameters (no-op for None)."""
    if values is None:
        yield
        return
    params = list(model.parameters())
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for param, value in zip(params, values, strict=True):
            param.copy_(value.to(param.device))
    try:
        yield
    finally:
        with torch.no_grad():
            for param, value in zip(params, saved, strict=True):
                param.copy_(value)
