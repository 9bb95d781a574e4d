"""Batched augmentation: exactness against torchvision per sample, uniformity, dtype/device/format."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from lightning_deepfeat.data import (
    CenterCrop,
    RandomCrop,
    RandomHorizontalFlip,
    RandomTranslate,
    ShiftFlipViews,
    crop_batch,
    flip_batch,
    translate,
)
from lightning_deepfeat.data.functional import cut_windows
from lightning_deepfeat.data.transforms import BatchTransform, memory_format_of

TV_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge"}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _batch(shape, dtype=torch.uint8, channels_last=False, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    x = x.to(dtype) if dtype == torch.uint8 else x.to(dtype) / 255.0
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _torchvision_random_crop(image, size, padding, padding_mode, top, left):
    """v2.RandomCrop(size, padding) on one image, with its crop corner forced to (top, left)."""
    crop = v2.RandomCrop(size, padding=padding, padding_mode=padding_mode)
    params = crop.make_params([image])
    params.update(top=top, left=left)
    return crop.transform(image, params)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize(
    ("shape", "shift"),
    [((6, 1, 28, 28), 2), ((5, 3, 32, 32), 4), ((4, 3, 17, 23), (3, 5)), ((3, 2, 9, 9), 1)],
)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_translate_matches_torchvision_random_crop_per_sample(shape, shift, padding_mode, dtype):
    images = _batch(shape, dtype)
    module = RandomTranslate(shift, padding_mode=padding_mode)
    dx, dy = module.sample_offsets(shape[0], torch.Generator().manual_seed(1))
    sy, sx = module.max_shift
    ours = translate(images, dx, dy, module.max_shift, padding_mode)
    for i in range(shape[0]):
        ref = _torchvision_random_crop(
            images[i], shape[-2:], (sx, sy), TV_MODE[padding_mode], top=int(sy - dy[i]), left=int(sx - dx[i])
        )
        assert torch.equal(ours[i], ref), f"image {i}, dx={int(dx[i])}, dy={int(dy[i])}"


def test_translate_moves_content_right_and_down():
    images = torch.zeros(1, 1, 5, 5, dtype=torch.uint8)
    images[0, 0, 2, 2] = 9
    out = translate(images, torch.tensor([1]), torch.tensor([-2]), 2)
    assert out[0, 0, 0, 3] == 9 and int(out.sum()) == 9


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_reuses_its_pad_buffer_exactly(padding_mode, channels_last):
    """forward() pads into a reused scratch buffer: results equal the functional (fresh pad) path, batch after batch."""
    module = RandomTranslate((2, 3), padding_mode=padding_mode)
    for seed, n in ((5, 16), (6, 16), (7, 9), (8, 16)):  # smaller last batch, then full again
        images = _batch((n, 3, 12, 11), channels_last=channels_last, seed=seed)
        out = module(images, torch.Generator().manual_seed(seed))
        dx, dy = module.sample_offsets(n, torch.Generator().manual_seed(seed))
        assert torch.equal(out, translate(images, dx, dy, (2, 3), padding_mode)), (seed, n)
        assert memory_format_of(out) == memory_format_of(images)


@pytest.mark.parametrize("shift", [1, 3, (2, 4)])
def test_offsets_cover_range_uniformly_chi_square(shift):
    module = RandomTranslate(shift)
    sy, sx = module.max_shift
    n = 60_000
    dx, dy = module.sample_offsets(n, torch.Generator().manual_seed(0))
    for values, s in ((dx, sx), (dy, sy)):
        assert int(values.min()) == -s and int(values.max()) == s
        counts = torch.bincount(values + s, minlength=2 * s + 1).double()
        assert counts.numel() == 2 * s + 1
        expected = n / (2 * s + 1)
        stat = float(((counts - expected) ** 2 / expected).sum())
        assert chi2.sf(stat, df=2 * s) > 1e-4, f"chi2={stat:.1f} for counts {counts.tolist()}"
    # joint: (dx, dy) pairs are uniform on the whole grid, i.e. drawn independently
    joint = torch.bincount((dy + sy) * (2 * sx + 1) + (dx + sx), minlength=(2 * sx + 1) * (2 * sy + 1)).double()
    expected = n / joint.numel()
    stat = float(((joint - expected) ** 2 / expected).sum())
    assert chi2.sf(stat, df=joint.numel() - 1) > 1e-4


def test_chi_square_would_catch_a_biased_sampler():
    # the statistic used above rejects offsets from {-s..s-1} (a classic off-by-one)
    counts = torch.bincount(
        torch.randint(-3, 3, (60_000,), generator=torch.Generator().manual_seed(0)) + 3, minlength=7
    ).double()
    stat = float(((counts - counts.sum() / 7) ** 2 / (counts.sum() / 7)).sum())
    assert chi2.sf(stat, df=6) < 1e-4


def test_probability_p_keeps_some_images_in_place():
    module = RandomTranslate(2, p=0.25)
    dx, dy = module.sample_offsets(40_000, torch.Generator().manual_seed(0))
    still = float(((dx == 0) & (dy == 0)).double().mean())
    assert still == pytest.approx(0.75 + 0.25 / 25, abs=0.01)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_every_transform_keeps_dtype_device_and_memory_format(device, dtype, channels_last):
    images = _batch((8, 3, 20, 20), dtype, channels_last, device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    for module, out_hw in (
        (RandomTranslate(3, "reflect"), (20, 20)),
        (RandomTranslate((1, 2), "zeros"), (20, 20)),
        (RandomCrop(16), (16, 16)),
        (CenterCrop((12, 14)), (12, 14)),
        (RandomHorizontalFlip(0.5), (20, 20)),
    ):
        out = module(images, generator)
        assert out.shape == (8, 3, *out_hw), module
        assert out.dtype == dtype and out.device == images.device, module
        assert memory_format_of(out) == memory_format_of(images), module
        assert out.is_contiguous(memory_format=memory_format_of(images)), module


def test_channels_last_gives_the_same_values():
    images = _batch((8, 3, 20, 20))
    dx, dy = torch.randint(-3, 4, (8,)), torch.randint(-3, 4, (8,))
    a = translate(images, dx, dy, 3, "reflect")
    b = translate(images.contiguous(memory_format=torch.channels_last), dx, dy, 3, "reflect")
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("shape", "size"), [((5, 3, 40, 36), (32, 32)), ((3, 3, 256, 256), (224, 224)), ((4, 1, 28, 28), (28, 20))]
)
def test_random_crop_equals_per_sample_slices(shape, size):
    images = _batch(shape)
    module = RandomCrop(size)
    top, left = module.sample_corners(shape[-2:], shape[0], torch.Generator().manual_seed(3))
    out = module(images, torch.Generator().manual_seed(3))
    for i in range(shape[0]):
        ref = TF.crop(images[i], int(top[i]), int(left[i]), *size)
        assert torch.equal(out[i], ref)
    assert torch.equal(crop_batch(images, top, left, size), out)


def test_random_crop_corners_cover_every_position():
    top, left = RandomCrop(224).sample_corners((256, 250), 20_000, torch.Generator().manual_seed(0))
    assert set(top.tolist()) == set(range(33)) and set(left.tolist()) == set(range(27))


def test_crop_into_preallocated_output():
    images = _batch((4, 3, 40, 40))
    top, left = torch.tensor([0, 1, 8, 3]), torch.tensor([8, 0, 2, 5])
    out = torch.empty(4, 3, 32, 32, dtype=torch.uint8)
    assert crop_batch(images, top, left, (32, 32), out=out) is out
    assert torch.equal(out, crop_batch(images, top, left, (32, 32)))


def test_crop_fused_with_a_gather_from_the_whole_data_set():
    data = _batch((10, 3, 40, 40))
    index, top, left = torch.tensor([7, 2, 7, 0]), torch.tensor([0, 8, 3, 1]), torch.tensor([8, 0, 2, 5])
    assert torch.equal(crop_batch(data, top, left, (32, 32), index=index), crop_batch(data[index], top, left, (32, 32)))
    cl = data.contiguous(memory_format=torch.channels_last)
    assert torch.equal(crop_batch(cl, top, left, (32, 32), index=index), crop_batch(data[index], top, left, (32, 32)))
    with pytest.raises(ValueError, match="one entry per output image"):
        crop_batch(data, top, left, (32, 32), index=index[:3])


def test_center_crop_matches_torchvision():
    images = _batch((3, 3, 256, 250))
    out = CenterCrop(224)(images)
    assert torch.equal(out, torch.stack([TF.center_crop(im, [224, 224]) for im in images]))


def test_flip_mirrors_exactly_the_drawn_images():
    images = _batch((400, 1, 6, 7))
    module = RandomHorizontalFlip(0.5)
    flags = module.sample_flags(400, torch.Generator().manual_seed(2))
    out = module(images, torch.Generator().manual_seed(2))
    assert 150 < int(flags.sum()) < 250
    for i in range(400):
        assert torch.equal(out[i], images[i].flip(-1) if flags[i] else images[i])
    assert torch.equal(RandomHorizontalFlip(1.0)(images), images.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(images), images)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_flip_batch_sync_free_and_indexed_paths_agree(dtype, channels_last):
    """The ``torch.where`` path (used off the CPU, no device sync) equals the indexed one, format kept."""
    images = _batch((50, 3, 5, 9)).to(dtype)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    flags = torch.rand(50, generator=torch.Generator().manual_seed(4)) < 0.5
    indexed, where = flip_batch(images, flags, sync_free=False), flip_batch(images, flags, sync_free=True)
    expected = torch.stack([im.flip(-1) if f else im for im, f in zip(images, flags, strict=True)])
    assert torch.equal(indexed, expected) and torch.equal(where, expected)
    assert memory_format_of(where) == memory_format_of(indexed) == memory_format_of(images)
    assert torch.equal(flip_batch(images, torch.zeros(50, dtype=torch.bool), sync_free=True), images)


def test_seeded_generators_reproduce_and_differ():
    images = _batch((64, 3, 16, 16))
    module = RandomTranslate(4)
    a = module(images, torch.Generator().manual_seed(7))
    b = module(images, torch.Generator().manual_seed(7))
    c = module(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(3)
    d = module(images)
    torch.manual_seed(3)
    assert torch.equal(d, module(images))


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda: RandomTranslate(-1), "`max_shift`"),
        (lambda: RandomTranslate((1, 2, 3)), "`max_shift`"),
        (lambda: RandomTranslate(2, padding_mode="wrap"), "'wrap'"),
        (lambda: RandomTranslate(2, p=1.5), "`p`"),
        (lambda: RandomCrop(0), "`size`"),
        (lambda: RandomHorizontalFlip(-0.1), "`p`"),
        (lambda: ShiftFlipViews("five"), "`views` must be one of 'flip', 'ten', got 'five'"),
        (lambda: ShiftFlipViews("ten", shift=0), "`shift`"),
        (lambda: ShiftFlipViews("ten", padding_mode="wrap"), "'wrap'"),
    ],
)
def test_bad_arguments_name_the_argument(make, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        make()


def test_bad_inputs_are_value_errors():
    with pytest.raises(ValueError, match="reflect"):
        RandomTranslate(8, "reflect")(_batch((2, 1, 8, 8)))
    with pytest.raises(ValueError, match="larger than the images"):
        RandomCrop(40)(_batch((2, 1, 32, 32)))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RandomTranslate(1)(_batch((1, 8, 8)))


# ----------------------------------------------------------------- the protocol: draw the parameters, then apply them
PROTOCOL_CASES = [
    lambda: RandomTranslate(3, "zeros"),
    lambda: RandomTranslate((1, 4), "reflect", p=0.5),
    lambda: RandomTranslate(2, "replicate"),
    lambda: RandomCrop((20, 17)),
    lambda: CenterCrop(20),
    lambda: RandomHorizontalFlip(0.5),
]


@pytest.mark.parametrize("make", PROTOCOL_CASES, ids=lambda m: repr(m()))
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_is_apply_params_of_draw_params_and_windows_describe_the_output(make, channels_last):
    """``forward(X, g) = apply_params(X, draw_params(X.shape, g))``; cutting the ``windows`` (if any) is the same."""
    images = _batch((9, 3, 24, 21), channels_last=channels_last)
    module = make()
    out = module(images, torch.Generator().manual_seed(5))
    params = module.draw_params(images.shape, torch.Generator().manual_seed(5))
    assert torch.equal(module.apply_params(images, params), out)
    assert memory_format_of(out) == memory_format_of(images)
    windows = module.windows(params, images.shape)
    if isinstance(module, (RandomTranslate, RandomCrop)):  # the two window transforms
        assert torch.equal(cut_windows(images, windows), out)
    else:
        assert windows is None


def test_a_transform_needs_apply_params_or_windows():
    class Nothing(BatchTransform):
        pass

    with pytest.raises(NotImplementedError, match="Nothing must implement apply_params"):
        Nothing()(_batch((2, 1, 4, 4)))


# ----------------------------------------------------------------------------- test-time views
@pytest.mark.parametrize("channels_last", [False, True])
def test_shift_flip_views_move_every_pixel_by_one_and_mirror(channels_last):
    images = torch.randint(1, 256, (3, 2, 5, 6), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    views = ShiftFlipViews("ten")(images)
    assert views.shape == (3, 10, 2, 5, 6) and views.dtype == torch.uint8
    x = images
    assert torch.equal(views[:, 0], x)
    # up: row i shows row i + 1, the last row moved in from outside (zeros)
    assert torch.equal(views[:, 1, :, :-1], x[:, :, 1:]) and not views[:, 1, :, -1].any()
    assert torch.equal(views[:, 2, :, 1:], x[:, :, :-1]) and not views[:, 2, :, 0].any()  # down
    assert torch.equal(views[:, 3, :, :, :-1], x[:, :, :, 1:]) and not views[:, 3, :, :, -1].any()  # left
    assert torch.equal(views[:, 4, :, :, 1:], x[:, :, :, :-1]) and not views[:, 4, :, :, 0].any()  # right
    for v in range(5):
        assert torch.equal(views[:, 5 + v], views[:, v].flip(-1))
    flips = ShiftFlipViews("flip")(images)
    assert flips.shape == (3, 2, 2, 5, 6)
    assert torch.equal(flips[:, 0], x) and torch.equal(flips[:, 1], x.flip(-1))
    assert ShiftFlipViews("flip").views == 2 and ShiftFlipViews().views == 10


def test_shift_flip_views_fill_by_padding_mode_and_shift():
    images = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    views = ShiftFlipViews("ten", shift=2, padding_mode="replicate")(images)
    # moved 2 px right, the two columns moved in repeat the first column
    expected = torch.cat([images[..., :1], images[..., :1], images[..., :2]], dim=-1)
    assert torch.equal(views[:, 4], expected)
