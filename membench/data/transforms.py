"""Image transforms: PIL image (RGB) -> uint8 tensor (3, H, W); normalisation on the device.

Workers only decode, crop and resize; the uint8 batch travels to the device (4x smaller
than float32) and `Normalizer` turns it into the model's input there.

Evaluation follows each model's reference transform exactly (`EvalTransform`): the
references (the resmem package's `transformer`, ViTMem's transform, timm's eval transform,
torchvision ImageNet recipes) resize PIL images with PIL, so evaluation does too, through
torchvision's own functions. Training augmentations resample with torch's antialiased
bilinear interpolation on a channels-last uint8 view of the decoded pixels (PIL's BILINEAR
filter within one grey level, about twice as fast here); a grey level is not a rounding
error at evaluation (it moved ResMem's predictions by up to 0.005 on LNSIM photographs),
but at training time it is one more source of noise among the random crops.
Every random draw takes an optional `generator`, so a loader can
make each sample's augmentation a function of (seed, epoch, index) alone.

Paper §3.2 ("paper"), folded. The literal order is: scale by s ~ U[0.8, 1.2], flip with
p = 0.5, crop a box whose sides are fractions fw, fh ~ U[0.8, 1.0] of the scaled image at a
uniform position, resize to `size`. Scaling only changes the resolution the crop is taken
from: in coordinates normalised by the image size the box is (u(1-fw), v(1-fh), fw, fh)
whatever s is, and a flip before a uniformly placed crop gives the same distribution of
boxes as a flip after it. So `PaperTransform` samples that box on the original image and
resamples once (a literal implementation resamples twice and costs ~2x).
`paper_literal_transform` is the literal order, kept as the reference for tests and
`membench bench`. The scale is read as resizing the image (not a zoom on a fixed canvas,
which would pad with black for s < 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

PAPER_SCALE = (0.8, 1.2)
PAPER_CROP = (0.8, 1.0)
RRC_SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop defaults (AMNet uses them)
RRC_RATIO = (3 / 4, 4 / 3)


def train_transform(pre):
    """The training transform that `pre.train` names."""
    if pre.train == "paper":
        return PaperTransform(pre.size)
    if pre.train == "crop":
        return CropTransform(pre.train_size or pre.size, pre.crop)
    if pre.train == "resized-crop":
        return ResizedCropTransform(pre.train_size or pre.size, pre.crop)
    return eval_transform(pre)


def eval_transform(pre):
    """The model's reference evaluation transform (see `EvalTransform`)."""
    return EvalTransform(pre.size, pre.crop, resize=pre.resize, interpolation=pre.interpolation)


# ---------------------------------------------------------------------------- pixels

def to_hwc(img):
    """PIL RGB image (or a (3,H,W) uint8 tensor) -> (H, W, 3) uint8 tensor, no float copy."""
    if isinstance(img, torch.Tensor):
        return img.permute(1, 2, 0)
    if img.mode != "RGB":
        img = img.convert("RGB")
    # torch's allocation is 64-byte aligned (a bytearray's is not): the resize kernel runs
    # ~1.8x faster on aligned rows
    out = torch.empty((img.height, img.width, 3), dtype=torch.uint8)
    out.numpy().reshape(-1)[:] = np.frombuffer(img.tobytes(), dtype=np.uint8)
    return out


def resize(hwc, size):
    """(H, W, 3) uint8 (a view is fine) -> (h, w, 3) contiguous uint8, bilinear with
    antialiasing. The kernel works on channels-last data, so nothing is transposed."""
    # unsqueeze before permute: the batch stride must be H*W*3 for the fast kernel path
    x = hwc.unsqueeze(0).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).contiguous()


def chw(hwc):
    """(H, W, 3) contiguous -> the (3, H, W) view the transforms return. Its memory stays
    channels-last: batches stack with one copy and reach the device in the layout that
    channels_last models use (a planar copy per image costs ~0.13 ms, 10% of the pipeline)."""
    return hwc.permute(2, 0, 1)


