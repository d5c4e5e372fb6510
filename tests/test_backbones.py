"""Backbones: stream shapes, independence and sharing, frozen blocks, identity adapters, weights
files (round trip, missing file, mismatched keys and shapes), torchvision kept optional."""

import sys

import pytest
import torch

from rise_dist.config import ConfigError, ModelConfig
from rise_dist.data.cache import CHANNELS, MODALITIES
from rise_dist.model.backbones import (
    Adapter,
    CNNStream,
    ModalityStreams,
    build_backbone,
    load_state_file,
)

D = 16


def _torchvision():
    """torchvision, or a skip where it is absent or built for another torch (which fails with a
    RuntimeError, not the ImportError importorskip handles)."""
    try:
        return pytest.importorskip("torchvision")
    except RuntimeError as e:
        pytest.skip(f"torchvision does not load beside this torch: {e}")


def _inputs(b=2, size=(32, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(b, CHANNELS[m], *size, generator=g) for m in MODALITIES}


def _perturbed(module):
    """``module`` with every float tensor of its state (BN running stats too) made random, so a
    loaded copy can only equal it by loading."""
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5)
    return module


# --- cnn ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("channels,size", [(3, (32, 32)), (1, (32, 32)), (1, (24, 40)), (3, (8, 8))])
def test_cnn_stream_shape(channels, size):
    out = CNNStream(channels, D)(torch.rand(5, channels, *size))
    assert out.shape == (5, D)


def test_cnn_streams_are_independent_with_their_own_channels():
    bb = build_backbone(ModelConfig(feature_dim=D), (32, 32))
    assert isinstance(bb, ModalityStreams)
    assert {m: bb.streams[m].features[0].in_channels for m in MODALITIES} == CHANNELS
    ids = {m: {id(p) for p in bb.streams[m].parameters()} for m in MODALITIES}
    assert not ids["rgb"] & ids["depth"] and not ids["depth"] & ids["ir"] and not ids["rgb"] & ids["ir"]
    out = bb(_inputs())
    assert list(out) == list(MODALITIES) and all(v.shape == (2, D) for v in out.values())
    # the depth stream sees only the depth input
    x2 = {**_inputs(), "depth": torch.rand(2, 1, 32, 32)}
    bb.eval()
    a, b = bb(_inputs()), bb(x2)
    assert torch.equal(a["rgb"], b["rgb"]) and not torch.allclose(a["depth"], b["depth"])


def test_cnn_pretrained_round_trip(tmp_path):
    src = _perturbed(CNNStream(3, D))
    path = tmp_path / "cnn.pt"
    torch.save(src.state_dict(), path)
    bb = build_backbone(ModelConfig(feature_dim=D, pretrained=str(path)), (32, 32))
    want = src.state_dict()
    for m in MODALITIES:
        got = bb.streams[m].state_dict()
        assert got.keys() == want.keys()
        for k, v in want.items():
            if m != "rgb" and k == "features.0.weight":
                # 1-channel streams: the RGB filters summed, i.e. the RGB stream on a grey image
                assert torch.equal(got[k], v.sum(dim=1, keepdim=True)), k
            else:
                assert torch.equal(got[k], v), (m, k)
    # the adaptation is exact: a grey image through the depth stream = replicated through rgb
    bb.eval()
    src.eval()
    grey = torch.rand(3, 1, 32, 32)
    assert torch.allclose(bb.streams["depth"](grey), src(grey.expand(-1, 3, -1, -1)), atol=1e-5)


def test_cnn_pretrained_from_a_one_channel_stream(tmp_path):
    src = _perturbed(CNNStream(1, D))
    path = tmp_path / "depth.pt"
    torch.save(src.state_dict(), path)
    bb = build_backbone(ModelConfig(feature_dim=D, pretrained=str(path)), (32, 32))
    w = src.state_dict()["features.0.weight"]
    assert torch.equal(bb.streams["ir"].features[0].weight, w)
    assert torch.allclose(bb.streams["rgb"].features[0].weight, w.expand(-1, 3, -1, -1) / 3)


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_backbone(ModelConfig(feature_dim=D, pretrained=str(path)), (32, 32))


