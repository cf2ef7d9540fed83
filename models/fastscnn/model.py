"""Fast-SCNN, our implementation of SegmenTron's network (FACTS.md section 3).

Upstream: LikeLy-Journey/SegmenTron @ 4bc605e (the Ascend guide's commit)
`segmentron/models/fast_scnn.py`, `modules/basic.py`, `modules/module.py`. Module and attribute
names follow upstream exactly so the official state_dict loads strictly (284 entries with the two
auxiliary heads; see state_dict_keys.txt):

  learning_to_downsample.{conv, dsconv1, dsconv2}
  global_feature_extractor.{bottleneck1..3, ppm.convs.0..3, out}
  feature_fusion.{dwconv, conv_lower_res, conv_higher_res}
  classifier.{dsconv1, dsconv2, conv}
  auxlayer1, auxlayer2                       (aux=True, as the released checkpoint)

`forward` returns the tuple (main, aux1, aux2) like upstream, each upsampled bilinearly
(align_corners=True) to the input size; inference uses the main output (element 0). With
`aux_outputs=False` the aux heads are still built and loaded (strict) but not run: (main,) only.

Pyramid pooling (`ppm`): upstream uses nn.AdaptiveAvgPool2d with bins (1, 2, 3, 6). Two variants:
  - "exact" (default): the same values as AdaptiveAvgPool2d, computed as fixed averaging matrices
    for the input size seen by the call: bin cell i of s over a length L averages
    [floor(i*L/s), ceil((i+1)*L/s)). pooled = A_h @ x @ A_w^T (two MatMuls in ONNX, any opset:
    no AdaptiveAvgPool with a non-divisible size in the graph). The matrices are
    constants of the exported graph: the ONNX model is fixed to the export's spatial size
    (1024x2048 for Cityscapes: the PPM input is then 32x64).
  - "guide_avgpool": the Ascend guide's module.patch, an APPROXIMATION (not upstream's numerics):
    per bin s an nn.AvgPool2d(kernel = L - (s-1)*floor(L/s), stride = floor(L/s)) per axis, frozen
    at the first call's size. At 32x64 bins 3 and 6 average other windows than upstream's
    (e.g. H, bin 3: [0,12),[10,22),[20,32) instead of [0,11),[10,22),[21,32)).
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PPM_MODES = ("exact", "guide_avgpool")
PPM_BINS = (1, 2, 3, 6)


# ----------------------------------------------------------------------------- pooling arithmetic

def adaptive_windows(length: int, bins: int) -> list[tuple[int, int]]:
    """AdaptiveAvgPool's windows over one axis: cell i covers [floor(i*L/s), ceil((i+1)*L/s))."""
    if length < 1 or bins < 1:
        raise ValueError(f"adaptive pooling needs a positive length and bin count, got {length} and {bins}")
    return [((i * length) // bins, -((-(i + 1) * length) // bins)) for i in range(bins)]


def guide_kernel_stride(length: int, bins: int) -> tuple[int, int]:
    """The guide's fixed AvgPool over one axis: stride floor(L/s), kernel L-(s-1)*stride."""
    stride = length // bins
    if stride < 1:
        raise ValueError(f"ppm=guide_avgpool: the pyramid pooling input has {length} rows/columns, fewer than "
                         f"bin {bins}: the guide's fixed AvgPool cannot be built (use ppm=exact)")
    return length - (bins - 1) * stride, stride


def guide_windows(length: int, bins: int) -> list[tuple[int, int]]:
    """The windows the guide's fixed AvgPool averages over one axis."""
    kernel, stride = guide_kernel_stride(length, bins)
    return [(i * stride, i * stride + kernel) for i in range(bins)]


def averaging_matrix(length: int, bins: int) -> np.ndarray:
    """(bins, length) float32 matrix whose row i averages cell i of AdaptiveAvgPool over `length`."""
    m = np.zeros((bins, length), dtype=np.float64)
    for i, (a, b) in enumerate(adaptive_windows(length, bins)):
        m[i, a:b] = 1.0 / (b - a)
    return m.astype(np.float32)


# ----------------------------------------------------------------------------- building blocks

class ConvBNReLU(nn.Module):
    """Conv2d(bias=False) -> BatchNorm2d -> ReLU (ReLU6 if relu6); upstream `_ConvBNReLU`."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, relu6: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class SeparableConv2d(nn.Module):
    """Depthwise 3x3 -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU (upstream relu_first=False)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.block = nn.Sequential(OrderedDict([
            ("depthwise", nn.Conv2d(cin, cin, 3, stride, padding=1, groups=cin, bias=False)),
            ("bn_depth", nn.BatchNorm2d(cin)),
            ("relu1", nn.ReLU(inplace=True)),
            ("pointwise", nn.Conv2d(cin, cout, 1, bias=False)),
            ("bn_point", nn.BatchNorm2d(cout)),
            ("relu2", nn.ReLU(inplace=True)),
        ]))

    def forward(self, x):
        return self.block(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (ReLU6) -> 3x3 depthwise (ReLU6, stride) -> 1x1 linear + BN;
    residual when stride 1 and cin == cout."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 6):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        mid = int(round(cin * expand))
        self.conv = nn.Sequential(
            ConvBNReLU(cin, mid, 1, relu6=True),
            ConvBNReLU(mid, mid, 3, stride, padding=1, groups=mid, relu6=True),
            nn.Conv2d(mid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class PyramidPooling(nn.Module):
    """cat([x] + [upsample(ConvBNReLU(pool_s(x))) for s in bins]); pool_s per `mode` (module doc)."""

    def __init__(self, channels: int = 128, bins=PPM_BINS, mode: str = "exact"):
        super().__init__()
        if mode not in PPM_MODES:
            raise ValueError(f"ppm must be one of {PPM_MODES}, got {mode!r}")
        self.bins, self.mode = tuple(bins), mode
        self.convs = nn.ModuleList([ConvBNReLU(channels, channels // 4, 1) for _ in self.bins])
        self._matrices: dict = {}           # (length, bins, dtype, device) -> constant matrix
        self.guide_frozen_at: tuple[int, int] | None = None  # the guide's pools: size of the first call
        self._guide_pools: list | None = None

    def _matrix(self, length: int, bins: int, like: torch.Tensor, transpose: bool) -> torch.Tensor:
        key = (length, bins, like.dtype, like.device, transpose)
        m = self._matrices.get(key)
        if m is None:
            a = averaging_matrix(length, bins)
            m = torch.from_numpy(np.ascontiguousarray(a.T if transpose else a)).to(like.device, like.dtype)
            self._matrices[key] = m
        return m

    def pool_exact(self, x: torch.Tensor, bins: int) -> torch.Tensor:
        h, w = int(x.shape[2]), int(x.shape[3])
        rows = self._matrix(h, bins, x, transpose=False)     # (s, H)
        cols = self._matrix(w, bins, x, transpose=True)      # (W, s)
        return torch.matmul(torch.matmul(rows, x), cols)    # (N, C, s, s)

    def pool_guide(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if self._guide_pools is None:  # the patch builds its AvgPools at the first call's size
            h, w = int(x.shape[2]), int(x.shape[3])
            pools = []
            for s in self.bins:
                (kh, sh), (kw, sw) = guide_kernel_stride(h, s), guide_kernel_stride(w, s)
                pools.append(((kh, kw), (sh, sw)))
            self._guide_pools, self.guide_frozen_at = pools, (h, w)
        kernel, stride = self._guide_pools[index]
        return F.avg_pool2d(x, kernel_size=kernel, stride=stride)

    def forward(self, x):
        size = x.shape[2:]
        feats = [x]
        for i, (s, conv) in enumerate(zip(self.bins, self.convs)):
            pooled = self.pool_exact(x, s) if self.mode == "exact" else self.pool_guide(x, i)
            feats.append(F.interpolate(conv(pooled), size, mode="bilinear", align_corners=True))
        return torch.cat(feats, dim=1)


# ----------------------------------------------------------------------------- the network

class LearningToDownsample(nn.Module):
    """conv 3x3 stride 2 padding 0 (1024x2048 -> 511x1023), two separable convs stride 2 (-> 1/8)."""

    def __init__(self, c1: int = 32, c2: int = 48, cout: int = 64):
        super().__init__()
        self.conv = ConvBNReLU(3, c1, 3, 2)
        self.dsconv1 = SeparableConv2d(c1, c2, stride=2)
        self.dsconv2 = SeparableConv2d(c2, cout, stride=2)

    def forward(self, x):
        return self.dsconv2(self.dsconv1(self.conv(x)))


class GlobalFeatureExtractor(nn.Module):
    def __init__(self, cin: int = 64, block_channels=(64, 96, 128), cout: int = 128, expand: int = 6,
                 num_blocks=(3, 3, 3), ppm: str = "exact"):
        super().__init__()
        c = (cin,) + tuple(block_channels)
        strides = (2, 2, 1)
        for k in range(3):
            blocks = [InvertedResidual(c[k], c[k + 1], strides[k], expand)]
            blocks += [InvertedResidual(c[k + 1], c[k + 1], 1, expand) for _ in range(1, num_blocks[k])]
            setattr(self, f"bottleneck{k + 1}", nn.Sequential(*blocks))
        self.ppm = PyramidPooling(block_channels[2], mode=ppm)
        self.out = ConvBNReLU(block_channels[2] * 2, cout, 1)

    def forward(self, x):
        x = self.bottleneck3(self.bottleneck2(self.bottleneck1(x)))
        return self.out(self.ppm(x))


class FeatureFusionModule(nn.Module):
    """lower: x4 bilinear (align_corners) -> 1x1 ConvBNReLU -> 1x1 conv(bias) + BN;
    higher: 1x1 conv(bias) + BN; ReLU(sum)."""

    def __init__(self, higher_in: int = 64, lower_in: int = 128, cout: int = 128, scale_factor: int = 4):
        super().__init__()
        self.scale_factor = scale_factor
        self.dwconv = ConvBNReLU(lower_in, cout, 1)
        self.conv_lower_res = nn.Sequential(nn.Conv2d(cout, cout, 1), nn.BatchNorm2d(cout))
        self.conv_higher_res = nn.Sequential(nn.Conv2d(higher_in, cout, 1), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, higher, lower):
        lower = F.interpolate(lower, scale_factor=self.scale_factor, mode="bilinear", align_corners=True)
        lower = self.conv_lower_res(self.dwconv(lower))
        return self.relu(self.conv_higher_res(higher) + lower)


class Classifier(nn.Module):
    """Two separable convs, then Dropout2d(0.1) + 1x1 conv (bias) to the classes (upstream `Classifer`)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.dsconv1 = SeparableConv2d(channels, channels)
        self.dsconv2 = SeparableConv2d(channels, channels)
        self.conv = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1))

    def forward(self, x):
        return self.conv(self.dsconv2(self.dsconv1(x)))


def _aux_head(cin: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
                         nn.Dropout2d(0.1), nn.Conv2d(32, num_classes, 1))


class FastSCNN(nn.Module):
    """`aux`: build the two auxiliary heads (their weights are in the released checkpoint);
    `aux_outputs`: also compute and return them (upstream and the guide do; inference uses only the
    main output, so False returns (main,) alone with the same weights and the same main values)."""

    def __init__(self, num_classes: int = 19, aux: bool = True, ppm: str = "exact", aux_outputs: bool = True):
        super().__init__()
        if ppm not in PPM_MODES:
            raise ValueError(f"ppm must be one of {PPM_MODES}, got {ppm!r}")
        self.aux, self.aux_outputs = aux, aux and aux_outputs
        self.learning_to_downsample = LearningToDownsample(32, 48, 64)
        self.global_feature_extractor = GlobalFeatureExtractor(64, (64, 96, 128), 128, 6, (3, 3, 3), ppm=ppm)
        self.feature_fusion = FeatureFusionModule(64, 128, 128)
        self.classifier = Classifier(128, num_classes)
        if aux:
            self.auxlayer1 = _aux_head(64, num_classes)
            self.auxlayer2 = _aux_head(128, num_classes)

    @property
    def ppm(self) -> PyramidPooling:
        return self.global_feature_extractor.ppm

    def forward(self, x):
        size = x.shape[2:]
        higher = self.learning_to_downsample(x)
        lower = self.global_feature_extractor(higher)
        out = self.classifier(self.feature_fusion(higher, lower))
        outputs = [F.interpolate(out, size, mode="bilinear", align_corners=True)]
        if self.aux_outputs:
            outputs.append(F.interpolate(self.auxlayer1(higher), size, mode="bilinear", align_corners=True))
            outputs.append(F.interpolate(self.auxlayer2(lower), size, mode="bilinear", align_corners=True))
        return tuple(outputs)


def ppm_input_size(height: int, width: int) -> tuple[int, int]:
    """Spatial size of the pyramid pooling input for an image of height x width (1024x2048 -> 32x64):
    conv 3x3/2 pad 0, then four 3x3/2 pad 1 stages."""
    h, w = (height - 3) // 2 + 1, (width - 3) // 2 + 1
    for _ in range(4):
        h, w = math.floor((h - 1) / 2) + 1, math.floor((w - 1) / 2) + 1
    return h, w
