"""Show, Attend and Tell (Xu et al., ICML 2015): the captioner whose soft attention `ours` uses.

Layout and sizes follow the de-facto PyTorch reference implementation (ResNet-101 encoder,
LSTMCell decoder with soft attention and a sigmoid gate), and its submodule names are
kept (`encoder.resnet`, `decoder.attention.encoder_att`, `decoder.decode_step`, ...) so
that the widely shared checkpoint converts to our state_dict by renaming nothing.
With a 9,490-word vocabulary: encoder 42,500,160 + decoder 20,483,859 = 62,984,019.

Decoding returns one map per generated word (at most 50) on the encoder's grid. The
reference's visualisation prepends an all-ones placeholder map for <start>; that
placeholder is what "the map of the <start> token excluded" drops, so the averaged map is
the mean of the maps of the generated words up to and including <end> (our reading of the
paper).

Geometry. A captioner runs with the encoder grid it was trained on: 8x8 for the ones
`membench captioner train` makes (the paper's 8x8 maps), 14x14 for the widely shared
checkpoint (the reference Encoder's `encoded_image_size=14`, recorded at import in
info.json). The averaged map is then area-pooled to the 8x8 feature grid `ours` weights
(`area_pool`: each 8x8 cell takes the attention mass of the 14x14 cells it covers, so the
pooled map still sums to 1). Decoding defaults to the reference caption script's beam
search (caption.py, `--beam_size` 5); greedy is an option. See docs/models.md.

This module imports torch at import time: import it only from inside functions.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from membench.util.files import atomic_write_bytes

MAX_STEPS = 50  # the paper: "at most 50 attention maps" (the reference script allows 51 steps)
BEAM_SIZE = 5  # caption.py's command line default (its function's own default is 3)
REFERENCE_GRID = 14  # the reference Encoder's encoded_image_size: the shared checkpoint's grid
META_STEPS = 2  # meta tensors carry no values: decode a fixed number of steps
VOCAB_SIZE = 9_490  # COCO, Karpathy train+restval, words seen more than 5 times
ENCODED_SIZE = 8
ENCODER_DIM, ATTENTION_DIM, EMBED_DIM, DECODER_DIM = 2048, 512, 512, 512
PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
WEIGHTS_FILE, WORD_MAP_FILE = "captioner.pt", "word_map.json"


from membench.util.files import membench_home  # noqa: E402


def captioner_dir() -> Path:
    """Where `captioner train` and `captioner import` leave the captioner `ours` loads."""
    return membench_home() / "captioner"


def default_word_map(vocab_size: int = VOCAB_SIZE) -> dict[str, int]:
    """The reference layout without words: <pad>=0, words 1..n, then <unk>, <start>, <end>."""
    n = vocab_size - 4
    wm = {f"w{i}": i for i in range(1, n + 1)}
    wm.update({UNK: n + 1, START: n + 2, END: n + 3, PAD: 0})
    return wm


class Encoder(nn.Module):
    """ResNet-101 without avgpool/fc, adaptive average pool to 8x8: (B,3,H,W) -> (B,8,8,2048)."""

    def __init__(self, encoded_size: int = ENCODED_SIZE):
        super().__init__()
        from torchvision.models import resnet101

        self.resnet = nn.Sequential(*list(resnet101(weights=None).children())[:-2])
        self.adaptive_pool = nn.AdaptiveAvgPool2d((encoded_size, encoded_size))

    def forward(self, images):
        return self.adaptive_pool(self.resnet(images)).permute(0, 2, 3, 1)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder_att = nn.Linear(ENCODER_DIM, ATTENTION_DIM)
        self.decoder_att = nn.Linear(DECODER_DIM, ATTENTION_DIM)
        self.full_att = nn.Linear(ATTENTION_DIM, 1)

    def forward(self, features, att1, h):
        """`att1` = encoder_att(features), computed once per image by the caller."""
        att = self.full_att(F.relu(att1 + self.decoder_att(h).unsqueeze(1))).squeeze(2)
        alpha = att.softmax(dim=1)
        return (features * alpha.unsqueeze(2)).sum(dim=1), alpha


class Decoder(nn.Module):
    def __init__(self, vocab_size: int = VOCAB_SIZE, dropout: float = 0.5):
        super().__init__()
        self.vocab_size = vocab_size
        self.attention = Attention()
        self.embedding = nn.Embedding(vocab_size, EMBED_DIM)
        self.dropout = nn.Dropout(p=dropout)
        self.decode_step = nn.LSTMCell(EMBED_DIM + ENCODER_DIM, DECODER_DIM)
        self.init_h = nn.Linear(ENCODER_DIM, DECODER_DIM)
        self.init_c = nn.Linear(ENCODER_DIM, DECODER_DIM)
        self.f_beta = nn.Linear(DECODER_DIM, ENCODER_DIM)
        self.fc = nn.Linear(DECODER_DIM, vocab_size)
        if not self.fc.weight.is_meta:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            nn.init.uniform_(self.fc.weight, -0.1, 0.1)
            nn.init.zeros_(self.fc.bias)

    def init_state(self, features):
        mean = features.mean(dim=1)
        return self.init_h(mean), self.init_c(mean)

    def step(self, features, att1, words, h, c):
        """Feed one word per image: returns the new (h, c) and this step's attention alpha (B,P)."""
        awe, alpha = self.attention(features, att1, h)
        awe = torch.sigmoid(self.f_beta(h)) * awe
        h, c = self.decode_step(torch.cat([self.embedding(words), awe], dim=1), (h, c))
        return h, c, alpha

    def forward(self, features, captions, lengths):
        """Teacher forcing. features (B,P,2048); captions (B,L) starting with <start>;
        lengths (B,) counting <start> and <end>. Returns logits (B,L-1,V) predicting
        captions[:,1:], alphas (B,L-1,P) and the mask (B,L-1) of real positions."""
        steps = int(lengths.max()) - 1
        mask = torch.arange(steps, device=captions.device)[None] < (lengths[:, None] - 1)
        att1 = self.attention.encoder_att(features)
        h, c = self.init_state(features)
        logits, alphas = [], []
        for t in range(steps):
            h, c, alpha = self.step(features, att1, captions[:, t], h, c)
            logits.append(self.fc(self.dropout(h)))
            alphas.append(alpha)
        return torch.stack(logits, 1), torch.stack(alphas, 1) * mask[..., None], mask


