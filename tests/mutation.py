"""The mutation check (issue 17): plant each bug in a copy of the repository and run the tests that
should catch it; every mutant must be caught. Run by hand, not in CI (it is CPU-heavy):

    .venv/bin/python tests/mutation.py                 # every mutant, then the table
    .venv/bin/python tests/mutation.py -k fc6 -k ddp   # the mutants whose name contains fc6 or ddp
    .venv/bin/python tests/mutation.py --list          # the mutants and their tests, nothing run

The copy holds the working tree's versions of the files git knows (tracked, and untracked but not
ignored), so uncommitted edits are checked too. A mutant is one text substitution in one source file;
its pattern must occur there exactly once, so that a mutant never silently stops applying when the
code changes (the script then stops and names it). Its tests run with the venv's pytest from the copy,
``PYTHONPATH=<copy>/src`` (checked: the copy's ``vgg`` is the one imported), ``-x``; a mutant is
caught when they fail (exit status 1). A collection or import error (status 2 and up) is reported as
such, not as caught. ``every=True`` mutants (the loss planted in the training step) must be caught by
each of their tests on its own: they run without ``-x`` and every test must fail.

Before the mutants, their tests run once on the unmutated copy (skip with ``--no-baseline``): a test
that fails there would make every mutant look caught.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTEST = REPO / ".venv" / "bin" / "pytest"
PYTHON = REPO / ".venv" / "bin" / "python"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str  # under src/vgg/
    old: str
    new: str
    tests: tuple[str, ...]
    every: bool = False  # each test must fail on its own


def m(name, file, old, new, *tests, every=False):
    return Mutant(name, file, old, new, tuple(tests), every)


T_LOOP = "tests/training/test_loop.py"
T_BUILD = "tests/training/test_build.py"
T_VGG = "tests/models/test_vgg.py"
T_INIT = "tests/models/test_init.py"

# The training tests that issue 17 found passing with no gradient at all.
TRAINING_TESTS = (
    f"{T_LOOP}::test_run_folder_contents_and_load_model",
    f"{T_LOOP}::test_accumulation_equals_one_big_batch",
    f"{T_LOOP}::test_two_processes_equal_one",
    f"{T_LOOP}::test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint",
    f"{T_LOOP}::test_real_divergence_is_caught",
    f"{T_LOOP}::test_sigkill_mid_epoch_then_resume_is_bitwise_equal",
    "tests/training/test_runlog.py::test_tensorboard_shows_the_log",
    "tests/training/test_config.py::test_resume_refuses_to_change_the_recipe",
    f"{T_BUILD}::test_init_from_shallow_copies_net_a",
    f"{T_BUILD}::test_finetune_from_a_class_subset",
)

T_EXPORT = "tests/test_export.py"
T_FEATURES = "tests/test_features.py"
T_AUGMENT = "tests/data/test_augment.py"
T_VIEWS = "tests/evaluation/test_views.py"
T_POST = "tests/evaluation/test_posteriors.py"

MUTANTS: list[Mutant] = [
    # -- the bugs of issue 17's table ----------------------------------------------------------------
    m("loss x 0 (no gradient)", "training/step.py", "(loss / n).backward()", "(loss / n * 0).backward()",
      *TRAINING_TESTS, every=True),
    m("gradient ascent (minus the loss)", "training/step.py", "(loss / n).backward()",
      "(-loss / n).backward()", *TRAINING_TESTS, every=True),
    m("ddp: conv gradients not averaged", "training/step.py",
      "        net = DistributedDataParallel(model, ",
      "        model._ddp_params_and_buffers_to_ignore = [f'features.{k}' for k, _ in "
      "model.features.named_parameters()]\n        net = DistributedDataParallel(model, ",
      f"{T_LOOP}::test_two_processes_equal_one"),
    m("torchvision export: zeros", "export.py",
      "state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}",
      "state = {k: v.detach().cpu().contiguous() * 0 for k, v in model.state_dict().items()}",
      f"{T_EXPORT}::test_torchvision_export_is_a_plain_state_dict_in_torchvision_layout"),
    m("feature taps: ReLU taps before the ReLU", "models/vgg.py", "            x = layer(x)\n",
      "            x = x if isinstance(layer, nn.ReLU) and i in wanted else layer(x)\n",
      f"{T_VGG}::test_feature_taps"),
    m("fc6 flattened in (h, w, c) order", "models/vgg.py",
      "return F.linear(x.flatten(1), self.weight, self.bias)",
      "return F.linear(x.permute(0, 2, 3, 1).flatten(1), self.weight, self.bias)",
      f"{T_VGG}::test_logits_equal_torchvision_reference"),
    m("dense fc6 kernel transposed", "models/vgg.py",
      "return self.weight.view(self.out_features, self.in_channels, k, k)",
      "return self.weight.view(self.out_features, self.in_channels, k, k).transpose(2, 3)",
      f"{T_VGG}::test_dense_equals_fc_layers_on_each_window"),
    m("fused CPU path: input x 0", "engine/fused.py", "        x = images.to(self.dtype)\n",
      "        x = images.to(self.dtype) * 0\n",
      "tests/training/test_validation.py::test_validation_takes_the_fused_path_and_agrees_with_the_modules"),
    m("fused CPU path: BN folded with var, not sqrt(var + eps)", "engine/fused.py",
      "torch.sqrt(bn.running_var + bn.eps)", "bn.running_var",
      "tests/training/test_validation.py::test_validation_takes_the_fused_path_and_agrees_with_the_modules"),
    m("evaluation forgets to divide by std", "evaluation/posteriors.py",
      "x = model.normalization(match_channels(images, model.in_channels))",
      "x = match_channels(images, model.in_channels).float() - "
      "torch.tensor(model.normalization.mean, device=images.device).view(1, -1, 1, 1)",
      "tests/evaluation/test_protocols.py::test_evaluate_on_a_data_set_matches_an_independent_computation"),

    # -- models ----------------------------------------------------------------------------------------
    m("normalisation forgets std", "models/vgg.py", "return (x - mean) / std", "return x - mean",
      "tests/evaluation/test_posteriors.py::test_dense_at_crop_size_equals_the_centre_crop",
      "tests/data/test_loaders.py::test_train_batch_is_normalised_crop_of_the_right_image"),
    m("BGR weights fed RGB", "models/vgg.py", "            x = x.flip(1)\n", "            x = x\n",
      "tests/weights/test_keras.py::test_keras_file_converts_exactly"),
    m("LRN alpha not scaled by the window", "models/vgg.py", "alpha=LRN_SIZE * LRN_ALPHA", "alpha=LRN_ALPHA",
      f"{T_VGG}::test_lrn_is_alexnets"),
    m("score map max-pooled, not averaged", "models/vgg.py",
      "return scores.mean(dim=(2, 3), dtype=wide)", "return scores.amax(dim=(2, 3))",
      f"{T_VGG}::test_dense_equals_fc_layers_on_each_window"),
    m("config C's 1x1 convs built as 3x3", "models/vgg.py",
      "out, kernel = entry if isinstance(entry, tuple) else (entry, 3)",
      "out, kernel = (entry[0], 3) if isinstance(entry, tuple) else (entry, 3)",
      f"{T_VGG}::test_config_c_has_one_by_one_convs"),
    m("Glorot init drawn from a normal", "models/init.py", "nn.init.xavier_uniform_(m.weight)",
      "nn.init.xavier_normal_(m.weight)", f"{T_INIT}::test_glorot_init"),
    m("net-A transfer copies the wrong layers", "models/init.py", "src_convs = conv_layers(trained_a)[:4]",
      "src_convs = conv_layers(trained_a)[1:5]",
      f"{T_INIT}::test_init_from_shallow_copies_exactly_the_named_layers",
      f"{T_BUILD}::test_init_from_shallow_copies_net_a"),
    m("net-A transfer leaves BN behind", "models/init.py", "if src_bn and dst_bn:", "if False:",
      f"{T_INIT}::test_init_from_shallow_copies_bn_with_its_conv"),

    # -- data ------------------------------------------------------------------------------------------
    m("grid crops miss the far border", "data/crops.py", "int(round(i * (side - size) / (n - 1)))",
      "int(round(i * (side - size) / n))", "tests/data/test_crops.py", T_VIEWS),
    m("grid cell's row and column swapped", "data/crops.py",
      "crop(images, grid_offsets(h, size, n)[cell[0]], grid_offsets(w, size, n)[cell[1]], size)",
      "crop(images, grid_offsets(h, size, n)[cell[1]], grid_offsets(w, size, n)[cell[0]], size)", T_VIEWS),
    m("centre crop offset rounded down", "data/crops.py", "return int(round((side - size) / 2.0))",
      "return (side - size) // 2", T_VIEWS),
    m("masked flip flips every image", "data/crops.py",
      "torch.where(mask.view(-1, *([1] * (images.dim() - 1))), images.flip(-1), images)",
      "images.flip(-1)", "tests/data/test_crops.py"),
    m("training flip never flips", "data/augment.py", "flips = (u[3] < 0.5) if augment.flip",
      "flips = (u[3] < 0.0) if augment.flip", f"{T_AUGMENT}::test_augment_parameters_distribution"),
    m("random crops never reach the far edge", "data/augment.py",
      "x0 = np.floor(np.asarray(u_x) * (sw - crop_size + 1))",
      "x0 = np.floor(np.asarray(u_x) * (sw - crop_size))",
      f"{T_AUGMENT}::test_crop_positions_cover_the_image"),
    m("scale jittering never reaches Smax", "data/augment.py", "np.floor(u[0] * (smax - smin + 1))",
      "np.floor(u[0] * (smax - smin))", f"{T_AUGMENT}::test_augment_parameters_distribution"),
    m("PCA lighting along eigenvector rows", "data/augment.py", "(alphas.cpu().double() * val) @ vec.T",
      "(alphas.cpu().double() * val) @ vec", f"{T_AUGMENT}::test_pca_lighting_matches_formula"),

    # -- training --------------------------------------------------------------------------------------
    m("accumulation divides each chunk by its own size", "training/step.py", "(loss / n).backward()",
      "(loss / len(x)).backward()", f"{T_LOOP}::test_accumulation_equals_one_big_batch"),
    m("a plateau that never drops", "training/schedule.py", "self.drops, self.bad_epochs = self.drops + 1, 0",
      "self.drops, self.bad_epochs = self.drops, 0",
      f"{T_LOOP}::test_a_plateau_divides_the_rates_in_a_run_and_resumes_with_its_state"),
    m("the plateau's factor never reaches the optimizer", "training/loop.py",
      "lrs = group_lrs(run.config, run.epoch, run.plateau.factor)",
      "lrs = group_lrs(run.config, run.epoch, 1.0)",
      f"{T_LOOP}::test_a_plateau_divides_the_rates_in_a_run_and_resumes_with_its_state"),
    m("plateau state not restored on resume", "training/start.py",
      "run.plateau.load_state_dict(saved[\"plateau\"])", "pass",
      f"{T_LOOP}::test_a_plateau_divides_the_rates_in_a_run_and_resumes_with_its_state"),
    m("momentum not restored on resume", "training/state.py", "if key.startswith(\"optim.\"):",
      "if key.startswith(\"optim.\") and False:",
      f"{T_LOOP}::test_sigkill_mid_epoch_then_resume_is_bitwise_equal"),
    m("RNG states not restored on resume", "training/start.py",
      "set_rng_state(rngs[run.ctx.rank], run.device)", "pass",
      f"{T_LOOP}::test_sigkill_mid_epoch_then_resume_is_bitwise_equal"),
    m("head rate multiplier ignored", "training/schedule.py", "\"head\": base * config.head_lr_mult",
      "\"head\": base", f"{T_BUILD}::test_finetune_from_a_class_subset"),
    m("frozen conv layers get a rate", "training/schedule.py", "\"features\": 0.0 if frozen else base",
      "\"features\": base", f"{T_BUILD}::test_finetune_from_a_class_subset"),
    m("grey adaptation forgets the per-channel std", "training/build.py",
      "weight = (conv.weight / std).sum(1, keepdim=True)", "weight = conv.weight.sum(1, keepdim=True)",
      f"{T_BUILD}::test_rgb_weights_fit_greyscale_data"),
    m("val split drawn with the run's seed", "training/build.py", "val_size=config.val_size, seed=0,",
      "val_size=config.val_size, seed=config.seed,",
      f"{T_LOOP}::test_val_split_does_not_depend_on_the_training_seed"),
    m("val loss summed, not averaged", "training/validation.py", "\"loss\": loss / max(n, 1)",
      "\"loss\": loss",
      "tests/training/test_validation.py::test_validation_takes_the_fused_path_and_agrees_with_the_modules"),
    m("vgg train --test evaluates the val split", "training/held_out.py",
      "test_set = data.open_dataset(config.data, \"test\",",
      "test_set = data.open_dataset(config.data, \"val\",",
      f"{T_LOOP}::test_train_test_evaluates_the_best_net_on_the_test_split"),

    # -- evaluation ------------------------------------------------------------------------------------
    m("top-5 computed as top-4", "evaluation/metrics.py", "top5 = topk_correct(probs, labels, 5)",
      "top5 = topk_correct(probs, labels, 4)", "tests/evaluation/test_metrics.py"),
    m("confusion matrix transposed", "evaluation/metrics.py",
      "flat = labels.long() * num_classes + pred.long()", "flat = pred.long() * num_classes + labels.long()",
      "tests/evaluation/test_metrics.py"),
    m("per-class accuracy over all images", "evaluation/metrics.py", "float(conf[i, i]) / float(s) * 100",
      "float(conf[i, i]) / float(n) * 100",
      "tests/evaluation/test_commands.py::test_cli_evaluate_end_to_end"),
    m("fusion weighs one net twice", "evaluation/posteriors.py",
      "            total = part if total is None else total + part\n"
      "        return (total / len(nets)).float()",
      "            total = 2 * part if total is None else total + part\n"
      "        return (total / (len(nets) + 1)).float()",
      f"{T_POST}::test_fusion_of_a_net_with_itself_is_the_net_and_fusion_is_the_mean"),
    m("dense+multi-crop halves weighed by their views", "evaluation/views.py",
      "_views(scales, [(\"dense\", None)], flip, 0.5) + _views(scales, grid, flip, 0.5)",
      "_views(scales, [(\"dense\", None)], flip, 1 / 26) + _views(scales, grid, flip, 25 / 26)",
      f"{T_POST}::test_a_view_set_is_the_mean_of_its_views_posteriors"),
    m("test-time flips never flip", "evaluation/views.py", "return hflip(out) if view.flip else out",
      "return out", T_VIEWS),
    m("test scales a step of 32/256 of the crop", "evaluation/views.py", "SCALE_STEP = 32 / 224",
      "SCALE_STEP = 32 / 256", f"{T_VIEWS}::test_default_scales_follow_the_paper"),

    m("confusion PNG ignores the matrix", "report.py", "conf = torch.tensor(confusion, dtype=torch.float64)",
      "conf = torch.ones(len(classes), len(classes), dtype=torch.float64)",
      "tests/test_report.py::test_confusion_png"),
    m("vgg bench drops --only", "cli/data.py", "([\"--only\", *args.only] if args.only else [])", "[]",
      "tests/test_cli_bench.py::test_bench_quick_hands_its_flags_to_the_suite"),

    # -- weights ---------------------------------------------------------------------------------------
    m("Keras conv kernels read with h and w swapped", "weights/keras.py", "kernel.transpose(3, 2, 0, 1)",
      "kernel.transpose(3, 2, 1, 0)", "tests/weights/test_keras.py::test_keras_file_converts_exactly"),
    m("Keras fc1 read in (c, h, w) order", "weights/keras.py",
      "kernel.T.reshape(out, k, k, c).transpose(0, 3, 1, 2)", "kernel.T.reshape(out, c, k, k)",
      "tests/weights/test_keras.py::test_keras_file_converts_exactly"),
    m("Keras weights given torchvision's preprocessing", "weights/foreign.py",
      "            default = CAFFE_NORMALIZATION\n", "            default = TORCHVISION_NORMALIZATION\n",
      "tests/weights/test_keras.py::test_keras_file_converts_exactly"),
    m("our checkpoints forget their preprocessing", "weights/ours.py",
      "model.normalization = Normalization.from_dict(meta[\"normalization\"])", "pass",
      "tests/weights/test_ours.py::test_round_trip"),
    m("downloads not checked against their hash", "files.py",
      "if sha256 and not digest.hexdigest().startswith(sha256.lower()):", "if False:",
      "tests/weights/test_hub.py::test_hash_mismatch_is_refused_and_nothing_is_cached"),

    # -- export and features ---------------------------------------------------------------------------
    m("exported logits: the score map's max", "export.py", "return x.mean(dim=(2, 3)), x",
      "return x.amax(dim=(2, 3)), x", f"{T_EXPORT}::test_onnx_runs_dense_evaluation_at_any_size"),
    m("exported metadata says RGB", "export.py", "\"bgr\": json.dumps(n.bgr)", "\"bgr\": json.dumps(False)",
      f"{T_EXPORT}::test_onnx_runs_dense_evaluation_at_any_size"),
    m("features without the flipped image", "features.py", "return (direct + flipped).float() / 2",
      "return direct.float()", f"{T_FEATURES}::test_descriptor_is_dense_fc7_averaged_over_map_and_flip"),
    m("features not L2-normalised", "features.py", "features = F.normalize(features[seen], dim=1)",
      "features = features[seen]", f"{T_FEATURES}::test_features_average_or_stack_scales_then_l2_normalise"),
]


# -- running -------------------------------------------------------------------------------------------

def copy_repository(dest: Path) -> None:
    """The working tree's versions of every file git knows (tracked, untracked but not ignored)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for raw in names:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if not src.is_file():  # deleted in the working tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def environment(copy: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(copy / "src"), "OMP_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1"}


