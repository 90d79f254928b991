"""The serve page's behaviour without gradio (``imagefolder.serve.logic``) and the command's errors."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

import imagefolder as imf
from imagefolder.cli import main
from imagefolder.serve.logic import (InputError, Limits, ServeModel, class_names, editor_inputs, load_served_model,
                                     read_picture)


@pytest.fixture(scope="module")
def demo() -> ServeModel:
    return load_served_model(None, limits=Limits(max_images=6, max_side=300))


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal pictures up to one grey level (batched matmuls round differently)."""
    return int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_the_demo_model_comes_with_its_class_names_and_settings(demo):
    assert demo.class_names[:3] == ["circle", "crescent", "cross"] and len(demo.class_names) == 10
    assert demo.choices()[4] == ("4: hexagon", 4)
    assert (demo.defaults.cfg, demo.defaults.cfg_schedule, demo.defaults.top_k) == (3.0, "constant", 0)


def test_sample_gives_the_pictures_and_the_first_ones_scales(demo):
    imgs, steps = demo.sample(2, 3, demo.defaults)
    assert len(imgs) == 3 and all(i.shape == (256, 256, 3) and i.dtype == np.uint8 for i in imgs)
    assert [c for _, c in steps] == [f"scale {k + 1}: {pn}x{pn}" for k, pn in enumerate(demo.gen.patch_nums)]
    assert _close(steps[-1][0], imgs[0])  # every scale decoded: the sample itself
    assert not _close(steps[0][0], imgs[0])
    alone, _ = demo.sample(2, 1, demo.defaults)  # image i uses the stream (seed, i), whatever the count
    assert _close(alone[0], imgs[0])
    assert not _close(imgs[0], imgs[1])


@pytest.mark.parametrize("label, num, change, words", [
    (0, 7, {}, "number of images must be in 1..6"),
    (10, 1, {"seed": 0}, "class 10 is outside 0..9"),
    (None, 1, {}, "choose a class"),
    (0, 1, {"temperature": 0.0}, "temperature must be a number > 0"),
    (0, 1, {"top_p": 2.0}, r"top-p must be in \[0, 1\]"),
])
def test_bad_requests_are_messages(demo, label, num, change, words):
    from dataclasses import replace
    with pytest.raises(InputError, match=words):
        demo.sample(label, num, replace(demo.defaults, **change))


def test_edit_keeps_the_unpainted_region(demo):
    picture = demo.example_pictures(1)[0]
    nothing = np.zeros(picture.shape[:2], dtype=bool)
    shown = demo.edit(picture, nothing, 3, 2, demo.defaults)
    assert [c for _, c in shown] == ["picture", "reconstruction", "kept (bright)", "edit 1", "edit 2"]
    assert _close(shown[0][0], picture)  # the example is already at the model's size (enlarged)
    for img, _ in shown[3:]:
        assert _close(img, shown[1][0])  # nothing painted: every edit is the reconstruction
    everything = demo.edit(picture, ~nothing, 3, 2, demo.defaults)
    samples, _ = demo.sample(3, 2, demo.defaults)
    for (img, _), sample in zip(everything[3:], samples):
        assert _close(img, sample)  # everything painted: plain samples of the class, same streams
    flipped = demo.edit(picture, ~nothing, 3, 2, demo.defaults, keep_painted=True)
    assert all(_close(img, shown[1][0]) for img, _ in flipped[3:])
    half = nothing.copy()
    half[:, 128:] = True  # redraw the right half
    edits = demo.edit(picture, half, 3, 2, demo.defaults)
    kept_view = edits[2][0].astype(int)
    assert kept_view[:, :100].mean() > kept_view[:, 156:].mean()  # the kept (left) half is shown bright


def test_editor_value_gives_the_picture_and_the_painted_region():
    picture = np.full((40, 50, 4), 200, dtype=np.uint8)
    layer = np.zeros((40, 50, 4), dtype=np.uint8)
    layer[5:10, 20:30, 3] = 255
    got, painted = editor_inputs({"background": picture, "layers": [layer], "composite": picture}, Limits())
    assert got.shape == (40, 50, 3) and painted.sum() == 50 and painted[5:10, 20:30].all()
    for value, words in ((None, "upload or pick a picture first"), ({"background": None}, "upload or pick"),
                         ({"background": picture, "layers": [layer[:20]]}, "a painted layer is 50x20"),
                         ({"background": np.zeros((400, 10, 3), np.uint8)}, "at most 300 a side")):
        with pytest.raises(InputError, match=words):
            editor_inputs(value, Limits(max_side=300))


def test_uploads_are_read_or_refused_with_a_message(tmp_path):
    good, big, junk = tmp_path / "good.png", tmp_path / "big.png", tmp_path / "junk.png"
    Image.new("RGB", (30, 20), (10, 20, 30)).save(good)
    Image.new("RGB", (301, 20)).save(big)
    junk.write_bytes(b"not a picture")
    assert read_picture(good, Limits()).shape == (20, 30, 3)
    for path, words in ((None, "upload a picture first"), (big, "301x20 pixels; this page takes at most 300"),
                        (junk, "not a picture this page can read")):
        with pytest.raises(InputError, match=words) as e:
            read_picture(path, Limits(max_side=300))
        assert "\n" not in str(e.value)


def test_reconstruct_shows_every_scale(demo):
    picture = np.asarray(Image.new("RGB", (64, 48), (250, 30, 30)))
    shown = demo.reconstruct(picture)
    assert [c for _, c in shown][:2] == ["picture", "scale 1: 1x1"] and len(shown) == 1 + demo.scales


def test_class_names_come_from_a_file_the_checkpoint_or_ids(tmp_path, tiny_generator):
    gen_dir = imf.save_generator(tiny_generator, tmp_path / "gen")
    n = tiny_generator.num_classes
    assert class_names(tiny_generator, str(gen_dir)) == [f"class {i}" for i in range(n)]
    meta = json.loads((gen_dir / "config.json").read_text())
    (gen_dir / "config.json").write_text(json.dumps({**meta, "class_names": [f"c{i}" for i in range(n)]}))
    assert class_names(tiny_generator, str(gen_dir))[:2] == ["c0", "c1"]
    names = tmp_path / "names.txt"
    names.write_text("".join(f"name {i}\n" for i in range(n)))
    assert class_names(tiny_generator, "tiny", names)[-1] == f"name {n - 1}"
    names.write_text("one\ntwo\n")
    with pytest.raises(InputError, match=f"holds 2 class names; the generator has {n} classes"):
        class_names(tiny_generator, "tiny", names)


def test_serve_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["serve", "--max-images", "0"]) == 2
    assert "--max-images must be at least 1" in capsys.readouterr().err
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if gradio were not installed
    assert main(["serve", "--class-names", str(names)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'serve needs gradio, which is not installed: pip install -e ".[serve]"' in err
