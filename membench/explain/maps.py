"""The maps `membench explain` draws: a model's own soft attention, else Grad-CAM.

Own attention (membench.contract.attention_maps): `ours` gives the captioner's averaged map
on its 8x8 feature grid (the weights its features are multiplied with), AMNet one 14x14 map
per LSTM step; each map sums to 1.

Grad-CAM (Selvaraju et al., ICCV 2017) is pytorch_grad_cam's (`pip install grad-cam`), never
a variant written here. Its target is the model's score itself (RawScoresOutputTarget: a
memorability model has one output, not classes). The layer is `layer` when named, else: for
a timm Vision Transformer the first norm of its last block, tokens reshaped to the patch
grid (the library's recipe for ViTs); for any other network the last module to finish in a
forward pass that outputs a (B, C, h, w) map with h x w > 1 and runs once per pass (a
ResNet's trunk, a CNN's last rectified convolution). The library returns the map at the
input size, scaled to [0, 1].
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from membench.errors import MembenchError

METHODS = ("auto", "attention", "grad-cam")


@dataclass
class Maps:
    """The maps of one image: `maps` (K, h, w) float32, with K names."""

    method: str  # "attention" or "grad-cam"
    maps: object  # numpy array (K, h, w)
    names: list[str]
    layer: str = ""  # Grad-CAM's target layer


def own_attention(model, x) -> Maps | None:
    from membench.contract import attention_maps

    found = attention_maps(model, x)
    if found is None:
        return None
    maps, names = found
    return Maps("attention", maps.detach().float().cpu().numpy()[0], list(names))


def vit_of(model):
    """The timm VisionTransformer inside `model`, if any (patch_embed + blocks)."""
    for module in model.modules():
        if hasattr(module, "patch_embed") and hasattr(module, "blocks") and len(module.blocks):
            return module
    return None


def target_layer(model, x, name: str | None = None):
    """(name, module, reshape_transform) of the layer Grad-CAM reads (see the module docstring)."""
    modules = dict(model.named_modules())
    if name:
        if name not in modules:
            convs = [n for n, m in modules.items() if type(m).__name__ == "Conv2d"][-5:]
            raise MembenchError(f"--layer {name!r}: no such module in the model (e.g. {', '.join(convs)})")
        return name, modules[name], _vit_reshape(vit_of(model)) if vit_of(model) is not None else None
    vit = vit_of(model)
    if vit is not None:
        layer = vit.blocks[-1].norm1
        return next(n for n, m in modules.items() if m is layer), layer, _vit_reshape(vit)
    return _last_feature_map(model, x)


# the layer _last_feature_map finds, per model and input size: one extra forward pass per
# model, not per image (explain and predict --maps draw many images with one model)
_FOUND: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _last_feature_map(model, x):
    size = tuple(x.shape[-2:])
    found = _FOUND.setdefault(model, {})
    if size not in found:
        found[size] = _find_last_feature_map(model, x)
    return found[size]


def _find_last_feature_map(model, x):
    import torch

    finished, calls = [], {}
    names = {id(m): n for n, m in model.named_modules()}

    def hook(module, _inputs, output):
        calls[id(module)] = calls.get(id(module), 0) + 1
        if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[-1] * output.shape[-2] > 1:
            finished.append(module)

    handles = [m.register_forward_hook(hook) for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    once = [m for m in finished if calls[id(m)] == 1]
    if not once:
        raise MembenchError("no layer of this model outputs a spatial feature map for Grad-CAM; name one with --layer")
    return names[id(once[-1])], once[-1], None


def _vit_reshape(vit):
    """Tokens (B, N, C) -> (B, C, h, w) on the patch grid, prefix (class) tokens dropped."""
    grid = tuple(vit.patch_embed.grid_size)
    prefix = int(getattr(vit, "num_prefix_tokens", 1))

    def reshape(tokens):
        out = tokens[:, prefix:, :].reshape(tokens.shape[0], grid[0], grid[1], tokens.shape[2])
        return out.permute(0, 3, 1, 2)

    return reshape


def grad_cam(model, x, layer: str | None = None) -> Maps:
    """pytorch_grad_cam's GradCAM of the model's score at `layer` (chosen as documented above)."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import RawScoresOutputTarget
    except ImportError:
        raise MembenchError("Grad-CAM needs the grad-cam package: pip install 'membench[explain]' "
                            "(or pip install grad-cam)") from None
    name, module, reshape = target_layer(model, x, layer)
    with GradCAM(model=model, target_layers=[module], reshape_transform=reshape) as cam:
        out = cam(input_tensor=x, targets=[RawScoresOutputTarget()])
    return Maps("grad-cam", out.astype("float32"), ["Grad-CAM"], layer=name)


def explain(model, x, method: str = "auto", layer: str | None = None) -> Maps:
    """The maps of one preprocessed image batch x (1, 3, H, W): own attention when the model
    has it (method auto or attention), else Grad-CAM."""
    if method not in METHODS:
        raise MembenchError(f"--method must be one of {', '.join(METHODS)}")
    if method in ("auto", "attention"):
        found = own_attention(model, x)
        if found is not None:
            return found
        if method == "attention":
            raise MembenchError("this model has no attention of its own (models with one: ours, amnet); "
                                "use --method grad-cam")
    return grad_cam(model, x, layer)


def prepare(preprocess, image, device="cpu"):
    """An image file as the model evaluates it: (uint8 (3, H, W) after the evaluation
    transform, normalised float batch (1, 3, H, W) on `device`)."""
    from membench.data.images import open_rgb
    from membench.data.transforms import Normalizer, eval_transform

    u8 = eval_transform(preprocess)(open_rgb(image))
    return u8, Normalizer(preprocess)(u8[None].to(device))


def image_maps(model, preprocess, image, device="cpu", method: str = "auto") -> Maps:
    """The maps of one image file (see `explain`)."""
    return explain(model, prepare(preprocess, image, device)[1], method)
