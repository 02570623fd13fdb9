"""Test zoo: small models that exercise every channel coupling the pruning engine must follow.

Consumes: nothing. Produces: ``ZOO`` (name -> (factory, example input factory)); each model is
tiny (few channels, 16x16 inputs) so a full prune/apply/export round trip takes well under a
second. Couplings: residual add (ResNet basic/bottleneck, MobileNetV2), SE multiply + hardswish
(MobileNetV3), MBConv with SiLU SE (EfficientNet), split + channel shuffle (ShuffleNetV2),
concat (DenseNet), channels-last LayerNorm + depthwise 7x7 + layer scale (ConvNeXt),
nn.MultiheadAttention + class token + position embedding (ViT), hand-written self-attention
with num_attention_heads / attention_head_size attributes and embeddings (BERT, also through
F.scaled_dot_product_attention), timm-style fused qkv attention, grouped conv +
GroupNorm (ResNeXt), ConvTranspose2d (plain and depthwise) + skip concat (UNet), MaxViT-style
window attention through torch.einsum (unmodelled, pinned) viewed back with a size read from
the residual's shape.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def cbr(cin, cout, k=3, s=1, groups=1, act=nn.ReLU):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act())


def _downsample(cin, cout, stride):
    """The 1x1 conv + BN shortcut of a residual block that changes width or stride; None otherwise."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = _downsample(cin, cout, stride)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + idt)


