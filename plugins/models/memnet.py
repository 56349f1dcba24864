"""`memnet`: MemNet, a CaffeNet (Hybrid-CNN) regressor with a single output.

Khosla, Raju, Torralba, Oliva: "Understanding and Predicting Image Memorability at a Large
Scale", ICCV 2015 (LaMem). Layout: Hybrid-CNN (Zhou et al., NIPS 2014), i.e. CaffeNet:
conv1 96@11x11/4 -> ReLU -> pool 3/2 -> LRN; conv2 256@5x5 groups 2 -> ReLU -> pool -> LRN;
conv3 384@3x3; conv4 384@3x3 groups 2; conv5 256@3x3 groups 2 -> pool; fc6 9216->4096,
fc7 4096->4096 (ReLU, dropout 0.5); fc8 4096->1. Caffe's LRN (local size 5, alpha 1e-4,
beta 0.75) is torch.nn.LocalResponseNorm with the same arguments; CaffeNet pools before
normalising, unlike the original AlexNet. Euclidean (MSE) loss, 227x227 crops of 256x256.

Reconstruction: the ICCV paper does not state MemNet's fine-tuning hyper-parameters; the
recipe below is Caffe's usual fine-tuning setting (SGD, momentum 0.9, lr 1e-3, weight
decay 5e-4, batch 256), chosen by membench. No Hybrid-CNN weights are reachable offline:
train with `--pretrained none`, or load a state_dict in this module's layout with
`--model-option weights=PATH`. The authors' trained Caffe model (LaMem page) converts
exactly: `membench weights import memnet DIR` (reader: membench/weights/caffemodel.py; conversion:
`caffe_checkpoint` below), then `membench run --model memnet --train none`. What is and is
not verified, and what differs from the reference: docs/models.md#memnet-released-weights.
"""

from __future__ import annotations

from membench import hookimpl
from membench.errors import MembenchError, WeightsUnavailable
from membench.options import weights_option
from membench.spec import ModelSpec, Preprocess, ReleasedWeights, Reported, Stage

CITATION = ("Khosla, Raju, Torralba, Oliva, Understanding and Predicting Image Memorability "
            "at a Large Scale, ICCV 2015")

RECIPE = Stage(name="finetune", epochs=30, batch_size=256, lr=1e-3, optimizer="sgd",
               weight_decay=5e-4, schedule="constant")


