"""Tokenizer-training losses: discriminators, GAN objectives, LeCam, adaptive weight, DiffAugment, LPIPS."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from imagefolder.losses import (ClassifierPerceptualLoss, LeCam, PerceptualLoss, adaptive_weight, adopt_weight,
                                build_discriminator, build_perceptual, d_loss, diff_augment, g_loss)
from imagefolder.losses.discriminators import default_block_ids, minibatch_stddev

TINY_VIT = {"embed_dim": 32, "depth": 4, "num_heads": 2}


def images(B: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(B, 3, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- discriminators ----------------------------------------------------------------------------------------------

def test_patchgan_logit_map():
    disc = build_discriminator("patchgan", 32, ndf=8)
    assert disc(images()).shape == (2, 1, 2, 2)   # 32 / 2^3 - 2
    with pytest.raises(ValueError, match="at least 24"):
        build_discriminator("patchgan", 16)


def test_stylegan_one_logit_per_image():
    disc = build_discriminator("stylegan", 32, channels=8, max_channels=16)
    assert disc(images(B=3)).shape == (3,)
    with pytest.raises(ValueError, match="power-of-two"):
        build_discriminator("stylegan", 48)


def test_minibatch_stddev_groups():
    x = torch.randn(4, 2, 3, 3)
    out = minibatch_stddev(x, group_size=2)           # groups {0, 2} and {1, 3}
    expected = (x[[0, 2]].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    assert out.shape == (4, 3, 3, 3)
    assert torch.allclose(out[0, 2], expected.expand(3, 3)) and torch.allclose(out[2, 2], expected.expand(3, 3))


@pytest.fixture(scope="module")
def dino_disc() -> nn.Module:
    torch.manual_seed(0)
    return build_discriminator("dinodisc", 32, vit_kwargs=TINY_VIT, pretrained=False, head_channels=16)


def test_dinodisc_shapes_and_block_choice(dino_disc):
    assert default_block_ids(12) == [2, 5, 8, 11]
    assert dino_disc.block_ids == [0, 1, 2, 3]
    assert dino_disc.input_size == 28                  # 32 resized to a multiple of the patch size 14
    assert dino_disc(images()).shape == (2, 4 * (1 + 4))


def test_dinodisc_backbone_frozen_heads_trained(dino_disc):
    dino_disc.train()
    assert not dino_disc.backbone.training and dino_disc.heads.training
    assert not any(p.requires_grad for p in dino_disc.backbone.parameters())
    trainable = {n for n, p in dino_disc.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("heads.") for n in trainable)
    x = images().requires_grad_(True)
    dino_disc.zero_grad()
    dino_disc(x).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in dino_disc.heads.parameters())
    assert all(p.grad is None for p in dino_disc.backbone.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0   # the generator loss reaches the images


def test_unknown_discriminator():
    with pytest.raises(ValueError, match="patchgan, stylegan, dinodisc"):
        build_discriminator("biggan", 32)


# ---- GAN objectives -------------------------------------------------------------------------------------------

REAL = torch.tensor([[2.0, -0.5], [0.3, 1.5]])
FAKE = torch.tensor([[-1.5, 0.2], [0.8, -3.0]])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_discriminator_losses_by_hand():
    real, fake = REAL.flatten().tolist(), FAKE.flatten().tolist()
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    hinge = 0.5 * (_mean([max(0.0, 1 - r) for r in real]) + _mean([max(0.0, 1 + f) for f in fake]))
    logistic = 0.5 * (_mean([softplus(-r) for r in real]) + _mean([softplus(f) for f in fake]))
    bce = 0.5 * (_mean([-math.log(1 / (1 + math.exp(-r))) for r in real])
                 + _mean([-math.log(1 - 1 / (1 + math.exp(-f))) for f in fake]))
    assert d_loss("hinge", REAL, FAKE).item() == pytest.approx(hinge, rel=1e-6)
    assert d_loss("non-saturating", REAL, FAKE).item() == pytest.approx(logistic, rel=1e-6)
    assert d_loss("vanilla", REAL, FAKE).item() == pytest.approx(bce, rel=1e-6)


def test_generator_losses_by_hand():
    fake = FAKE.flatten().tolist()
    assert g_loss("hinge", FAKE).item() == pytest.approx(-_mean(fake), rel=1e-6)
    assert g_loss("non-saturating", FAKE).item() == pytest.approx(_mean([math.log1p(math.exp(-f)) for f in fake]),
                                                                   rel=1e-6)
    assert g_loss("vanilla", FAKE).item() == pytest.approx(_mean([-math.log(1 / (1 + math.exp(-f))) for f in fake]),
                                                            rel=1e-6)


def test_unknown_gan_loss():
    for fn, args in ((d_loss, (REAL, FAKE)), (g_loss, (FAKE,))):
        with pytest.raises(ValueError, match="hinge, non-saturating, vanilla"):
            fn("wasserstein", *args)


def test_lecam_ema_and_value():
    lecam = LeCam(decay=0.9)
    lecam.update(torch.tensor([1.0, 3.0]), torch.tensor([-2.0]))          # first update copies: 2, -2
    lecam.update(torch.tensor([4.0]), torch.tensor([0.0, 2.0]))           # 0.9 * 2 + 0.1 * 4, 0.9 * -2 + 0.1 * 1
    assert lecam.ema_real.item() == pytest.approx(2.2) and lecam.ema_fake.item() == pytest.approx(-1.7)
    assert set(lecam.state_dict()) == {"ema_real", "ema_fake", "num_updates"}
    real, fake = torch.tensor([-2.0, 0.5]), torch.tensor([3.0, 1.0])
    expected = _mean([max(0.0, r + 1.7) ** 2 for r in real.tolist()]) \
        + _mean([max(0.0, 2.2 - f) ** 2 for f in fake.tolist()])
    assert lecam(real, fake).item() == pytest.approx(expected)
    restored = LeCam(decay=0.9)
    restored.load_state_dict(lecam.state_dict())
    assert restored(real, fake).item() == pytest.approx(expected)


def test_adaptive_weight_is_gradient_norm_ratio():
    torch.manual_seed(0)
    layer, inputs = nn.Linear(4, 3), torch.randn(5, 4)
    out = layer(inputs)
    nll, gen = out.square().mean(), -0.01 * out.sum()
    w = adaptive_weight(nll, gen, layer.weight)
    grad_nll = (2 * out.detach() / out.numel()).T @ inputs        # dL/dW = (dL/dout)^T @ inputs
    grad_gen = torch.full_like(out, -0.01).T @ inputs
    assert w.item() == pytest.approx((grad_nll.norm() / (grad_gen.norm() + 1e-4)).item(), rel=1e-5)
    assert not w.requires_grad
    (nll + w * gen).backward()  # both graphs are still there
    tiny_g = 1e-12 * layer(inputs).sum()
    assert adaptive_weight(layer(inputs).sum(), tiny_g, layer.weight, max_weight=7.0).item() == 7.0


def test_adopt_weight():
    assert adopt_weight(0.5, step=9, start=10) == 0.0
    assert adopt_weight(0.5, step=10, start=10) == 0.5


# ---- DiffAugment ------------------------------------------------------------------------------------------------

def test_diff_augment_shape_and_gradient():
    x = images(B=4).requires_grad_(True)
    y = diff_augment(x, generator=torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert diff_augment(x, policy="") is x
    with pytest.raises(ValueError, match="color, translation, cutout"):
        diff_augment(x, policy="color,flip")


def test_translation_moves_the_image():
    x = images(B=8, seed=2)
    y = diff_augment(x, policy="translation", generator=torch.Generator().manual_seed(0))
    moved = [not torch.equal(x[i], y[i]) for i in range(8)]
    assert any(moved)
    for i in range(8):                      # each output is a zero-padded integer shift of its input
        shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                  if torch.equal(y[i], _shift(x[i], dy, dx))]
        assert shifts, f"image {i} is not a shift of its input"


def _shift(x_CHW: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    padded = F.pad(x_CHW, (4, 4, 4, 4))
    H, W = x_CHW.shape[-2:]
    return padded[:, 4 - dy:4 - dy + H, 4 - dx:4 - dx + W]


def test_cutout_zeroes_a_square():
    x = torch.ones(4, 3, 16, 16)
    y = diff_augment(x, policy="cutout", generator=torch.Generator().manual_seed(0))
    zeros = (y == 0).all(dim=1)                                  # (B, H, W)
    assert zeros.any(dim=(1, 2)).all() and (zeros.sum(dim=(1, 2)) <= 64).all()
    assert torch.equal(y[0, 0], y[0, 1])


# ---- perceptual loss ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def random_lpips() -> PerceptualLoss:
    torch.manual_seed(0)
    return PerceptualLoss(weights="random")


def test_perceptual_random_backbone(random_lpips):
    x, y = images(seed=0), images(seed=1)
    assert random_lpips(x, x).item() == pytest.approx(0.0, abs=1e-7)
    assert random_lpips(x, y).item() > 0
    assert not any(p.requires_grad for p in random_lpips.parameters())
    random_lpips.train()
    assert not any(m.training for m in random_lpips.modules())
    x.requires_grad_(True)
    random_lpips(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in random_lpips.parameters())


def test_perceptual_local_weights_file(tmp_path, random_lpips):
    import torchvision
    torch.manual_seed(1)
    # torchvision's VGG16 state dict; its 470 MB classifier is never used, so one tensor stands in for it
    state = {f"features.{k}": v for k, v in torchvision.models.vgg16().features.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    loss = PerceptualLoss(weights=path)
    trunk = dict(loss.lpips.net.named_parameters())
    assert len(trunk) == 26
    for name, value in trunk.items():
        _, index, kind = name.split(".")
        assert torch.equal(value, state[f"features.{index}.{kind}"]), name
    lins = {k: v for k, v in loss.lpips.state_dict().items() if k.startswith("lin")}
    assert lins and all(torch.equal(v, random_lpips.lpips.state_dict()[k]) for k, v in lins.items())  # shipped

    del state["features.28.weight"]
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"features\.28\.weight.*--perceptual-weights"):
        PerceptualLoss(weights=path)


def test_perceptual_missing_file_names_the_option(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        PerceptualLoss(weights=tmp_path / "nope.pth")
    message = str(err.value)
    assert "non-zero" in message and "--perceptual-weights PATH" in message and "perceptual_weights" in message
    assert "vgg16-397923af.pth" in message


# ---- perceptual loss in a domain classifier's feature maps -------------------------------------------------------

@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    from imagefolder.models.classifier import DomainClassifier, classifier_preset, save_classifier
    torch.manual_seed(0)
    model = DomainClassifier(classifier_preset("tiny", width=8, num_classes=3))
    for m in model.modules():  # running statistics away from (0, 1), so eval mode is visible in the values
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    out = tmp_path_factory.mktemp("clf") / "clf"
    save_classifier(model.eval(), ["a", "b", "c"], out)
    return out, model


def test_classifier_perceptual_distance(classifier_dir):
    path, model = classifier_dir
    loss = build_perceptual(f"classifier:{path}")
    assert isinstance(loss, ClassifierPerceptualLoss)
    x, y = images(seed=0), images(seed=1)
    assert loss(x, x).item() == pytest.approx(0.0, abs=1e-7)
    assert loss(x, y).item() > 0 and loss(x, y).item() == pytest.approx(loss(y, x).item(), rel=1e-6)
    # the definition: unit-normalised stage outputs (stem + each stage), squared difference summed over channels,
    # averaged over positions, summed over taps; the classifier in eval mode
    expected, hx, hy = 0.0, x, y
    for i, layer in enumerate(model.body):
        hx, hy = layer(hx), layer(hy)
        if i == 0 or i % 2 == 0:
            d = F.normalize(hx, dim=1, eps=1e-10) - F.normalize(hy, dim=1, eps=1e-10)
            expected += d.square().sum(dim=1).mean().item()
    assert loss(x, y).item() == pytest.approx(expected, rel=1e-5)
    # frozen, stays in eval mode, gradients reach the input only
    loss.train()
    assert not any(m.training for m in loss.modules()) and not any(p.requires_grad for p in loss.parameters())
    x.requires_grad_(True)
    loss(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # other image sizes are resized to the classifier's
    big = F.interpolate(images(seed=2), size=64, mode="nearest")
    assert loss(big, big).item() == pytest.approx(0.0, abs=1e-7)


def test_build_perceptual_names():
    with pytest.raises(ValueError, match="lpips or classifier:DIR"):
        build_perceptual("vgg")
    with pytest.raises(ValueError, match="lpips or classifier:DIR"):
        build_perceptual("classifier:")
    with pytest.raises(FileNotFoundError, match="no such classifier"):
        build_perceptual("classifier:/no/such/dir")
