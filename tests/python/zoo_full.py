"""Full-size MobileNetV1 and MobileNetV2 for the latency-estimator acceptance.

Consumes: nothing (the architectures are written out here, so the tests need neither
torchvision nor a download). Produces: ``mobilenet_v2()`` and ``mobilenet_v1()`` returning
``nn.Module`` objects with ``input_shape == (3, 224, 224)`` and random weights (the estimator
only reads shapes).

MobileNetV2 follows Sandler et al. 2018 / torchvision's ``mobilenet_v2`` (width 1.0: 3.50 M
parameters, ~300 M MACs); MobileNetV1 follows Howard et al. 2017 (width 1.0: 4.23 M parameters,
~569 M MACs). These are the models of the published XNNPACK Raspberry Pi 4 figures.
"""

from __future__ import annotations

from torch import nn


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


# the same table as MobileNetV2 in benchmarks/models.py on purpose: tests do not import benchmarks/,
# and this copy pins the estimator's acceptance figures to the paper whatever the benchmark changes
class MobileNetV2(nn.Module):
    # (expansion t, output channels c, repeats n, first stride s), table 2 of the paper
    SETTINGS = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class MobileNetV1(nn.Module):
    # (output channels, stride) of each depthwise-separable block, table 1 of the paper
    BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for cout, stride in self.BLOCKS:
            layers += [_conv_bn(cin, cin, 3, stride, groups=cin), _conv_bn(cin, cout, 1, 1)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def mobilenet_v2() -> nn.Module:
    m = MobileNetV2()
    m.input_shape = (3, 224, 224)
    m.edgeprune_spec = "tests/python/zoo_full.py:mobilenet_v2"
    return m.eval()


def mobilenet_v1() -> nn.Module:
    m = MobileNetV1()
    m.input_shape = (3, 224, 224)
    m.edgeprune_spec = "tests/python/zoo_full.py:mobilenet_v1"
    return m.eval()
