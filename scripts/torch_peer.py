"""PyTorch eager on DNSD's network, the peer of scripts/benchmark.py's convolution section: the CIFAR ResNet 6n+2
with the option-A shortcut, each step's residual blocks skipped by the gates DNSD draws for that step, cross-entropy
and SGD with momentum and weight decay, on DNSD's batch."""
import itertools

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from DNSD.models.stochastic_depth import sample_gates
from DNSD.randomness import generator


class Block(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.extra_channels = stride, out_channels - in_channels

    def forward(self, x, active):
        shortcut = F.avg_pool2d(x, self.stride) if self.stride > 1 else x
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        if not active:
            return F.relu(shortcut)
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(shortcut + residual)


class ResNet(nn.Module):
    def __init__(self, depth, num_classes=10):
        super().__init__()
        per_stage = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        widths = [16] + [16] * per_stage + [32] * per_stage + [64] * per_stage
        self.blocks = nn.ModuleList(Block(widths[i], widths[i + 1], 2 if widths[i + 1] > widths[i] else 1)
                                    for i in range(3 * per_stage))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, images, gates):
        x = self.stem(images)
        for block, active in zip(self.blocks, gates):
            x = block(x, active)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def training_step(depth, probabilities, images, labels, threads):
    """A function that takes one training step of the peer, with DNSD's gates of step 0, 1, 2 ... in turn."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    model = ResNet(depth).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    images, labels = torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels.astype(np.int64))
    steps = itertools.count()

    def step():
        gates = sample_gates(probabilities, generator(0, "gates", 1, next(steps))).tolist()
        loss = F.cross_entropy(model(images, gates), labels)
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step
