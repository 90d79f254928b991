"""Image files (finding, reading, ADM center crop, errors) and the built-in picture set."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imagefolder.data import (CLASS_NAMES, ImageError, ImageFiles, builtin_images, builtin_names, center_crop_arr,
                              find_images, load_image, load_rgb, to_tensor, write_builtin_images)
from imagefolder.data.builtin import _draw_parameters, _render


def _save(path, arr_HWC, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr_HWC, dtype=np.uint8), mode).save(path)
    return path


# center crop ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wh", [(300, 200), (100, 300), (20, 30), (64, 64), (1000, 129)])
def test_center_crop_gives_a_square_of_the_requested_size(wh):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    out = center_crop_arr(img, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8


def test_center_crop_keeps_the_middle_of_a_wide_image():
    arr = np.zeros((64, 192, 3), dtype=np.uint8)
    arr[:, :64, 0] = 255    # red third, cut away
    arr[:, 64:128, 1] = 255  # green middle, kept
    arr[:, 128:, 2] = 255   # blue third, cut away
    out = center_crop_arr(Image.fromarray(arr), 64)
    assert (out[..., 1] == 255).all() and (out[..., [0, 2]] == 0).all()


def test_large_images_are_box_halved_before_the_bicubic_resize():
    # a one-pixel checkerboard: BOX halving averages it to flat grey, a direct bicubic resize would not
    arr = (np.indices((512, 512)).sum(0) % 2 * 255).astype(np.uint8)
    out = center_crop_arr(Image.fromarray(arr).convert("RGB"), 64).astype(int)
    assert out.min() >= 127 and out.max() <= 128


def test_to_tensor_maps_bytes_to_minus_one_one_channels_first():
    x = to_tensor(np.array([[[0, 255, 51]]], dtype=np.uint8))
    assert x.shape == (3, 1, 1) and x.dtype == torch.float32
    torch.testing.assert_close(x.flatten(), torch.tensor([-1.0, 1.0, -0.6]))


def test_load_image_converts_grey_and_alpha_images_to_rgb(tmp_path):
    grey = _save(tmp_path / "g.png", np.full((40, 50), 200))
    rgba = _save(tmp_path / "a.png", np.full((70, 70, 4), 100))
    for path in (grey, rgba):
        x = load_image(path, 32)
        assert x.shape == (3, 32, 32) and -1 <= x.min() and x.max() <= 1
    assert load_rgb(grey).mode == "RGB"


# finding files and errors -----------------------------------------------------------------------------------------
def test_find_images_is_recursive_sorted_and_filtered(tmp_path):
    for name in ["b/2.png", "a.JPG", "b/1.webp", "c/d/e.jpeg", ".hidden/x.png", "b/.y.png"]:
        img = Image.new("RGB", (8, 8))
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / name, format="PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    found = [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)]
    assert found == ["a.JPG", "b/1.webp", "b/2.png", "c/d/e.jpeg"]


def test_corrupt_and_truncated_files_raise_image_error_naming_the_file(tmp_path):
    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    good = _save(tmp_path / "good.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3)))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    for path in (garbage, truncated):
        with pytest.raises(ImageError, match="cannot read image") as e:
            load_image(path, 32)
        assert str(path) in str(e.value) and isinstance(e.value, ValueError)


def test_empty_folders_and_missing_paths(tmp_path):
    with pytest.raises(ImageError, match="no images found"):
        find_images(tmp_path)
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(ImageError, match=str(tmp_path)):
        find_images(tmp_path)
    with pytest.raises(FileNotFoundError):
        find_images(tmp_path / "missing")
    with pytest.raises(NotADirectoryError):
        find_images(tmp_path / "readme.txt")


def test_image_files_dataset(tmp_path):
    paths = [_save(tmp_path / f"{i}.png", np.full((30 + i, 40, 3), 10 * i)) for i in range(3)]
    ds = ImageFiles(paths, 16)
    assert len(ds) == 3
    torch.testing.assert_close(ds[2], torch.full((3, 16, 16), 20 / 127.5 - 1))


# built-in picture set ---------------------------------------------------------------------------------------------
def test_builtin_set_is_deterministic_and_prefix_stable():
    a, la = builtin_images(23, 32, seed=5)
    b, lb = builtin_images(23, 32, seed=5)
    assert a.shape == (23, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    np.testing.assert_array_equal(la, np.arange(23) % len(CLASS_NAMES))
    prefix, _ = builtin_images(7, 32, seed=5)
    np.testing.assert_array_equal(prefix, a[:7])
    other, _ = builtin_images(7, 32, seed=6)
    assert (np.abs(other.astype(int) - prefix).mean(axis=(1, 2, 3)) > 5).all()


def test_builtin_classes_draw_distinct_shapes():
    # the same colours and placement for every class: the pictures differ only by the shape
    params = np.repeat(_draw_parameters(0, 0)[None], len(CLASS_NAMES), axis=0)
    imgs = _render(np.arange(len(CLASS_NAMES)), params, 64).astype(float)
    diff = np.abs(imgs[:, None] - imgs[None]).mean(axis=(2, 3, 4))
    off_diagonal = diff[~np.eye(len(CLASS_NAMES), dtype=bool)]
    assert off_diagonal.min() > 1.0
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES) == 10


def test_builtin_pictures_have_a_foreground_and_smooth_edges():
    imgs, _ = builtin_images(10, 64, seed=0)
    for img in imgs:
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # gradient and anti-aliased edges, not two colours
        assert img.astype(float).std(axis=(0, 1)).max() > 10    # a visible shape


def test_write_builtin_images_uses_the_imagefolder_layout(tmp_path):
    paths = write_builtin_images(tmp_path, 12, size=24, seed=3)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == builtin_names(12)
    assert paths[0].relative_to(tmp_path).as_posix() == "circle/00000.png"
    assert paths[11].parent.name == CLASS_NAMES[1]
    imgs, _ = builtin_images(12, 24, seed=3)
    for path, img in zip(paths, imgs):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), img)


def test_one_conversion_to_8_bits_for_the_public_range():
    from imagefolder import metrics
    from imagefolder.data.images import to_tensor, to_uint8
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0 / 255, 1.0, 2.0]).view(1, 1, 1, 6)
    assert to_uint8(x).flatten().tolist() == [0, 0, 128, 128, 255, 255]
    assert to_uint8(torch.tensor([0.0, 0.5, 1.0]), low=0.0).tolist() == [0, 128, 255]
    assert metrics.to_uint8 is to_uint8  # the metrics read pictures through the same function
    every = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 16, 3)
    assert np.array_equal(to_uint8(to_tensor(every)).permute(1, 2, 0).numpy(), every)  # exact round trip
