"""RiSeModel: Output shapes, absent modalities (zeroed input, dropped feature), forward = encode +
fuse with no hidden state, a per-sample fusion, gradients to every trainable parameter, input
checks, pretrained weights passed through."""

import pytest
import torch

from rise_dist.config import ModelConfig
from rise_dist.data.cache import CHANNELS
from rise_dist.model import MODALITIES, Output, RiSeModel
from rise_dist.model.backbones import CNNStream

D = 16
SIZE = (32, 32)
BACKBONES = ["cnn", "resnet18", "vit_b16"]


def _model(backbone="cnn", seed=0, **kw) -> RiSeModel:
    if backbone != "cnn":
        try:
            pytest.importorskip("torchvision")
        except RuntimeError as e:  # a torchvision built for another torch
            pytest.skip(f"torchvision does not load beside this torch: {e}")
    torch.manual_seed(seed)
    cfg = ModelConfig(backbone=backbone, feature_dim=D, vit_frozen_blocks=8, adapter_dim=8, **kw)
    return RiSeModel(cfg, SIZE)


def _inputs(b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.rand(b, CHANNELS[m], *SIZE, generator=g) for m in MODALITIES}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_output_shapes(backbone):
    model = _model(backbone)
    out = model(_inputs(b=3))
    assert isinstance(out, Output)
    assert model.feature_dim == D
    assert out.logit.shape == (3,) and out.fused.shape == (3, D)
    assert list(out.modality) == list(MODALITIES)
    assert all(out.modality[m].shape == (3, D) for m in MODALITIES)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_absent_modality_input_is_zeroed(backbone):
    model = _model(backbone).eval()
    x = _inputs()
    out = model(x, absent=("depth",))
    zero = model.encode({**x, "depth": torch.zeros_like(x["depth"])})
    assert torch.allclose(out.modality["depth"], zero["depth"], atol=1e-6)
    assert not torch.allclose(out.modality["depth"], model(x).modality["depth"], atol=1e-4)
    # the other streams are untouched, and zero_input fuses the stream's feature as is
    assert torch.allclose(out.modality["rgb"], zero["rgb"], atol=1e-6)
    fused, _ = model.fuse(out.modality)
    assert torch.allclose(out.fused, fused, atol=1e-6)
    # an absent modality may be left out of the input
    assert torch.equal(model({"rgb": x["rgb"], "ir": x["ir"]}, absent=("depth",)).logit, out.logit)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_drop_feature_fuses_a_zero_feature(backbone):
    model = _model(backbone, missing="drop_feature").eval()
    out = model(_inputs(), absent=("depth", "ir"))
    zeroed = {**out.modality, "depth": torch.zeros(4, D), "ir": torch.zeros(4, D)}
    fused, logit = model.fuse(zeroed)
    assert torch.allclose(out.fused, fused, atol=1e-6) and torch.allclose(out.logit, logit, atol=1e-6)
    kept, _ = model.fuse(out.modality)  # the streams' features of zero images are not zero
    assert not torch.allclose(out.fused, kept, atol=1e-4)
    # with nothing absent, drop_feature changes nothing
    full = model(_inputs())
    assert torch.allclose(full.fused, model.fuse(full.modality)[0], atol=1e-6)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_forward_is_encode_then_fuse(backbone):
    model = _model(backbone).eval()
    x = _inputs()
    out = model(x)
    feats = model.encode(x)
    fused, logit = model.fuse(feats)
    assert torch.allclose(out.fused, fused, atol=1e-6) and torch.allclose(out.logit, logit, atol=1e-6)
    for m in MODALITIES:
        assert torch.allclose(out.modality[m], feats[m], atol=1e-6)
    # fuse a second time on other features, then again on these: no state carried between calls
    model.fuse({m: torch.randn(4, D) for m in MODALITIES})
    again, _ = model.fuse(feats)
    assert torch.equal(again, fused)


