"""`amnet`: AMNet, soft attention over ResNet50 features driving a 3-step LSTM.

Fajtl, Argyriou, Monekosso, Remagnino: "AMNet: Memorability Estimation with Attention",
CVPR 2018 (official code: github.com/ok1zjf/AMNet, MIT licence).

Layout of the official code: a frozen ImageNet ResNet50 run up to layer3 (1024x14x14 at
224x224) -> conv1x1 1024->1024 + BN + ReLU + Dropout(0.8) gives a = 196 annotation
vectors; h0 = tanh(Linear(mean a)), c0 likewise; e = Dropout(ReLU(Linear_nobias(a)))
once; each of 3 steps adds Linear(h)->196 as a per-location bias, ReLU, Dropout,
Linear_nobias->1, softmax over the 196 locations -> alpha; z = sum alpha*a feeds one
LSTM step; Dropout(h) -> Linear 1024->512 -> ReLU -> Dropout -> Linear 512->1. The score
is the mean over the steps /2 + 0.754 (targets are trained as (y - 0.754) * 2); the loss
adds the attention penalty gamma * sum_L (sum_t (0.2 - alpha_t))^2 / B, gamma = 1e-5.

The module keeps the whole torchvision ResNet50 (its layer4 and fc are never run) so that
the total matches the reported 39M: 38,880,493 parameters, 21,866,757 used in forward.

Training follows the official code (recipe below); the authors' per-split LaMem weights
import exactly (`membench weights fetch amnet`, `official_checkpoints`). Every remaining
difference from the official code, with its reason: docs/models.md#amnet.
"""

from __future__ import annotations

from membench import hookimpl
from membench.options import weights_option
from membench.spec import ModelSpec, Preprocess, ReleasedWeights, Reported, Stage

CITATION = ("Fajtl, Argyriou, Monekosso, Remagnino, AMNet: Memorability Estimation with "
            "Attention, CVPR 2018")

# Official recipe (config.py, amnet.py): Adam lr 1e-4, weight decay 1e-6, constant LR, batch
# 222 with drop_last, the ResNet50's weights frozen but the whole network in train() mode
# (so its BatchNorm layers use batch statistics and their running statistics adapt to
# LaMem). `for epoch in range(1, 55)` trains 54 epochs (epoch_max 55), all of them: no
# early stopping (patience = epochs); the checkpoint with the best validation rho is kept.
EPOCHS = 54
RECIPE = Stage(name="train", epochs=EPOCHS, batch_size=222, lr=1e-4, weight_decay=1e-6,
               optimizer="adam", schedule="constant", frozen=("backbone",), patience=EPOCHS,
               frozen_bn_train=True, drop_last=True)


def build_amnet(ctx):
    import torch.nn as nn

    from membench_plugins.models.amnet_net import AMNet

    with ctx.on_device():
        model = AMNet()
    if ctx.meta:
        return model
    # PyTorch 0.2 (the official code's) initialised BatchNorm weights from U(0, 1); PyTorch
    # 1.2 changed the default to 1. Loaded weights replace this.
    nn.init.uniform_(model.bn1.weight)
    explicit = ctx.options.get("weights")
    if explicit:
        model.load_state_dict(_official_keys(_load(explicit)))
    elif ctx.pretrained and ctx.init == "imagenet":
        from membench.weights.resolve import torchvision_weights

        model.backbone.load_state_dict(torchvision_weights("resnet50", "ResNet50 ImageNet (AMNet backbone)"))
    return model


def _load(path):
    from membench.weights.resolve import load_state_dict, resolve_file

    return load_state_dict(resolve_file("amnet.pth", "AMNet", path))


def _official_keys(state: dict) -> dict:
    """The official code's layout -> membench's. Its ResNet50 sits at core_cnn.core_cnn
    (membench: backbone); every other module has the same name in both. Its checkpoints
    come from PyTorch 0.2, before BatchNorm had `num_batches_tracked`: that counter is only
    read with momentum=None (never here), so a missing one is set to 0."""
    import torch

    out = {k.replace("core_cnn.core_cnn.", "backbone.", 1): v for k, v in state.items()}
    for key in list(out):
        if key.endswith(".running_mean"):
            out.setdefault(key[:-len("running_mean")] + "num_batches_tracked", torch.tensor(0))
    return out


# -- the authors' released weights ---------------------------------------------------------
# data/lamem_weights_urls.txt of the official repository lists one archive per model
# variant; the one of Table 2 (ResNet50 front end, 3 LSTM steps, attention) unpacks to
# lamem_ResNet50FC_lstm3_train_<k>/weights_<epoch>.pkl (k = 1..5), each a torch.save of
# {"model": state_dict} (PyTorch 0.2, legacy format), optionally with train_log_0.csv.
RELEASE_URL = "https://drive.google.com/file/d/1N3t5QIi2rZng0TZJUFT5achCHyJn8Fg0/view?usp=sharing"
RELEASE_NAME = "lamem_ResNet50FC_lstm3"


