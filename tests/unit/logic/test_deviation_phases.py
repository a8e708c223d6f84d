"""The deviation policy with a time-varying profile: raised ahead of a predicted rise, released
after a predicted fall when the last sample fits, the reactive rules alone while usage is above
the phase's band."""

import pytest

from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.profile import PhaseNeed, PredictedProfile, ResourceEstimate
from airflow_adaptive.logic.deviation import Bounds, DeviationConfig, decide, initial_state

MiB = 2**20
CFG = DeviationConfig()  # lead_s 2, margin 20%, min_change 10%
RISE = (PhaseNeed(0, 10, 80 * MiB, 100 * MiB), PhaseNeed(10, 20, 250 * MiB, 300 * MiB))
FALL = (PhaseNeed(0, 10, 250 * MiB, 300 * MiB), PhaseNeed(10, 20, 80 * MiB, 100 * MiB))


def run(phases, allocation, samples):
    """Feed ``(elapsed_s, used_mib)`` samples; the decisions of the last one."""
    profile = PredictedProfile({"memory": ResourceEstimate(250 * MiB, 300 * MiB)}, coverage=0.99, phases={"memory": phases})
    state, decisions = initial_state({"memory": allocation * MiB}, profile), []
    for t, used in samples:
        state, decisions = decide(state, UsageSample(1000.0 + t, {"memory": used * MiB}), CFG, Bounds())
    return state, decisions


@pytest.mark.parametrize("name, phases, allocation, samples, action, new_mib, why", [
    ("a rise within the lead time is raised before it comes", RISE, 120, [(0, 80), (5, 80), (8.5, 82)],
     "increase", 330, "ahead of the predicted phase from 10 s"),
    ("nothing yet while the rise is further than the lead time", RISE, 120, [(0, 80), (5, 80), (7, 82)], None, None, None),
    ("a predicted fall releases once the last sample fits", FALL, 360, [(0, 250), (5, 260), (12, 70)],
     "decrease", 110, "needs less"),
    ("a predicted fall releases only down to what is still used", FALL, 360, [(0, 250), (5, 260), (12, 110)],
     "decrease", 132, "needs less"),
    ("usage above the new phase's band is not released towards it", FALL, 360, [(0, 250), (5, 260), (12, 200)],
     None, None, None),
])
def test_following_the_phases(name, phases, allocation, samples, action, new_mib, why):
    _, decisions = run(phases, allocation, samples)
    if action is None:
        assert decisions == [], name
        return
    (d,) = decisions
    assert d.action == action and d.new == pytest.approx(new_mib * MiB) and why in d.reason and d.predicted, name


def test_usage_above_the_band_is_left_to_the_reactive_rules():
    # 400 MiB in a phase predicted at most 100 MiB (+20%): no release towards the phase; the
    # reactive rules raise it (short against 420 MiB for two samples).
    state, decisions = run(RISE, 420, [(0, 400), (2, 400)])
    assert state.tracks["memory"].off_profile
    (d,) = decisions
    assert d.action == "increase" and not d.predicted and "ahead" not in d.reason


def test_a_retry_floor_holds_against_a_predicted_fall():
    profile = PredictedProfile({"memory": ResourceEstimate(250 * MiB, 300 * MiB)}, coverage=0.99, phases={"memory": FALL})
    state = initial_state({"memory": 360 * MiB}, profile)
    for t, used in [(0, 250), (5, 260), (12, 70)]:
        state, decisions = decide(state, UsageSample(t, {"memory": used * MiB}), CFG, Bounds(minimum={"memory": 300 * MiB}))
    (d,) = decisions
    assert d.new == pytest.approx(300 * MiB)  # held at the floor the OOM kill set


# One phase predicted at most 300 MiB whose stage jumps by up to 50 MiB between two samples.
STEPPED = (PhaseNeed(0, 100, 200 * MiB, 300 * MiB, 50 * MiB),)


@pytest.mark.parametrize("name, allocation, samples, action, new_mib", [
    # peak so far 100 MiB: room for the larger of 20% and the 50 MiB step = 150 MiB
    ("released to the peak so far + the learned step", 360, [(0, 100), (6, 100)], "decrease", 150),
    ("released to the peak + margin when that is more than the step", 600, [(0, 400), (6, 400)], None, None),
    ("raised at once when the next jump would no longer fit, however small the change", 150,
     [(0, 100), (6, 105)], "increase", 155),
    ("nothing while the jump fits", 150, [(0, 100), (6, 100)], None, None),
])
def test_a_learned_step_sizes_the_room_above_the_phase_peak(name, allocation, samples, action, new_mib):
    _, decisions = run(STEPPED, allocation, samples)
    if action is None:
        assert [d for d in decisions if d.action != "hold"] == [], name
        return
    (d,) = decisions
    assert d.action == action and d.new == pytest.approx(new_mib * MiB) and "learned step" in d.reason and d.predicted, name


def test_the_phase_peak_starts_again_in_each_phase():
    phases = (PhaseNeed(0, 10, 250 * MiB, 300 * MiB, 20 * MiB), PhaseNeed(10, 100, 80 * MiB, 100 * MiB, 20 * MiB))
    state, decisions = run(phases, 360, [(0, 250), (5, 250), (12, 60)])
    assert state.tracks["memory"].phase_peak == 60 * MiB and state.tracks["memory"].phase_start == 10
    (d,) = decisions
    assert d.action == "decrease" and d.new == pytest.approx(80 * MiB)  # 60 + the 20 MiB step