# the same block as Bottleneck in benchmarks/models.py on purpose: tests do not import benchmarks/,
# and this one takes any widths (the zoo's are tiny) where that one follows torchvision's 4x expansion
class Bottleneck(nn.Module):
    def __init__(self, cin, mid, cout, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = _downsample(cin, cout, stride)

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += idt
        return self.relu(out)


class ResNetBasic(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = cbr(3, 16)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32))
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ResNetBottleneck(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = cbr(3, 16)
        self.layer1 = nn.Sequential(Bottleneck(16, 8, 32), Bottleneck(32, 8, 32))
        self.layer2 = nn.Sequential(Bottleneck(32, 16, 48, 2), Bottleneck(48, 16, 48))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(48, classes)

    def forward(self, x):
        x = self.pool(self.layer2(self.layer1(self.stem(x))))
        return self.fc(x.view(x.size(0), -1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            cbr(cin, hid, 1, act=nn.ReLU6),
            cbr(hid, hid, 3, stride, groups=hid, act=nn.ReLU6),
            nn.Conv2d(hid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            cbr(3, 16, act=nn.ReLU6),
            InvertedResidual(16, 16, 1, 4),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            cbr(24, 64, 1, act=nn.ReLU6),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4, act=nn.ReLU, gate=nn.Hardsigmoid):
        super().__init__()
        self.fc1, self.act = nn.Conv2d(c, max(8, c // r), 1), act()
        self.fc2, self.gate = nn.Conv2d(max(8, c // r), c, 1), gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class MobileNetV3Block(nn.Module):
    def __init__(self, cin, hid, cout, stride=1):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        self.block = nn.Sequential(
            cbr(cin, hid, 1, act=nn.Hardswish),
            cbr(hid, hid, 3, stride, groups=hid, act=nn.Hardswish),
            SqueezeExcite(hid),
            nn.Conv2d(hid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x):
        y = self.block(x)
        return y + x if self.use_res else y


class MobileNetV3(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            cbr(3, 16, act=nn.Hardswish),
            MobileNetV3Block(16, 48, 16),
            MobileNetV3Block(16, 64, 24, 2),
            MobileNetV3Block(24, 72, 24),
        )
        self.head = nn.Sequential(nn.Linear(24, 64), nn.Hardswish(), nn.Linear(64, classes))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, stride):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [cbr(cin, hid, 1, act=nn.SiLU)]
        layers += [
            cbr(hid, hid, 3, stride, groups=hid, act=nn.SiLU),
            SqueezeExcite(hid, 4, nn.SiLU, nn.Sigmoid),
            nn.Conv2d(hid, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        out = self.block(x)
        if self.use_res:
            out = out + x
        return out


class EfficientNet(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(
            cbr(3, 16, s=1, act=nn.SiLU),
            MBConv(16, 16, 1, 1),
            MBConv(16, 24, 4, 2),
            MBConv(24, 24, 4, 1),
            cbr(24, 64, 1, act=nn.SiLU),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def channel_shuffle(x, groups: int):
    b, c, h, w = x.size()
    x = x.view(b, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(b, -1, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        bf = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, bf, 1, bias=False),
                nn.BatchNorm2d(bf),
                nn.ReLU(),
            )
        else:
            self.branch1 = nn.Sequential()
        c2 = cin if stride > 1 else bf
        self.branch2 = nn.Sequential(
            nn.Conv2d(c2, bf, 1, bias=False),
            nn.BatchNorm2d(bf),
            nn.ReLU(),
            nn.Conv2d(bf, bf, 3, stride, 1, groups=bf, bias=False),
            nn.BatchNorm2d(bf),
            nn.Conv2d(bf, bf, 1, bias=False),
            nn.BatchNorm2d(bf),
            nn.ReLU(),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv1 = cbr(3, 24)
        self.stage2 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1), ShuffleUnit(48, 48, 1))
        self.conv5 = cbr(48, 64, 1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.conv5(self.stage2(self.conv1(x)))
        return self.fc(x.mean([2, 3]))


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, bn_size=2):
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features):
        x = torch.cat(features, 1) if isinstance(features, list) else features
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseNet(nn.Module):
    def __init__(self, classes=10, growth=8):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.layers = nn.ModuleList([DenseLayer(16 + i * growth, growth) for i in range(3)])
        c = 16 + 3 * growth
        self.transition = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2)
        )
        self.norm = nn.BatchNorm2d(c // 2)
        self.fc = nn.Linear(c // 2, classes)

    def forward(self, x):
        feats = [self.stem(x)]
        for layer in self.layers:
            feats.append(layer(feats))
        x = self.norm(self.transition(torch.cat(feats, 1)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(F.relu(x), 1), 1))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim, scale=1e-1):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(scale * torch.rand(dim) + scale)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)
        return x + y


class ConvNeXt(nn.Module):
    def __init__(self, classes=10, dim=16):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, 2)
        self.stem_norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.head_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.blocks(x)
        return self.head(self.head_norm(x.mean([-2, -1])))


class ViTBlock(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    def __init__(self, classes=10, dim=32, heads=4, patch=4, image=16):
        super().__init__()
        n = (image // patch) ** 2
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim) * 0.1)
        self.blocks = nn.Sequential(ViTBlock(dim, heads, 2 * dim), ViTBlock(dim, heads, 2 * dim))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(x + self.pos_embedding)
        return self.head(self.ln(x)[:, 0])


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads, sdpa=False):
        super().__init__()
        self.sdpa = sdpa
        self.num_attention_heads = heads
        self.attention_head_size = hidden // heads
        self.all_head_size = heads * self.attention_head_size
        self.query = nn.Linear(hidden, self.all_head_size)
        self.key = nn.Linear(hidden, self.all_head_size)
        self.value = nn.Linear(hidden, self.all_head_size)

    def transpose_for_scores(self, x):
        new_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_shape).permute(0, 2, 1, 3)

    def forward(self, hidden, mask):
        q = self.transpose_for_scores(self.query(hidden))
        k = self.transpose_for_scores(self.key(hidden))
        v = self.transpose_for_scores(self.value(hidden))
        if self.sdpa:  # the path of newer Hugging Face attention classes
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).permute(0, 2, 1, 3).contiguous()
            return ctx.view(ctx.size()[:-2] + (self.all_head_size,))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        probs = F.softmax(scores + mask, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(ctx.size()[:-2] + (self.all_head_size,))


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, inter, sdpa=False):
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads, sdpa)
        self.attn_out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, inter)
        self.output = nn.Linear(inter, hidden)
        self.ln2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x, mask):
        x = self.ln1(x + self.attn_out(self.attention(x, mask)))
        return self.ln2(x + self.output(F.gelu(self.intermediate(x))))


class Bert(nn.Module):
    def __init__(self, vocab=50, hidden=32, heads=4, inter=64, max_len=16, classes=3, sdpa=False):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_len, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList([BertLayer(hidden, heads, inter, sdpa) for _ in range(2)])
        self.pooler = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, input_ids):
        seq = input_ids.size(1)
        pos = torch.arange(seq, device=input_ids.device).unsqueeze(0)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)
        x = self.emb_norm(x)
        mask = torch.zeros(1, 1, 1, seq)
        for layer in self.layers:
            x = layer(x, mask)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