def _width_height(img) -> tuple[int, int]:
    return (img.shape[-1], img.shape[-2]) if isinstance(img, torch.Tensor) else img.size


def _uniform(generator, n=1):
    return torch.rand(n, generator=generator, dtype=torch.float64).tolist()


def _randint(high, generator):
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=generator))


def _maybe_flip(hwc, flip: bool):
    return hwc.flip(1) if flip else hwc


# ---------------------------------------------------------------------------- transforms

class EvalTransform:
    """torchvision's Resize (PIL path) then CenterCrop, i.e. the reference pixels.

    resize="exact": Resize((h, w)); "shorter": Resize(h), the shorter side to h keeping
    the aspect ratio (timm's centre-crop eval). The output is a uint8 (3, crop, crop)
    tensor; `Normalizer` then computes ToTensor + Normalize to within float rounding."""

    def __init__(self, size, crop=None, resize="exact", interpolation="bilinear"):
        self.size, self.crop = tuple(size), crop
        self.resize, self.interpolation = resize, interpolation

    def __call__(self, img, generator=None):
        import torchvision.transforms.functional as TF
        from torchvision.transforms import InterpolationMode

        if isinstance(img, torch.Tensor):
            img = TF.to_pil_image(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        size = [self.size[0]] if self.resize == "shorter" else list(self.size)
        img = TF.resize(img, size, interpolation=InterpolationMode(self.interpolation))
        if self.crop:
            img = TF.center_crop(img, [self.crop, self.crop])
        return chw(to_hwc(img))

    def __repr__(self):
        return (f"EvalTransform(size={self.size}, crop={self.crop}, resize={self.resize!r}, "
                f"interpolation={self.interpolation!r}, PIL)")


class PaperTransform:
    """Paper §3.2 folded into one resized crop (see the module docstring)."""

    def __init__(self, size, crop=PAPER_CROP):
        self.size, self.crop = tuple(size), tuple(crop)

    def params(self, width: int, height: int, generator=None):
        """(top, left, box_h, box_w, flip) on a width x height image."""
        flip, fw, fh, u, v = _uniform(generator, 5)
        lo, hi = self.crop
        bw = max(1, min(width, round((lo + (hi - lo) * fw) * width)))
        bh = max(1, min(height, round((lo + (hi - lo) * fh) * height)))
        left = min(int(u * (width - bw + 1)), width - bw)
        top = min(int(v * (height - bh + 1)), height - bh)
        return top, left, bh, bw, flip < 0.5

    def apply(self, img, params):
        top, left, bh, bw, flip = params
        return chw(_maybe_flip(resize(to_hwc(img)[top:top + bh, left:left + bw], self.size), flip))

    def __call__(self, img, generator=None):
        return self.apply(img, self.params(*_width_height(img), generator))

    def __repr__(self):
        return f"PaperTransform(size={self.size}, crop={self.crop}, folded scale)"


class CropTransform:
    """Resize to `size`, random `crop` x `crop`, horizontal flip (MemNet style)."""

    def __init__(self, size, crop):
        self.size, self.crop = tuple(size), crop

    def __call__(self, img, generator=None):
        x = resize(to_hwc(img), self.size)
        h, w = self.size
        top, left = _randint(h - self.crop + 1, generator), _randint(w - self.crop + 1, generator)
        flip = _uniform(generator)[0] < 0.5
        return chw(_maybe_flip(x[top:top + self.crop, left:left + self.crop], flip).contiguous())

    def __repr__(self):
        return f"CropTransform(size={self.size}, crop={self.crop})"


def rrc_params(height, width, generator=None, scale=RRC_SCALE, ratio=RRC_RATIO):
    """torchvision's RandomResizedCrop.get_params, drawing from `generator`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        a, r = _uniform(generator, 2)
        target_area = area * (scale[0] + (scale[1] - scale[0]) * a)
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * r)
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class ResizedCropTransform:
    """Resize to `size`, RandomResizedCrop(`crop`), horizontal flip (AMNet style).
    Kept literal (two resamplings): only the crop box is random, the first resize is not."""

    def __init__(self, size, crop):
        self.size, self.crop = tuple(size), crop

    def __call__(self, img, generator=None):
        x = resize(to_hwc(img), self.size)
        top, left, h, w = rrc_params(self.size[0], self.size[1], generator)
        flip = _uniform(generator)[0] < 0.5
        return chw(_maybe_flip(resize(x[top:top + h, left:left + w], (self.crop, self.crop)), flip))

    def __repr__(self):
        return f"ResizedCropTransform(size={self.size}, crop={self.crop})"


class PaperLiteral:
    """Paper §3.2 step by step in PIL (scale, flip, crop, resize): the reference for the
    folded `PaperTransform`. Slower; used by tests and `membench bench` only."""

    def __init__(self, size, scale=PAPER_SCALE, crop=PAPER_CROP):
        self.size, self.scale, self.crop = tuple(size), tuple(scale), tuple(crop)

    def params(self, width: int, height: int, generator=None):
        """(scaled_w, scaled_h, flip, top, left, box_h, box_w) in scaled-image pixels."""
        s, flip, fw, fh = _uniform(generator, 4)
        s = self.scale[0] + (self.scale[1] - self.scale[0]) * s
        sw, sh = max(1, round(width * s)), max(1, round(height * s))
        lo, hi = self.crop
        bw = max(1, min(sw, round((lo + (hi - lo) * fw) * sw)))
        bh = max(1, min(sh, round((lo + (hi - lo) * fh) * sh)))
        top, left = _randint(sh - bh + 1, generator), _randint(sw - bw + 1, generator)
        return sw, sh, flip < 0.5, top, left, bh, bw

    def __call__(self, img, generator=None):
        return self.apply(img, self.params(img.width, img.height, generator))

    def apply(self, img, params):
        import torchvision.transforms.v2.functional as TF
        from PIL import Image

        sw, sh, flip, top, left, bh, bw = params
        img = img.resize((sw, sh), Image.BILINEAR)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        img = img.crop((left, top, left + bw, top + bh)).resize(self.size[::-1], Image.BILINEAR)
        return TF.pil_to_tensor(img)

    def __repr__(self):
        return f"PaperLiteral(size={self.size})"


def paper_literal_transform(pre):
    return PaperLiteral(pre.size)


# ---------------------------------------------------------------------------- device side

class Normalizer:
    """uint8 batch (B,3,H,W) on any device -> float batch on that device:
    x/255, then (x - mean)/std when the model declares mean/std."""

    def __init__(self, pre, *, dtype=None, channels_last: bool = False):
        self.mean, self.std = pre.mean, pre.std
        self.dtype = dtype
        self.channels_last = channels_last
        self._consts = {}

    def _constants(self, device):
        if device not in self._consts:
            if self.mean is None:
                shift, scale = torch.zeros(3), torch.full((3,), 1 / 255)
            else:
                mean = torch.tensor(self.mean, dtype=torch.float64)
                std = torch.tensor(self.std, dtype=torch.float64)
                shift, scale = mean * 255, 1 / (255 * std)
            self._consts[device] = tuple(t.to(torch.float32).view(3, 1, 1).to(device) for t in (shift, scale))
        return self._consts[device]

    def __call__(self, batch):
        shift, scale = self._constants(batch.device)
        # uint8 batches arrive channels-last (see `chw`); the float batch is planar unless asked
        fmt = torch.channels_last if self.channels_last and batch.dim() == 4 else torch.contiguous_format
        x = batch.to(torch.float32, memory_format=fmt)
        x = x.sub_(shift).mul_(scale)
        return x if self.dtype in (None, torch.float32) else x.to(self.dtype)

    def __repr__(self):
        return f"Normalizer(mean={self.mean}, std={self.std}, dtype={self.dtype}, channels_last={self.channels_last})"
