"""ERFNet, our implementation of the upstream network.

Upstream: Eromera/erfnet_pytorch @ d4a46fa `eval/erfnet.py` (FACTS.md section 2). Module and
attribute names follow upstream exactly so the official state_dict loads strictly (see
state_dict_keys.txt, 345 entries):

  encoder.initial_block                      DownsamplerBlock(3, 16)
  encoder.layers.0                           DownsamplerBlock(16, 64)
  encoder.layers.1-5                         non_bottleneck_1d(64, dilation 1)
  encoder.layers.6                           DownsamplerBlock(64, 128)
  encoder.layers.7-14                        non_bottleneck_1d(128, dilations 2, 4, 8, 16, twice)
  encoder.output_conv                        1x1 conv 128 -> classes (encoder-only mode: unused here)
  decoder.layers.0 / 3                       UpsamplerBlock(128, 64) / (64, 16)
  decoder.layers.1, 2 / 4, 5                 non_bottleneck_1d(64 / 16, dilation 1, no dropout)
  decoder.output_conv                        2x2 transposed conv, stride 2, 16 -> classes

Every BatchNorm has eps=1e-3. Output: logits at the input resolution (N x classes x H x W)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
# (channels, dropout probability, dilation) of the encoder's factorised residual blocks
ENCODER_64 = [(64, 0.1, 1)] * 5
ENCODER_128 = [(128, 0.1, d) for _ in range(2) for d in (2, 4, 8, 16)]


class DownsamplerBlock(nn.Module):
    """Half resolution: [3x3 stride-2 conv (out - in channels) | 2x2 max-pool (in channels)]
    concatenated on channels -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch - in_ch, kernel_size=3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.conv(x), self.pool(x)], dim=1)
        return F.relu(self.bn(y))


class non_bottleneck_1d(nn.Module):  # noqa: N801 (upstream's class name)
    """Residual block of factorised convolutions: (3x1, ReLU, 1x3, BN, ReLU) then the same
    pair dilated by `dilation` (3x1 dilated vertically, 1x3 horizontally), BN, Dropout2d;
    output = ReLU(block(x) + x)."""

    def __init__(self, channels: int, dropprob: float, dilation: int):
        super().__init__()
        c, d = channels, dilation
        self.conv3x1_1 = nn.Conv2d(c, c, (3, 1), stride=1, padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(c, c, (1, 3), stride=1, padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.conv3x1_2 = nn.Conv2d(c, c, (3, 1), stride=1, padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(c, c, (1, 3), stride=1, padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.dropout = nn.Dropout2d(dropprob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        y = self.bn2(self.conv1x3_2(y))
        if self.dropout.p != 0:  # identity in eval mode; kept for training-mode parity with upstream
            y = self.dropout(y)
        return F.relu(y + x)


class UpsamplerBlock(nn.Module):
    """Double resolution: 3x3 transposed conv (stride 2, padding 1, output_padding 1) -> BN -> ReLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=3, stride=2, padding=1, output_padding=1, bias=True)
        self.bn = nn.BatchNorm2d(out_ch, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        blocks: list[nn.Module] = [DownsamplerBlock(16, 64)]
        blocks += [non_bottleneck_1d(*cfg) for cfg in ENCODER_64]
        blocks.append(DownsamplerBlock(64, 128))
        blocks += [non_bottleneck_1d(*cfg) for cfg in ENCODER_128]
        self.layers = nn.ModuleList(blocks)
        # Only used in upstream's encoder-only (pretraining) mode; its weights are part of the
        # state_dict, so the module exists, but the full network never calls it.
        self.output_conv = nn.Conv2d(128, num_classes, kernel_size=1, stride=1, padding=0, bias=True)

    def forward(self, x: torch.Tensor, predict: bool = False) -> torch.Tensor:
        x = self.initial_block(x)
        for layer in self.layers:
            x = layer(x)
        return self.output_conv(x) if predict else x


class Decoder(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.layers = nn.ModuleList([
            UpsamplerBlock(128, 64), non_bottleneck_1d(64, 0.0, 1), non_bottleneck_1d(64, 0.0, 1),
            UpsamplerBlock(64, 16), non_bottleneck_1d(16, 0.0, 1), non_bottleneck_1d(16, 0.0, 1),
        ])
        self.output_conv = nn.ConvTranspose2d(16, num_classes, kernel_size=2, stride=2, padding=0,
                                              output_padding=0, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.output_conv(x)


class ERFNet(nn.Module):
    """Encoder (1/8 resolution, 128 channels) -> decoder (back to full resolution, classes).
    The evaluated model has 20 outputs: the 19 Cityscapes trainIds and class 19 = void."""

    def __init__(self, num_classes: int = 20):
        super().__init__()
        self.encoder = Encoder(num_classes)
        self.decoder = Decoder(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def batchnorms(module: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """(qualified name, module) of every BatchNorm2d, in module-tree order."""
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)]
