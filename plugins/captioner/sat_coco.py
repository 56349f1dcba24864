"""`membench captioner train --coco DIR`: train the Show-Attend-and-Tell captioner on MS COCO.

Data: the official layout (DIR/annotations/captions_{train,val}{2014|2017}.json and the
images in DIR/{train,val}{year}/), or Karpathy's split file (dataset_coco.json, with
`filepath`/`filename` relative to DIR; restval counts as train) when --karpathy is given.
As in the reference implementation: 5 captions per image (fewer are cycled), captions
over 100 tokens dropped, a word kept when it occurs MORE than --min-word-freq times in
the training captions (this rule gives the 9,490-token map on Karpathy's split),
cross-entropy + 1.0 * doubly-stochastic attention penalty, Adam 4e-4 (decoder) and 1e-4
(encoder, only with --fine-tune-encoder, layers after the stem), gradient values
clipped at 5, LR x0.8 after 8 epochs without BLEU-4 gains, stop after --patience.
Differences: a batch holds images with all 5 of their captions, so the encoder runs once
per image; validation BLEU-4 scores greedy decodes (the reference scored teacher-forced
argmax words, which flatters the number); the encoder pools to the 8x8 grid whose maps
`ours` weights (the paper's 8x8 maps; the reference pools to 14x14), recorded in info.json.

Resumable: the training state is saved every --save-every batches and at each epoch end
(--resume continues mid-epoch, with the same per-epoch shuffle); the best captioner by
validation BLEU-4 is installed where `ours` finds it.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from pathlib import Path

from membench.errors import MembenchError

CAPTIONS_PER_IMAGE = 5
MAX_LEN = 100
ALPHA_C = 1.0
GRAD_CLIP = 5.0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train the captioner on MS COCO captions",
        description="Train Show-Attend-and-Tell (ResNet-101 encoder, attention LSTM decoder) on MS "
                    "COCO and install the best model (validation BLEU-4) in $MEMBENCH_HOME/captioner.",
        epilog="example: membench captioner train --coco /data/coco --karpathy /data/dataset_coco.json "
               "--device cuda")
    p.add_argument("--coco", required=True, metavar="DIR", help="COCO root (annotations/, train2014/, val2014/)")
    p.add_argument("--karpathy", metavar="JSON", help="Karpathy split file dataset_coco.json (recommended)")
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=8, help="images per batch, each with 5 captions")
    p.add_argument("--min-word-freq", type=int, default=5)
    p.add_argument("--fine-tune-encoder", action="store_true")
    p.add_argument("--patience", type=int, default=20, help="epochs without BLEU-4 gains before stopping")
    p.add_argument("--limit", type=int, default=None, help="use at most N training images (smoke runs)")
    p.add_argument("--val-limit", type=int, default=5000, help="validation images scored per epoch")
    p.add_argument("--save-every", type=int, default=500, help="batches between training-state saves")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--pretrained", choices=("imagenet", "none"), default="imagenet",
                   help="encoder initialisation (ImageNet ResNet-101 from the local torch cache)")
    p.add_argument("--image-size", type=int, default=256, help="images are resized to this square size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="install directory (default: $MEMBENCH_HOME/captioner)")
    p.add_argument("--resume", action="store_true", help="continue from the saved training state")
    p.set_defaults(func=cmd_train)


# ---- data -----------------------------------------------------------------------------------

def tokenize(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MembenchError(f"cannot read JSON ({exc})", path) from None


def read_official(root: Path) -> dict[str, list[tuple[Path, list[list[str]]]]]:
    """{'train': [(image, [tokens, ...])], 'val': [...]} from captions_{train,val}YEAR.json."""
    ann = root / "annotations"
    for year in ("2014", "2017"):
        files = {s: ann / f"captions_{s}{year}.json" for s in ("train", "val")}
        if all(f.is_file() for f in files.values()):
            break
    else:
        raise MembenchError("no COCO captions found: expected annotations/captions_train2014.json and "
                            "captions_val2014.json (or 2017), or pass --karpathy dataset_coco.json", ann)
    out = {}
    for split, f in files.items():
        data = _read_json(f)
        names = {im["id"]: im["file_name"] for im in data["images"]}
        caps: dict[int, list[list[str]]] = {}
        for a in data["annotations"]:
            caps.setdefault(a["image_id"], []).append(tokenize(a["caption"]))
        out[split] = [(root / f"{split}{year}" / names[i], c) for i, c in sorted(caps.items())]
    return out


def read_karpathy(root: Path, split_file: Path) -> dict[str, list[tuple[Path, list[list[str]]]]]:
    data = _read_json(split_file)
    if not isinstance(data, dict) or "images" not in data:
        raise MembenchError("not a Karpathy split file (no 'images')", split_file)
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    for im in data["images"]:
        split = "train" if im["split"] == "restval" else im["split"]
        caps = [s["tokens"] if s.get("tokens") else tokenize(s["raw"]) for s in im["sentences"]]
        out.setdefault(split, []).append((root / im.get("filepath", "") / im["filename"], caps))
    return out


def build_word_map(captions, min_word_freq: int) -> dict[str, int]:
    """Reference layout: <pad>=0, words (first-seen order) 1..n, then <unk>, <start>, <end>."""
    from membench_plugins.captioner.sat import END, PAD, START, UNK

    freq = Counter(w for caps in captions for c in caps if len(c) <= MAX_LEN for w in c)
    words = [w for w in freq if freq[w] > min_word_freq]
    wm = {w: i + 1 for i, w in enumerate(words)}
    wm[UNK] = len(wm) + 1
    wm[START] = len(wm) + 1
    wm[END] = len(wm) + 1
    wm[PAD] = 0
    return wm


def encode_captions(caps: list[list[str]], wm: dict[str, int]) -> list[list[int]]:
    """<start> w... <end> ids, CAPTIONS_PER_IMAGE of them (fewer are cycled); None if none fit."""
    from membench_plugins.captioner.sat import END, START, UNK

    caps = [c for c in caps if len(c) <= MAX_LEN]
    if not caps:
        return []
    caps = [caps[i % len(caps)] for i in range(CAPTIONS_PER_IMAGE)]
    return [[wm[START]] + [wm.get(w, wm[UNK]) for w in c] + [wm[END]] for c in caps]


class CocoImages:
    """torch Dataset: (normalised size x size image, index) per item."""

    def __init__(self, paths, size: int = 256):
        self.paths = list(paths)
        self.size = size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import numpy as np
        import torch

        from membench.data.images import open_rgb
        from membench.spec import IMAGENET_MEAN, IMAGENET_STD

        rgb = np.asarray(open_rgb(self.paths[i]).resize((self.size, self.size)), dtype=np.float32) / 255.0
        x = torch.from_numpy(rgb).permute(2, 0, 1)
        mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
        return (x - mean) / std, i


# ---- BLEU -----------------------------------------------------------------------------------

def _ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu(references: list[list[list[str]]], hypotheses: list[list[str]], max_n: int = 4) -> float:
    """Corpus BLEU (Papineni et al. 2002), uniform weights, no smoothing, as nltk's
    corpus_bleu: clipped n-gram counts summed over the corpus, brevity penalty against the
    reference length closest to each hypothesis (the shorter one on ties)."""
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for refs, hyp in zip(references, hypotheses, strict=True):
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            counts = _ngrams(hyp, n)
            best: Counter = Counter()
            for r in refs:
                best |= _ngrams(r, n)
            matches[n - 1] += sum(min(c, best[g]) for g, c in counts.items())
            totals[n - 1] += sum(counts.values())
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(log_p)


# ---- training -------------------------------------------------------------------------------

def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MembenchError("--device cuda but no CUDA device is available")
    return torch.device(name)


def _prepare(args):
    root = Path(args.coco).expanduser()
    if not root.is_dir():
        raise MembenchError("COCO directory not found", root)
    data = read_karpathy(root, Path(args.karpathy)) if args.karpathy else read_official(root)
    train, val = data.get("train", []), data.get("val", [])[:args.val_limit]
    if args.limit:
        train = train[:args.limit]
    if not train or not val:
        raise MembenchError("no training or no validation images with captions", root)
    missing = [str(p) for p, _ in train[:50] + val[:50] if not p.is_file()]
    if missing:
        raise MembenchError(f"{len(missing)} of the first listed images are missing, e.g. {missing[0]}", root)
    return train, val


def train_captioner(args) -> dict:
    """Run (or resume) training; returns the final state summary."""
    import torch

    from membench_plugins.captioner import sat

    out = Path(args.out).expanduser() if args.out else sat.captioner_dir()
    state_path = out / "training" / "state.pt"
    train, val = _prepare(args)
    device = _device(args.device)
    torch.manual_seed(args.seed)
    state, wm = _start_or_resume(args, train, state_path)
    run = _CaptionerRun(args, wm, state, device, state_path)
    caps = [encode_captions(c, wm) for _, c in train]
    keep = [i for i, c in enumerate(caps) if c]
    dataset = CocoImages([p for p, _ in train], args.image_size)
    history = []
    from rich.progress import Progress

    with Progress(transient=False) as progress:
        while run.epoch < args.epochs and run.since < args.patience:
            run.train_epoch(dataset, caps, keep, progress)
            bleu = validate(run.model, val, device, args)
            run.end_epoch(bleu, out, progress)
            history.append(bleu)
    return {"epochs": run.epoch, "best_bleu4": run.best, "history": history, "out": out}


def _start_or_resume(args, train, state_path: Path):
    """(saved training state or None, word map)."""
    if args.resume:
        if not state_path.is_file():
            raise MembenchError("nothing to resume: no training state", state_path)
        from membench.weights.safe_load import load

        state = load(state_path)
        if not isinstance(state, dict) or not isinstance(state.get("word_map"), dict):
            raise MembenchError("not a captioner training state (no word map)", state_path)
        return state, state["word_map"]
    if state_path.is_file():
        raise MembenchError("a training state exists: pass --resume to continue it, or delete it",
                            state_path)
    return None, build_word_map([c for _, c in train], args.min_word_freq)


class _CaptionerRun:
    """The captioner, its optimizers and where training stands (saved in state.pt)."""

    def __init__(self, args, wm, state, device, state_path: Path):
        import torch

        from membench_plugins.captioner import sat

        self.args, self.wm, self.device, self.state_path = args, wm, device, state_path
        model = sat.Captioner(wm)
        if state is None and args.pretrained == "imagenet":
            from torchvision.models import resnet101

            from membench.weights.resolve import torchvision_weights

            net = resnet101(weights=None)
            net.load_state_dict(torchvision_weights("resnet101", "ResNet-101 ImageNet (captioner encoder)"))
            model.encoder.resnet.load_state_dict(torch.nn.Sequential(*list(net.children())[:-2]).state_dict())
        model.to(device)
        for p in model.encoder.parameters():
            p.requires_grad = False
        tuned = [p for m in list(model.encoder.resnet.children())[5:] for p in m.parameters()]
        if args.fine_tune_encoder:
            for p in tuned:
                p.requires_grad = True
        self.model = model
        self.dec_opt = torch.optim.Adam(model.decoder.parameters(), lr=4e-4)
        self.enc_opt = torch.optim.Adam(tuned, lr=1e-4) if args.fine_tune_encoder else None
        self.epoch, self.step, self.best, self.since = 0, 0, -1.0, 0  # the first epoch always installs one
        if state is not None:
            model.load_state_dict(state["model"])
            self.dec_opt.load_state_dict(state["decoder_optimizer"])
            if self.enc_opt and state.get("encoder_optimizer"):
                self.enc_opt.load_state_dict(state["encoder_optimizer"])
            self.epoch, self.step, self.best, self.since = (state["epoch"], state["step"], state["best_bleu4"],
                                                            state["since"])

    def save_state(self):
        import torch

        tmp = self.state_path.with_suffix(".tmp")
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.model.state_dict(), "decoder_optimizer": self.dec_opt.state_dict(),
                    "encoder_optimizer": self.enc_opt.state_dict() if self.enc_opt else None, "word_map": self.wm,
                    "epoch": self.epoch, "step": self.step, "best_bleu4": self.best, "since": self.since,
                    "fine_tune_encoder": bool(self.args.fine_tune_encoder)}, tmp)
        os.replace(tmp, self.state_path)

    def train_epoch(self, dataset, caps, keep, progress) -> None:
        import torch
        from torch.utils.data import DataLoader, Subset

        args, model = self.args, self.model
        order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(args.seed + self.epoch))
        batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
        self.task = progress.add_task(f"epoch {self.epoch + 1}/{args.epochs}", total=len(batches),
                                      completed=self.step)
        model.train()
        model.encoder.train(bool(args.fine_tune_encoder))
        loader = DataLoader(Subset(dataset, [keep[int(j)] for b in batches[self.step:] for j in b]),
                            batch_size=args.batch_size, num_workers=args.workers)
        try:
            for images, idx in loader:
                loss = _train_step(model, images.to(self.device), [caps[i] for i in idx.tolist()],
                                   self.dec_opt, self.enc_opt, self.device)
                self.step += 1
                progress.update(self.task, advance=1,
                                description=f"epoch {self.epoch + 1}/{args.epochs} loss {loss:.3f}")
                if self.step % args.save_every == 0:
                    self.save_state()
        except KeyboardInterrupt:
            self.save_state()
            progress.console.print(f"interrupted: state saved in {self.state_path}; continue with --resume")
            raise

    def end_epoch(self, bleu: float, out: Path, progress) -> None:
        """Install the captioner when validation BLEU-4 improved, else decay the rates every 8."""
        from membench_plugins.captioner import sat

        args = self.args
        improved = bleu > self.best
        self.best, self.since = (bleu, 0) if improved else (self.best, self.since + 1)
        if improved:
            sat.save_captioner(self.model.state_dict(), self.wm, out,
                               {"kind": "trained", "encoded_size": self.model.grid, "epoch": self.epoch + 1,
                                "bleu-4": bleu, "coco": str(args.coco), "karpathy": args.karpathy,
                                "min_word_freq": args.min_word_freq})
        elif self.since % 8 == 0:
            for opt in (self.dec_opt, self.enc_opt):
                for group in (opt.param_groups if opt else []):
                    group["lr"] *= 0.8
        progress.console.print(f"epoch {self.epoch + 1}: validation BLEU-4 {bleu:.4f} (best {self.best:.4f})")
        self.epoch, self.step = self.epoch + 1, 0
        self.save_state()
        progress.remove_task(self.task)


def _train_step(model, images, captions, dec_opt, enc_opt, device) -> float:
    import torch
    import torch.nn.functional as F

    feats = model.encode(images) if enc_opt else _no_grad_encode(model, images)
    per = len(captions[0])
    feats = feats.repeat_interleave(per, dim=0)
    flat = [c for caps in captions for c in caps]
    lengths = torch.tensor([len(c) for c in flat], device=device)
    padded = torch.zeros(len(flat), int(lengths.max()), dtype=torch.long, device=device)
    for i, c in enumerate(flat):
        padded[i, :len(c)] = torch.tensor(c, device=device)
    logits, alphas, mask = model.decoder(feats, padded, lengths)
    loss = F.cross_entropy(logits[mask], padded[:, 1:][mask])
    loss = loss + ALPHA_C * ((1.0 - alphas.sum(dim=1)) ** 2).mean()
    dec_opt.zero_grad()
    if enc_opt:
        enc_opt.zero_grad()
    loss.backward()
    for opt in (dec_opt, enc_opt):
        if opt:
            for group in opt.param_groups:
                torch.nn.utils.clip_grad_value_(group["params"], GRAD_CLIP)
            opt.step()
    return loss.item()


def _no_grad_encode(model, images):
    import torch

    with torch.no_grad():
        return model.encode(images)


def validate(model, val, device, args) -> float:
    """Corpus BLEU-4 of greedy captions against all of each image's references."""
    import torch
    from torch.utils.data import DataLoader

    model.eval()
    refs, hyps = [], []
    loader = DataLoader(CocoImages([p for p, _ in val], args.image_size), batch_size=args.batch_size, num_workers=args.workers)
    with torch.no_grad():
        for images, idx in loader:
            for (tokens, _), i in zip(model.decode(images.to(device)), idx.tolist()):
                hyps.append(model.words(tokens))
                refs.append([c for c in val[i][1] if c])
    return corpus_bleu(refs, hyps)


def cmd_train(args) -> int:
    result = train_captioner(args)
    print(f"trained {result['epochs']} epoch(s); best validation BLEU-4 {result['best_bleu4']:.4f}; "
          f"captioner in {result['out']}")
    return 0