@pytest.mark.parametrize("name, phases, allocation, samples, request_mib", [
    ("ahead of a rise: the limit rises alone", RISE, 120, [(0, 80), (5, 80), (8.5, 82)], None),
    ("after a fall: what the phase uses (its median, or more if used)", FALL, 360, [(0, 250), (5, 260), (12, 110)], 110),
    ("within a stepped phase: its peak so far", STEPPED, 360, [(0, 100), (6, 100)], 100),
])
def test_a_phase_decision_carries_the_request_the_scheduler_should_hold(name, phases, allocation, samples, request_mib):
    _, decisions = run(phases, allocation, samples)
    (d,) = decisions
    if request_mib is None:
        assert d.action == "increase" and d.request is None, name
        return
    assert d.request == pytest.approx(request_mib * MiB) and d.request <= d.new, name


def test_reactive_decisions_leave_the_request_alone():
    state, decisions = run(RISE, 420, [(0, 400), (2, 400)])  # above the band: the reactive rules
    (d,) = decisions
    assert d.action == "increase" and d.request is None


LATE = (PhaseNeed(0, 10, 80 * MiB, 100 * MiB), PhaseNeed(10, 20, 250 * MiB, 300 * MiB), PhaseNeed(20, 40, 80 * MiB, 100 * MiB))


def test_a_rise_that_comes_early_moves_the_clock_to_its_phase():
    state, decisions = run(RISE, 120, [(0, 80), (3, 80), (5, 250)])  # the 10 s phase's usage at 5 s
    assert state.tracks["memory"].shift == pytest.approx(5)
    (d,) = decisions
    assert d.action == "increase" and d.new == pytest.approx(330 * MiB) and d.predicted  # its upper + 10%, not x2 reactive
    assert not state.tracks["memory"].off_profile


@pytest.mark.parametrize("name, samples, released", [
    ("the rise came: the fall after it releases on time", [(0, 80), (5, 80), (12, 250), (18, 250), (21, 80), (23, 80)], True),
    ("the rise has not come: the clock waits, nothing is released", [(0, 80), (5, 80), (12, 80), (18, 80), (21, 80), (23, 80)], False),
])
def test_a_late_rise_holds_the_clock_so_the_fall_after_it_releases_nothing(name, samples, released):
    state, _ = run(LATE, 120, samples)
    track = state.tracks["memory"]
    if released:
        assert track.allocation == pytest.approx(110 * MiB) and track.shift == 0, name  # the evaluation's upper + 10%
    else:
        assert track.allocation == pytest.approx(330 * MiB) and track.shift < 0, name  # still ready for the rise


def test_a_late_rise_waits_at_most_its_phase_length():
    samples = [(0, 80), (5, 80), *[(t, 80) for t in range(9, 34, 2)]]
    state, _ = run(LATE, 120, samples)
    assert state.tracks["memory"].allocation == pytest.approx(110 * MiB)  # at 33 s: waited 10 s, then released


def test_the_workloads_start_places_the_first_sample_in_its_phases():
    profile = PredictedProfile({"memory": ResourceEstimate(250 * MiB, 300 * MiB)}, coverage=0.99, phases={"memory": RISE})
    state = initial_state({"memory": 120 * MiB}, profile, started=1000.0)
    # The monitor's first sample comes 8.5 s after the workload started (a slow sidecar start-up):
    # the rise at 10 s is within the lead time already.
    state, (d,) = decide(state, UsageSample(1008.5, {"memory": 80 * MiB}), CFG, Bounds())
    assert d.action == "increase" and d.new == pytest.approx(330 * MiB) and d.predicted


def test_a_fall_whose_usage_has_not_fallen_waits_then_releases_to_what_is_left():
    # Training (250 MiB) runs 2 s past its predicted end: the evaluation phase starts when usage falls.
    samples = [(0, 80), (5, 80), (12, 250), (18, 250), (21, 250), (22, 250), (23, 80), (25, 80), (31, 80)]
    state, _ = run(LATE, 120, samples[:6])
    assert state.tracks["memory"].shift < 0 and state.tracks["memory"].allocation == pytest.approx(330 * MiB)
    state, _ = run(LATE, 120, samples)
    assert state.tracks["memory"].allocation == pytest.approx(110 * MiB)  # the evaluation's 100 + 10%, not 250's



def test_a_rise_that_has_not_come_is_not_released_to_the_loading_level():
    # Found on the real node: raised ahead of training, the clock enters training while the
    # workload is still loading (it started a little later than its process); the step rule must
    # not release to the loading level then.
    stepped = (PhaseNeed(0, 10, 80 * MiB, 100 * MiB, 5 * MiB), PhaseNeed(10, 20, 250 * MiB, 300 * MiB, 5 * MiB))
    state, decisions = run(stepped, 120, [(0, 80), (5, 80), (8.5, 82), (10.5, 82), (11, 82)])
    assert state.tracks["memory"].allocation == pytest.approx(330 * MiB) and decisions == []
    state, decisions = run(stepped, 120, [(0, 80), (5, 80), (8.5, 82), (10.5, 82), (11, 260), (17, 260)])
    assert state.tracks["memory"].allocation >= 330 * MiB  # the rise came: never below its upper + 10%