def test_mismatched_keys_are_named(tmp_path):
    state = CNNStream(3, D).state_dict()
    del state["proj.weight"]
    state["head.bogus"] = torch.zeros(2)
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match="odd.pt") as e:
        build_backbone(ModelConfig(feature_dim=D, pretrained=str(path)), (32, 32))
    assert "proj.weight" in str(e.value) and "head.bogus" in str(e.value)


def test_mismatched_shapes_are_named(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save(CNNStream(3, 2 * D).state_dict(), path)  # its proj is for D' = 2D
    with pytest.raises(ValueError, match="wide.pt") as e:
        build_backbone(ModelConfig(feature_dim=D, pretrained=str(path)), (32, 32))
    assert "proj.weight" in str(e.value)


@pytest.mark.parametrize("obj", [{"model": {"w": torch.zeros(1)}}, [torch.zeros(1)]])
def test_a_non_state_dict_file_is_refused(tmp_path, obj):
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    with pytest.raises(ValueError, match="ckpt.pt.*state_dict"):
        load_state_file(path)


def test_an_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="junk.pt"):
        load_state_file(path)


@pytest.mark.parametrize("backbone", ["resnet18", "vit_b16"])
def test_missing_torchvision_gives_a_clear_import_error(monkeypatch, backbone):
    # None in sys.modules makes `import torchvision` raise ImportError, as when it is absent
    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.models", None)
    with pytest.raises(ImportError, match=r"torchvision.*rise-dist\[vision\]"):
        build_backbone(ModelConfig(backbone=backbone, feature_dim=D), (32, 32))


def test_the_cnn_backbone_needs_no_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)
    out = build_backbone(ModelConfig(feature_dim=D), (32, 32))(_inputs())
    assert out["ir"].shape == (2, D)


def test_adapter_starts_as_identity_and_learns():
    a = Adapter(24, 4)
    t = torch.randn(2, 5, 24)
    assert torch.equal(a(t), t)
    with torch.no_grad():
        a.up.weight.normal_()
    assert not torch.allclose(a(t), t)


# --- resnet18 (torchvision) -----------------------------------------------------------------------

def test_resnet18_streams():
    tv = _torchvision()
    bb = build_backbone(ModelConfig(backbone="resnet18", feature_dim=D), (32, 32))
    assert all(isinstance(bb.streams[m].net, tv.models.ResNet) for m in MODALITIES)
    assert all(bb.streams[m].net.fc.weight.shape == (D, 512) for m in MODALITIES)
    assert bb.streams["rgb"].net.conv1.weight is not bb.streams["depth"].net.conv1.weight
    out = bb(_inputs())
    assert all(out[m].shape == (2, D) for m in MODALITIES)


def test_resnet18_pretrained_round_trip(tmp_path):
    tv = _torchvision()
    src = _perturbed(tv.models.resnet18())  # fc: the 1000-class ImageNet head, ignored on load
    path = tmp_path / "resnet18.pt"
    torch.save(src.state_dict(), path)
    bb = build_backbone(ModelConfig(backbone="resnet18", feature_dim=D, pretrained=str(path)), (32, 32))
    for m in MODALITIES:
        got = bb.streams[m].net.state_dict()
        for k, v in src.state_dict().items():
            if not k.startswith("fc."):
                assert torch.equal(got[k], v), (m, k)
        assert got["fc.weight"].shape == (D, 512)


def test_resnet18_mismatched_keys(tmp_path):
    tv = _torchvision()
    state = tv.models.resnet18().state_dict()
    del state["layer4.1.bn2.weight"]
    path = tmp_path / "r.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"r\.pt.*layer4\.1\.bn2\.weight"):
        build_backbone(ModelConfig(backbone="resnet18", feature_dim=D, pretrained=str(path)), (32, 32))


# --- vit_b16 (torchvision) ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vit():
    _torchvision()
    torch.manual_seed(0)
    return build_backbone(ModelConfig(backbone="vit_b16", feature_dim=D, vit_frozen_blocks=8,
                                      adapter_dim=8), (32, 32))