def build_memnet(ctx):
    import torch
    import torch.nn as nn

    def conv(c_in, c_out, k, stride=1, padding=0, groups=1):
        return [nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, groups=groups), nn.ReLU(inplace=True)]

    def lrn():
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)

    class MemNet(nn.Module):
        """(B,3,227,227) normalised -> (B,) scores."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *conv(3, 96, 11, stride=4), nn.MaxPool2d(3, 2), lrn(),
                *conv(96, 256, 5, padding=2, groups=2), nn.MaxPool2d(3, 2), lrn(),
                *conv(256, 384, 3, padding=1),
                *conv(384, 384, 3, padding=1, groups=2),
                *conv(384, 256, 3, padding=1, groups=2), nn.MaxPool2d(3, 2),
            )
            self.classifier = nn.Sequential(
                nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(4096, 1),
            )
            self.register_buffer("input_mean", torch.zeros(3, CROP, CROP))

        def forward(self, x):
            # zero unless the authors' Caffe model is loaded: then its mean image (Caffe
            # subtracts a per-pixel mean, not a per-channel one), see caffe_checkpoint
            f = self.features(x - self.input_mean)
            if f.shape[-2:] != (6, 6):
                raise ValueError(f"MemNet needs 227x227 inputs (6x6 conv5 maps), got {tuple(x.shape[-2:])}")
            return self.classifier(f.flatten(1)).squeeze(1)

    with ctx.on_device():
        model = MemNet()
    if ctx.meta or not ctx.pretrained:
        return model
    explicit = ctx.options.get("weights")
    if not explicit:
        raise WeightsUnavailable(
            "MemNet (Hybrid-CNN) weights are not available offline: pass "
            "--model-option weights=PATH (a state_dict in membench's memnet layout), "
            "or run with --pretrained none to train from random initialisation")
    from membench.weights.resolve import load_state_dict, resolve_file

    state = load_state_dict(resolve_file("memnet.pth", "MemNet", explicit))
    state.setdefault("input_mean", torch.zeros(3, CROP, CROP))  # state_dicts saved before it existed
    model.load_state_dict(state)
    return model


# -- the authors' released Caffe model -----------------------------------------------------
# The LaMem page distributes MemNet as Caffe files: the trained .caffemodel, its deploy
# .prototxt (227x227 input) and the mean image (.binaryproto, BGR, 256x256). Caffe's test
# transform: image resized to 256x256, BGR in 0..255, minus the mean image, centre 227 crop
# (the mean cropped at the same place). membench feeds RGB in [0, 1] (resize 256, centre
# crop 227, no normalisation), so the conversion folds the rest into the model exactly:
# conv1(255 * x_bgr - M) = conv1'(x_rgb - M_rgb / 255) with conv1' = 255 * conv1 with its
# input channels reversed; M_rgb / 255 becomes the `input_mean` buffer.
CROP = 227
CAFFE_SIZE = 256
CAFFE_PREPROCESS = Preprocess(size=(CAFFE_SIZE, CAFFE_SIZE), crop=CROP, mean=None, std=None, train="crop")
PARAMETERISED = ("features.0", "features.4", "features.8", "features.10", "features.12",
                 "classifier.0", "classifier.3", "classifier.6")
CAFFE_TYPES = ("Convolution",) * 5 + ("InnerProduct",) * 3


def caffe_checkpoint(archive):
    """Yield (None, state_dict, member): the one .caffemodel and the mean image (.binaryproto,
    or .npy as Caffe's Python examples ship it) found in `archive` (folder, zip or tar)."""
    import numpy as np
    import torch

    from membench.weights.caffemodel import parse_mean, parse_net, read_files

    models = read_files(archive, (".caffemodel",))
    means = read_files(archive, (".binaryproto", ".npy"))
    if len(models) != 1:
        raise MembenchError(f"expected one .caffemodel, found {len(models)}"
                            + (f" ({', '.join(models)})" if models else ""), archive)
    if len(means) != 1:
        raise MembenchError(f"expected one mean image (.binaryproto or .npy), found {len(means)}: MemNet "
                            "subtracts it from every image", archive)
    (member, data), = models.items()
    (mean_name, mean_data), = means.items()
    layers = parse_net(data, f"{archive}:{member}")
    kinds = tuple(layer.type for layer in layers)
    if kinds != CAFFE_TYPES or any(len(layer.blobs) != 2 for layer in layers):
        raise MembenchError("not MemNet's layout (5 convolutions and 3 inner products, each with weights "
                            "and bias); found " + ", ".join(f"{l.name} ({l.type}, {len(l.blobs)} blobs)"
                                                            for l in layers), f"{archive}:{member}")
    if mean_name.lower().endswith(".npy"):
        mean = _read_npy(mean_data, f"{archive}:{mean_name}")
    else:
        mean = parse_mean(mean_data, f"{archive}:{mean_name}")
    if mean.shape != (3, CAFFE_SIZE, CAFFE_SIZE):
        raise MembenchError(f"mean image of shape {list(mean.shape)}; MemNet's is [3, {CAFFE_SIZE}, "
                            f"{CAFFE_SIZE}]", f"{archive}:{mean_name}")
    state = {}
    for prefix, layer in zip(PARAMETERISED, layers):
        for suffix, blob in zip(("weight", "bias"), layer.blobs):
            state[f"{prefix}.{suffix}"] = torch.from_numpy(_drop_leading_ones(blob, 4 if suffix == "weight" and
                                                                               layer.type == "Convolution" else
                                                                               (2 if suffix == "weight" else 1)))
    conv1 = state["features.0.weight"]
    if conv1.ndim != 4 or conv1.shape[1] != 3:  # the flip below needs its 3 input channels
        raise MembenchError(f"{layers[0].name} weights have shape {list(conv1.shape)}, MemNet's conv1 takes 3 "
                            "input channels: [96, 3, 11, 11]", f"{archive}:{member}")
    state["features.0.weight"] = conv1.flip(1) * 255.0  # BGR 0..255 -> RGB 0..1
    top = (CAFFE_SIZE - CROP) // 2  # Caffe's centre crop offset (integer division)
    crop = mean[::-1, top:top + CROP, top:top + CROP] / 255.0
    state["input_mean"] = torch.from_numpy(np.ascontiguousarray(crop))
    yield None, state, f"{member} + {mean_name}"


def _read_npy(data: bytes, where: str):
    """The mean image of a .npy (no pickles), as float32; one line naming it otherwise."""
    import numpy as np

    from membench.weights.safe_load import load_npy

    array = load_npy(data, where)
    if not isinstance(array, np.ndarray):  # an .npz archive of arrays
        raise MembenchError("cannot read the mean image: an .npz archive, not one .npy array", where)
    if array.dtype.kind != "f":
        raise MembenchError(f"the mean image is {array.dtype}, not floating point", where)
    return array.astype(np.float32)


def _drop_leading_ones(array, ndim: int):
    """Caffe's legacy 4-D blobs: (1, 1, out, in) for an inner product, (1, 1, 1, n) for a bias."""
    while array.ndim > ndim and array.shape[0] == 1:
        array = array[0]
    return array.copy()


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="memnet",
        build=build_memnet,
        summary="MemNet: CaffeNet/Hybrid-CNN (LRN, grouped convs) with one regression output",
        citation=CITATION,
        reported=Reported(rho=0.640, params=62_000_000,
                          source="Leonardi et al. 2019, Table 2 (MemNet: Khosla et al. 2015)"),
        preprocess=Preprocess(size=(256, 256), crop=227, train="crop"),
        recipe=(RECIPE,),
        options=(weights_option("a state_dict in membench's memnet layout (Hybrid-CNN)"),),
        released_weights=(ReleasedWeights(
            name="memnet_caffe", convert=caffe_checkpoint, url="", per_split=False,
            archive="the MemNet Caffe model (.caffemodel + mean .binaryproto)",
            layout="one .caffemodel (5 convolutions, 3 inner products) and one mean image "
                   "(.binaryproto or .npy, 3x256x256 BGR), in a folder, .zip or .tar.gz",
            source="the LaMem download page (memorability.csail.mit.edu)", license="see the LaMem site",
            citation=CITATION, dataset="lamem", preprocess=CAFFE_PREPROCESS,
            note="One model for all splits: trained by the authors on their own LaMem split, so "
                 "membench's test images may include images it was trained on."),),
        tags=("paper", "table2"),
        params_expected={"total": 56_872_321},
        notes="Measured 56,872,321 parameters with one output; the reported 62M is most likely "
              "Hybrid-CNN with its 1,183-way fc8 (61,714,975). Training recipe reconstructed "
              "(the paper gives none). The authors' Caffe model: `membench weights import memnet DIR`, "
              "then --train none (docs/models.md#memnet-released-weights).",
    ))