def official_checkpoints(archive):
    """Yield (split, state_dict in membench's layout, archive member) from the official
    archive (the .zip, or the folder it was unpacked into). Per split, the checkpoint is
    chosen as the official evaluation does (utils.get_weight_files): the only .pkl of the
    split's folder; else the epoch with the highest validation rho in its train_log_0.csv;
    else the latest epoch."""
    import re
    import zipfile
    from pathlib import Path

    from membench.data.archives import unpack_budget
    from membench.errors import MembenchError

    archive = Path(archive)
    # only this variant's folders: a data/ folder may also hold the _noatt and ResNet101 ones
    folder = r"(?:^|/)" + re.escape(RELEASE_NAME) + r"_train_(?P<k>\d+)/"
    pattern = re.compile(folder + r"weights_(?P<e>\d+)\.pkl$")
    log_pattern = re.compile(folder + r"train_log_0\.csv$")
    if archive.is_dir():
        names = [p.relative_to(archive).as_posix() for p in sorted(archive.rglob("*")) if p.is_file()]
        read = lambda name: (archive / name).read_bytes()  # noqa: E731
        zf = None
    elif zipfile.is_zipfile(archive):
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as exc:
            raise MembenchError(f"cannot read the zip archive ({exc})", archive) from None
        names = zf.namelist()
        budget = unpack_budget(archive)  # members are read into memory: a zip bomb stops at the budget

        def read(name: str) -> bytes:
            budget.add(zf.getinfo(name).file_size)  # zipfile never reads past the declared size
            return zf.read(name)
    else:
        raise MembenchError("not a zip archive nor a folder (expected the official "
                            f"{RELEASE_NAME}.zip)", archive)
    try:
        per_split: dict[int, dict[int, str]] = {}
        logs: dict[int, str] = {}
        for name in names:
            m = pattern.search(name)
            if m:
                per_split.setdefault(int(m["k"]), {})[int(m["e"])] = name
            elif m := log_pattern.search(name):
                logs[int(m["k"])] = name
        for k in sorted(per_split):
            log = _text(_member(read, logs[k], archive), f"{archive}:{logs[k]}") if k in logs else None
            member = _choose(per_split[k], log)
            yield k, _official_keys(_read_official(_member(read, member, archive), f"{archive}:{member}")), member
    finally:
        if zf is not None:
            zf.close()


def _member(read, name: str, archive) -> bytes:
    """A member's bytes; a damaged one (bad CRC, cut short) is one line naming it."""
    import zipfile
    import zlib

    from membench.errors import MembenchError

    try:
        return read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise MembenchError(f"cannot read ({exc}); a damaged copy of the archive?", f"{archive}:{name}") from None


def _text(data: bytes, where: str) -> str:
    from membench.errors import MembenchError

    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MembenchError(f"not a UTF-8 text log (byte {exc.start} is {data[exc.start]:#04x}); a damaged "
                            "copy of the archive?", where) from None


def _choose(epochs: dict[int, str], log: str | None) -> str:
    if len(epochs) == 1:
        return next(iter(epochs.values()))
    if log:  # rows "val,<epoch>,<iter>,<loss>,<rho>,<lr>,<mse>" (pylogger.LogRec.as_csv)
        best_rho, best_epoch = 0.0, None
        for line in log.splitlines():
            parts = line.split(",")
            if len(parts) > 4 and parts[0] == "val":
                try:
                    rho, epoch = float(parts[4]), int(parts[1])
                except ValueError:
                    continue
                if rho > best_rho:
                    best_rho, best_epoch = rho, epoch
        if best_epoch in epochs:
            return epochs[best_epoch]
    return epochs[max(epochs)]


def _read_official(data: bytes, where: str) -> dict:
    """{"model": state_dict} from a checkpoint's bytes, with torch's weights-only loader
    (it reads the legacy format of PyTorch 0.2 as well): no code from the archive runs."""
    from membench.errors import MembenchError
    from membench.weights.safe_load import load

    obj = load(data, where=where)
    state = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise MembenchError("not an official AMNet checkpoint (no 'model' state_dict)", where)
    return dict(state)


@hookimpl
def register_models(register):
    register(ModelSpec(
        name="amnet",
        build=build_amnet,
        summary="AMNet: frozen ResNet50 (to layer3), 14x14 soft attention, 3-step LSTM",
        citation=CITATION,
        reported=Reported(rho=0.677, mse=0.0082, params=39_000_000,
                          source="Leonardi et al. 2019, Table 2 (AMNet: Fajtl et al. 2018)"),
        # As the official code: evaluation is Resize(224, 224) (the centre crop of 224 is a
        # no-op); training resizes to 264x264, then RandomResizedCrop(224) and a flip.
        preprocess=Preprocess(size=(224, 224), train_size=(264, 264), crop=224, train="resized-crop"),
        recipe=(RECIPE,),
        released_weights=(ReleasedWeights(
            name=RELEASE_NAME, convert=official_checkpoints, url=RELEASE_URL, archive=f"{RELEASE_NAME}.zip",
            layout=f"{RELEASE_NAME}_train_<k>/weights_<epoch>.pkl for k = 1..5 (+ train_log_0.csv)",
            per_split=True, size="822 MB", source="github.com/ok1zjf/AMNet data/lamem_weights_urls.txt",
            license="MIT", citation=CITATION, dataset="lamem",
            note="Trained by the authors on the five LaMem train splits; evaluated with the official "
                 "test transform (Resize 224x224, ImageNet normalisation), which is the model's own."),),
        options=(weights_option("a trained AMNet state_dict (membench or official key layout)", trained=True),),
        tags=("paper", "table2", "attention"),
        license="MIT",
        params_expected={"total": 38_880_493, "used": 21_866_757},
        notes="Total includes ResNet50's layer4 and fc, carried but never run (the reported "
              "39M counts them); 21,866,757 parameters are used in forward. Trains as the official "
              "code (54 epochs, best validation rho, BN of the frozen ResNet50 in train mode); the "
              "authors' per-split weights: `membench weights fetch amnet`, then --train none. "
              "--model-option weights=PATH loads one trained AMNet state_dict (membench or official "
              "layout, e.g. weights_35.pkl). Differences from the official code: docs/models.md#amnet.",
    ))
