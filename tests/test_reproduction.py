"""The reproduction script's quick path on a tiny generated colour folder: trains the shared
tokenizer and two seeds per mask, runs every sweep, and writes tables with seeds and spreads."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, cli_env
from PIL import Image


def _colour_folder(root, classes=3, per_class=12, size=24):
    rng = np.random.default_rng(0)
    colours = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 200, 20)]
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            image = np.full((size, size, 3), 255, np.uint8)
            y, x = rng.integers(0, size // 2, 2)
            image[y:y + size // 2, x:x + size // 2] = colours[c]
            Image.fromarray(image).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.slow
def test_quick_reproduction_reports_seeds_and_spreads(tmp_path):
    data = _colour_folder(tmp_path / "colours")
    workdir = tmp_path / "repro"
    done = subprocess.run([sys.executable, "benchmarks/reproduction.py", "--quick",
                           f"--data_root={data}", f"--workdir={workdir}"], cwd=REPO_ROOT,
                          env=cli_env(), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["seeds"] == [0, 1] and results["metric"] == "fid_colours"
    assert results["data"]["classes"] == ["class0", "class1", "class2"]
    held_out = sorted((workdir / "data" / "colours_test").rglob("*.png"))
    assert len(held_out) == 3 * 2  # every tenth image of each class (images 0 and 10)
    for mask in ("var", "markov"):
        summary = results["summary"][mask]
        assert summary["nll"]["seeds"] == 2 and len(summary["nll"]["per_scale"]) == 3
        assert {(row["schedule"], row["cfg"]) for row in summary["cfg"]} == {
            ("linear", 0.0), ("linear", 3.0), ("constant", 0.0), ("constant", 3.0)}
        mr = {(row["threshold"], row["iterations"]): row for row in summary["mr"]}
        assert set(mr) == {(0.0, 0), (0.05, 2)}
        for row in summary["cfg"] + summary["mr"]:
            mean, std = row["fid_colours"]
            assert row["seeds"] == 2 and np.isfinite(mean) and std >= 0
        redrawn = mr[(0.05, 2)]["redrawn_per_scale"]
        assert len(redrawn) == 3 and all(0 <= mean <= 2 for mean, _ in redrawn)
    models = {(r["mask"], r["seed"]) for r in results["records"] if r["sweep"] != "real"}
    assert models == {("var", 0), ("var", 1), ("markov", 0), ("markov", 1)}
    real = results["real_held_out"]  # the held-out images scored like samples: the floor
    assert real["images"] == len(held_out) and np.isfinite(real["fid_colours"])
    assert 0 <= real["class_accuracy"] <= 1
    table = (workdir / "results.md").read_text()
    assert "±" in table and "Masked resampling, markov" in table
    assert f"Held-out real images ({len(held_out)})" in table
    assert (workdir / "plots" / "nll_and_cfg.png").is_file()
    assert (workdir / "plots" / "mr_sweep.png").is_file()
    saved = {json.loads((workdir / f"{mask}_seed0" / "model" / "model_config.json").read_text())
             ["transformer"]["mask"] for mask in ("var", "markov")}
    assert saved == {"var", "markov"}

    # the editing benchmark on the same models (reused, not retrained): scores per seed, spreads
    # and the example picture
    tasks = "inpaint_center,outpaint_left,super_resolution_2x"
    done = subprocess.run([sys.executable, "benchmarks/editing.py", "--reproduction", "--quick",
                           f"--data_root={data}", f"--workdir={workdir}", f"--tasks={tasks}",
                           "--examples=2"], cwd=REPO_ROOT, env=cli_env(), capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    edits = json.loads(done.stdout)
    assert edits["seeds"] == [0, 1]
    for mask in ("var", "markov"):
        for seed in (0, 1):
            report = edits["reports"][mask][str(seed)]
            assert set(report) == {"reconstruction", *tasks.split(",")}
            assert report["inpaint_center"]["images"] == len(held_out)
            assert 0 < report["super_resolution_2x"]["input_psnr"] <= 100
            assert np.isfinite(report["outpaint_left"]["generated_psnr"])
        mean, std = edits["summary"][mask]["inpaint_center"]["known_psnr"]
        assert np.isfinite(mean) and std >= 0
    assert "known_psnr" in (workdir / "editing.md").read_text()
    model = json.loads((workdir / "var_seed0" / "model" / "model_config.json").read_text())
    side = model["patch_nums"][-1] * 2 ** (len(model["tokenizer"]["ch_mult"]) - 1)
    picture = Image.open(workdir / "editing.png")  # 2 rows; truth + 3 tasks x (given, 2 masks)
    tile = (picture.width + 2) // 10 - 2  # images enlarged a whole number of times, to >= 64 px
    assert picture.width == 10 * (tile + 2) - 2 and tile % side == 0 and 64 <= tile < 64 + side
    assert picture.height > 2 * (tile + 2) - 2
