"""Parameter counts, measured on the meta device (no memory, no weights needed)."""

from __future__ import annotations

from membench.spec import BuildContext, ModelSpec


def build_meta(spec: ModelSpec, options: dict[str, str] | None = None):
    """The model on the meta device, built with `options` (checked against the spec's
    declared options): a model's size may depend on them (e.g. a width)."""
    checked = spec.check_options(dict(options or {}))
    return spec.builder()(BuildContext(device="meta", pretrained=False, options=checked))


def used_in_forward(model, input_size: tuple[int, int]) -> int | None:
    """Parameters owned by modules whose forward ran on one meta batch: excludes layers
    a model carries but never calls (e.g. AMNet's unused ResNet50 layer4 and fc).
    None when the forward cannot run on the meta device."""
    import torch

    called: list = []
    handles = [m.register_forward_pre_hook(lambda mod, args: called.append(mod)) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(torch.empty(1, 3, *input_size, device="meta"))
    except Exception:
        return None
    finally:
        for h in handles:
            h.remove()
    seen: set[int] = set()
    n = 0
    for mod in called:
        for p in mod.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
    return n


def trainable_per_stage(spec: ModelSpec, model) -> dict[str, int]:
    """Trainable parameters in each stage: all but the stage's frozen prefixes. A chained
    stage trains another model and counts that model's trainable parameters (built without
    options: --model-option addresses the model named, never its upstream stages)."""
    from membench import registry

    out: dict[str, int] = {}
    for stage in spec.recipe:
        if stage.model:
            upstream = registry.get_model(stage.model)
            out[stage.name] = sum(trainable_per_stage(upstream, build_meta(upstream)).values())
            continue
        out[stage.name] = sum(p.numel() for name, p in model.named_parameters()
                              if not any(_under(name, f) for f in stage.frozen))
    return out


def _under(param_name: str, prefix: str) -> bool:
    return param_name == prefix or param_name.startswith(prefix + ".")


def count(spec: ModelSpec, options: dict[str, str] | None = None) -> dict:
    """{"model", "options", "total", "used", "trainable": {stage: n}, "reported"} of the
    configuration built with `options` (the spec's defaults where not given)."""
    options = spec.check_options(dict(options or {}))
    model = build_meta(spec, options)
    total = sum(p.numel() for p in model.parameters())
    used = used_in_forward(model, spec.preprocess.input_size)
    return {
        "model": spec.name,
        "options": options,
        "total": total,
        "used": used,
        "trainable": trainable_per_stage(spec, model),
        "reported": spec.reported.params if spec.reported else None,
    }