def check_import(copy: Path) -> None:
    out = subprocess.run([str(PYTHON), "-c", "import vgg; print(vgg.__file__)"], cwd=copy,
                         env=environment(copy), capture_output=True, text=True, check=True).stdout.strip()
    if not Path(out).resolve().is_relative_to(copy.resolve()):
        raise SystemExit(f"the copy's vgg is not the one imported: {out}")


def run_tests(copy: Path, tests, stop_first: bool, timeout: float) -> tuple[int, str, float]:
    argv = [str(PYTEST), "-q", "-p", "no:cacheprovider", "-rf", "--no-header", "-W", "ignore"]
    argv += ["-x"] if stop_first else []
    start = time.monotonic()
    try:
        r = subprocess.run([*argv, *tests], cwd=copy, env=environment(copy), capture_output=True,
                           text=True, timeout=timeout)
        code, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        code, out = 124, f"timed out after {timeout:.0f} s\n{e.stdout or ''}"
    return code, out if isinstance(out, str) else out.decode(), time.monotonic() - start


def failed_tests(output: str, tests) -> set[str]:
    failed = {line.split()[1] for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))}
    return {t for t in tests if any(f == t or f.startswith(t + "[") for f in failed)}


def apply(copy: Path, mutant: Mutant) -> str:
    path = copy / "src" / "vgg" / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise SystemExit(f"mutant {mutant.name!r}: its pattern occurs {count} times in src/vgg/{mutant.file}"
                         f" (must be once); update the mutant:\n{mutant.old}")
    path.write_text(text.replace(mutant.old, mutant.new))
    return text