def test_fusion_is_per_sample_in_training():
    """MMSD fuses features mixed across samples: a sample's z must depend on its own slots only."""
    model = _model(dropout=0.0).train()
    feats = {m: torch.randn(6, D) for m in MODALITIES}
    g = torch.Generator().manual_seed(1)
    mixed = {m: f[torch.randperm(6, generator=g)] for m, f in feats.items()}
    fused, logit = model.fuse(mixed)
    for i in range(6):
        one, one_logit = model.fuse({m: f[i:i + 1] for m, f in mixed.items()})
        assert torch.allclose(one[0], fused[i], atol=1e-5) and torch.allclose(one_logit[0], logit[i], atol=1e-5)


def test_fused_feature_is_not_normalised():
    """AsyIRM reads |z| as a radius and z/|z| as a direction: neither may be pinned down."""
    model = _model().eval()
    out = model(_inputs(b=8))
    norms = out.fused.norm(dim=1)
    assert (norms.max() - norms.min()) > 1e-3 * norms.mean()
    assert (out.fused < 0).any() and (out.fused > 0).any()
    assert all((f < 0).any() for f in out.modality.values())


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}


def _adapter_down(name):
    # The adapters' up-projections start at zero, so their down-projections get exactly zero
    # gradient until the up-projections move: that is the identity start, not a broken path.
    return ".adapters." in name and ".down." in name


@pytest.mark.parametrize("backbone", BACKBONES)
def test_gradients_reach_every_trainable_parameter(backbone):
    model = _model(backbone).train()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == ({n for n in frozen if n.startswith("backbone.encoder.layers.")}
                      if backbone == "vit_b16" else set())
    from_logit = _grads(model, model(_inputs()).logit.sum())
    from_fused = _grads(model, model(_inputs()).fused.pow(2).sum())
    for n in trainable:
        if _adapter_down(n):
            assert from_logit[n] is not None and not from_logit[n].any(), n
            continue
        assert from_logit[n] is not None and from_logit[n].abs().sum() > 0, n
        if not n.startswith("live_head."):
            assert from_fused[n] is not None and from_fused[n].abs().sum() > 0, n
    assert from_fused["live_head.weight"] is None
    assert all(from_logit[n] is None for n in frozen)


def test_gradients_reach_adapter_down_projections_once_up_moves():
    model = _model("vit_b16").train()
    with torch.no_grad():
        for m in MODALITIES:
            for a in model.backbone.adapters[m]:
                a.up.weight.normal_(std=0.02)
    grads = _grads(model, model(_inputs()).logit.sum())
    downs = [n for n in grads if _adapter_down(n)]
    assert downs and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in downs)


def test_pretrained_stream_file_reaches_the_model(tmp_path):
    src = CNNStream(3, D)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    path = tmp_path / "stream.pt"
    torch.save(src.state_dict(), path)
    model = _model(pretrained=str(path))
    for name, p in src.named_parameters():
        assert torch.equal(model.backbone.streams["rgb"].get_parameter(name), p), name
        if name != "features.0.weight":
            assert torch.equal(model.backbone.streams["ir"].get_parameter(name), p), name
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        _model(pretrained=str(tmp_path / "absent.pt"))


@pytest.mark.parametrize("absent,match", [(("thermal",), "thermal"),
                                          (("rgb", "depth", "ir"), "at least one")])
def test_bad_absent_is_refused(absent, match):
    with pytest.raises(ValueError, match=match):
        _model()(_inputs(), absent=absent)


@pytest.mark.parametrize("change,match", [
    (lambda x: {**x, "depth": x["rgb"]}, "'depth' has shape"),               # 3 channels, not 1
    (lambda x: {**x, "rgb": torch.rand(4, 3, 16, 16)}, "image_size"),        # another size
    (lambda x: {**x, "ir": torch.rand(5, 1, *SIZE)}, "'ir' has shape"),      # another batch
    (lambda x: {"rgb": x["rgb"], "depth": x["depth"]}, "'ir' missing"),      # not marked absent
])
def test_bad_inputs_are_refused(change, match):
    with pytest.raises(ValueError, match=match):
        _model()(change(_inputs()))
