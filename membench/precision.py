"""Numeric precision of a run: fp32 by default on every device (the protocol, exact), bf16
autocast on CUDA when asked (`--precision bf16`, a speed option whose effect on rho is not
measured yet), and the fp32 output head that keeps predictions unquantised under autocast."""

from __future__ import annotations


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
