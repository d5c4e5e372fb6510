"""Per-modality feature extractors: images in [0, 1] to one unnormalised (B, D) feature each.

``build_backbone(cfg, image_size)`` returns a module mapping ``{"rgb": (B, 3, H, W), "depth":
(B, 1, H, W), "ir": (B, 1, H, W)}`` to ``{m: (B, D)}`` with D = ``cfg.feature_dim``:

- ``cnn``: a small CNN per modality (no shared weights; 3 or 1 input channels). CPU default.
- ``resnet18``: a torchvision ResNet-18 per modality; 1-channel inputs are replicated to 3.
- ``vit_b16``: torchvision's ViT-B/16 with its transformer blocks shared by the three
  modalities (the MMDG setup, Lin et al. CVPR 2024): the first ``cfg.vit_frozen_blocks`` blocks
  frozen, a bottleneck adapter per modality after every block, a patch embedding per modality.

torchvision is optional and imported only by the resnet18/vit_b16 builders, so the package and
the cnn backbone work without it. Pretrained weights come only from the local file
``cfg.pretrained``; nothing is ever downloaded.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from rise_dist.config import ModelConfig
from rise_dist.data.cache import CHANNELS, MODALITIES

# torchvision's ImageNet weights expect inputs standardised with these statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VIT_PATCH = 16
VIT_WIDTH = 768


def build_backbone(cfg: ModelConfig, image_size: tuple[int, int]) -> nn.Module:
    """The three modality streams for ``cfg.backbone``; forward: ``{m: (B, C_m, H, W)} -> {m: (B, D)}``."""
    state = load_state_file(cfg.pretrained) if cfg.pretrained is not None else None
    if cfg.backbone == "cnn":
        return ModalityStreams({m: CNNStream(CHANNELS[m], cfg.feature_dim, cfg.norm) for m in MODALITIES},
                               state, cfg.pretrained)
    if cfg.backbone == "resnet18":
        return ModalityStreams({m: ResNetStream(cfg.feature_dim, cfg.norm) for m in MODALITIES},
                               state, cfg.pretrained)
    if cfg.backbone == "vit_b16":
        return SharedViT(cfg, image_size, state)
    raise ValueError(f"unknown backbone {cfg.backbone!r}")


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """``channels -> module`` for ModelConfig.norm: BatchNorm2d, or GroupNorm with groups of 16
    channels (per-sample statistics: a sample's features never depend on its batch)."""
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return lambda c: nn.GroupNorm(max(1, c // 16), c)
    raise ValueError(f"unknown norm {norm!r}")


# --- weights files --------------------------------------------------------------------------------

def load_state_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """A state_dict from a local file, read with ``weights_only=True`` (no code is unpickled)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a torch.load failure of any kind means: not a readable weights file
        raise ValueError(f"{path}: cannot be read as a torch weights file ({e})") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        what = (f"a mapping with keys {list(state)[:5]}" if isinstance(state, Mapping)
                else type(state).__name__)
        raise ValueError(f"{path}: expected a state_dict (parameter name -> tensor), got {what}; "
                         "save `module.state_dict()` itself, not a checkpoint wrapping it")
    return state


def load_into(module: nn.Module, state: Mapping[str, Tensor], path: str | os.PathLike,
              skip: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``module``; keys starting with a prefix in ``skip`` are ignored on both
    sides (heads we replace). Raises ValueError naming the file and the keys that do not fit."""
    state = {k: v for k, v in state.items() if not k.startswith(skip)}
    name = type(module).__name__
    try:
        # load_state_dict (not a key comparison of our own) so modules that rename legacy keys
        # while loading (torchvision's ViT MLP blocks) keep doing so.
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # size mismatches
        raise ValueError(f"{path}: weights do not fit the {name}: {e}") from e
    missing = [k for k in result.missing_keys if not k.startswith(skip)]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(f"{path}: not a state_dict for the {name}: {len(missing)} missing key(s) "
                         f"{missing[:5]}, {len(unexpected)} unexpected key(s) {unexpected[:5]}")


def _torchvision():
    """torchvision, imported on first use; a clear ImportError when it is absent or broken."""
    try:
        import torchvision
        import torchvision.models
    # A torchvision built for another torch (PyPI's CUDA wheel beside a CPU torch) fails with a
    # RuntimeError ("operator torchvision::nms does not exist"), not an ImportError.
    except (ImportError, RuntimeError, OSError) as e:
        raise ImportError(
            "the resnet18 and vit_b16 backbones need torchvision matching the installed torch "
            f"({torch.__version__}): `pip install 'rise-dist[vision]'` or the torchvision wheel for "
            f"your torch build; the cnn backbone needs neither (import failed: {e})") from e
    return torchvision


class _ImageNetInput(nn.Module):
    """(B, 1 or 3, H, W) in [0, 1] -> (B, 3, H, W) standardised as torchvision's weights expect.

    1-channel modalities are replicated to 3 so a pretrained RGB filter sees a grey image."""

    def __init__(self):
        super().__init__()
        # Not persistent: constants, not state a checkpoint should carry.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std


# --- one stream per modality: cnn and resnet18 ----------------------------------------------------

class ModalityStreams(nn.Module):
    """Independent streams, one per modality: ``{m: (B, C_m, H, W)} -> {m: (B, D)}``.

    ``state`` (from ``path``) is one stream's state_dict, loaded into every stream; each stream
    then trains on its own."""

    def __init__(self, streams: dict[str, nn.Module], state: Mapping[str, Tensor] | None = None,
                 path: str | os.PathLike | None = None):
        super().__init__()
        self.streams = nn.ModuleDict(streams)
        if state is not None:
            for stream in self.streams.values():
                stream.load_pretrained(state, path)

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.streams[m](x[m]) for m in MODALITIES}


class CNNStream(nn.Module):
    """(B, C, H, W) in [0, 1] -> (B, D): four conv-BN-ReLU blocks (the last three stride 2),
    global average pool, Linear. Any H, W >= 1."""

    WIDTHS = (32, 64, 128, 128)

    def __init__(self, in_channels: int, feature_dim: int, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(self.WIDTHS):
            # Full resolution in the first block: the fine texture cues (recapture artefacts) of
            # small face crops are gone after one stride-2 step.
            layers += [nn.Conv2d(c, w, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                       norm_layer(norm)(w), nn.ReLU(inplace=True)]
            c = w
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(c, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.features(x).mean(dim=(2, 3)))

    def load_pretrained(self, state: Mapping[str, Tensor], path) -> None:
        """Load a CNNStream state_dict. A file from a stream of the other channel count has its
        first conv adapted exactly for grey input: 3 -> 1 sums the RGB filters (what the RGB
        stream computes on a grey image replicated to 3 channels); 1 -> 3 splits it in thirds."""
        state = dict(state)
        w = state.get("features.0.weight")
        have = self.features[0].in_channels
        if w is not None and w.dim() == 4 and w.shape[1] != have:
            if (w.shape[1], have) == (3, 1):
                state["features.0.weight"] = w.sum(dim=1, keepdim=True)
            elif (w.shape[1], have) == (1, 3):
                state["features.0.weight"] = w.expand(-1, 3, -1, -1) / 3
        load_into(self, state, path)


class ResNetStream(nn.Module):
    """(B, 1 or 3, H, W) in [0, 1] -> (B, D): torchvision ResNet-18 with fc = Linear(512, D)."""

    def __init__(self, feature_dim: int, norm: str = "batch"):
        super().__init__()
        tv = _torchvision()
        self.input = _ImageNetInput()
        self.net = tv.models.resnet18(norm_layer=norm_layer(norm))  # never weights=: no download
        self.net.fc = nn.Linear(self.net.fc.in_features, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.input(x))

    def load_pretrained(self, state: Mapping[str, Tensor], path) -> None:
        """Load a torchvision resnet18 state_dict; its ``fc`` (a classifier head) is ignored."""
        load_into(self.net, state, path, skip=("fc.",))


# --- ViT-B/16 with shared blocks and per-modality adapters ----------------------------------------

class Adapter(nn.Module):
    """Bottleneck adapter (B, N, W) -> (B, N, W): t + up(GELU(down(t))); ``up`` starts at zero
    so the adapter starts as the identity and the pretrained block's output is unchanged."""

    def __init__(self, width: int, bottleneck: int):
        super().__init__()
        self.down = nn.Linear(width, bottleneck)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, width)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, t: Tensor) -> Tensor:
        return t + self.up(self.act(self.down(t)))


class SharedViT(nn.Module):
    """ViT-B/16 over three modalities: ``{m: (B, C_m, S, S)} -> {m: (B, D)}``, S a multiple of 16.

    Per modality: patch embedding (``conv_proj[m]``, a copy of the shared/pretrained one;
    1-channel inputs are replicated to 3 before it), an adapter after every block
    (``adapters[m][i]``) and a Linear(768, D) on the class token (``heads[m]``). Shared: class
    token, position embedding, the 12 blocks (the first ``cfg.vit_frozen_blocks`` frozen) and the
    final LayerNorm. The three modalities go through each shared block as one 3B batch.
    """

    def __init__(self, cfg: ModelConfig, image_size: tuple[int, int],
                 state: Mapping[str, Tensor] | None = None):
        super().__init__()
        h, w = image_size
        if h != w or h % VIT_PATCH:
            raise ValueError(f"vit_b16 needs square images with a side that is a multiple of "
                             f"{VIT_PATCH}; got image_size {tuple(image_size)}")
        tv = _torchvision()
        vit = tv.models.vit_b_16(image_size=h)  # never weights=: nothing is downloaded
        if state is not None:
            _load_vit(vit, state, cfg.pretrained, h)
        self.input = _ImageNetInput()
        self.class_token = vit.class_token
        self.encoder = vit.encoder  # pos_embedding, dropout, layers, ln
        for block in self.encoder.layers[:cfg.vit_frozen_blocks]:
            block.requires_grad_(False)
        self.conv_proj = nn.ModuleDict({m: copy.deepcopy(vit.conv_proj) for m in MODALITIES})
        n_blocks = len(self.encoder.layers)
        self.adapters = nn.ModuleDict({
            m: nn.ModuleList(Adapter(VIT_WIDTH, cfg.adapter_dim) for _ in range(n_blocks))
            for m in MODALITIES})
        self.heads = nn.ModuleDict({m: nn.Linear(VIT_WIDTH, cfg.feature_dim) for m in MODALITIES})
        # vit.heads (the ImageNet classifier) and the shared vit.conv_proj are dropped with vit.

    def tokens(self, m: str, x: Tensor) -> Tensor:
        """(B, C_m, S, S) -> (B, 1 + (S/16)^2, 768): class token and patch embeddings of ``m``."""
        p = self.conv_proj[m](self.input(x)).flatten(2).transpose(1, 2)
        return torch.cat([self.class_token.expand(p.shape[0], -1, -1), p], dim=1)

    def forward(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        t = torch.cat([self.tokens(m, x[m]) for m in MODALITIES], dim=0) + self.encoder.pos_embedding
        t = self.encoder.dropout(t)
        for i, block in enumerate(self.encoder.layers):
            t = block(t)
            per_modality = zip(MODALITIES, t.chunk(3), strict=True)
            t = torch.cat([self.adapters[m][i](tm) for m, tm in per_modality], dim=0)
        cls = self.encoder.ln(t[:, 0])  # LayerNorm is per token: the class token's alone suffices
        return {m: self.heads[m](c) for m, c in zip(MODALITIES, cls.chunk(3), strict=True)}


def _load_vit(vit: nn.Module, state: Mapping[str, Tensor], path, side: int) -> None:
    """Load a torchvision vit_b_16 state_dict into ``vit`` (built for side x side inputs); the
    position embedding is interpolated when the file was made for another (square) size."""
    from torchvision.models.vision_transformer import interpolate_embeddings

    pos = state.get("encoder.pos_embedding")
    if pos is not None and pos.shape != vit.encoder.pos_embedding.shape:
        try:
            state = interpolate_embeddings(side, VIT_PATCH, dict(state))
        except ValueError as e:
            raise ValueError(f"{path}: cannot interpolate its position embedding "
                             f"{tuple(pos.shape)} to {side}x{side} inputs: {e}") from e
    load_into(vit, state, path, skip=("heads.",))
