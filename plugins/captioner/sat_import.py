"""`membench captioner import CHECKPOINT --word-map JSON`: convert the widely shared
Show-Attend-and-Tell checkpoint into the plain state_dict `ours` loads.

The shared file (e.g. BEST_checkpoint_coco_5_cap_per_img_5_min_word_freq.pth.tar) is a
dict {epoch, epochs_since_improvement, bleu-4, encoder, decoder, encoder_optimizer,
decoder_optimizer} whose encoder and decoder are whole pickled modules of classes
`models.Encoder` / `models.DecoderWithAttention` (and `models.Attention` inside). Their
code is not needed: unpickling a module only restores its attributes, so torch's
weights-only loader, allowed to map each `models.<Name>` to an empty nn.Module subclass
and to rebuild the torch.nn layers inside (`allowed_classes`), recovers the tensors, and
nothing named `models` has to be importable. Nothing else in the file is rebuilt: a
checkpoint that names any other class or function is refused before it can run.

The encoder grid the checkpoint was trained with is read from the pickled Encoder (its
`adaptive_pool` output size, else `enc_image_size`; 14 for the shared file) or given with
--grid, and recorded in info.json: the captioner keeps running on that grid, and `ours`
area-pools its averaged attention map to its 8x8 feature grid (docs/models.md).
"""

from __future__ import annotations

from pathlib import Path

from membench.errors import MembenchError

ORIGINAL_MODULE = "models"
REFERENCE_CLASSES = ("Encoder", "Attention", "DecoderWithAttention")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "import", help="convert the shared pretrained captioner checkpoint",
        description="Convert a Show-Attend-and-Tell checkpoint (pickled Encoder/DecoderWithAttention "
                    "modules, as widely shared) and its word map into $MEMBENCH_HOME/captioner/. "
                    "Only the tensors and the layers of the reference model are read from it: a file "
                    "that names any other class or function is refused.",
        epilog="example: membench captioner import BEST_checkpoint_coco_5_cap_per_img_5_min_word_freq.pth.tar "
               "--word-map WORDMAP_coco_5_cap_per_img_5_min_word_freq.json")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--word-map", required=True, metavar="JSON", help="the word map saved with the checkpoint")
    p.add_argument("--out", default=None, help="target directory (default: $MEMBENCH_HOME/captioner)")
    p.add_argument("--grid", type=int, default=None, metavar="N",
                   help="the encoder grid the checkpoint was trained with (default: read from the "
                        "checkpoint's Encoder, else 14 as the reference implementation)")
    p.set_defaults(func=cmd_import)


def allowed_classes() -> list:
    """What the weights-only loader may rebuild from the shared checkpoint besides tensors:
    stand-ins (empty nn.Module subclasses) for the reference's `models.*` classes, the
    torch.nn layers and torchvision block they hold, the pickled Adam optimizer, and
    PyTorch 0.4's module backend marker. Any other global is refused."""
    import collections

    import torch
    import torch.nn as nn
    from torch.nn.backends import thnn
    from torchvision.models.resnet import Bottleneck

    stand_ins = [(type(name, (nn.Module,), {"__module__": ORIGINAL_MODULE}), f"{ORIGINAL_MODULE}.{name}")
                 for name in REFERENCE_CLASSES]
    layers = [nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.Linear,
              nn.Embedding, nn.Dropout, nn.LSTMCell, nn.Sigmoid, nn.Softmax, Bottleneck]
    # 0.4 modules pickled `_backend` as a call of this function (it returns None today)
    return [*stand_ins, *layers, torch.optim.Adam, collections.defaultdict, dict,
            thnn._get_thnn_function_backend]


def encoder_grid(encoder) -> int | None:
    """The grid an unpickled reference Encoder pools to, or None (e.g. a plain state_dict)."""
    pool = getattr(encoder, "_modules", {}).get("adaptive_pool")
    size = getattr(pool, "output_size", None)
    if size is None:
        size = getattr(encoder, "enc_image_size", None)
    if isinstance(size, (tuple, list)):
        if len(set(size)) != 1:
            return None
        size = size[0]
    return int(size) if isinstance(size, int) and size > 0 else None


