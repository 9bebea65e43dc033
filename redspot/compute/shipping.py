"""What a cell's inputs cost to send: small values inline, large ones by object reference.

Each notebook value a cell reads is pickled once, with pickle protocol 5 and its large
buffers (numpy arrays, pandas columns, bytes) kept out of band: that checks it can be
sent at all, measures it, and costs almost nothing for array data, which is not copied.
A value of ``threshold`` bytes or more goes to the object store once; its fingerprint
(xxHash3 of the pickle and of each buffer: about 3 ms for 100 MB) is kept with the
reference, and while the same name holds an equal value, later cells send only the
reference.

The object store then holds the value until the name holds another one, the name is
gone from the notebook, or the kernel disconnects.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass, field

import cloudpickle
import xxhash

#: Values whose pickling is never in doubt and always small enough to go inline.
_SCALARS = (int, float, complex, bool, type(None))

#: Values from this many bytes go to the object store (Ray inlines arguments below 100 KiB).
DEFAULT_THRESHOLD = 1 << 20


class Packed:
    """A value pickled with its buffers out of band; unpickled where the cell runs.

    Ray pickles this object with protocol 5 too, so the buffers travel out of band
    again: on the worker they are the object store's memory, not a copy.
    """

    __slots__ = ("data", "buffers")

    def __init__(self, data: bytes, buffers: list):
        self.data = data
        self.buffers = buffers

    def __reduce__(self):
        return (Packed, (self.data, self.buffers))

    def unpack(self, writable: bool = False):
        """The value. Its buffers are used in place (zero-copy, read-only when they are the
        object store's) unless ``writable``: then copied, so arrays can be changed."""
        buffers = [bytearray(b) for b in self.buffers] if writable else self.buffers
        return pickle.loads(self.data, buffers=buffers)

    @property
    def size(self) -> int:
        return len(self.data) + sum(_nbytes(b) for b in self.buffers)

    def fingerprint(self) -> bytes:
        h = xxhash.xxh3_128()
        h.update(self.data)
        for buffer in self.buffers:
            view = memoryview(buffer)
            h.update(view if view.contiguous else view.tobytes())
        return h.digest()


def pack(value) -> Packed:
    """``value`` pickled for sending; raises what pickling raises."""
    buffers: list = []
    data = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    return Packed(data, buffers)


def _nbytes(buffer) -> int:
    return memoryview(buffer).nbytes


@dataclass
class Shipment:
    """A cell's inputs, ready to send."""

    inline: dict = field(default_factory=dict)  # name -> value, sent with the task
    refs: dict = field(default_factory=dict)  # name -> object reference of a Packed
    refused: list[str] = field(default_factory=list)  # "name (type: reason)"
    reused: list[str] = field(default_factory=list)  # names whose reference was sent again


class InputCache:
    """Object references of large values the notebook sent, by name and fingerprint.

    ``put`` stores one value and returns its reference (``ray.put``).
    """

    def __init__(self, put: Callable, threshold: int = DEFAULT_THRESHOLD):
        self.put = put
        self.threshold = threshold
        self._refs: dict[str, tuple[bytes, object]] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._refs

    def prepare(self, values: dict) -> Shipment:
        shipment = Shipment()
        for name, value in values.items():
            if isinstance(value, _SCALARS):
                shipment.inline[name] = value
                continue
            try:
                packed = pack(value)
            except Exception as e:  # anything pickling raises: the name is left out
                shipment.refused.append(f"{name} ({type(value).__name__}: {e})")
                continue
            if packed.size < self.threshold:
                shipment.inline[name] = packed
                continue
            fingerprint = packed.fingerprint()
            cached = self._refs.get(name)
            if cached is not None and cached[0] == fingerprint:
                shipment.refs[name] = cached[1]
                shipment.reused.append(name)
                continue
            ref = self.put(packed)
            self._refs[name] = (fingerprint, ref)
            shipment.refs[name] = ref
        return shipment

    def forget(self, keep: Callable[[str], bool] = lambda name: False) -> None:
        """Release the references of the names ``keep`` does not keep."""
        for name in [n for n in self._refs if not keep(n)]:
            del self._refs[name]


def unpack_inputs(inline: dict, refs: dict) -> dict:
    """On the worker: the cell's namespace from what :meth:`InputCache.prepare` sent."""
    values = {}
    for source in (inline, refs):
        for name, value in source.items():
            values[name] = value.unpack() if isinstance(value, Packed) else value
    return values
