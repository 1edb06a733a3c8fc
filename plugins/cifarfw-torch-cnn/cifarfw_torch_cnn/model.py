"""The study's PyTorch CNN, layer for layer (350,366 parameters).

conv3x3(3→32, same, no bias) + BN + ReLU + maxpool 2, the same for 32→64 and 64→128,
flatten 128·4·4, dropout 0.5, FC 2048→120, ReLU, FC 120→84, ReLU, FC 84→classes.
The layer names match the study's code, so its state dicts load as they are.

Two rewrites compute the same function faster on a CPU (bench/torch_cnn_throughput.py):
each block max-pools before its ReLU (the two commute, as ReLU is monotonic, so outputs
and gradients are unchanged, and the ReLU touches a quarter of the values), and dropout is
:class:`cifarfw_torch.layers.UniformDropout` (the same distribution, its mask drawn
with ``rand_like``: ``bernoulli_`` takes about three times as long on a CPU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cifarfw_torch.layers import UniformDropout

__all__ = ["StudyCNN", "UniformDropout"]


class StudyCNN(nn.Module):
    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding="same", bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding="same", bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv3 = nn.Conv2d(64, 128, 3, padding="same", bias=False)
        self.bn3 = nn.BatchNorm2d(128)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(128 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.dropout = UniformDropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pool(relu(y)) == relu(pool(y)): the ReLU runs after the pool, on 4x fewer values
        x = F.relu(self.pool(self.bn1(self.conv1(x))))
        x = F.relu(self.pool(self.bn2(self.conv2(x))))
        x = F.relu(self.pool(self.bn3(self.conv3(x))))
        x = self.dropout(torch.flatten(x, 1))
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))
