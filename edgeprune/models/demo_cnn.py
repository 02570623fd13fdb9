"""The built-in demo CNN (``edgeprune:demo-cnn``): the model every later stage prunes,
quantizes and exports in tests, demos and benchmarks.

Consumes: ``num_classes``, ``in_channels``, ``width`` (channels of the first stage).
Produces: an ``nn.Module`` mapping ``x[N, C, 32, 32]`` (any H, W >= 8 works) to logits ``[N, K]``.

Shape: a stride-2 stem, a residual block, a stride-2 transition, a second residual block, a
depthwise-separable block, global average pooling and a linear classifier. It covers the
pruning cases that matter (channels coupled through a residual add, a depthwise conv whose
channels follow its input, a conv->linear hand-over) with only layers every runtime supports
(Conv2d, BatchNorm2d, ReLU, add, AdaptiveAvgPool2d, Flatten, Linear), and it is small
(~2.8 M MACs at 32x32) so it trains to >= 97 % on digits in well under a minute on 2 cores.
"""

from __future__ import annotations

from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=False),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 conv+BN with an identity shortcut: out = relu(x + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + x)


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 pointwise conv + BN + ReLU (MobileNetV1 style)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.depthwise = conv_bn_relu(cin, cin, 3, stride, groups=cin)
        self.pointwise = conv_bn_relu(cin, cout, 1)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class DemoCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16):
        super().__init__()
        w = width
        self.stem = conv_bn_relu(in_channels, w, 3, stride=2)  # 32x32 -> 16x16
        self.block1 = ResidualBlock(w)
        self.down = conv_bn_relu(w, 2 * w, 3, stride=2)  # 16x16 -> 8x8
        self.block2 = ResidualBlock(2 * w)
        self.dwsep = DepthwiseSeparable(2 * w, 4 * w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.block1(x)
        x = self.down(x)
        x = self.block2(x)
        x = self.dwsep(x)
        return self.classifier(self.flatten(self.pool(x)))


def demo_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> DemoCNN:
    model = DemoCNN(num_classes=num_classes, in_channels=in_channels, width=width)
    model.input_shape = (in_channels, 32, 32)
    return model
