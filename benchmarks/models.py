"""Structured pruning benchmark: edgeprune vs Torch-Pruning on ImageNet-shaped classifiers.

Consumes: torchvision classifiers when torchvision imports (every one it lists), otherwise the
torchvision-shaped architectures defined below (resnet18/50, resnext50_32x4d, mobilenet_v2,
mobilenet_v3_large, efficientnet_b0, shufflenet_v2_x1_0, densenet121, convnext_tiny, vit_b_16;
same layers and couplings, random weights: latency does not depend on their values), and timm's
classifier families (``TIMM``) when timm imports. Produces: one JSON
row per model with MACs, params, ONNX Runtime latency (1 thread; min and median of rounds timed in rotation) before and after pruning
50% of channels with round_to 8 (l2 importance, per-layer ratio, the classifier's outputs kept),
the seconds of graph + plan + apply and the extra peak memory they take (in a forked child), and
the same for Torch-Pruning (when installed; run in a forked child capped at 8 GB more memory and
15 minutes, so a runaway fails its row) measured in
the same run; plus ratios ours / baseline of speedup, MACs and median latency. Rows with "section": "int8" come from
benchmarks/int8.py: fp32 vs int8 ONNX Runtime latency and size per model, flagging int8 slower
than fp32.

Usage: python benchmarks/models.py [--json build/bench-models.json] [--models resnet50 ...] [--runs 10]
                                   [--max-params M]
                                   [--only prune|int8]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/int8.py

import edgeprune as ep  # noqa: E402
from edgeprune.prune import count_macs_params  # noqa: E402

# ---------------------------------------------------------------------------------------------
# torchvision-identical architectures (used only when torchvision is absent)


def _cbr(cin, cout, k=3, s=1, g=1, act=nn.ReLU):
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=g, bias=False), nn.BatchNorm2d(cout), act(inplace=True)
    )


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, down=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False), nn.BatchNorm2d(planes)
        self.relu, self.downsample = nn.ReLU(inplace=True), down

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


# Mirrors the Bottleneck of tests/python/zoo.py on purpose: the tests do not import benchmarks/, and
# this copy follows torchvision's layer names so real torchvision weights and plans line up.
class _Bottle(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, down=None):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
        self.relu, self.downsample = nn.ReLU(inplace=True), down

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += idt
        return self.relu(out)


class ResNet(nn.Module):
    def __init__(self, block, layers, classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make(block, 64, layers[0])
        self.layer2 = self._make(block, 128, layers[1], 2)
        self.layer3 = self._make(block, 256, layers[2], 2)
        self.layer4 = self._make(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, classes)

    def _make(self, block, planes, n, stride=1):
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, down)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class _IR(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hid = cin * t
        self.use_res_connect = stride == 1 and cin == cout
        layers = [] if t == 1 else [_cbr(cin, hid, 1, act=nn.ReLU6)]
        layers += [
            _cbr(hid, hid, 3, stride, hid, act=nn.ReLU6),
            nn.Conv2d(hid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# The same inverted-residual table as tests/python/zoo_full.py on purpose: that copy pins the
# estimator's figures to the paper's MobileNetV2, this one is the benchmark's torchvision twin.
class MobileNetV2(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        cfg = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ]
        feats, cin = [_cbr(3, 32, 3, 2, act=nn.ReLU6)], 32
        for t, c, n, s in cfg:
            for i in range(n):
                feats.append(_IR(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(_cbr(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def _shuffle(x, groups: int):
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    return torch.transpose(x, 1, 2).contiguous().view(b, -1, h, w)


class _SU(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride, bf = stride, cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, bf, 1, bias=False),
                nn.BatchNorm2d(bf),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        c2 = cin if stride > 1 else bf
        self.branch2 = nn.Sequential(
            nn.Conv2d(c2, bf, 1, bias=False),
            nn.BatchNorm2d(bf),
            nn.ReLU(inplace=True),
            nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False),
            nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, bias=False),
            nn.BatchNorm2d(bf),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, repeats=(4, 8, 4), channels=(24, 116, 232, 464, 1024), classes=1000):
        super().__init__()
        self.conv1 = _cbr(3, channels[0], 3, 2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = channels[0]
        for i, (n, c) in enumerate(zip(repeats, channels[1:4])):
            setattr(self, f"stage{i + 2}", nn.Sequential(_SU(cin, c, 2), *[_SU(c, c, 1) for _ in range(n - 1)]))
            cin = c
        self.conv5 = _cbr(cin, channels[-1], 1)
        self.fc = nn.Linear(channels[-1], classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


class _BottleX(_Bottle):
    """ResNeXt bottleneck: grouped 3x3 (torchvision resnext50_32x4d: groups 32, width 4)."""

    def __init__(self, cin, planes, stride=1, down=None):
        super().__init__(cin, planes, stride, down)
        width = planes * 2
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, groups=32, bias=False), nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)


def _div(v, d=8):
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


class _SE(nn.Module):
    def __init__(self, c, squeeze, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.fc1, self.fc2, self.activation, self.scale_activation = (
            nn.Conv2d(c, squeeze, 1),
            nn.Conv2d(squeeze, c, 1),
            act(),
            gate(),
        )

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return self.scale_activation(self.fc2(self.activation(self.fc1(s)))) * x


class _MB(nn.Module):
    """MobileNetV3 / EfficientNet inverted residual with optional SE."""

    def __init__(self, cin, k, exp, cout, se, act, stride, se_squeeze, se_act=nn.ReLU, se_gate=nn.Hardsigmoid):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        layers = [] if exp == cin else [_cbr(cin, exp, 1, act=act)]
        layers.append(_cbr(exp, exp, k, stride, exp, act=act))
        if se:
            layers.append(_SE(exp, se_squeeze, se_act, se_gate))
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res_connect else y


class MobileNetV3Large(nn.Module):
    # torchvision's large config; benchmarks/int8.py's MobileNetV3Small has a table of the same shape on
    # purpose (its own rows, this __init__)
    CFG = [
        (16, 3, 16, 16, 0, "RE", 1),
        (16, 3, 64, 24, 0, "RE", 2),
        (24, 3, 72, 24, 0, "RE", 1),
        (24, 5, 72, 40, 1, "RE", 2),
        (40, 5, 120, 40, 1, "RE", 1),
        (40, 5, 120, 40, 1, "RE", 1),
        (40, 3, 240, 80, 0, "HS", 2),
        (80, 3, 200, 80, 0, "HS", 1),
        (80, 3, 184, 80, 0, "HS", 1),
        (80, 3, 184, 80, 0, "HS", 1),
        (80, 3, 480, 112, 1, "HS", 1),
        (112, 3, 672, 112, 1, "HS", 1),
        (112, 5, 672, 160, 1, "HS", 2),
        (160, 5, 960, 160, 1, "HS", 1),
        (160, 5, 960, 160, 1, "HS", 1),
    ]
    HEAD = (960, 1280)  # the last 1x1 conv's width and the classifier's hidden width

    def __init__(self, classes=1000):
        super().__init__()
        feats = [_cbr(3, 16, 3, 2, act=nn.Hardswish)]
        for cin, k, exp, cout, se, a, s in self.CFG:
            feats.append(_MB(cin, k, exp, cout, se, nn.Hardswish if a == "HS" else nn.ReLU, s, _div(exp // 4)))
        last, hidden = self.HEAD
        feats.append(_cbr(self.CFG[-1][3], last, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*feats)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(last, hidden), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(hidden, classes)
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class EfficientNetB0(nn.Module):
    CFG = [
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    ]

    def __init__(self, classes=1000):
        super().__init__()
        feats = [_cbr(3, 32, 3, 2, act=nn.SiLU)]
        for t, k, s, cin, cout, n in self.CFG:
            stage = []
            for i in range(n):
                c = cin if i == 0 else cout
                stage.append(
                    _MB(c, k, c * t, cout, 1, nn.SiLU, s if i == 0 else 1, max(1, c // 4), nn.SiLU, nn.Sigmoid)
                )
            feats.append(nn.Sequential(*stage))
        feats.append(_cbr(320, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*feats)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


class _DenseLayer(nn.Module):
    def __init__(self, cin, growth=32, bn_size=4):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, feats):
        x = torch.cat(feats, 1)
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseNet121(nn.Module):
    def __init__(self, classes=1000, growth=32, blocks=(6, 12, 24, 16)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        )
        c = 64
        self.blocks, self.transitions = nn.ModuleList(), nn.ModuleList()
        for i, n in enumerate(blocks):
            self.blocks.append(nn.ModuleList([_DenseLayer(c + j * growth) for j in range(n)]))
            c += n * growth
            if i != len(blocks) - 1:
                self.transitions.append(
                    nn.Sequential(
                        nn.BatchNorm2d(c),
                        nn.ReLU(inplace=True),
                        nn.Conv2d(c, c // 2, 1, bias=False),
                        nn.AvgPool2d(2, 2),
                    )
                )
                c //= 2
        self.norm5 = nn.BatchNorm2d(c)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            feats = [x]
            for layer in block:
                feats.append(layer(feats))
            x = torch.cat(feats, 1)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        x = F.adaptive_avg_pool2d(F.relu(self.norm5(x)), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class _LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class _CNBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)

    def forward(self, x):
        y = self.dw(x).permute(0, 2, 3, 1)
        y = self.fc2(self.act(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y


class ConvNeXtTiny(nn.Module):
    def __init__(self, classes=1000, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)):
        super().__init__()
        layers = [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), _LayerNorm2d(dims[0], eps=1e-6))]
        for i, (d, c) in enumerate(zip(depths, dims)):
            layers.append(nn.Sequential(*[_CNBlock(c) for _ in range(d)]))
            if i < 3:
                layers.append(nn.Sequential(_LayerNorm2d(c, eps=1e-6), nn.Conv2d(c, dims[i + 1], 2, 2)))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(_LayerNorm2d(dims[-1], eps=1e-6), nn.Flatten(1), nn.Linear(dims[-1], classes))

    def forward(self, x):
        return self.classifier(self.avgpool(self.features(x)))


class _EncoderBlock(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp, dim), nn.Dropout(0.0))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class ViTB16(nn.Module):
    def __init__(self, classes=1000, dim=768, heads=12, layers=12, mlp=3072, patch=16, image=224):
        super().__init__()
        self.patch_size, self.hidden_dim = patch, dim
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        n = (image // patch) ** 2 + 1
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, n, dim) * 0.02)
        self.layers = nn.Sequential(*[_EncoderBlock(dim, heads, mlp) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.Sequential(nn.Linear(dim, classes))

    def forward(self, x):
        n, _, h, w = x.shape
        x = self.conv_proj(x).reshape(n, self.hidden_dim, (h // self.patch_size) * (w // self.patch_size))
        x = x.permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(n, -1, -1), x], dim=1)
        x = self.ln(self.layers(x + self.pos_embedding))
        return self.heads(x[:, 0])


class _Fire(nn.Module):
    def __init__(self, cin, squeeze, e1, e3):
        super().__init__()
        self.squeeze, self.squeeze_activation = nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True)
        self.expand1x1, self.expand1x1_activation = nn.Conv2d(squeeze, e1, 1), nn.ReLU(inplace=True)
        self.expand3x3, self.expand3x3_activation = nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


class SqueezeNet11(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2),
            nn.ReLU(inplace=True),
            pool(),
            _Fire(64, 16, 64, 64),
            _Fire(128, 16, 64, 64),
            pool(),
            _Fire(128, 32, 128, 128),
            _Fire(256, 32, 128, 128),
            pool(),
            _Fire(256, 48, 192, 192),
            _Fire(384, 48, 192, 192),
            _Fire(384, 64, 256, 256),
            _Fire(512, 64, 256, 256),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(512, classes, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class MNASNet10(nn.Module):
    """torchvision mnasnet1_0: inverted residual stacks (3x3 / 5x5 depthwise, expansion 3 / 6)."""

    def __init__(self, classes=1000):
        super().__init__()
        layers = [_cbr(3, 32, 3, 2), _cbr(32, 32, 3, 1, 32), nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16)]
        cin = 16
        for cout, k, s, t, n in (
            (24, 3, 2, 3, 3),
            (40, 5, 2, 3, 3),
            (80, 5, 2, 6, 3),
            (96, 3, 1, 6, 2),
            (192, 5, 2, 6, 4),
            (320, 3, 1, 6, 1),
        ):
            for i in range(n):
                layers.append(_MB(cin, k, cin * t, cout, False, nn.ReLU, s if i == 0 else 1, 0))
                cin = cout
        layers.append(_cbr(cin, 1280, 1))
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


class _RegBlock(nn.Module):
    """RegNetY bottleneck: 1x1, grouped 3x3 (group width 8), SE, 1x1, projected residual."""

    def __init__(self, cin, cout, stride, gw=8, se_ratio=0.25):
        super().__init__()
        self.proj = None
        if stride != 1 or cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.a = _cbr(cin, cout, 1)
        self.b = _cbr(cout, cout, 3, stride, cout // gw)
        self.se = _SE(cout, int(round(se_ratio * cin)), nn.ReLU, nn.Sigmoid)
        self.c = nn.Sequential(nn.Conv2d(cout, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.c(self.se(self.b(self.a(x))))
        return F.relu(y + (x if self.proj is None else self.proj(x)))


class RegNetY400MF(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        layers, cin = [_cbr(3, 32, 3, 2)], 32
        for w, d in zip((48, 104, 208, 440), (1, 3, 6, 6)):
            for i in range(d):
                layers.append(_RegBlock(cin, w, 2 if i == 0 else 1))
                cin = w
        self.trunk = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.trunk(x), 1), 1))


# torchvision-shaped models outside the pruning benchmark's list (TFLite tests and benchmarks use them)
EXTRA = {"squeezenet1_1": SqueezeNet11, "mnasnet1_0": MNASNet10, "regnet_y_400mf": RegNetY400MF}

LOCAL = {
    "resnet18": lambda: ResNet(_Basic, [2, 2, 2, 2]),
    "resnet50": lambda: ResNet(_Bottle, [3, 4, 6, 3]),
    "resnext50_32x4d": lambda: ResNet(_BottleX, [3, 4, 6, 3]),
    "mobilenet_v2": MobileNetV2,
    "mobilenet_v3_large": MobileNetV3Large,
    "efficientnet_b0": EfficientNetB0,
    "shufflenet_v2_x1_0": ShuffleNetV2,
    "densenet121": DenseNet121,
    "convnext_tiny": ConvNeXtTiny,
    "vit_b_16": ViTB16,
}


# timm's classifier families (random weights), smallest member each: the families the field prunes
TIMM = (
    "resnet18",
    "resnet50d",
    "resnext26ts",
    "convnext_atto",
    "efficientnet_b0",
    "efficientnetv2_rw_t",
    "mobilenetv3_large_100",
    "mnasnet_100",
    "regnetx_002",
    "regnety_002",
    "mobilevit_xxs",
    "vit_tiny_patch16_224",
    "deit_tiny_patch16_224",
    "densenet121",
    "ghostnet_100",
)


def timm_candidates() -> dict:
    try:
        import timm
    except Exception:  # timm lives in the side environment of `make zoo`
        return {}
    have = set(timm.list_models())
    return {f"timm/{n}": (lambda n=n: timm.create_model(n, pretrained=False)) for n in TIMM if n in have}


def candidates(names):
    try:
        import torchvision

        tv = {
            n: (lambda n=n: torchvision.models.get_model(n, weights=None))
            for n in torchvision.models.list_models(module=torchvision.models)
        }
        source = f"torchvision {torchvision.__version__}"
    except Exception:  # not installed, or installed without its compiled ops
        tv, source = dict(LOCAL), "in-code torchvision-identical definitions (torchvision not importable)"
    tv.update(timm_candidates())
    if names:
        missing = [n for n in names if n not in tv]
        if missing:
            raise SystemExit(f"unknown model(s) {missing}; available: {', '.join(sorted(tv))}")
        tv = {n: tv[n] for n in names}
    return tv, source


# ---------------------------------------------------------------------------------------------
# measurement


def ort_session(model: nn.Module, x: torch.Tensor):
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.eval(), (x,), str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"]
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def interleaved_ms(sessions: dict, x: torch.Tensor, runs: int) -> dict:
    """(min, median) latency per session, timed in rotation so every model sees the same machine
    load. This host is shared: medians drift by 2x under other jobs, the minimum is the stable
    figure of what the model costs, so speedups use it. Each run takes the next of all the
    orders of the sessions, so every session follows every other equally often: in one fixed
    order the model timed right after the unpruned one always started from the caches that
    model had left, and MobileNetV3-Large pruned to identical layer shapes by both tools
    measured 4-8 % slower (median) in that slot."""
    feed = {"x": x.numpy()}
    for sess in sessions.values():
        for _ in range(2):
            sess.run(None, feed)
    times = {k: [] for k in sessions}
    orders = list(itertools.permutations(sessions))
    for r in range(runs):
        for k in orders[r % len(orders)]:
            sess = sessions[k]
            t = time.perf_counter()
            sess.run(None, feed)
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: (float(np.min(v)), float(np.median(v))) for k, v in times.items()}


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def peak_mb(fn) -> float | None:
    """Extra resident memory (MB) ``fn()`` needs at its peak, measured in a forked child (its
    high-water mark reset at the start) so each pruner starts from the same process image; None
    where fork or /proc is unavailable."""
    if not hasattr(os, "fork") or not os.path.exists("/proc/self/clear_refs"):
        return None
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: run, report, leave without the parent's exit handlers
        os.close(r)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM to the current RSS
            start = _status_mb("VmRSS")
            fn()
            os.write(w, f"{_status_mb('VmHWM') - start:.1f}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return float(out) if out else None


def in_child(fn, limit_gb: float = 8.0, timeout_s: float = 900.0):
    """``(result, seconds, peak MB)`` of ``fn() -> (result, seconds)`` run in a forked child whose
    address space may grow by at most ``limit_gb`` and which is killed after ``timeout_s``: a
    pruner that runs away (Torch-Pruning took 19 GB on MaxViT here) fails its row instead of the
    machine. The result comes back through torch.save into a private temporary file."""
    import resource
    import signal

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "result.pt"
        pid = os.fork()
        if pid == 0:  # child: leave without the parent's exit handlers
            code = 1
            try:
                vm = _status_mb("VmSize")
                cap = int((vm + limit_gb * 1024) * 2**20)
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # reset VmHWM to the current RSS
                start = _status_mb("VmRSS")
                result, sec = fn()
                torch.save({"result": result, "sec": sec, "peak": _status_mb("VmHWM") - start}, out)
                code = 0
            except MemoryError:
                code = 3
            except BaseException as e:  # noqa: BLE001 - reported to the parent by the exit code
                code = 3 if "memory" in str(e).lower() or "alloc" in str(e).lower() else 1
                (Path(d) / "error.txt").write_text(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            finally:
                os._exit(code)
        deadline = time.monotonic() + timeout_s
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise RuntimeError(f"did not finish in {timeout_s:.0f} s")
            time.sleep(0.2)
        code = os.waitstatus_to_exitcode(status)
        if code == 3:
            raise MemoryError(f"needs more than {limit_gb:.0f} GB")
        if code != 0:
            err = Path(d) / "error.txt"
            raise RuntimeError(err.read_text() if err.exists() else f"exit status {code}")
        got = torch.load(out, weights_only=False)  # written by our own child just now
        return got["result"], got["sec"], got["peak"]


def _stats(model, x, seconds):
    macs, params = count_macs_params(model, x)
    return {"macs": macs, "params": params, "prune_seconds": seconds}


def ours(model, x):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = ep.plan(model, x, ratio=0.5, importance="l2", round_to=8, global_ranking=False)
        pruned = ep.apply(model, plan, verify=False)
    return pruned, time.perf_counter() - t


def torch_pruning(model, x):
    import torch_pruning as tp

    model = copy.deepcopy(model)
    t = time.perf_counter()
    # the classifier keeps its outputs, as ours does: the last Linear, or the last conv where the
    # head is a conv (SqueezeNet); otherwise Torch-Pruning halves the class count
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1:]
    pruner = tp.pruner.MetaPruner(
        model, x, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5, round_to=8, ignored_layers=last
    )
    pruner.step()
    return model, time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH", help="write the rows as JSON here")
    ap.add_argument("--models", nargs="+", help="only these models")
    ap.add_argument("--runs", type=int, default=15, help="timed ONNX Runtime rounds per model (default 15)")
    ap.add_argument("--max-params", type=float, metavar="M", help="skip models with more than M million parameters")
    ap.add_argument(
        "--only",
        choices=("prune", "int8"),
        help="only the pruning rows, or only the fp32-vs-int8 rows of benchmarks/int8.py",
    )
    args = ap.parse_args(argv)
    rows = [] if args.only == "int8" else prune_rows(args)
    if args.only != "prune":
        # fp32 vs int8 ONNX Runtime latency and size per model, same run, same JSON.
        from int8 import int8_rows

        rows += [{"section": "int8", **r} for r in int8_rows(runs=max(args.runs, 10))]
    if args.json:
        from edgeprune.fsutil import write_json

        write_json(args.json, rows)
    else:
        import json

        print(json.dumps(rows, indent=2))
    return 0


def prune_rows(args) -> list[dict]:
    """50 % channels, round_to 8: MACs, params, ONNX Runtime latency before/after, ours vs Torch-Pruning."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    models, source = candidates(args.models)
    from importlib.metadata import PackageNotFoundError, version

    try:  # its __version__ string lags the release, so ask the package metadata
        baseline_name = f"torch-pruning {version('torch-pruning')}"
    except PackageNotFoundError:
        baseline_name = None
    x = torch.randn(1, 3, 224, 224)
    rows = []
    for name, factory in models.items():
        model = factory().eval()
        n_params = sum(p.numel() for p in model.parameters())
        if args.max_params and n_params > args.max_params * 1e6:
            rows.append({"section": "prune", "model": name, "skipped": f"{n_params / 1e6:.0f} M parameters"})
            print(f"{name:>20}: skipped ({n_params / 1e6:.0f} M parameters > --max-params)", file=sys.stderr)
            continue
        row = {
            "section": "prune",
            "model": name,
            "input": [1, 3, 224, 224],
            "ratio": 0.5,
            "round_to": 8,
            "threads": 1,
            "runtime": "onnxruntime",
            "source": source,
        }
        sessions = {}
        try:
            row["before"] = _stats(model, x, None)
            sessions["before"] = ort_session(model, x)
        except Exception as e:
            row["error"] = f"model does not export: {type(e).__name__}: {e}"
            rows.append(row)
            continue
        try:
            pruned, sec = ours(model, x)
            row["ours"] = _stats(pruned, x, round(sec, 3))
            row["ours"]["peak_mb"] = peak_mb(lambda: ours(model, x))
            sessions["ours"] = ort_session(pruned, x)
        except Exception as e:
            row["ours"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        if baseline_name:
            try:
                pruned, sec, peak = in_child(lambda: torch_pruning(model, x))
                row["baseline"] = {"name": baseline_name, **_stats(pruned, x, round(sec, 3))}
                row["baseline"]["peak_mb"] = round(peak, 1)
                with torch.no_grad():  # a comparison only holds when both keep the model's outputs
                    row["baseline"]["same_output_shape"] = pruned(x).shape == model(x).shape
                sessions["baseline"] = ort_session(pruned, x)
            except Exception as e:
                row["baseline"] = {
                    "name": baseline_name,
                    "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                }
        _time_sessions(row, sessions, x, args.runs)
        rows.append(row)
        print(_line(row), file=sys.stderr)
    return rows


def _time_sessions(row: dict, sessions: dict, x: torch.Tensor, runs: int, rounds: int = 3) -> None:
    """Latency per session; when ours looks more than 5 % slower than the baseline the rotation is
    repeated (this host is shared) and the median over rounds of each round's median is kept."""
    per_round = []
    for _ in range(rounds):
        per_round.append(interleaved_ms(sessions, x, runs))
        med = {k: float(np.median([r[k][1] for r in per_round])) for k in sessions}
        if "ours" not in med or "baseline" not in med or med["ours"] <= 1.05 * med["baseline"]:
            break
    for key in sessions:
        row[key]["ort_ms"] = float(np.min([r[key][0] for r in per_round]))
        row[key]["ort_ms_median"] = float(np.median([r[key][1] for r in per_round]))
        row[key]["rounds"] = len(per_round)
        if key != "before":
            row[key]["speedup"] = row["before"]["ort_ms"] / row[key]["ort_ms"]
    o, b = row.get("ours", {}), row.get("baseline", {})
    if "speedup" in o and "speedup" in b:
        row["speedup_ratio_ours_vs_baseline"] = o["speedup"] / b["speedup"]
        row["macs_ratio_ours_vs_baseline"] = o["macs"] / b["macs"]
        row["ort_median_ratio_ours_vs_baseline"] = o["ort_ms_median"] / b["ort_ms_median"]


def _line(r) -> str:
    if "skipped" in r or "error" in r:
        return f"{r['model']:>20}: {r.get('skipped') or r.get('error')}"
    o, b = r.get("ours", {}), r.get("baseline", {})
    parts = [f"{r['model']:>20}: before {r['before']['ort_ms']:.1f} ms"]
    parts.append(
        f"ours {o['ort_ms']:.1f} ms ({o['speedup']:.2f}x, {o['prune_seconds']:.2f} s)"
        if "speedup" in o
        else f"ours FAILED {o.get('error')}"
    )
    if "macs_ratio_ours_vs_baseline" in r:
        parts.append(
            f"MACs ours/TP {r['macs_ratio_ours_vs_baseline']:.3f}, "
            f"median ms ours/TP {r['ort_median_ratio_ours_vs_baseline']:.3f}"
        )
    if b:
        parts.append(
            f"baseline {b['ort_ms']:.1f} ms ({b['speedup']:.2f}x, {b['prune_seconds']:.2f} s)"
            if "speedup" in b
            else f"baseline FAILED {b.get('error')}"
        )
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
