"""A tiny `vgg reproduce` from a clean folder (nets A, D, E on a few hundred images, every table):
REPORT.md holds every table with our numbers as the JSON says them, the paper's beside them, the
pictures, and a verdict on each of the paper's conclusions; the same command again reruns nothing."""

import json
import re
from pathlib import Path

import pytest

from vgg.reproduce import paper

TABLES = ["Table 3", "Table 4", "Table 5", "Table 6", "Table 8", "Table 9"]


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    import torch

    from vgg.cli import main

    out = tmp_path_factory.mktemp("reproduce") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["reproduce", "--preset", "tiny", "--nets", "A", "D", "E", "--output", str(out),
                     "--device", "cpu", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def section(report: str, title: str) -> str:
    start = report.index(f"## {title}")
    end = report.find("\n## ", start + 3)
    return report[start:end if end > 0 else None]


def linked_numbers(text: str) -> list[tuple[str, str]]:
    """[(shown numbers, JSON path)] of every linked figure."""
    return re.findall(r"\[([\d.]+(?: / [\d.]+)?)\]\(([^)]+\.json)\)", text)


def test_every_table_is_written_with_the_papers_numbers(reproduced):
    report = (reproduced / "REPORT.md").read_text()
    for title in TABLES:
        assert f"## {title}" in report
    assert "not run" not in report
    t3 = section(report, "Table 3")
    for net, scale in (("A", "256"), ("D", "jitter"), ("E", "384")):
        a, b = paper.TABLE3[(net, scale)]
        assert f"{a:.1f} / {b:.1f}" in t3
    assert "24.4 / 7.2" in section(report, "Table 5") and "23.7 / 6.8" in section(report, "Table 6")
    assert "33.1" in section(report, "Table 8")
    rows = {title: len(linked_numbers(section(report, title))) for title in TABLES}
    # A-S256, D and E at three training scales; 2 nets x 3 protocols; 3 fusions; 3 nets; 7 evaluations
    assert rows == {"Table 3": 7, "Table 4": 7, "Table 5": 6, "Table 6": 3, "Table 8": 3, "Table 9": 7}


def test_every_figure_is_the_number_of_its_json(reproduced):
    report = (reproduced / "REPORT.md").read_text()
    one = json.loads((reproduced / "eval-A-S256" / "dense.json").read_text())
    assert f"[{one[0]['top1_error']:.2f} / {one[0]['top5_error']:.2f}](eval-A-S256/dense.json)" in \
        section(report, "Table 3")  # one test scale
    assert f"[{one[-1]['top1_error']:.2f} / {one[-1]['top5_error']:.2f}](eval-A-S256/dense.json)" in \
        section(report, "Table 4")  # three
    assert len(one[0]["scales"]) == 1 and len(one[-1]["scales"]) == 3
    for title in TABLES:
        for shown, path in linked_numbers(section(report, title)):
            data = json.loads((reproduced / path).read_text())
            rows = data if isinstance(data, list) else [data]
            values = [f"{r[k]:.2f}" for r in rows for k in r if "error" in k and isinstance(r[k], float)]
            assert all(v in values for v in shown.split(" / ")), f"{title}: {shown} is not in {path}"
    fused = json.loads((reproduced / "eval-fusion" / "protocols.json").read_text())
    both = next(r for r in fused if len(r["nets"]) == 2 and r["protocol"] == "dense+multi-crop")
    assert f"{both['top1_error']:.2f} / {both['top5_error']:.2f}" in \
        section(report, "Table 6").split("multi-crop & dense")[1]
    # Table 5: each net alone at its three test scales (Sec. 4.3), not at its one
    d_both = next(r for r in fused if len(r["nets"]) == 1 and r["protocol"] == "dense+multi-crop"
                  and Path(r["nets"][0]["checkpoint"]).name == "D-jitter" and len(r["scales"]) == 3)
    d_line = next(line for line in section(report, "Table 5").splitlines()
                  if "| D-jitter | multi-crop & dense" in line)
    assert f"{d_both['top1_error']:.2f} / {d_both['top5_error']:.2f}" in d_line
    centre = json.loads((reproduced / "eval-loc-centre" / "loc-pcr-fc-S256.json").read_text())
    pcr_fc = next(line for line in section(report, "Table 8").splitlines() if "FC | PCR" in line)
    assert f"{centre['localization_error_gt_class']:.2f}" in pcr_fc


def test_the_pictures_and_the_runs(reproduced):
    report = (reproduced / "REPORT.md").read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert sorted(Path(p).name for p in pictures) == ["boxes.png", "curves.png", "error_vs_depth.png",
                                                      "scoremaps.png"]
    for p in pictures:
        assert (reproduced / p).stat().st_size > 1000
    assert len(list((reproduced / "figures" / "scoremaps").glob("*.png"))) == 6
    curves = re.findall(r"\[curves\]\(([^)]+)\)", report)
    assert len(curves) == 13 and all((reproduced / c).is_file() for c in curves)  # every training run
    assert "- Command: `vgg reproduce --output" in report and "- Machine:" in report


def test_each_conclusion_has_a_verdict(reproduced):
    holds = section((reproduced / "REPORT.md").read_text(), "What holds")
    lines = [line for line in holds.splitlines() if line.startswith("- ")]
    assert len(lines) == 12
    missing = [line for line in lines if "**not measured**" in line]
    # without A-LRN and C, these two cannot be measured; every other one is
    assert len(missing) == 2 and "LRN" in missing[0] and "C (1x1 convs)" in missing[1]
    assert all(re.search(r"\*\*(holds|does not hold)\*\*", line) for line in lines if line not in missing)


def test_the_same_command_again_keeps_every_step(reproduced, capsys):
    from vgg.cli import main

    before = {p: p.stat().st_mtime_ns for p in reproduced.glob("*/step.json")}
    assert main(["reproduce", "--preset", "tiny", "--nets", "A", "D", "E", "--output", str(reproduced),
                 "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("[")]
    assert steps and all(line.endswith("kept") for line in steps)
    assert {p: p.stat().st_mtime_ns for p in reproduced.glob("*/step.json")} == before
