"""The paper's experiments as data: the chain of training runs and the test protocols of Tables 3-6
and 8-9, each a :class:`Step` (an ordinary ``vgg train`` or ``vgg evaluate`` run) with what it starts
from; sized by :class:`Options` (a preset and flags).

The chain (Sec. 3.1, App. A.1): net A and A-LRN from random weights at S = 256; B ... E at S = 256
from A (the net-A transfer: A's first four convs and its FC layers); C, D, E at S = 384 from their
S = 256 nets at lr / 10; C, D, E with S jittered in [256, 512] from their S = 384 nets at lr / 10;
localisation nets (SCR / PCR, FC layers only or all layers) from the classification nets of the
same scale, at lr 1e-3. Scales are the paper's times ``scale_factor`` (32/224 for 28-pixel images:
256 -> 37, 384 -> 55, 512 -> 73).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..models import CONFIGS, parse_arch

NETS = ("A", "A-LRN", "B", "C", "D", "E")  # Table 1's columns, in the paper's order
TABLES = ("3", "4", "5", "6", "8", "9")
FINE_TUNED = ("C", "D", "E")  # the nets trained at S = 384 and with jittered S (Table 3)
TRAIN_SCALES = ("256", "384", "jitter")  # the paper's training scales, as its rows name them
WEIGHT_LAYERS = {"A": 11, "A-LRN": 11, "B": 13, "C": 16, "D": 16, "E": 19}  # Table 1


@dataclass
class Options:
    """How much of the paper to run and at what size; the defaults are the paper's (ImageNet at crop
    224, 74 epochs). ``epochs`` is for the nets trained from random weights or from A;
    ``finetune_epochs`` for those fine-tuned from another net (S = 384, jittered S, the localisation
    classifiers); ``loc_epochs`` for the localisation nets. ``train`` holds further TrainConfig values
    for every classification run (e.g. ``lr_patience``), ``loc_train`` for the localisation runs."""

    data: str = "data/imagenet"
    loc_data: str | None = None  # data with boxes; default: fashion-mnist-loc for fashion-mnist, else data
    scale_factor: float | None = None  # the paper's S times this; default crop_size / 224
    crop_size: int = 224
    width: float = 1.0
    batch_norm: bool = False
    init: str = "normal"
    epochs: int = 74
    finetune_epochs: int | None = None
    loc_epochs: int | None = None
    batch_size: int = 256
    lr: float = 0.01
    loc_lr: float = 1e-3  # App. A.1
    limit: int | None = None  # training and val images of each split (the first N)
    loc_limit: int | None = None
    eval_limit: int | None = None  # test images of each evaluation
    loc_eval_limit: int | None = None  # ... of each localisation evaluation (default eval_limit)
    split: str | None = None  # the evaluations' split: test where the data has one, else val
    eval_batch_size: int = 64
    floor_pooling: bool = False  # PyTorch's rounding in dense views (validation, evaluation), not Caffe's
    nets: tuple[str, ...] = NETS
    tables: tuple[str, ...] = TABLES
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    progress: bool = True
    train: dict = field(default_factory=dict)
    loc_train: dict = field(default_factory=dict)

    def __post_init__(self):
        self.nets = tuple(canonical_net(n) for n in self.nets)
        self.tables = tuple(str(t) for t in self.tables)
        problems = [f"unknown table {t!r}; the tables are {', '.join(TABLES)}" for t in self.tables
                    if t not in TABLES]
        if not self.nets:
            problems.append("give at least one net")
        if self.scale_factor is not None and self.scale_factor <= 0:
            problems.append(f"scale_factor must be positive, got {self.scale_factor}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.split not in (None, "val", "test"):
            problems.append(f"split must be val or test, got {self.split!r}")
        if self.paper_scale(256) < self.crop_size:
            problems.append(f"S = 256 x {self.factor():.4g} = {self.paper_scale(256)} is smaller than the "
                            f"crop {self.crop_size}: raise --scale-factor")
        if problems:
            raise ValueError("; ".join(problems))

    def factor(self) -> float:
        return self.scale_factor if self.scale_factor is not None else self.crop_size / 224

    def paper_scale(self, s: int) -> int:
        """The paper's S (256, 384, 512) at this size."""
        return int(math.floor(s * self.factor() + 0.5))

    def localization_data(self) -> str:
        if self.loc_data:
            return self.loc_data
        fm = self.data.lower().replace("_", "-") in ("fashion-mnist", "fashionmnist")
        return "fashion-mnist-loc" if fm else self.data


def canonical_net(name: str) -> str:
    """A net of Table 1 by its letter (``a-lrn`` -> ``A-LRN``, ``vgg16`` -> ``D``)."""
    config, bn = parse_arch(str(name))
    if bn:
        raise ValueError(f"name the nets by their configuration ({name!r}): BatchNorm is --batch-norm")
    return config


