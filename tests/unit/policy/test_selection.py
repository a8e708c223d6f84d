"""Which tasks the cluster policy selects: tables of selectors against task facts."""

import pytest

from airflow_adaptive.policy.selection import PolicyConfigError, Selector, TaskFacts

TRAIN = TaskFacts("train_resnet", "fit", frozenset({"ml", "vision"}), pool="gpu", queue="kubernetes")
ETL = TaskFacts("etl_daily", "load", frozenset({"etl"}), pool="default_pool", queue="default")


@pytest.mark.parametrize("select, exclude, train, etl", [
    ({}, None, True, True),                                        # {} selects every task
    ({"tags": ["ml"]}, None, True, False),
    ({"tags": ["etl", "ml"]}, None, True, True),                   # any value of a key
    ({"tags": "ml"}, None, True, False),                           # one value as a string
    ({"dag_ids": ["train_*"]}, None, True, False),                 # globs
    ({"dag_ids": ["train_?"]}, None, False, False),
    ({"dag_ids": ["TRAIN_*"]}, None, False, False),                # case-sensitive, as DAG ids are
    ({"task_ids": ["fi*"]}, None, True, False),
    ({"pools": ["gpu"]}, None, True, False),
    ({"queues": ["default"]}, None, False, True),
    ({"tags": ["ml"], "pools": ["default_pool"]}, None, False, False),   # keys of one mapping: all must match
    ({"tags": ["ml"], "pools": ["gpu"]}, None, True, False),
    ([{"tags": ["ml"]}, {"queues": ["default"]}], None, True, True),     # a list: any mapping
    ({}, {"tags": ["vision"]}, False, True),                       # exclude wins
    ({"tags": ["ml"]}, [{"task_ids": ["load"]}, {"pools": ["gpu"]}], False, False),
    ({"tags": ["v*"]}, None, True, False),                         # tags are globs too
])
def test_selection(select, exclude, train, etl):
    selector = Selector.from_config(select, exclude)
    assert (selector.selects(TRAIN), selector.selects(ETL)) == (train, etl)


def test_a_dag_without_tags_matches_no_tag_selector_but_any_other():
    bare = TaskFacts("train_x", "fit")
    assert not Selector.from_config({"tags": ["*"]}).selects(bare)
    assert Selector.from_config({"dag_ids": ["train_*"]}).selects(bare)


@pytest.mark.parametrize("select, message", [
    (None, "say which tasks to size"),
    ({"tag": ["ml"]}, "unknown key(s) ['tag']"),
    ({"tags": []}, "non-empty list of glob strings"),
    ({"tags": [""]}, "non-empty list of glob strings"),
    ({"dag_ids": [3]}, "non-empty list of glob strings"),
    ([], "non-empty list of mappings"),
    ("ml", "expected a mapping or a non-empty list"),
    ([{"tags": ["ml"]}, "etl"], "select=...)[1]: expected a mapping"),
])
def test_a_bad_selector_says_what_and_where(select, message):
    with pytest.raises(PolicyConfigError) as err:
        Selector.from_config(select)
    assert message in str(err.value) and "\n" not in str(err.value)
