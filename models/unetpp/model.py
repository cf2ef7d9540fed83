"""NestedUNet (UNet++), our implementation of the upstream network.

Upstream: 4uiiurz1/pytorch-nested-unet @ 557ea02 `archs.py` (FACTS.md section 5). Module and
attribute names follow upstream exactly so the official state_dict loads strictly:
`conv{i}_{j}.{conv1,bn1,conv2,bn2}` and `final` (see state_dict_keys.txt).

`upsample` selects the numerics of the decoder's 2x upsampling:
  - "bilinear": nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True), upstream;
  - "nearest":  nn.Upsample(scale_factor=2, mode='nearest'), the Ascend guide's patch
                (nested_unet.diff), which changes the outputs (not a drop-in replacement).
"""
from __future__ import annotations

import torch
from torch import nn

UPSAMPLE_MODES = ("bilinear", "nearest")
NB_FILTER = (32, 64, 128, 256, 512)


class VGGBlock(nn.Module):
    """conv3x3(bias) -> BN -> ReLU -> conv3x3(bias) -> BN -> ReLU."""

    def __init__(self, in_channels: int, middle_channels: int, out_channels: int):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, middle_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(middle_channels)
        self.conv2 = nn.Conv2d(middle_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class NestedUNet(nn.Module):
    """UNet++: node x_{i,j} = VGGBlock(cat(x_{i,0..j-1}, up(x_{i+1,j-1}))); output = logits."""

    def __init__(self, num_classes: int = 1, input_channels: int = 3,
                 deep_supervision: bool = False, upsample: str = "bilinear"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        f = NB_FILTER
        self.deep_supervision = deep_supervision
        self.upsample_mode = upsample
        self.pool = nn.MaxPool2d(2, 2)
        if upsample == "bilinear":
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        else:
            self.up = nn.Upsample(scale_factor=2, mode="nearest")

        # Encoder column j=0, then every nested node; names match upstream's attributes.
        self.conv0_0 = VGGBlock(input_channels, f[0], f[0])
        for i in range(1, 5):
            setattr(self, f"conv{i}_0", VGGBlock(f[i - 1], f[i], f[i]))
        for j in range(1, 5):
            for i in range(0, 5 - j):
                cin = f[i] * j + f[i + 1]
                setattr(self, f"conv{i}_{j}", VGGBlock(cin, f[i], f[i]))

        if deep_supervision:
            for k in range(1, 5):
                setattr(self, f"final{k}", nn.Conv2d(f[0], num_classes, kernel_size=1))
        else:
            self.final = nn.Conv2d(f[0], num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor):
        # nodes[i][j] = x_{i,j}; computed in upstream's order (column by column of the diagonal).
        nodes: list[list[torch.Tensor]] = [[] for _ in range(5)]
        nodes[0].append(self.conv0_0(x))
        for i in range(1, 5):
            nodes[i].append(getattr(self, f"conv{i}_0")(self.pool(nodes[i - 1][0])))
            # after x_{i,0}, the anti-diagonal x_{i-1,1}, x_{i-2,2}, ..., x_{0,i}
            for j in range(1, i + 1):
                r = i - j
                inp = torch.cat(nodes[r][:j] + [self.up(nodes[r + 1][j - 1])], 1)
                nodes[r].append(getattr(self, f"conv{r}_{j}")(inp))
        if self.deep_supervision:
            return [getattr(self, f"final{k}")(nodes[0][k]) for k in range(1, 5)]
        return self.final(nodes[0][4])
