"""The model zoo, written with torch.nn exactly as torchvision defines the networks.

torchvision cannot be installed beside the CPU torch wheel, so the architectures
live here. Weights are random (fixed seed): schedules depend on shapes, not values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

IMAGE = [(1, 3, 224, 224)]


@dataclass(frozen=True)
class ZooEntry:
    factory: Callable[[], nn.Module]
    input_shapes: list = field(default_factory=lambda: IMAGE)
    dtypes: list | None = None
    params: int | None = None  # published parameter count, checked by the tests
    description: str = ""


# --------------------------------------------------------------------------- AlexNet
class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------- ResNet
def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(cin, planes, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1, self.bn1 = _conv1x1(cin, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------- GoogLeNet
class BasicConv2d(nn.Module):
    def __init__(self, cin, cout, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    # torchvision uses a 3x3 conv where the paper's branch 3 has 5x5; we follow torchvision.
    def __init__(self, cin, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
        super().__init__()
        self.branch1 = BasicConv2d(cin, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(cin, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(cin, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, 1, 1, ceil_mode=True), BasicConv2d(cin, pool_proj, kernel_size=1)
        )

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class GoogLeNet(nn.Module):
    """torchvision's googlenet for inference (no auxiliary classifiers, no input transform)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv3(self.conv2(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        for name in ("4a", "4b", "4c", "4d", "4e"):
            x = getattr(self, "inception" + name)(x)
        x = self.maxpool4(x)
        x = self.inception5b(self.inception5a(x))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


# --------------------------------------------------------------------------- VGG
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, cfg=_VGG16, num_classes=1000):
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------- MobileNet v2
def _make_divisible(v, divisor=8, min_value=None):
    # torchvision's rounding of channel counts; never round down by more than 10%.
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_act(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU6, bn_eps=1e-5):
    """torchvision's Conv2dNormActivation: conv without bias, BN, optional activation."""
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=bn_eps)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = [_conv_bn_act(inp, hidden, 1)] if expand_ratio != 1 else []
        layers += [_conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    # (expansion t, channels c, repeats n, first stride s), from the paper's table 2.
    SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=1000, width_mult=1.0):
        super().__init__()
        cin = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features = [_conv_bn_act(3, cin, stride=2)]
        for t, c, n, s in self.SETTING:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        features.append(_conv_bn_act(cin, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------- MNASNet
_BN_MOMENTUM = 1 - 0.9997  # torchvision keeps TensorFlow's BN momentum for MNASNet


class _MnasResidual(nn.Module):
    def __init__(self, cin, cout, k, stride, expansion):
        super().__init__()
        mid = cin * expansion
        self.apply_residual = cin == cout and stride == 1
        self.layers = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, momentum=_BN_MOMENTUM),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid, momentum=_BN_MOMENTUM), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, momentum=_BN_MOMENTUM),
        )

    def forward(self, x):
        return self.layers(x) + x if self.apply_residual else self.layers(x)


def _mnas_stack(cin, cout, k, stride, expansion, repeats):
    return nn.Sequential(_MnasResidual(cin, cout, k, stride, expansion),
                         *[_MnasResidual(cout, cout, k, 1, expansion) for _ in range(1, repeats)])


class MNASNet(nn.Module):
    def __init__(self, alpha=1.0, num_classes=1000):
        super().__init__()
        # torchvision's _get_depths (its _round_to_multiple_of is _make_divisible)
        d = [_make_divisible(c * alpha) for c in (32, 16, 24, 40, 80, 96, 192, 320)]
        bn = lambda c: nn.BatchNorm2d(c, momentum=_BN_MOMENTUM)  # noqa: E731
        self.layers = nn.Sequential(
            nn.Conv2d(3, d[0], 3, 2, 1, bias=False), bn(d[0]), nn.ReLU(inplace=True),
            nn.Conv2d(d[0], d[0], 3, 1, 1, groups=d[0], bias=False), bn(d[0]), nn.ReLU(inplace=True),
            nn.Conv2d(d[0], d[1], 1, bias=False), bn(d[1]),
            _mnas_stack(d[1], d[2], 3, 2, 3, 3), _mnas_stack(d[2], d[3], 5, 2, 3, 3),
            _mnas_stack(d[3], d[4], 5, 2, 6, 3), _mnas_stack(d[4], d[5], 3, 1, 6, 2),
            _mnas_stack(d[5], d[6], 5, 2, 6, 4), _mnas_stack(d[6], d[7], 3, 1, 6, 1),
            nn.Conv2d(d[7], 1280, 1, bias=False), bn(1280), nn.ReLU(inplace=True),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2, inplace=True), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.layers(x).mean([2, 3]))


# --------------------------------------------------------------------------- EfficientNet
class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth, mode "row": drops whole samples in training only."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x  # eval: identity, so torch.export sees no random op
        keep = 1.0 - self.p
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x * noise.bernoulli_(keep).div_(keep)


class SqueezeExcitation(nn.Module):
    def __init__(self, cin, squeeze, act=nn.SiLU):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(cin, squeeze, 1), nn.Conv2d(squeeze, cin, 1)
        self.activation, self.scale_activation = act(), nn.Sigmoid()

    def forward(self, x):
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return self.scale_activation(scale) * x