class Captioner(nn.Module):
    """Encoder + decoder, with the word map's special token ids."""

    def __init__(self, word_map: dict[str, int] | None = None, encoded_size: int = ENCODED_SIZE):
        super().__init__()
        self.word_map = dict(word_map or default_word_map())
        self.start_id, self.end_id = self.word_map[START], self.word_map[END]
        self.encoder = Encoder(encoded_size)
        self.decoder = Decoder(len(self.word_map))

    def encode(self, images):
        """(B,3,H,W) -> (B, P, 2048) with P = 64 pixels of the 8x8 grid."""
        enc = self.encoder(images)
        return enc.reshape(enc.shape[0], -1, enc.shape[-1])

    @property
    def grid(self) -> int:
        return self.encoder.adaptive_pool.output_size[0]

    def greedy(self, features, max_steps: int = MAX_STEPS):
        """Batch greedy decoding. Returns tokens (B,T), alphas (B,T,P) and lengths (B,):
        a caption's length counts its words up to and including <end> (max_steps if none)."""
        dec = self.decoder
        b = features.shape[0]
        att1 = dec.attention.encoder_att(features)  # once per image, not per step
        h, c = dec.init_state(features)
        words = torch.full((b,), self.start_id, dtype=torch.long, device=features.device)
        done = torch.zeros(b, dtype=torch.bool, device=features.device)
        lengths = torch.zeros(b, dtype=torch.long, device=features.device)
        tokens, alphas = [], []
        meta = features.is_meta
        for _ in range(META_STEPS if meta else max_steps):
            h, c, alpha = dec.step(features, att1, words, h, c)
            words = dec.fc(h).argmax(dim=1)
            tokens.append(words)
            alphas.append(alpha)
            if meta:
                continue
            lengths += (~done).long()
            done = done | (words == self.end_id)
            if bool(done.all()):
                break
        return torch.stack(tokens, 1), torch.stack(alphas, 1), lengths

    def beam(self, features, beam_size: int = 3, max_steps: int = MAX_STEPS):
        """Beam search for ONE image (features (1,P,2048)), as in the reference
        implementation. Returns tokens (T,) and alphas (T,P) of the best caption; the
        best unfinished one when none reached <end> within max_steps."""
        dec = self.decoder
        if features.is_meta:
            tokens, alphas, _ = self.greedy(features)
            return tokens[0], alphas[0]
        k, vocab = beam_size, dec.vocab_size
        feats = features.expand(k, *features.shape[1:])
        att1 = dec.attention.encoder_att(feats)
        h, c = dec.init_state(feats)
        seqs = torch.full((k, 1), self.start_id, dtype=torch.long, device=features.device)
        seq_alphas = features.new_zeros((k, 0, features.shape[1]))
        scores = features.new_zeros((k, 1))
        complete: list[tuple[float, torch.Tensor, torch.Tensor]] = []
        for step in range(max_steps):
            h, c, alpha = dec.step(feats, att1, seqs[:, -1], h, c)
            logp = scores + dec.fc(h).log_softmax(dim=1)
            top, idx = (logp[0] if step == 0 else logp.reshape(-1)).topk(k)
            prev, nxt = idx // vocab, idx % vocab
            seqs = torch.cat([seqs[prev], nxt[:, None]], 1)
            seq_alphas = torch.cat([seq_alphas[prev], alpha[prev][:, None]], 1)
            ended = nxt == self.end_id
            for i in ended.nonzero().flatten().tolist():
                complete.append((float(top[i]), seqs[i, 1:], seq_alphas[i]))
            keep = (~ended).nonzero().flatten()
            k = len(keep)
            if k == 0:
                break
            seqs, seq_alphas, scores = seqs[keep], seq_alphas[keep], top[keep][:, None]
            h, c = h[prev[keep]], c[prev[keep]]
            feats, att1 = feats[:k], att1[:k]
        if not complete:
            best = int(scores.argmax())
            return seqs[best, 1:], seq_alphas[best]
        _, tokens, alphas = max(complete, key=lambda item: item[0])
        return tokens, alphas

    def decode(self, images, beam_size: int = 1):
        """Captions of a batch: list of (tokens (T,), alphas (T,P)) per image."""
        feats = self.encode(images)
        if beam_size <= 1:
            tokens, alphas, lengths = self.greedy(feats)
            n = [tokens.shape[1]] * len(lengths) if feats.is_meta else lengths.tolist()
            return [(tokens[i, :n[i]], alphas[i, :n[i]]) for i in range(len(n))]
        return [self.beam(feats[i:i + 1], beam_size) for i in range(feats.shape[0])]

    def attention_map(self, images, beam_size: int = 1, grid: int | None = None):
        """The averaged attention map (B, g, g) over the generated words' maps, on the
        encoder's grid g, then area-pooled to `grid` x `grid` when that differs."""
        feats = self.encode(images)
        g = self.grid
        if beam_size <= 1:
            _, alphas, lengths = self.greedy(feats)
            if feats.is_meta:
                avg = alphas.mean(dim=1)
            else:
                steps = torch.arange(alphas.shape[1], device=alphas.device)
                mask = (steps[None] < lengths[:, None]).to(alphas.dtype)
                avg = (alphas * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        else:
            avg = torch.stack([self.beam(feats[i:i + 1], beam_size)[1].mean(dim=0) for i in range(feats.shape[0])])
        avg = avg.reshape(-1, g, g)
        return avg if grid is None or grid == g else area_pool(avg, grid)

    def words(self, tokens) -> list[str]:
        """Token ids to words, dropping <end> and anything after it."""
        inv = {v: k for k, v in self.word_map.items()}
        out = []
        for t in tokens.tolist():
            if t == self.end_id:
                break
            out.append(inv.get(t, UNK))
        return out


def area_weights(n_in: int, n_out: int, like=None):
    """(n_out, n_in): the length of input cell j = [j, j+1) inside output cell
    i = [i*r, (i+1)*r), r = n_in / n_out. Columns sum to 1, so mass is kept."""
    r = n_in / n_out
    i = torch.arange(n_out, dtype=torch.float64)[:, None]
    j = torch.arange(n_in, dtype=torch.float64)[None]
    w = (torch.minimum((i + 1) * r, j + 1) - torch.maximum(i * r, j)).clamp_min(0)
    return w if like is None else w.to(dtype=like.dtype, device=like.device)


def area_pool(maps, size: int):
    """(B, g, g) attention maps -> (B, size, size), each output cell the attention mass
    of the area it covers (fractions of cells where the grids do not align): an 8x8 map
    pooled from a 14x14 one sums to 1 as the 8x8 maps of an 8x8 captioner do."""
    w = area_weights(maps.shape[-1], size, like=maps)
    return w @ maps @ w.T


def captioner_grid(info: dict) -> int:
    """The encoder grid a installed captioner runs with (its info.json): recorded since
    import kept the geometry; older imports are the shared 14x14 checkpoint, older
    `captioner train` outputs are 8x8."""
    if info.get("encoded_size"):
        return int(info["encoded_size"])
    return REFERENCE_GRID if info.get("kind") == "imported" else ENCODED_SIZE


def load_word_map(path: Path) -> dict[str, int]:
    from membench.errors import MembenchError

    try:
        wm = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MembenchError(f"cannot read the word map ({exc})", path) from None
    missing = [t for t in (PAD, START, END, UNK) if t not in wm]
    if not isinstance(wm, dict) or missing:
        raise MembenchError(f"not a captioner word map (missing {', '.join(missing)})", path)
    if sorted(wm.values()) != list(range(len(wm))):
        raise MembenchError("word map ids must be 0..n-1 without gaps", path)
    return wm


WRITTEN_BY = "membench captioner"


def save_captioner(state_dict: dict, word_map: dict, directory: Path, info: dict | None = None) -> Path:
    """Write captioner.pt (plain state_dict), word_map.json and info.json atomically: into
    membench's captioner directory, or one where none of them exists or membench wrote them."""
    directory = Path(directory)
    _check_install_dir(directory)
    info = {**(info or {}), "written_by": WRITTEN_BY}
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{WEIGHTS_FILE}.tmp{os.getpid()}"
    torch.save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, tmp)
    os.replace(tmp, directory / WEIGHTS_FILE)
    for name, obj in ((WORD_MAP_FILE, word_map), ("info.json", info)):
        tmp = directory / f".{name}.tmp{os.getpid()}"
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, directory / name)
    return directory / WEIGHTS_FILE


