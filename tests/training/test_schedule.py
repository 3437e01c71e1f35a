"""The plateau schedule (Sec. 3.1)."""

import math

from vgg import training as T


def test_plateau_divides_by_ten_at_most_three_times():
    p = T.Plateau(patience=2, threshold=0.0, drop=0.1, max_drops=3)
    accs = [50, 60, 60, 59, 61, 61, 61, 61, 61, 61, 61, 61, 61]
    drops = [p.step(a) for a in accs]
    assert [i for i, d in enumerate(drops) if d] == [3, 6, 8]  # after 2 epochs without a gain
    assert p.drops == 3 and math.isclose(p.factor, 1e-3)
    assert not any(p.step(0) for _ in range(10))  # never a fourth time
    q = T.Plateau(patience=1, threshold=0.5)
    assert [q.step(a) for a in (80, 81, 81.3)] == [False, False, True]  # +0.3 < threshold


def test_weight_decay_spares_biases_and_batchnorm_only_when_asked(tmp_path):
    import torch

    import vgg
    from support import tiny_config

    model = vgg.create_model("A_bn", width=0.125, crop_size=32, num_classes=10)
    every = T.param_groups(model)
    assert [g["name"] for g in every] == ["features", "fc", "head"]
    assert all("weight_decay" not in g for g in every)  # the default: every parameter decays
    groups = T.param_groups(model, decay_bias_norm=False)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for g in groups:
        assert all((p.ndim <= 1) == (g.get("weight_decay") == 0.0) for p in g["params"]), g["name"]
    # One SGD step with zero gradients: only weight decay moves the parameters.
    for decay_bias_norm in (True, False):
        m = vgg.create_model("A_bn", width=0.125, crop_size=32, num_classes=10)
        with torch.no_grad():
            for p in m.parameters():
                p.uniform_(0.5, 1.5)
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        opt = torch.optim.SGD(T.param_groups(m, decay_bias_norm), lr=0.1, weight_decay=0.5)
        for p in m.parameters():
            p.grad = torch.zeros_like(p)
        opt.step()
        for n, p in m.named_parameters():
            moved = not torch.equal(p, before[n])
            assert moved == (decay_bias_norm or p.ndim > 1), n
    # and a run uses it: its optimizer's groups say so in the state file
    T.train(tiny_config(tmp_path, batch_norm=True, decay_bias_norm=False))
    saved = T.read_state(tmp_path / "run" / "state.safetensors", tensors=False)["optimizer"]["param_groups"]
    assert sorted({g["weight_decay"] for g in saved}) == [0.0, 5e-4]