def parse_factor(text: str) -> float:
    """``32/224`` or ``0.143`` as a number."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"scale factor must be a number or a fraction like 32/224, got {text!r}") from None


# -- presets ------------------------------------------------------------------------------------------

# Each preset is Options' values; flags override them. "fashion-mnist": trained nets (10 epochs of the
# 55,000 training images from scratch, 5 more per fine-tuning; all 10,000 test images) within two
# hours on an idle 2-core CPU (measured in docs/reproduction/); "tiny": seconds per step, for the tests.
PRESETS: dict[str, dict] = {
    "paper": {},
    "fashion-mnist": dict(
        data="fashion-mnist", crop_size=32, width=0.25, batch_norm=True, init="glorot", epochs=10,
        finetune_epochs=5, loc_epochs=5, batch_size=128, lr=0.05, loc_lr=5e-3, loc_limit=20000,
        loc_eval_limit=2000, eval_batch_size=500,
        # PyTorch's pooling, as the demo: at crop 32 Caffe's extra score-map positions see 2-5 px strips
        # and weigh as much as the whole ones (README, Pooling: ~20 points of val accuracy).
        floor_pooling=True,
        train=dict(lr_patience=1, lr_threshold=0.1), loc_train=dict(dropout=0.0, lr_patience=1)),
    "tiny": dict(
        data="fashion-mnist", crop_size=32, width=0.125, batch_norm=True, init="glorot", epochs=1,
        finetune_epochs=1, loc_epochs=1, batch_size=16, lr=0.01, loc_lr=5e-3, limit=128,
        loc_limit=96, eval_limit=48, eval_batch_size=64,
        train=dict(lighting_std=0.0), loc_train=dict(dropout=0.0, lighting_std=0.0)),
}


def preset_options(name: str | None, **flags) -> Options:
    """The preset's options with ``flags`` (those not None) over them."""
    if name is not None and name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {', '.join(PRESETS)}")
    values = {**PRESETS.get(name or "paper", {})}
    for key, value in flags.items():
        if value is None:
            continue
        if key in ("train", "loc_train"):
            values[key] = {**values.get(key, {}), **value}
        else:
            values[key] = value
    known = {f.name for f in dataclasses.fields(Options)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown options {', '.join(unknown)}")
    return Options(**values)


# -- steps --------------------------------------------------------------------------------------------

@dataclass
class Step:
    """One run of the plan: ``kind`` "train" (``config``: TrainConfig's values, output included) or
    "evaluate" (``calls``: one evaluation each, its JSON named by ``"name"``). ``sources`` are the
    steps it starts from or evaluates; ``tables`` the tables its numbers go to."""

    name: str
    kind: str
    label: str
    tables: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    config: dict = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)
    net: str = ""  # classification and localisation runs: the configuration (A ... E)
    train_scale: str = ""  # "256", "384" or "jitter"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def train_name(net: str, scale: str) -> str:
    return f"{net}-{'jitter' if scale == 'jitter' else 'S' + scale}"


def make_plan(options: Options, out: str | Path) -> list[Step]:
    """The steps, in an order where every step comes after those it starts from."""
    out = Path(out)
    o = options
    need_loc = bool({"8", "9"} & set(o.tables))
    need_cls = bool({"3", "4", "5", "6"} & set(o.tables))
    s256, s384, s512 = (o.paper_scale(s) for s in (256, 384, 512))
    scales = {"256": [s256, s256], "384": [s384, s384], "jitter": [s256, s512]}
    ft_epochs = o.finetune_epochs or o.epochs
    common = dict(data=o.data, width=o.width, batch_norm=o.batch_norm, crop_size=o.crop_size,
                  batch_size=o.batch_size, limit=o.limit, **run_common(o), **o.train)

    # Which classification runs: what the tables show, and what they start from.
    base = loc_base(o.nets)
    wanted: list[tuple[str, str]] = []
    if need_cls:
        wanted += [(n, "256") for n in o.nets]
        wanted += [(n, s) for s in ("384", "jitter") for n in o.nets if n in FINE_TUNED]
    if need_loc:
        wanted += [(base, "256")] + ([(base, "384")] if "9" in o.tables else [])
    runs = close_over_sources(wanted, o.nets)

    steps: list[Step] = []
    for net, scale in runs:
        name, sources, values = train_name(net, scale), (), {}
        if scale == "256":
            if net not in ("A", "A-LRN") and "A" in o.nets:
                sources = ("A-S256",)
                values = dict(init_from_shallow=str(out / "A-S256"))
            values.update(init=o.init, lr=o.lr, epochs=o.epochs)
        else:
            source = train_name(net, "256" if scale == "384" else "384")
            sources = (source,)
            values = dict(init_from=str(out / source), lr=o.lr / 10, epochs=ft_epochs)
        how = {"256": "S = 256", "384": "S = 384", "jitter": "S in [256, 512]"}[scale]
        steps.append(Step(name, "train", f"net {net}, {how} (ours {scales[scale][0]}"
                          + (f"-{scales[scale][1]})" if scale == "jitter" else ")"),
                          tables=("3", "4") if need_cls else (), sources=sources,
                          config={**common, "arch": net, "scale": scales[scale], **values,
                                  "output": str(out / name)},
                          net=net, train_scale=scale))
    classifiers = [s for s in steps if (s.net, s.train_scale) in set(wanted) and need_cls]
    steps += evaluation_steps(o, out, classifiers)
    if need_loc:
        steps += localization_steps(o, out, base, steps)
    return steps