def _check_install_dir(directory: Path) -> None:
    """Never replace a user's captioner.pt, word_map.json or info.json (an --out that holds
    their own files), nor a link."""
    from membench.errors import MembenchError
    from membench.util.files import refuse_link

    names = (WEIGHTS_FILE, WORD_MAP_FILE, "info.json")
    for name in names:
        refuse_link(directory / name)
    existing = [directory / n for n in names if (directory / n).exists()]
    if not existing or directory.resolve() == captioner_dir().resolve():
        return
    try:
        info = json.loads((directory / "info.json").read_text())
        ours = info.get("written_by") == WRITTEN_BY or info.get("kind") in ("imported", "trained")
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise MembenchError("membench did not write this file and never replaces one it did not write: "
                            "give --out a new or empty directory", existing[0])


def load_captioner(weights: Path, word_map_path: Path | None = None, device=None) -> Captioner:
    """A captioner from captioner.pt and the word_map.json beside it (or given)."""
    from membench.errors import MembenchError
    from membench.weights.resolve import load_state_dict

    weights = Path(weights)
    word_map_path = Path(word_map_path) if word_map_path else weights.with_name(WORD_MAP_FILE)
    if not weights.is_file():
        raise MembenchError("captioner weights not found", weights)
    if not word_map_path.is_file():
        raise MembenchError("the captioner's word map is missing (it sits next to the weights)", word_map_path)
    wm = load_word_map(word_map_path)
    state = load_state_dict(weights)
    info_path = weights.with_name("info.json")
    try:
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise MembenchError(f"cannot read the captioner's info ({exc})", info_path) from None
    model = Captioner(wm, encoded_size=captioner_grid(info))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise MembenchError(f"weights do not fit the captioner with a {len(wm)}-word map "
                            f"({str(exc).splitlines()[0]})", weights) from None
    return model.to(device) if device else model


