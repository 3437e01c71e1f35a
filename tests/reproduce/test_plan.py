"""The plan of `vgg reproduce`: the paper's chain of runs (Sec. 3.1, App. A.1) and the evaluations of
Tables 3-6 and 8-9, as steps with their sources, in an order that trains every source first."""

import pytest

from vgg.reproduce import make_plan, parse_factor, preset_options
from vgg.reproduce.plan import Options


def by_name(plan):
    return {s.name: s for s in plan}


def test_the_tiny_plan_is_the_papers_chain(tmp_path):
    plan = make_plan(preset_options("tiny"), tmp_path)
    steps = by_name(plan)
    train = [s.name for s in plan if s.kind == "train"]
    assert train == ["A-S256", "A-LRN-S256", "B-S256", "C-S256", "D-S256", "E-S256",
                     "C-S384", "D-S384", "E-S384", "C-jitter", "D-jitter", "E-jitter",
                     "loc-cls-S256", "loc-cls-S384", "loc-scr-fc-S256", "loc-pcr-fc-S256",
                     "loc-pcr-all-S256", "loc-pcr-all-S384"]
    # A and A-LRN from random weights; B ... E from A by the net-A transfer (Sec. 3.1)
    for name in ("A-S256", "A-LRN-S256"):
        assert steps[name].sources == () and "init_from" not in steps[name].config
        assert "init_from_shallow" not in steps[name].config
    for net in "BCDE":
        s = steps[f"{net}-S256"]
        assert s.sources == ("A-S256",) and s.config["init_from_shallow"] == str(tmp_path / "A-S256")
        assert s.config["arch"] == net and s.config["scale"] == [37, 37]
    lr = steps["A-S256"].config["lr"]
    # S = 384 from S = 256, jittered from S = 384, both at lr / 10
    for net in "CDE":
        s384, jit = steps[f"{net}-S384"], steps[f"{net}-jitter"]
        assert s384.sources == (f"{net}-S256",) and s384.config["init_from"] == str(tmp_path / f"{net}-S256")
        assert jit.sources == (f"{net}-S384",) and jit.config["init_from"] == str(tmp_path / f"{net}-S384")
        assert s384.config["scale"] == [55, 55] and jit.config["scale"] == [37, 73]
        assert s384.config["lr"] == pytest.approx(lr / 10) == jit.config["lr"]
    # localisation: classifiers of the boxed data from D at each scale, then the nets of Table 8 / 9
    assert steps["loc-cls-S256"].sources == ("D-S256",) and steps["loc-cls-S384"].sources == ("D-S384",)
    assert steps["loc-cls-S256"].config["data"] == "fashion-mnist-loc"
    for name, head, layers in (("loc-scr-fc-S256", "scr", "fc"), ("loc-pcr-fc-S256", "pcr", "fc"),
                               ("loc-pcr-all-S256", "pcr", "all")):
        c = steps[name].config
        assert (c["task"], c["head"], c["finetune"]) == ("localization", head, layers)
        assert steps[name].sources == ("loc-cls-S256",) and c["init_from"] == str(tmp_path / "loc-cls-S256")
    assert steps["loc-pcr-all-S384"].sources == ("loc-cls-S384",)
    # every step comes after what it starts from or evaluates
    seen = set()
    for s in plan:
        assert set(s.sources) <= seen, f"{s.name} runs before {set(s.sources) - seen}"
        seen.add(s.name)
    # every run has its own folder under DIR
    assert all(s.config["output"] == str(tmp_path / s.name) for s in plan if s.kind == "train")


def test_the_evaluations_of_each_table(tmp_path):
    plan = make_plan(preset_options("tiny"), tmp_path)
    steps = by_name(plan)
    for net in ("A", "A-LRN", "B", "C", "D", "E"):
        call, = steps[f"eval-{net}-S256"].calls
        assert call["checkpoints"] == [str(tmp_path / f"{net}-S256")]
        assert call["protocols"] == ["dense"] and call["breakdown"]  # one and three scales
        assert call["split"] == "test" and call["limit"] == 48
    fusion, = steps["eval-fusion"].calls  # Tables 5 and 6: D and E jittered
    assert steps["eval-fusion"].sources == ("D-jitter", "E-jitter")
    assert fusion["protocols"] == ["dense", "multi-crop", "dense+multi-crop"] and fusion["breakdown"]
    centre = steps["eval-loc-centre"].calls
    assert [c["name"] for c in centre] == ["loc-scr-fc-S256", "loc-pcr-fc-S256", "loc-pcr-all-S256"]
    assert all(c["gt_class"] and c["protocols"] == ["centre"] for c in centre)
    dense = {c["name"]: c for c in steps["eval-loc-dense"].calls}
    assert dense["fusion-dense-3"]["checkpoints"] == [str(tmp_path / "loc-pcr-all-S256"),
                                                      str(tmp_path / "loc-pcr-all-S384")]
    assert dense["loc-pcr-all-S256-dense-1"]["single_scale"]
    assert all(c["classifiers"] == [str(tmp_path / "loc-cls-S256"), str(tmp_path / "loc-cls-S384")]
               for c in dense.values())