def run_common(o: Options) -> dict:
    """The settings every training step of the plan takes from the options alike."""
    return dict(seed=o.seed, device=o.device, workers=o.workers, progress=o.progress,
                floor_pooling=o.floor_pooling)


def loc_base(nets: tuple[str, ...]) -> str:
    """The localisation nets' configuration: D (App. A.1), else the deepest net asked for."""
    return "D" if "D" in nets else max(nets, key=lambda n: (WEIGHT_LAYERS[n], list(CONFIGS).index(n)))


def close_over_sources(wanted: list[tuple[str, str]], nets: tuple[str, ...]) -> list[tuple[str, str]]:
    """``wanted`` with every run they start from, in training order (all S = 256 nets, A first; then
    S = 384; then jittered), each once."""
    need = set(wanted)
    for net, scale in list(need):
        if scale == "jitter":
            need |= {(net, "384"), (net, "256")}
        elif scale == "384":
            need.add((net, "256"))
    if any(s == "256" and n not in ("A", "A-LRN") for n, s in need) and "A" in nets:
        need.add(("A", "256"))
    order = {n: i for i, n in enumerate(NETS)}
    return sorted(need, key=lambda r: (TRAIN_SCALES.index(r[1]), order[r[0]]))


def eval_split(o: Options, data: str) -> str:
    """The split the tables are measured on: ``o.split``, else test where the data has one (Fashion-MNIST
    and its cluttered version do; a folder if it holds test/), else val (as the paper's ILSVRC val)."""
    if o.split:
        return o.split
    name = data.lower().replace("_", "-")
    if name.startswith("fashion-mnist") or name.startswith("fashionmnist"):
        return "test"
    return "test" if (Path(data) / "test").is_dir() else "val"


def eval_common(o: Options, data: str, limit: int | None = None) -> dict:
    return dict(data=data, split=eval_split(o, data), limit=limit or o.eval_limit,
                batch_size=o.eval_batch_size, workers=o.workers, device=o.device, progress=o.progress,
                ceil_mode=not o.floor_pooling)


def evaluation_steps(o: Options, out: Path, classifiers: list[Step]) -> list[Step]:
    """Tables 3 and 4: every net at its one test scale and at three (dense, Sec. 4.1-4.2); Tables 5
    and 6: the two deepest jittered nets (the paper's D and E) under dense, multi-crop and both, and
    their fusion (Sec. 4.3-4.4)."""
    steps = []
    common = eval_common(o, o.data)
    if {"3", "4"} & set(o.tables):
        for s in classifiers:
            steps.append(Step(f"eval-{s.name}", "evaluate", f"{s.name}: dense, one and three test scales",
                              tables=("3", "4"), sources=(s.name,), net=s.net, train_scale=s.train_scale,
                              calls=[dict(name="dense", task="classification",
                                          checkpoints=[s.config["output"]], protocols=["dense"],
                                          breakdown=True, **common)]))
    if {"5", "6"} & set(o.tables):
        best = fusion_pair(classifiers)
        if best:
            steps.append(Step("eval-fusion", "evaluate", f"{' and '.join(s.name for s in best)}: dense, "
                              "multi-crop, both; their fusion", tables=("5", "6"),
                              sources=tuple(s.name for s in best),
                              calls=[dict(name="protocols", task="classification",
                                          checkpoints=[s.config["output"] for s in best],
                                          protocols=["dense", "multi-crop", "dense+multi-crop"],
                                          breakdown=True, **common)]))
    return steps


