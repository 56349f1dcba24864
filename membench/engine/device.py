"""Where and how tensors run: the device, its numeric precision (fp32 by default on every
device, the protocol, exact; bf16 autocast on CUDA when asked, with an fp32 output head that
keeps predictions unquantised) and the module unwrapping that DDP and torch.compile make
necessary."""

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
        from membench.data.transforms import Normalizer

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

def resolve_precision(asked: str, device_type: str) -> str:
    """The precision computed on `device_type`: fp32 unless bf16 is asked for; bf16 on the CPU
    is refused (its autocast is slower there and membench's CPU numbers are fp32). "auto",
    the default before bf16 became opt-in, survives only in saved configurations: it means
    fp32 (the CLI no longer offers it)."""
    from membench.errors import MembenchError

    if asked == "auto":
        return "fp32"
    if asked not in ("fp32", "bf16"):
        raise MembenchError(f"--precision must be fp32 (default) or bf16, not {asked!r}")
    if asked == "bf16" and device_type != "cuda":
        raise MembenchError("--precision bf16 is bf16 autocast on CUDA; on the CPU membench computes in fp32 "
                            "(drop --precision bf16: fp32 is the default)")
    return asked


def keep_head_fp32(model) -> int:
    """Make every single-output linear layer (a memorability model's regression head) run in
    float32 on float32 inputs whatever autocast is active, so predictions are never
    quantised to bf16 (~0.004 steps near 0.75). Returns how many layers it changed."""
    import types

    import torch.nn as nn

    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == 1 and "forward" not in vars(module):
            # a bound method (not a closure): deepcopy rebinds it to the copy
            module.forward = types.MethodType(_fp32_forward, module)
            changed += 1
    return changed


def _fp32_forward(self, x):
    import torch

    with torch.autocast(device_type=x.device.type, enabled=False):
        return type(self).forward(self, x.float())
