"""When agents evaluate, and on how much of their test slice."""

from agent.swarm.eval_schedule import FULL_MARGIN, choose_evaluation


def _choose(**overrides):
    arguments = {
        "anchor_version": 3,
        "evaluated_version": 3,
        "evaluated_full": False,
        "evaluated_age_s": 1.0,
        "refresh_after_s": 7.5,
        "accuracy": 0.5,
        "target": 0.98,
    }
    arguments.update(overrides)
    return choose_evaluation(**arguments)


def test_first_evaluation_always_runs_on_a_subsample_while_nothing_is_known():
    choice = _choose(evaluated_version=None, evaluated_age_s=None, accuracy=None)
    assert choice.run and not choice.full


def test_an_unchanged_model_is_not_evaluated_again():
    assert not _choose().run


def test_a_new_anchor_is_evaluated():
    assert _choose(anchor_version=4).run


def test_an_old_evaluation_is_refreshed_so_the_pool_keeps_it():
    assert _choose(evaluated_age_s=7.5).run


def test_far_from_the_target_only_a_subsample_is_evaluated():
    assert not _choose(anchor_version=4, accuracy=0.98 - FULL_MARGIN - 0.01).full


def test_near_the_target_the_whole_slice_is_evaluated_even_for_an_unchanged_model():
    choice = _choose(accuracy=0.98 - FULL_MARGIN)
    assert choice.run and choice.full


def test_a_whole_slice_evaluation_of_the_same_model_is_not_repeated():
    assert not _choose(evaluated_full=True, accuracy=0.979).run


def test_far_from_the_target_a_changed_model_waits_for_the_estimate_interval():
    assert not _choose(anchor_version=4, evaluated_age_s=1.0, estimate_every_s=4.0).run
    assert _choose(anchor_version=4, evaluated_age_s=4.0, estimate_every_s=4.0).run


def test_near_the_target_a_changed_model_is_evaluated_at_once():
    choice = _choose(
        anchor_version=4, evaluated_full=True, evaluated_age_s=0.5, estimate_every_s=4.0, accuracy=0.975
    )
    assert choice.run and choice.full