def test_vit_shapes_and_sharing(vit):
    out = vit(_inputs(b=3))
    assert list(out) == list(MODALITIES) and all(out[m].shape == (3, D) for m in MODALITIES)
    assert len(vit.encoder.layers) == 12 and vit.encoder.pos_embedding.shape == (1, 5, 768)
    # patch embeddings: one per modality, equal at the start, distinct parameters
    w = {m: vit.conv_proj[m].weight for m in MODALITIES}
    assert w["rgb"] is not w["depth"] and torch.equal(w["rgb"], w["depth"])
    assert all(len(vit.adapters[m]) == 12 for m in MODALITIES)


def test_vit_frozen_blocks(vit):
    for i, block in enumerate(vit.encoder.layers):
        flags = {p.requires_grad for p in block.parameters()}
        assert flags == ({False} if i < 8 else {True}), i
    adapters = [p for m in MODALITIES for p in vit.adapters[m].parameters()]
    assert adapters and all(p.requires_grad for p in adapters)


def test_vit_adapters_start_as_identity(vit):
    """With identity adapters the features are those of the plain shared ViT."""
    vit.eval()
    x = _inputs(b=2)
    got = vit(x)
    for m in MODALITIES:
        t = vit.encoder(vit.tokens(m, x[m]))  # torchvision's own encoder: no adapters
        assert torch.allclose(got[m], vit.heads[m](t[:, 0]), atol=1e-5), m
    with torch.no_grad():
        vit.adapters["ir"][3].up.weight.normal_()
    changed = vit(x)
    assert torch.equal(changed["rgb"], got["rgb"]) and not torch.allclose(changed["ir"], got["ir"])
    with torch.no_grad():
        vit.adapters["ir"][3].up.weight.zero_()


@pytest.mark.parametrize("size", [(40, 40), (32, 48)])
def test_vit_needs_square_multiples_of_16(size):
    _torchvision()
    with pytest.raises(ValueError, match="multiple of 16"):
        build_backbone(ModelConfig(backbone="vit_b16", feature_dim=D), size)


def test_vit_pretrained_round_trip_with_interpolated_positions(tmp_path):
    tv = _torchvision()
    from torchvision.models.vision_transformer import interpolate_embeddings

    src = tv.models.vit_b_16(image_size=64)  # 4x4 patches; the model below has 2x2
    with torch.no_grad():
        src.encoder.pos_embedding.normal_()
        src.class_token.normal_()
    path = tmp_path / "vit.pt"
    torch.save(src.state_dict(), path)
    bb = build_backbone(ModelConfig(backbone="vit_b16", feature_dim=D, pretrained=str(path)), (32, 32))
    want = src.state_dict()
    got = bb.state_dict()
    for k, v in want.items():
        if k.startswith("encoder.layers.") or k.startswith("encoder.ln."):
            assert torch.equal(got[k], v), k
    for m in MODALITIES:
        assert torch.equal(got[f"conv_proj.{m}.weight"], want["conv_proj.weight"])
    assert torch.equal(bb.class_token, want["class_token"])
    expected = interpolate_embeddings(32, 16, {"encoder.pos_embedding": want["encoder.pos_embedding"]})
    assert bb.encoder.pos_embedding.shape == (1, 5, 768)
    assert torch.equal(bb.encoder.pos_embedding, expected["encoder.pos_embedding"])


def test_vit_mismatched_keys(tmp_path):
    tv = _torchvision()
    state = tv.models.vit_b_16(image_size=32).state_dict()
    state["encoder.extra"] = torch.zeros(1)
    path = tmp_path / "v.pt"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"v\.pt.*encoder\.extra"):
        build_backbone(ModelConfig(backbone="vit_b16", feature_dim=D, pretrained=str(path)), (32, 32))


def test_group_norm_streams_give_a_sample_the_same_feature_whatever_its_batch():
    """ModelConfig.norm='group' (what exact DDP equivalence on CPU relies on): in training mode a
    sample's feature does not depend on the rest of its batch; BatchNorm's does."""
    x = torch.rand(8, 3, 16, 16)
    for norm, independent in (("group", True), ("batch", False)):
        torch.manual_seed(0)
        net = CNNStream(3, D, norm).train()
        whole, half = net(x)[:4], net(x[:4])
        assert torch.allclose(whole, half, atol=1e-5) == independent, norm


def test_an_unknown_norm_is_a_config_error():
    with pytest.raises(ConfigError, match="norm"):
        ModelConfig(norm="layer")