def test_nets_and_tables_choose_the_runs_they_need(tmp_path):
    plan = make_plan(preset_options("tiny", nets=("A", "D"), tables=("3",)), tmp_path)
    assert [s.name for s in plan] == ["A-S256", "D-S256", "D-S384", "D-jitter", "eval-A-S256", "eval-D-S256",
                                      "eval-D-S384", "eval-D-jitter"]
    # Table 8 alone: D at S = 256 (from A), its classifier of the boxed data, the three nets compared
    plan = make_plan(preset_options("tiny", tables=("8",)), tmp_path)
    assert [s.name for s in plan] == ["A-S256", "D-S256", "loc-cls-S256", "loc-scr-fc-S256",
                                      "loc-pcr-fc-S256", "loc-pcr-all-S256", "eval-loc-centre"]
    # without A the deeper nets start from random weights
    plan = by_name(make_plan(preset_options("tiny", nets=("D",), tables=("3",)), tmp_path))
    assert plan["D-S256"].sources == () and "init_from_shallow" not in plan["D-S256"].config
    # a folder with boxes is its own localisation data: the nets start from the classifiers
    plan = by_name(make_plan(preset_options("tiny", data=str(tmp_path), tables=("8",)), tmp_path))
    assert "loc-cls-S256" not in plan and plan["loc-pcr-all-S256"].sources == ("D-S256",)


def test_scales_follow_the_factor():
    assert parse_factor("32/224") == pytest.approx(1 / 7)
    o = Options(data="fashion-mnist", crop_size=32, scale_factor=parse_factor("32/224"))
    assert [o.paper_scale(s) for s in (256, 384, 512)] == [37, 55, 73]
    assert Options(crop_size=64).paper_scale(256) == 73  # default: crop / 224
    assert Options().paper_scale(384) == 384
    with pytest.raises(ValueError, match="smaller than the crop"):
        Options(crop_size=32, scale_factor=0.1)
    with pytest.raises(ValueError, match="unknown table '7'"):
        Options(tables=("7",))
    with pytest.raises(ValueError, match="unknown preset"):
        preset_options("imagenet-in-a-minute")
    with pytest.raises(ValueError, match="fraction"):
        parse_factor("a/b")


def test_the_fashion_mnist_preset(tmp_path):
    o = preset_options("fashion-mnist")
    plan = make_plan(o, tmp_path)
    assert len([s for s in plan if s.kind == "train"]) == 18
    assert by_name(plan)["D-jitter"].config["scale"] == [37, 73]
    assert o.epochs >= 3 and o.batch_norm
    # At crop 32 Caffe's rounding costs ~20 points (README, Pooling): the preset pools as PyTorch, in
    # the validation of every training step and in every evaluation.
    assert all(s.config["floor_pooling"] for s in plan if s.kind == "train")
    calls = [c for s in plan for c in s.calls]
    assert calls and not any(c["ceil_mode"] for c in calls)
    caffe = make_plan(preset_options("fashion-mnist", floor_pooling=False), tmp_path)
    assert all(c["ceil_mode"] for s in caffe for c in s.calls)
    assert not any(s.config["floor_pooling"] for s in caffe if s.kind == "train")


def test_plan_command_prints_steps_sources_and_estimates(tmp_path, capsys):
    from vgg.cli import main

    assert main(["reproduce", "--preset", "tiny", "--output", str(tmp_path), "--plan", "--nets", "A", "B",
                 "--tables", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line[:3].strip().rstrip(".").isdigit()]
    assert [line.split()[1] for line in lines] == ["A-S256", "B-S256", "eval-A-S256", "eval-B-S256"]
    assert "<- random weights" in lines[0] and "<- A-S256" in lines[1]
    assert all("~" in line for line in lines) and "estimated total" in out
    assert not any(tmp_path.iterdir())  # --plan runs nothing