class MBConv(nn.Module):
    def __init__(self, expand, k, stride, cin, cout, sd_prob):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        mid = _make_divisible(cin * expand)
        layers = [_conv_bn_act(cin, mid, 1, act=nn.SiLU)] if mid != cin else []
        layers += [_conv_bn_act(mid, mid, k, stride, groups=mid, act=nn.SiLU),
                   SqueezeExcitation(mid, max(1, cin // 4)),
                   _conv_bn_act(mid, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(sd_prob)

    def forward(self, x):
        out = self.block(x)
        return self.stochastic_depth(out) + x if self.use_res_connect else out


class EfficientNet(nn.Module):
    # B0: (expand, kernel, stride, in, out, layers); B1..B7 scale width and depth.
    B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]

    def __init__(self, stochastic_depth_prob=0.2, dropout=0.2, num_classes=1000):
        super().__init__()
        layers = [_conv_bn_act(3, self.B0[0][3], 3, 2, act=nn.SiLU)]
        total, done = sum(c[-1] for c in self.B0), 0
        for expand, k, stride, cin, cout, n in self.B0:
            stage = []
            for i in range(n):
                # the drop probability grows linearly with the block's depth
                sd = stochastic_depth_prob * done / total
                stage.append(MBConv(expand, k, stride if i == 0 else 1, cin if i == 0 else cout, cout, sd))
                done += 1
            layers.append(nn.Sequential(*stage))
        last = 4 * self.B0[-1][4]
        layers.append(_conv_bn_act(self.B0[-1][4], last, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# --------------------------------------------------------------------------- Transformer encoder
class EncoderLayer(nn.Module):
    """BERT's post-LayerNorm layer with attention spelled out as matmul + softmax:
    nn.MultiheadAttention exports as one scaled_dot_product_attention op, whose import
    depends on the frontend version; plain ops give ordinary matmul/softmax tasks."""

    def __init__(self, hidden, heads, ffn, eps=1e-12):
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
        self.attn_out, self.attn_norm = nn.Linear(hidden, hidden), nn.LayerNorm(hidden, eps=eps)
        self.ffn_in, self.ffn_out = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x):
        b, s, h = x.shape
        d = h // self.heads

        def split(t):  # (b, s, h) -> (b, heads, s, d)
            return t.reshape(b, s, self.heads, d).permute(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        p = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (d ** -0.5), dim=-1)
        ctx = torch.matmul(p, v).permute(0, 2, 1, 3).reshape(b, s, h)
        x = self.attn_norm(x + self.attn_out(ctx))
        return self.ffn_norm(x + self.ffn_out(nn.functional.gelu(self.ffn_in(x))))


class TransformerEncoder(nn.Module):
    """BERT-tiny's shape (google/bert_uncased_L-2_H-128_A-2) without the pooler:
    token ids -> hidden states. Token types are all 0, so their row is added."""

    def __init__(self, vocab=30522, hidden=128, layers=2, heads=2, ffn=512, max_pos=512):
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(max_pos, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.layers = nn.ModuleList(EncoderLayer(hidden, heads, ffn) for _ in range(layers))

    def forward(self, ids):
        # positions 0..s-1 are a slice of the table: no arange/gather for the frontend
        x = self.word(ids) + self.position.weight[: ids.shape[1]] + self.token_type.weight[0]
        x = self.norm(x)
        for layer in self.layers:
            x = layer(x)
        return x


# --------------------------------------------------------------------------- tiny models
class TinyCNN(nn.Module):
    """Two convolutions and a classifier: a few tasks that tune in seconds (tests)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.fc = nn.Linear(2 * width * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(torch.flatten(x, 1))


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))

    def forward(self, x):
        return self.net(x)


ZOO: dict[str, ZooEntry] = {
    "alexnet": ZooEntry(AlexNet, params=61_100_840, description="AlexNet (torchvision)"),
    "resnet18": ZooEntry(lambda: ResNet(BasicBlock, [2, 2, 2, 2]), params=11_689_512,
                         description="ResNet-18"),
    "resnet50": ZooEntry(lambda: ResNet(Bottleneck, [3, 4, 6, 3]), params=25_557_032,
                         description="ResNet-50"),
    "googlenet": ZooEntry(GoogLeNet, params=6_624_904, description="GoogLeNet / Inception v1"),
    "vgg16": ZooEntry(VGG, params=138_357_544, description="VGG-16 (no batch norm)"),
    "mobilenet_v2": ZooEntry(MobileNetV2, params=3_504_872, description="MobileNet v2"),
    "mnasnet1_0": ZooEntry(MNASNet, params=4_383_312, description="MNASNet 1.0"),
    "efficientnet_b0": ZooEntry(EfficientNet, params=5_288_548,
                                description="EfficientNet-B0 (SiLU, squeeze-excitation)"),
    "transformer_encoder": ZooEntry(TransformerEncoder, input_shapes=[(1, 128)], dtypes=["int64"],
                                    params=4_369_408,
                                    description="BERT-tiny-sized encoder: 2 layers, hidden 128, 2 heads"),
    "tiny_cnn": ZooEntry(TinyCNN, input_shapes=[(1, 3, 16, 16)], params=11_642,
                         description="2 convs + linear, 16x16 input (for tests)"),
    "tiny_cnn_wide": ZooEntry(lambda: TinyCNN(width=12), input_shapes=[(1, 3, 16, 16)], params=18_322,
                              description="tiny_cnn with 12/24 channels: a transfer target (tests)"),
    "tiny_mlp": ZooEntry(TinyMLP, input_shapes=[(1, 64)], params=12_448,
                         description="2-layer MLP (for tests)"),
}
