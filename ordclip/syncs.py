"""Counting host syncs: the places where the host waits for the device to read a value back.

A training step should have none, so that the host can queue the next step while the device
still runs this one. On the CPU nothing waits, so the counter records the operations that
would: on any device it sees, through a TorchDispatchMode,

- ``aten._local_scalar_dense`` (``.item()``, ``int(t)``, ``float(t)``, ``bool(t)``, ``if t:``);
- operations whose output size depends on the data (``nonzero``, ``masked_select``, ``unique``,
  boolean-mask indexing, ``repeat_interleave`` without ``output_size``);
- copies from an accelerator to the host, and host-to-accelerator copies that are not
  ``non_blocking`` (on CUDA they wait for the stream);

and, by wrapping the Tensor methods, every ``.tolist()``, ``.numpy()`` and ``.cpu()`` (a no-op
on a CPU tensor, a sync on an accelerator's). Where CUDA is in use, ``torch.cuda``'s own sync
debug mode adds the syncs it detects as warnings.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

DATA_DEPENDENT = {
    aten._local_scalar_dense, aten.nonzero, aten.nonzero_static, aten.masked_select, aten._unique,
    aten._unique2, aten.unique_dim, aten.unique_consecutive, aten.argwhere,
}
HOST_READS = ("tolist", "numpy", "cpu")


class _Dispatch(TorchDispatchMode):
    def __init__(self, events: list[str], host_too: bool = True) -> None:
        super().__init__()
        self.events, self.host_too = events, host_too

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        packet = func.overloadpacket
        if packet in DATA_DEPENDENT:
            if self.host_too or any(isinstance(a, torch.Tensor) and a.device.type != "cpu" for a in args):
                self.events.append(str(func))
        elif packet in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_) and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] or ())):
            self.events.append(f"{func} with a boolean mask")
        elif packet is aten.repeat_interleave and kwargs.get("output_size") is None:
            self.events.append(f"{func} without output_size")
        elif packet is aten._to_copy or packet is aten.copy_:
            if packet is aten._to_copy:
                src, dst, non_blocking = args[0], kwargs.get("device"), kwargs.get("non_blocking", False)
            else:
                src, dst = args[1], args[0].device
                non_blocking = kwargs.get("non_blocking", args[2] if len(args) > 2 else False)
            dst = torch.device(dst) if dst is not None else src.device
            if isinstance(src, torch.Tensor) and src.device != dst:
                if dst.type == "cpu":
                    self.events.append(f"{func} to the host")
                elif src.device.type == "cpu" and not non_blocking:
                    self.events.append(f"{func} to {dst} without non_blocking")
        return func(*args, **kwargs)


@contextlib.contextmanager
def count_syncs(device: str | torch.device = "cpu") -> Iterator[list[str]]:
    """Record in the yielded list one entry per host sync (see the module docstring) made
    inside the block. ``device``: where the work runs; on the CPU (the proxy) reads of any
    tensor count, on an accelerator only reads of tensors on it (a host-resident scalar, such as
    a non-fused optimizer's step counter, is read without waiting)."""
    host_too = torch.device(device).type == "cpu"
    events: list[str] = []
    saved = {}
    for name in HOST_READS:
        saved[name] = torch.Tensor.__dict__.get(name)
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _name=name, _original=original, **kwargs):
            events.append(f"Tensor.{_name}()")
            return _original(self, *args, **kwargs)

        setattr(torch.Tensor, name, wrapper)
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    try:
        with warnings.catch_warnings(record=True) as caught, _Dispatch(events, host_too):
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                yield events
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
        events += [f"CUDA: {w.message}" for w in caught if "synchroniz" in str(w.message)]
    finally:
        for name, value in saved.items():
            if value is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, value)
