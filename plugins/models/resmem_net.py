"""The ResMem network (torch imported at module level: loaded only when a model is built);
its description, weights and recipe are in plugins/models/resmem.py."""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import resnet152


class ResMem(nn.Module):
    """(B,3,227,227) in [0,1] -> (B,) memorability in [0,1]."""

    def __init__(self):
        super().__init__()
        # zero_init_residual: a randomly initialised ResNet-152 that stays frozen (BatchNorm
        # in eval mode, --pretrained none) otherwise grows its logits to ~1e7 and
        # saturates the sigmoid; loaded weights overwrite it.
        self.features = resnet152(weights=None, zero_init_residual=True)
        self.conv1 = nn.Conv2d(3, 48, kernel_size=11, stride=4)
        self.pool1 = nn.MaxPool2d(3, 2)
        self.lrn1 = nn.LocalResponseNorm(5)
        self.conv2 = nn.Conv2d(48, 256, kernel_size=5, padding=2, groups=2)
        self.pool2 = nn.MaxPool2d(3, 2)
        self.lrn2 = nn.LocalResponseNorm(5)
        self.conv3 = nn.Conv2d(256, 384, kernel_size=3, padding=1, groups=2)
        self.conv4 = nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2)
        self.pool5 = nn.MaxPool2d(3, 2)
        widths = (9216 + 1000, 4096, 4096, 2048, 1024, 512, 256, 1)
        for i, (n_in, n_out) in enumerate(zip(widths, widths[1:])):
            setattr(self, f"fc{i + 6}", nn.Linear(n_in, n_out))
        # The package applies dropout after fc6 and fc7 only.
        self.drop = nn.Dropout(0.5)
        self.relu = nn.ReLU(inplace=True)

    def branch(self, x):
        x = self.lrn1(self.pool1(self.relu(self.conv1(x))))
        x = self.lrn2(self.pool2(self.relu(self.conv2(x))))
        x = self.relu(self.conv3(x))
        x = self.relu(self.conv4(x))
        return self.pool5(self.relu(self.conv5(x))).flatten(1)

    # The frozen-output protocol (membench.contract): the fine-tuning recipe freezes the
    # ResNet-152 (`features`), by far the costliest part, so membench may cache its
    # outputs. The input is passed through as well: the AlexNet-like branch trains.
    frozen_output_modules = ("features",)  # what frozen_outputs depends on (feature store key)

    def frozen_outputs(self, x):
        # NHWC activations (weights converted at build): ~9% faster convolutions on CPU
        # than the package's NCHW, same results to ~1e-7.
        return self.features(x.contiguous(memory_format=torch.channels_last)), x

    def penultimate(self, outputs):
        """The 256 features fc12 reads (after fc11's ReLU), from the frozen outputs."""
        logits, x = outputs
        x = x.contiguous(memory_format=torch.channels_last)
        h = torch.cat((self.branch(x), logits), 1)
        h = self.drop(self.relu(self.fc6(h)))
        h = self.drop(self.relu(self.fc7(h)))
        for fc in (self.fc8, self.fc9, self.fc10, self.fc11):
            h = self.relu(fc(h))
        return h

    def from_frozen(self, outputs):
        return torch.sigmoid(self.fc12(self.penultimate(outputs))).squeeze(1)

    def forward(self, x):
        return self.from_frozen(self.frozen_outputs(x))
