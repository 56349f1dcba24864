"""Where and how tensors run: the device, its numeric precision and the module unwrapping
that DDP and torch.compile make necessary."""

from __future__ import annotations

from dataclasses import dataclass

from membench.errors import MembenchError

PRECISIONS = ("bf16", "fp32")


@dataclass
class Device:
    """Where and how tensors run. `precision` "fp32" (default) is float32 everywhere; "bf16"
    means bf16 autocast on CUDA (float32 on the CPU, where bf16 autocast is slower and changes
    the numbers). channels_last only on CUDA."""

    type: str  # "cpu" or "cuda"
    workers: int = 0
    compile: bool = False  # torch.compile (CUDA graphs on cuda: small batches are launch-bound)
    precision: str = "fp32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise MembenchError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")

    @property
    def torch(self):
        import torch

        return torch.device(self.type)

    @property
    def amp(self) -> bool:
        """Whether forward passes run under bf16 autocast."""
        return self.type == "cuda" and self.precision == "bf16"

    def autocast(self):
        import contextlib

        import torch

        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, model):
        import torch

        from membench.precision import keep_head_fp32

        keep_head_fp32(model)  # the output head and predictions stay fp32 under any autocast
        model = model.to(self.torch)
        if self.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if self.compile:  # in place: state_dict keys and custom methods stay as they are
            model.compile(mode="reduce-overhead" if self.type == "cuda" else None)
        return model

    def batch(self, x, normalizer):
        """A loader's uint8 batch on this device, normalised (and channels_last on CUDA)."""
        import torch

        x = x.to(self.torch, non_blocking=True)
        x = normalizer(x)
        if self.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def normalizer(self, pre):
        from membench.transforms import Normalizer

        return Normalizer(pre, channels_last=self.type == "cuda")


def resolve_device(name: str, workers: int | None = None, compile: bool = False,
                   precision: str = "fp32") -> Device:
    import os

    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise MembenchError(f"--device must be auto, cpu or cuda, not {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise MembenchError("--device cuda was asked for but no CUDA device is available")
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if name == "cuda" else 0
    return Device(type=name, workers=workers, compile=compile, precision=precision)


def unwrap(model):
    """The plain module under DDP (`.module`) or an old-style compiled wrapper (`._orig_mod`):
    the one with the state_dict keys and the model's own methods (loss, frozen_outputs)."""
    return getattr(model, "module", getattr(model, "_orig_mod", model))