def render_attention(captioner: Captioner, images, out_dir, preprocess, beam_size: int = 1,
                     random: bool = False, device="cpu") -> list[Path]:
    """Save each image with its averaged attention map overlaid (paper Fig. 4) as
    OUT/<stem>_attention.png; returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from membench.data.images import open_rgb

    out_dir = Path(out_dir)
    h, w = preprocess.input_size
    mean = torch.tensor(preprocess.mean or (0, 0, 0)).view(3, 1, 1)
    std = torch.tensor(preprocess.std or (1, 1, 1)).view(3, 1, 1)
    written = []
    for image_path, name in zip(map(Path, images), attention_files(images)):
        rgb = np.asarray(open_rgb(image_path).resize((w, h)), dtype=np.float32) / 255.0
        x = ((torch.from_numpy(rgb).permute(2, 0, 1) - mean) / std)[None].to(device)
        with torch.no_grad():
            tokens, alphas = captioner.decode(x, beam_size)[0]
        g = captioner.grid
        avg = alphas.mean(dim=0).reshape(1, 1, g, g).float().cpu()
        overlay = F.interpolate(avg, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
        caption = (f"(random captioner: {len(tokens)} steps)" if random
                   else " ".join(captioner.words(tokens)))
        fig, ax = plt.subplots(figsize=(4, 4.4), dpi=100)
        ax.imshow(rgb)
        ax.imshow(overlay, cmap="jet", alpha=0.5)
        ax.set_title(caption, fontsize=8, wrap=True)
        ax.axis("off")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(out_dir / name, buf.getvalue())  # never through a link, never half a file
        written.append(out_dir / name)
    return written


def attention_files(images) -> list[str]:
    """OUT/<stem>_attention.png per image; numbered when two images share a stem."""
    from membench.explain.overlay import stem

    seen: dict[str, int] = {}
    return [f"{stem(Path(image), i, seen)}_attention.png" for i, image in enumerate(images)]