def fusion_pair(classifiers: list[Step]) -> list[Step]:
    """Table 6 fuses D and E with jittered S; generally, the two deepest nets of the best-trained
    kind there is (jittered, else S = 384, else S = 256)."""
    for scale in ("jitter", "384", "256"):
        kind = [s for s in classifiers if s.train_scale == scale]
        if kind:
            kind.sort(key=lambda s: (WEIGHT_LAYERS[s.net], NETS.index(s.net)))
            return kind[-2:]
    return []


# App. A.1 / Table 8: the variants compared (regression, fine-tuned layers); Table 9: PCR, all layers.
LOC_VARIANTS = (("scr", "fc"), ("pcr", "fc"), ("pcr", "all"))


def localization_steps(o: Options, out: Path, base: str, steps: list[Step]) -> list[Step]:
    """Tables 8 and 9. On data other than the localisation data's, each classification net is first
    fine-tuned as a classifier of the localisation data (same configuration and scale); those
    classifiers start the localisation nets and rank their boxes."""
    data = o.localization_data()
    own = data == o.data
    loc_scales = {"256": o.paper_scale(256), "384": o.paper_scale(384)}
    scales = ["256"] + (["384"] if "9" in o.tables else [])
    ft_epochs = o.finetune_epochs or o.epochs
    result, starts = [], {}
    for scale in scales:
        cls = train_name(base, scale)
        if own:
            starts[scale] = cls
            continue
        name = f"loc-cls-S{scale}"
        result.append(Step(name, "train", f"classifier of {data} from {cls}, S = {scale}", tables=("8", "9"),
                           sources=(cls,), net=base, train_scale=scale,
                           config=dict(data=data, init_from=str(out / cls), arch=base,
                                       batch_norm=o.batch_norm, width=o.width, crop_size=o.crop_size,
                                       scale=[loc_scales[scale]] * 2,
                                       lr=o.lr / 10, epochs=ft_epochs, batch_size=o.batch_size,
                                       limit=o.loc_limit, **run_common(o), output=str(out / name),
                                       **o.train)))
        starts[scale] = name
    variants = [(h, f, "256") for h, f in LOC_VARIANTS] if "8" in o.tables else []
    if "9" in o.tables:
        variants += [v for v in (("pcr", "all", "256"), ("pcr", "all", "384")) if v not in variants]
    loc = {}
    for head, finetune, scale in variants:
        name = f"loc-{head}-{finetune}-S{scale}"
        layers = "all layers" if finetune == "all" else "FC layers only"
        result.append(Step(name, "train", f"{head.upper()} localisation net, {layers}, S = {scale}",
                           tables=("8", "9"), sources=(starts[scale],), net=base, train_scale=scale,
                           config=dict(task="localization", head=head, finetune=finetune, data=data,
                                       init_from=str(out / starts[scale]), crop_size=o.crop_size,
                                       scale=[loc_scales[scale]] * 2,
                                       lr=o.loc_lr, epochs=o.loc_epochs or ft_epochs,
                                       batch_size=o.batch_size, limit=o.loc_limit, **run_common(o),
                                       output=str(out / name), **o.loc_train)))
        loc[(head, finetune, scale)] = name
    common = eval_common(o, data, o.loc_eval_limit)
    if "8" in o.tables:
        result.append(Step("eval-loc-centre", "evaluate", "Table 8: centre crop, true class (protocol 1)",
                           tables=("8",), sources=tuple(loc[(h, f, "256")] for h, f in LOC_VARIANTS),
                           calls=[dict(name=loc[(h, f, "256")], task="localization",
                                       checkpoints=[str(out / loc[(h, f, "256")])], protocols=["centre"],
                                       gt_class=True, **common) for h, f in LOC_VARIANTS]))
    if "9" in o.tables:
        ranking = [str(out / starts[s]) for s in scales]
        nets = [loc[("pcr", "all", s)] for s in scales]
        calls = []
        for name in nets:
            path = [str(out / name)]
            calls += [dict(name=f"{name}-centre", task="localization", checkpoints=path, protocols=["centre"],
                           classifiers=ranking, **common),
                      dict(name=f"{name}-dense-1", task="localization", checkpoints=path, protocols=["dense"],
                           single_scale=True, classifiers=ranking, **common),
                      dict(name=f"{name}-dense-3", task="localization", checkpoints=path, protocols=["dense"],
                           classifiers=ranking, **common)]
        if len(nets) > 1:
            calls.append(dict(name="fusion-dense-3", task="localization",
                              checkpoints=[str(out / n) for n in nets], protocols=["dense"],
                              classifiers=ranking, **common))
        result.append(Step("eval-loc-dense", "evaluate", "Table 9: centre vs dense, scales, fusion "
                           "(protocol 2, boxes ranked by the classifiers)", tables=("9",),
                           sources=tuple(nets) + tuple(starts[s] for s in scales), calls=calls))
    return result
