"""Numeric precision of a run: what `--precision auto` means on a device, and the fp32
output head that keeps predictions unquantised under bf16 autocast."""

from __future__ import annotations


def resolve_precision(asked: str, device_type: str) -> str:
    """"auto" is bf16 autocast on CUDA and fp32 on the CPU; bf16 on the CPU is refused (its
    autocast is slower there and membench's CPU numbers are fp32)."""
    from membench.errors import MembenchError

    if asked == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    if asked not in ("fp32", "bf16"):
        raise MembenchError(f"--precision must be auto, fp32 or bf16, not {asked!r}")
    if asked == "bf16" and device_type != "cuda":
        raise MembenchError("--precision bf16 is bf16 autocast on CUDA; on the CPU membench computes in fp32 "
                            "(use --precision fp32 or auto)")
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