class ResNeXtBlock(nn.Module):
    """Grouped 3x3 conv (cardinality 4) with GroupNorm, the ResNeXt / RegNet coupling."""

    def __init__(self, c, width, groups=4):
        super().__init__()
        self.conv1, self.gn1 = nn.Conv2d(c, width, 1, bias=False), nn.GroupNorm(4, width)
        self.conv2, self.gn2 = nn.Conv2d(width, width, 3, 1, 1, groups=groups, bias=False), nn.GroupNorm(4, width)
        self.conv3, self.bn3 = nn.Conv2d(width, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        y = F.relu(self.gn1(self.conv1(x)))
        y = F.relu(self.gn2(self.conv2(y)))
        return F.relu(x + self.bn3(self.conv3(y)))


class ResNeXt(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = cbr(3, 16)
        self.blocks = nn.Sequential(ResNeXtBlock(16, 32), ResNeXtBlock(16, 32))
        self.grouped = nn.Conv2d(16, 32, 3, 2, 1, groups=2)  # grouped, in-group count 8 -> 16
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = F.relu(self.grouped(self.blocks(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class TinyUNet(nn.Module):
    """Encoder-decoder with ConvTranspose2d upsampling and a concatenated skip connection."""

    def __init__(self, classes=3):
        super().__init__()
        self.enc1 = cbr(3, 16)
        self.enc2 = cbr(16, 32, s=2)
        self.up = nn.ConvTranspose2d(32, 16, 2, 2)
        self.up_dw = nn.ConvTranspose2d(16, 16, 3, 1, 1, groups=16)
        self.dec = cbr(32, 16)
        self.out = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        d = self.up_dw(self.up(self.enc2(e1)))
        return self.out(self.dec(torch.cat([d, e1], dim=1)))


class TimmAttention(nn.Module):
    """timm-style attention: one fused qkv Linear, reshape to (3, heads, head dim), unbind."""

    def __init__(self, dim, num_heads, fused_attn):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.fused_attn:
            q, k, v = qkv.unbind(0)
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q * self.scale) @ k.transpose(-2, -1)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class TimmBlock(nn.Module):
    def __init__(self, dim, heads, fused_attn):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), TimmAttention(dim, heads, fused_attn)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TimmViT(nn.Module):
    """A timm-style ViT (fused qkv): one block through SDPA, one through explicit matmuls."""

    def __init__(self, classes=10, dim=32, heads=4):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.1)
        self.blocks = nn.Sequential(TimmBlock(dim, heads, True), TimmBlock(dim, heads, False))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class EinsumAttention(nn.Module):
    """MaxViT-style attention (torchvision ``RelativePositionalMultiHeadAttention``): heads split
    with the module's ``n_heads`` / ``head_dim``, scores through ``torch.einsum`` (not modelled:
    its channels are pinned), output viewed back with ``D`` read from the input's shape."""

    def __init__(self, dim, head_dim):
        super().__init__()
        self.n_heads = dim // head_dim
        self.head_dim = head_dim
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.merge = nn.Linear(dim, dim)

    def forward(self, x):
        B, G, P, D = x.shape
        H, DH = self.n_heads, self.head_dim
        q, k, v = torch.chunk(self.to_qkv(x), 3, dim=-1)
        q = q.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        v = v.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        attn = F.softmax(torch.einsum("B G H I D, B G H J D -> B G H I J", q, k * DH**-0.5), dim=-1)
        out = torch.einsum("B G H I J, B G H J D -> B G H I D", attn, v)
        return self.merge(out.permute(0, 1, 3, 2, 4).reshape(B, G, P, D))


class MaxViTLike(nn.Module):
    """Conv stem, windows of 2x2 tokens, one EinsumAttention block with a residual, pooled head."""

    def __init__(self, classes=10, dim=16, head_dim=8):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)
        self.attn = EinsumAttention(dim, head_dim)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.stem(x)
        B, C, H, W = x.shape
        x = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 3, 5, 1).reshape(B, (H // 2) * (W // 2), 4, C)
        x = x + self.attn(self.norm(x))
        x = x + self.mlp(x)
        return self.head(x.mean(dim=(1, 2)))


def _image(batch=2):
    return lambda: torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _tokens(batch=2):
    return lambda: torch.randint(0, 50, (batch, 8), generator=torch.Generator().manual_seed(1))


ZOO = {
    "resnet_basic": (ResNetBasic, _image()),
    "resnet_bottleneck": (ResNetBottleneck, _image()),
    "mobilenet_v2": (MobileNetV2, _image()),
    "mobilenet_v3": (MobileNetV3, _image()),
    "efficientnet": (EfficientNet, _image()),
    "shufflenet_v2": (ShuffleNetV2, _image()),
    "densenet": (DenseNet, _image()),
    "convnext": (ConvNeXt, _image()),
    "vit": (ViT, _image()),
    "bert": (Bert, _tokens()),
    "bert_sdpa": (lambda: Bert(sdpa=True), _tokens()),
    "vit_timm": (TimmViT, _image()),
    "resnext": (ResNeXt, _image()),
    "unet": (TinyUNet, _image()),
    "maxvit_einsum": (MaxViTLike, _image()),
}


def build(name: str, seed: int = 0):
    """A zoo model with deterministic, non-trivial weights and BN statistics (eval mode)."""
    factory, inputs = ZOO[name]
    torch.manual_seed(seed)
    model = factory()
    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.2, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)
    return model.eval(), inputs()