def run_mutant(copy: Path, mutant: Mutant, timeout: float) -> dict:
    original = apply(copy, mutant)
    try:
        code, out, seconds = run_tests(copy, mutant.tests, stop_first=not mutant.every, timeout=timeout)
    finally:
        (copy / "src" / "vgg" / mutant.file).write_text(original)
    if mutant.every:
        failed = failed_tests(out, mutant.tests)
        caught = code == 1 and len(failed) == len(mutant.tests)
        verdict = f"{'yes' if caught else 'NO'} ({len(failed)}/{len(mutant.tests)})"
        missed = [t for t in mutant.tests if t not in failed]
    else:
        caught = code == 1
        verdict = "yes" if caught else ("NO" if code == 0 else f"error (exit {code})")
        missed = [] if caught else list(mutant.tests)
    reason = next((line[1:].strip() for line in out.splitlines() if line.startswith("E ")), "")
    return {"mutant": mutant, "caught": caught, "verdict": verdict, "seconds": seconds, "code": code,
            "missed": missed, "output": out, "reason": reason[:160]}


def short(test: str) -> str:
    path, _, name = test.partition("::")
    return f"{Path(path).stem}::{name}" if name else Path(path).stem


def table(results: list[dict]) -> str:
    rows = ["| mutant | file | tests | caught? |", "|---|---|---|---|"]
    for r in results:
        mut = r["mutant"]
        tests = f"the {len(mut.tests)} training tests" if mut.tests == TRAINING_TESTS else \
            ", ".join(f"`{short(t)}`" for t in mut.tests)
        rows.append(f"| {mut.name} | `{mut.file}` | {tests} | {r['verdict']} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", action="append", default=[], metavar="WORD",
                        help="only the mutants whose name contains WORD (repeatable)")
    parser.add_argument("--exclude", action="append", default=[], metavar="WORD",
                        help="leave out the mutants whose name contains WORD (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unmutated copy")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per mutant (default 1200)")
    parser.add_argument("--keep", action="store_true", help="keep the copy (its path is printed)")
    args = parser.parse_args(argv)
    mutants = [mu for mu in MUTANTS if (not args.k or any(k.lower() in mu.name.lower() for k in args.k))
               and not any(x.lower() in mu.name.lower() for x in args.exclude)]
    if not mutants:
        parser.error(f"no mutant's name contains any of {args.k}")
    if args.list:
        for mu in mutants:
            count = (REPO / "src" / "vgg" / mu.file).read_text().count(mu.old)
            print(f"{mu.name}  [{mu.file}]{'' if count == 1 else f'  PATTERN OCCURS {count} TIMES'}\n    "
                  + "\n    ".join(mu.tests))
        return 0
    copy = Path(tempfile.mkdtemp(prefix="vgg-mutation-"))
    try:
        copy_repository(copy)
        check_import(copy)
        for mu in mutants:  # every pattern applies before anything runs
            apply(copy, mu)
            shutil.copy2(REPO / "src" / "vgg" / mu.file, copy / "src" / "vgg" / mu.file)
        print(f"{len(mutants)} mutants; copy of the repository in {copy}", flush=True)
        if not args.no_baseline:
            tests = sorted({t for mu in mutants for t in mu.tests})
            code, out, seconds = run_tests(copy, tests, stop_first=False, timeout=args.timeout * 2)
            print(f"baseline: {len(tests)} tests on the unmutated copy, exit {code}, {seconds:.0f} s",
                  flush=True)
            if code != 0:
                print(out[-5000:])
                raise SystemExit("the tests fail without any mutant: fix them first")
        results = []
        for i, mu in enumerate(mutants, 1):
            r = run_mutant(copy, mu, args.timeout)
            results.append(r)
            print(f"[{i}/{len(mutants)}] {mu.name}: {r['verdict']} ({r['seconds']:.0f} s)"
                  + (f"\n    {r['reason']}" if r["caught"] and r["reason"] else ""), flush=True)
            if not r["caught"]:
                tail = "\n".join(r["output"].splitlines()[-15:])
                print(f"    not caught by: {', '.join(map(short, r['missed']))}\n{tail}", flush=True)
        print()
        print(table(results))
        missed = [r for r in results if not r["caught"]]
        print(f"\n{len(results) - len(missed)}/{len(results)} mutants caught", flush=True)
        return 1 if missed else 0
    finally:
        if args.keep:
            print(f"kept {copy}")
        else:
            shutil.rmtree(copy, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
