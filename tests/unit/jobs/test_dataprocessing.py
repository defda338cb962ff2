"""DataProcessing: input and output filters (the JSONPath subset SageMaker documents) and the
join with the input, for CSV and JSON records."""

from __future__ import annotations

import pytest

from modelhost.jobs.dataprocessing import FilterError, JsonPathFilter, Processor, check

ROW = ["a", "b", "c", "d", "e", "f"]


@pytest.mark.parametrize(
    ("expr", "selected"),
    [
        ("$", ROW),
        ("$[0]", ["a"]),
        ("$[1:4]", ["b", "c", "d", "e"]),  # the end is inclusive, as the documentation has it
        ("$[1:]", ROW[1:]),
        ("$[2:-1]", ROW[2:]),
        ("$[0,-1]", ["a", "f"]),
        ("$[*]", ROW),
    ],
)
def test_csv_column_selection(expr: str, selected: list[str]) -> None:
    assert JsonPathFilter(expr)(ROW, many=True) == selected


def test_json_selection() -> None:
    doc = {"id": 1, "features": [1, 2], "SageMakerOutput": {"p": 0.5}}
    assert JsonPathFilter("$.features")(doc, many=False) == [1, 2]
    assert JsonPathFilter("$.id")(doc, many=False) == 1
    assert JsonPathFilter("$['id','SageMakerOutput']")(doc, many=False) == {
        "id": 1,
        "SageMakerOutput": {"p": 0.5},
    }


def test_a_bad_expression_is_refused() -> None:
    with pytest.raises(FilterError, match="not a JSONPath"):
        check("$[[")


def test_csv_filter_join_and_output_filter() -> None:
    p = Processor.build("$[1:]", "$[0,-1]", True, "text/csv", "text/csv")
    assert p.filter_input(b"id1,1,2,3") == b"1,2,3"
    assert p.output([b"id1,1,2,3", b"id2,4,5,6"], b"6\n15\n") == b"id1,6\nid2,15\n"


def test_json_join_adds_sagemaker_output() -> None:
    p = Processor.build("$.features", None, True, "application/json", "application/json")
    assert p.filter_input(b'{"id": 1, "features": [1, 2]}') == b"[1,2]"
    joined = p.output([b'{"id": 1, "features": [1, 2]}'], b'{"sum": 3}')
    assert joined == b'{"id":1,"features":[1,2],"SageMakerOutput":{"sum":3}}\n'
    other = p.output([b"[1, 2]"], b"3")
    assert other == b'{"SageMakerInput":[1,2],"SageMakerOutput":3}\n'


def test_output_records_must_match_the_inputs() -> None:
    p = Processor.build(None, None, True, "text/csv", "text/csv")
    with pytest.raises(FilterError, match="answered 1 records for 2 inputs"):
        p.output([b"1", b"2"], b"x\n")