def read_shared_checkpoint(path: Path) -> tuple[dict, dict]:
    """(state_dict with encoder.* / decoder.* keys, info) from the shared checkpoint;
    info["encoded_size"] is the Encoder's grid when the checkpoint says it."""
    import torch.nn as nn

    from membench.weights.safe_load import load

    path = Path(path)
    if not path.is_file():
        raise MembenchError("checkpoint not found", path)
    ckpt = load(path, allow=allowed_classes())
    if not isinstance(ckpt, dict) or not {"encoder", "decoder"} <= set(ckpt):
        raise MembenchError("not a Show-Attend-and-Tell checkpoint (expected a dict with 'encoder' "
                            "and 'decoder')", path)
    state = {}
    for part in ("encoder", "decoder"):
        obj = ckpt[part]
        sd = obj.state_dict() if isinstance(obj, nn.Module) else obj
        if not isinstance(sd, dict):
            raise MembenchError(f"checkpoint[{part!r}] is neither a module nor a state_dict", path)
        for key, value in sd.items():
            key = key[len("module."):] if key.startswith("module.") else key  # saved from DataParallel
            state[f"{part}.{key}"] = value
    info = {k: ckpt[k] for k in ("epoch", "epochs_since_improvement", "bleu-4")
            if isinstance(ckpt.get(k), (int, float))}
    grid = encoder_grid(ckpt["encoder"])
    if grid:
        info["encoded_size"] = grid
    return state, info


def import_checkpoint(checkpoint: Path, word_map: Path, out: Path | None = None,
                      grid: int | None = None) -> Path:
    """Check the weights fit our captioner with that word map, then install them with the
    encoder grid they were trained on (`grid`, else the checkpoint's, else the reference's 14)."""
    import torch

    from membench_plugins.captioner import sat

    state, info = read_shared_checkpoint(Path(checkpoint))
    if grid is not None and grid < 1:
        raise MembenchError(f"--grid must be a positive integer, not {grid}")
    found = info.get("encoded_size")
    info["encoded_size"] = grid or found or sat.REFERENCE_GRID
    info["grid_source"] = ("--grid" if grid else "checkpoint" if found
                           else "reference default (not in the checkpoint)")
    wm = sat.load_word_map(Path(word_map))
    model = sat.Captioner(wm, encoded_size=info["encoded_size"])
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)  # BatchNorm buffer added after torch 0.4.0
    from membench.weights.safe_load import check_values

    check_values(state, checkpoint, like=model.state_dict())
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        raise MembenchError(f"the checkpoint does not fit a ResNet-101 Show-Attend-and-Tell captioner "
                            f"with this {len(wm)}-word map ({' '.join(line.strip() for line in lines[:3])})",
                            checkpoint) from None
    info.update(source=str(Path(checkpoint).resolve()), word_map=str(Path(word_map).resolve()),
                kind="imported")
    return sat.save_captioner(model.state_dict(), wm, Path(out) if out else sat.captioner_dir(), info)


def cmd_import(args) -> int:
    import json

    target = import_checkpoint(Path(args.checkpoint), Path(args.word_map), args.out and Path(args.out),
                               grid=args.grid)
    info = json.loads(target.with_name("info.json").read_text())
    g = info["encoded_size"]
    print(f"captioner installed: {target} (word map {target.with_name('word_map.json')}); "
          f"encoder grid {g}x{g} ({info['grid_source']}), attention area-pooled to 8x8 for `ours`; "
          f"{how_ours_uses(target.parent)}")
    return 0


def how_ours_uses(directory: Path) -> str:
    """`ours` loads the captioner in $MEMBENCH_HOME/captioner by itself; one anywhere else
    only when named."""
    from membench_plugins.captioner import sat

    if directory.resolve() == sat.captioner_dir().resolve():
        return "`ours` now uses it by default"
    return (f"`ours` uses it with --model-option captioner={directory} (by default it uses the one in "
            f"{sat.captioner_dir()})")
