import numpy as np
import torch

from memgate.data.loader import PAD, crop_flip, epoch_plan, normalize, pack_padded
from memgate.data.stats import RELEASED_NORM


def _images(n=64):
    return torch.from_numpy(np.random.default_rng(0).integers(1, 256, (n, 32, 32, 3), dtype=np.uint8))


def test_crops_stay_inside_padded_image_and_padding_is_zero():
    x = _images()  # no zero pixels in the images themselves
    packed = pack_padded(x)
    padded = packed.view(torch.uint8).view(len(x), 40, 40, 4)[..., :3]
    plan = epoch_plan(len(x), seed=0, epoch=0)
    idx = torch.arange(len(x))
    out = crop_flip(packed, idx, plan.dy, plan.dx, plan.flip)
    assert plan.dy.min() >= 0 and plan.dy.max() <= 2 * PAD and plan.dx.max() <= 2 * PAD
    for i in range(len(x)):
        dy, dx = int(plan.dy[i]), int(plan.dx[i])
        window = padded[i, dy : dy + 32, dx : dx + 32]
        expected = window.flip(1) if plan.flip[i] else window
        assert torch.equal(out[i], expected)
        # Pixels that came from the padding are exactly zero; all others come from the image.
        zero = (out[i] == 0).all(-1)
        assert int(zero.sum()) == 32 * 32 - (32 - abs(dy - PAD)) * (32 - abs(dx - PAD))


def test_flip_probability_is_half_and_crops_cover_all_offsets():
    plan = epoch_plan(50_000, seed=1, epoch=0)
    assert abs(plan.flip.float().mean().item() - 0.5) < 4 * np.sqrt(0.25 / 50_000)
    assert set(plan.dy.tolist()) == set(range(2 * PAD + 1))


def test_same_seed_same_batch_other_epoch_other_batch():
    x = _images(256)
    packed = pack_padded(x)
    mean = torch.tensor(RELEASED_NORM[0]).view(1, 3, 1, 1) * 255
    std = torch.tensor(RELEASED_NORM[1]).view(1, 3, 1, 1) * 255

    def batch(seed, epoch):
        p = epoch_plan(256, seed, epoch)
        pos = p.order[:128]
        return normalize(crop_flip(packed, pos, p.dy[pos], p.dx[pos], p.flip[pos]), mean, std)

    assert torch.equal(batch(0, 3), batch(0, 3))
    assert not torch.equal(batch(0, 3), batch(0, 4))
    assert not torch.equal(batch(0, 3), batch(1, 3))


def test_no_augment_plan_is_identity_crop():
    x = _images(8)
    p = epoch_plan(8, 0, 0, augment=False)
    out = crop_flip(pack_padded(x), torch.arange(8), p.dy, p.dx, p.flip)
    assert torch.equal(out, x)


def test_normalize_matches_reference_formula():
    x = _images(4)
    mean, std = RELEASED_NORM
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    s = torch.tensor(std).view(1, 3, 1, 1) * 255
    ref = (x.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(
        1, 3, 1, 1
    )
    assert torch.allclose(normalize(x, m, s), ref, atol=1e-5)
