"""A dilated ResNet with output stride 8 whose parameter names match torchvision's ``resnet*``.

torchvision is not a dependency, so the network is written in plain torch. Layer and parameter names
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0`` ...) are those of torchvision's and
timm's ResNets, so their pretrained ``state_dict`` files load with :func:`load_backbone_weights`
(the classifier ``fc.*`` keys are ignored). ``layer3`` and ``layer4`` trade their stride for
dilation 2 and 4, as torchvision's ``replace_stride_with_dilation=[False, True, True]``; features
come out at 1/8 of the input size. ``width`` scales every stage (64 = the published networks; use
a small width for tiny CPU models; pretrained weights need 64).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

RESNET_LAYOUTS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, ch: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, ch: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, ch, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.conv3 = nn.Conv2d(ch, ch * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(ch * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DilatedResNet(nn.Module):
    """ResNet trunk (no pooling head, no classifier) with output stride 8."""

    def __init__(self, layout: str = "resnet18", width: int = 64):
        super().__init__()
        if layout not in RESNET_LAYOUTS:
            raise ValueError(f"--backbone {layout!r} is not one of {sorted(RESNET_LAYOUTS)}")
        if width < 1:
            raise ValueError(f"--backbone_width must be positive, got {width}")
        kind, blocks = RESNET_LAYOUTS[layout]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.conv1 = nn.Conv2d(3, width, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        self._in_ch = width
        # (stride, dilation) per stage: strides 4 -> 8 after layer2, then dilation instead of stride.
        stages = [(1, 1), (2, 1), (1, 2), (1, 4)]
        for i, (n, (stride, dilation)) in enumerate(zip(blocks, stages), start=1):
            setattr(self, f"layer{i}", self._make_layer(block, width * 2 ** (i - 1), n, stride, dilation))
        self.out_channels = self._in_ch

    def _make_layer(self, block: type, ch: int, n: int, stride: int, dilation: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_ch != ch * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_ch, ch * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(ch * block.expansion),
            )
        # torchvision gives the first block of a dilated stage the previous dilation; we use the
        # stage's own dilation throughout, which changes no parameter shape or name.
        layers = [block(self._in_ch, ch, stride, dilation, downsample)]
        self._in_ch = ch * block.expansion
        layers += [block(self._in_ch, ch, 1, dilation, None) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def load_backbone_weights(backbone: DilatedResNet, path: str | Path) -> None:
    """Load a torchvision/timm ResNet ``state_dict`` (``.pth``/``.pt``/``.bin`` or ``.safetensors``).

    Classifier keys (``fc.*``) are skipped; any other missing, unexpected or mis-shaped key raises
    with the key named.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--backbone_weights {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"--backbone_weights {path}: keys do not match the {type(backbone).__name__}; "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    bad = [k for k in own if own[k].shape != state[k].shape]
    if bad:
        raise ValueError(
            f"--backbone_weights {path}: shape mismatch at {bad[0]} ({tuple(state[bad[0]].shape)} in the file, "
            f"{tuple(own[bad[0]].shape)} in the model); pretrained ResNets need --backbone_width 64"
        )
    backbone.load_state_dict(state)
