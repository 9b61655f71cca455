"""The self-checks of notebooks 05-09 accept the right answer and reject a wrong one."""

import torch

from mesimp_lib.exercises import nb05, nb06, nb07, nb08, nb09


def test_nb05_prune_checks():
    assert nb05.check_exercise_1({"removed": [0, 0], "widths": [16, 16], "widths_before": [16, 16]})
    assert not nb05.check_exercise_1({"removed": [0, 3], "widths": [16, 13], "widths_before": [16, 16]})
    assert nb05.check_exercise_2({"removed": [14, 14], "widths": [2, 2], "kept_minimum": [True, True]})
    assert not nb05.check_exercise_2({"removed": [0, 0], "widths": [16, 16], "kept_minimum": [False, False]})
    assert not nb05.check_exercise_2("not an event")


def test_nb05_parameter_count_is_recomputed():
    from mesimp_lib.experiments import results_dir
    from mesimp_lib.checkpoint import load_model

    m = load_model(results_dir("mesimp_mnist") / "mesimp-k160-s1.pt")
    n = sum(p.numel() for p in m.to_sequential().parameters())
    assert nb05.check_exercise_3(n, m.widths) and not nb05.check_exercise_3(n + 1)


def test_nb06_threshold_trend():
    assert nb06.check_exercise_1({0.5: [300, 280], 1.0: [200, 190], 2.0: [90, 80]})
    assert not nb06.check_exercise_1({0.5: [90, 80], 2.0: [300, 280]})
    assert not nb06.check_exercise_1({1.0: [200, 190]})
    assert nb06.check_exercise_2([250, 240], [200, 190]) and not nb06.check_exercise_2([900, 1], [1, 1])


def test_nb07_checks_use_the_real_step():
    from mesimp_lib.lstm import MePropLSTM, step_backward

    torch.manual_seed(0)
    cell = MePropLSTM(4, 6, k=6)
    args = (torch.randn(1, 4), torch.randn(1, 6), torch.randn(1, 6), cell.weight_ih, cell.weight_hh,
            cell.bias_ih, cell.bias_hh)
    with torch.no_grad():
        full = step_backward(*args, dh=torch.randn(1, 6), k=6)
        cut = step_backward(*args, dh=torch.randn(1, 6), k=2)
    assert nb07.check_exercise_1(full) and not nb07.check_exercise_1(cut)
    assert nb07.check_exercise_2(0.3, 0.6) and not nb07.check_exercise_2(0.6, 0.3)
    assert nb07.check_exercise_3({"removed": [0, 0], "widths": [10, 10]})
    assert not nb07.check_exercise_3({"removed": [2, 0], "widths": [8, 10]})


def test_nb08_checks_run_the_oracle():
    from mesimp_lib.tasks.parser import is_projective, oracle_steps
    from mesimp_lib.tasks.ud import load_ud

    tb = load_ud()
    s = tb.dev[146]
    assert nb08.check_exercise_1(s, len(oracle_steps(s))) and not nb08.check_exercise_1(s, 3)
    nonproj = next(x for x in tb.train if not is_projective(x.heads))
    assert nb08.check_exercise_2(nonproj) and not nb08.check_exercise_2(s)
    assert nb08.check_exercise_3({"a": {"best_dev_acc": 0.7}, "b": {"best_dev_acc": 0.71}})
    assert not nb08.check_exercise_3({"a": {"best_dev_acc": 0.7}})


def test_nb09_checks_recompute():
    assert nb09.check_exercise_1(1.0, 8) and not nb09.check_exercise_1(0.3, 3)
    assert nb09.check_exercise_3([3, 3], [3, 5]) and not nb09.check_exercise_3([3, 5], [3, 3])
    rows = [{"batch": b, "speedup": s, "limit": 102.4, "correct": True} for b, s in ((1, 1.5), (32, 9.0), (256, 30.0))]
    assert nb09.check_exercise_2(rows)
    assert not nb09.check_exercise_2(rows[:1])
    assert not nb09.check_exercise_2([{**r, "correct": False} for r in rows])
