"""``simulate`` on real usage series: the shared Alibaba GenAI 2026 pods (``../shared/data/series``)
and the example pipeline's runs recorded by the project's own monitor
(``tests/data/pipeline-series.csv.gz``, a frozen copy of what ``airflow-adaptive demo`` wrote).
The figures asserted are what the benchmark measures on the whole files (README), on slices small
enough for the unit suite: they fail if a policy change makes the profile worse than the
baselines it beats there."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_adaptive.adapters.series import load_series
from airflow_adaptive.domain.series import SeriesSet
from airflow_adaptive.logic.simulate import SimulationConfig, simulate

REPO = Path(__file__).resolve().parents[3]
GENAI = REPO.parent / "shared" / "data" / "series" / "alibaba-genai-2026-pods.csv.gz"
PIPELINE = REPO / "tests" / "data" / "pipeline-series.csv.gz"


@pytest.fixture(scope="module")
def genai():
    if not GENAI.exists():
        pytest.skip(f"the shared GenAI series are not at {GENAI}")
    return load_series(str(GENAI))


def test_the_shared_genai_file_loads_whole_and_its_messy_rows_are_counted(genai):
    assert len(genai) == 988 and len(genai.stages) == 108 and genai.samples == 208_856
    report = genai.report.to_dict()
    assert report["negative_values"] == 1 and report["duplicated_timestamps"] == 0


def test_on_real_serving_pods_the_profile_reserves_less_than_history_and_the_reactive_rules(genai):
    keep = set(genai.stages[:15])
    pods = SeriesSet(tuple(r for r in genai.runs if r.stage in keep), genai.report)
    report = simulate(pods, SimulationConfig(margins=(0.1, 0.2, 0.3)))
    memory = {p: report["policies"][p]["memory"] for p in report["policies"]}
    assert report["warmup_runs"]["memory"] == 15  # each pod's first window: nothing precedes it
    assert memory["static_peak"]["kills"] == 0  # clairvoyant: its own peak + 20%
    assert memory["profile"]["reserved_over_used"] < memory["reactive"]["reserved_over_used"]
    assert memory["profile"]["reserved_over_used"] < memory["static_history"]["reserved_over_used"] - 0.15
    assert memory["profile"]["kills"] <= memory["static_history"]["kills"]


def test_on_the_pipelines_recorded_phased_stage_the_profile_beats_both_baselines_without_a_kill():
    series = load_series(str(PIPELINE))
    single = SeriesSet(tuple(r for r in series.runs if r.stage.startswith("ml_training_single_task.")), series.report)
    assert len(single) >= 10  # sampled every 0.25 s by the monitor, one series per run
    memory = {p: v["memory"] for p, v in simulate(single)["policies"].items()}
    assert memory["profile"]["kills"] == 0 and memory["profile"]["raised_ahead"] > 0
    assert memory["profile"]["reserved_over_used"] < 0.8 * memory["static_history"]["reserved_over_used"]
    assert memory["profile"]["reserved_over_used"] < 0.9 * memory["reactive"]["reserved_over_used"]
