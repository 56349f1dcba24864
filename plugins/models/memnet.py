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

The PyTorch port of that model (alexandonian/pretorched-x, `memnet_lamem-a92fdac2.pth`; the
same layers as GANalyze's `memnet_state_dict.p`) is the release `memnet_pretorched`:
`membench weights fetch memnet --release memnet_pretorched` downloads it with the mean image
GANalyze keeps in git, and its test protocol is the default whenever it is evaluated:
ten 227x227 crops of the 256x256 image (corners, centre, and their mirrors) averaged, and
the port's output mapping (fc8 - 0.7626) * 2 + 0.65 clipped to [0, 1] (options `crops` and
`output`; docs/models.md#memnet-pytorch-port).
"""

from __future__ import annotations

from membench import hookimpl
from membench.errors import MembenchError, WeightsUnavailable
from membench.options import Option, weights_option
from membench.spec import ModelSpec, Preprocess, ReleasedWeights, ReleaseFile, Reported, Stage

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
        """(B,3,227,227) normalised -> (B,) scores; or (B,3,256,256) -> the mean over its
        test crops (`crops` of them: 1, the centre, or 10, the port's protocol)."""

        def __init__(self, crops: int, output: str):
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
            # zero unless the authors' model is loaded: then its mean image, 256x256 (Caffe
            # subtracts a per-pixel mean, not a per-channel one), see caffe_checkpoint
            self.register_buffer("input_mean", torch.zeros(3, CAFFE_SIZE, CAFFE_SIZE))
            self.register_load_state_dict_pre_hook(_centre_mean_to_full)
            self.crops, self.output = crops, output

        def forward(self, x):
            views = mean_subtracted_views(x, self.input_mean, self.crops)  # (n, B, 3, 227, 227)
            f = self.features(views.flatten(0, 1))
            if f.shape[-2:] != (6, 6):
                raise ValueError(f"MemNet needs 227x227 inputs (6x6 conv5 maps), got {tuple(x.shape[-2:])}")
            y = self.classifier(f.flatten(1)).reshape(len(views), len(x)).mean(0)
            if self.output == "port":  # (fc8 - 0.7626) * 2 + 0.65, clipped: pretorched-x's and GANalyze's
                y = ((y - PORT_OUTPUT_MEAN) * PORT_OUTPUT_SCALE + PORT_OUTPUT_BIAS).clamp(0.0, 1.0)
            return y

    with ctx.on_device():
        model = MemNet(int(ctx.options.get("crops", 1)), ctx.options.get("output", "raw"))
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
    state.setdefault("input_mean", torch.zeros(3, CAFFE_SIZE, CAFFE_SIZE))  # state_dicts saved before it existed
    model.load_state_dict(state)
    return model


def mean_subtracted_views(x, mean, crops: int):
    """The (n, B, 3, 227, 227) crops MemNet scores: of a 256x256 batch minus the mean image
    (`crop_views`), or a 227x227 batch minus the mean's centre crop."""
    if tuple(x.shape[-2:]) == (CAFFE_SIZE, CAFFE_SIZE):
        return crop_views(x - mean, crops)
    if crops != 1:
        raise ValueError(f"crops={crops} needs 256x256 inputs (the port's test preprocessing), got {tuple(x.shape[-2:])}")
    return (x - mean[:, TOP:TOP + CROP, TOP:TOP + CROP]).unsqueeze(0)


def crop_views(x, crops: int):
    """(n, B, 3, 227, 227) views of a (B, 3, 256, 256) batch: the centre crop at Caffe's offset
    (crops=1), or GANalyze's ten crops of the port (corners at 0 and 29, centre at 15 =
    floor(29 / 2) + 1, each with its mirror; Caffe's own oversample centres at 14)."""
    import torch

    if crops == 1:
        return x[..., TOP:TOP + CROP, TOP:TOP + CROP].unsqueeze(0)
    far = CAFFE_SIZE - CROP
    corners = [(0, 0), (0, far), (far, 0), (far, far), (far // 2 + 1, far // 2 + 1)]
    views = [x[..., i:i + CROP, j:j + CROP] for i, j in corners]
    return torch.stack([v for view in views for v in (view, view.flip(-1))])


def _centre_mean_to_full(module, state, prefix, *args):
    """Checkpoints written before the mean became 256x256 hold the 227x227 centre crop (zeros
    for every membench-trained MemNet): put it back at Caffe's offset."""
    key = prefix + "input_mean"
    if key in state and tuple(state[key].shape) == (3, CROP, CROP):
        import torch

        full = torch.zeros(3, CAFFE_SIZE, CAFFE_SIZE, dtype=state[key].dtype)
        full[:, TOP:TOP + CROP, TOP:TOP + CROP] = state[key]
        state[key] = full


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
TOP = (CAFFE_SIZE - CROP) // 2  # Caffe's centre crop offset (integer division)
CAFFE_PREPROCESS = Preprocess(size=(CAFFE_SIZE, CAFFE_SIZE), crop=CROP, mean=None, std=None, train="crop")
PARAMETERISED = ("features.0", "features.4", "features.8", "features.10", "features.12",
                 "classifier.0", "classifier.3", "classifier.6")
CAFFE_TYPES = ("Convolution",) * 5 + ("InnerProduct",) * 3


def caffe_checkpoint(archive):
    """Yield (None, state_dict, member): the one .caffemodel and the mean image (.binaryproto,
    or .npy as Caffe's Python examples ship it) found in `archive` (folder, zip or tar)."""
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
    yield None, fold_caffe_input(state, mean), f"{member} + {mean_name}"


def fold_caffe_input(state: dict, mean_bgr) -> dict:
    """Caffe's input convention folded into the model: conv1(255 * x_bgr - M) =
    conv1'(x_rgb - M_rgb / 255), conv1' = 255 * conv1 with its input channels reversed;
    `mean_bgr` (3, 256, 256), BGR 0..255, becomes the RGB [0, 1] `input_mean` buffer."""
    import numpy as np
    import torch

    state = dict(state)
    state["features.0.weight"] = state["features.0.weight"].flip(1) * 255.0  # BGR 0..255 -> RGB 0..1
    state["input_mean"] = torch.from_numpy(np.ascontiguousarray(mean_bgr[::-1] / 255.0, dtype=np.float32))
    return state


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


# -- the PyTorch port of the authors' model (pretorched-x; GANalyze) ----------------------------
# Both name the layers conv1..conv5, fc6..fc8 and feed them what the Caffe model was fed:
# GANalyze's memnet (the code that runs these weights) resizes to 256x256, reverses RGB to BGR
# in 0..255, subtracts the mean image it keeps in git (memnet_mean.mat, 256x256x3, BGR), takes
# ten 227 crops, averages fc8 over them and maps it as below. (pretorched-x's settings also list
# ImageNet mean/std, which its code never applies; see docs/models.md#memnet-pytorch-port.)
PORT_FILE = "memnet_lamem-a92fdac2.pth"
PORT_URL = f"http://pretorched-x.csail.mit.edu/models/{PORT_FILE}"
PORT_OUTPUT_MEAN, PORT_OUTPUT_SCALE, PORT_OUTPUT_BIAS = 0.7626, 2.0, 0.65
GANALYZE_MEAN = ReleaseFile(
    url="https://raw.githubusercontent.com/LoreGoetschalckx/GANalyze/45d413992ae235fa7fb954dfa3d24fb3979aaff3/"
        "tensorflow/assessors/memnet_mean.mat",
    name="memnet_mean.mat", git_blob_sha1="041ff5e46e7c553895076280a611c6f61abd852c")
PORT_LAYERS = {"conv1": "features.0", "conv2": "features.4", "conv3": "features.8", "conv4": "features.10",
               "conv5": "features.12", "fc6": "classifier.0", "fc7": "classifier.3", "fc8": "classifier.6"}
PORT_PREPROCESS = Preprocess(size=(CAFFE_SIZE, CAFFE_SIZE), crop=None, mean=None, std=None, train="none")


def port_checkpoint(archive):
    """Yield (None, state_dict, member): the port's state_dict (the .pth, read weights-only)
    with its layers renamed and Caffe's input convention folded in, the mean image from
    memnet_mean.mat (variable `image_mean`, beside it or in the same folder)."""
    from pathlib import Path

    import scipy.io

    from membench.weights.resolve import load_state_dict

    archive = Path(archive)
    folder = archive if archive.is_dir() else archive.parent
    models = [archive] if archive.is_file() else sorted(folder.glob("*.pth"))
    if len(models) != 1:
        raise MembenchError(f"expected one .pth of the MemNet port ({PORT_FILE}), found {len(models)}", archive)
    mean_file = folder / GANALYZE_MEAN.name
    if not mean_file.is_file():
        raise MembenchError(f"the port needs MemNet's mean image {GANALYZE_MEAN.name} beside it ({GANALYZE_MEAN.url})",
                            folder)
    state = load_state_dict(models[0])
    renamed = {}
    for key, value in state.items():
        layer, _, kind = key.partition(".")
        if layer not in PORT_LAYERS:
            raise MembenchError(f"unexpected tensor {key}: the port has conv1..conv5 and fc6..fc8", models[0])
        renamed[f"{PORT_LAYERS[layer]}.{kind}"] = value
    try:
        mean = scipy.io.loadmat(mean_file)["image_mean"]
    except Exception as exc:
        raise MembenchError(f"cannot read the mean image ({type(exc).__name__}: {exc})", mean_file) from None
    if mean.shape != (CAFFE_SIZE, CAFFE_SIZE, 3):
        raise MembenchError(f"mean image of shape {list(mean.shape)}; MemNet's is [256, 256, 3] (BGR)", mean_file)
    yield None, fold_caffe_input(renamed, mean.transpose(2, 0, 1)), f"{models[0].name} + {mean_file.name}"


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
        options=(weights_option("a state_dict in membench's memnet layout (Hybrid-CNN)"),
                 Option("crops", "int", default=1, choices=("1", "10"),
                        help="test crops of a 256x256 input: 1 (the centre) or 10 (corners, centre, mirrors: the "
                             "PyTorch port's protocol, the default for its weights)"),
                 Option("output", choices=("raw", "port"), default="raw",
                        help="fc8 as it is, or the port's (fc8 - 0.7626) * 2 + 0.65 clipped to [0, 1] (the default "
                             "for the port's weights)")),
        released_weights=(ReleasedWeights(
            name="memnet_caffe", convert=caffe_checkpoint, url="", per_split=False,
            archive="the MemNet Caffe model (.caffemodel + mean .binaryproto)",
            layout="one .caffemodel (5 convolutions, 3 inner products) and one mean image "
                   "(.binaryproto or .npy, 3x256x256 BGR), in a folder, .zip or .tar.gz",
            source="the LaMem download page (memorability.csail.mit.edu)", license="see the LaMem site",
            citation=CITATION, dataset="lamem", preprocess=CAFFE_PREPROCESS,
            note="One model for all splits: trained by the authors on their own LaMem split, so "
                 "membench's test images may include images it was trained on."),
            ReleasedWeights(
                name="memnet_pretorched", convert=port_checkpoint, url=PORT_URL, archive=PORT_FILE,
                per_split=False, files=(GANALYZE_MEAN,), size="~230 MB",
                layout=f"{PORT_FILE} (a state_dict: conv1..conv5, fc6..fc8) and memnet_mean.mat (image_mean, "
                       "256x256x3, BGR) in one folder",
                source="pretorched-x (github.com/alexandonian/pretorched-x, pretorched/models/memnet.py); the mean "
                       "image from github.com/LoreGoetschalckx/GANalyze",
                license="see the LaMem site (a conversion of the authors' Caffe model)", citation=CITATION,
                dataset="lamem", preprocess=PORT_PREPROCESS, options={"crops": "10", "output": "port"},
                note="The PyTorch port of the authors' Caffe model; no checksum is published (the sha256 of the "
                     "first download is recorded in the manifest). One model for all splits, as above."),
        ),
        tags=("paper", "table2"),
        params_expected={"total": 56_872_321},
        notes="Measured 56,872,321 parameters with one output; the reported 62M is most likely "
              "Hybrid-CNN with its 1,183-way fc8 (61,714,975). Training recipe reconstructed "
              "(the paper gives none). The authors' Caffe model: `membench weights import memnet DIR`; its "
              "PyTorch port: `membench weights fetch memnet --release memnet_pretorched`; then --train none "
              "(docs/models.md#memnet-released-weights).",
    ))
