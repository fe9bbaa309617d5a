"""Format detection gives its reason; conversion names every problem."""

from __future__ import annotations

from lastedocation.datasets.formats import FormatSpec, convert, detect_format


def test_detects_each_format_with_a_reason() -> None:
    qa = detect_format([{"prompt": "a", "response": "b"}] * 3)
    assert qa is not None and qa.data_format == "qa"
    assert (qa.question_field, qa.answer_field) == ("prompt", "response")
    assert "3 of the first 3 rows" in qa.reason
    cases = {
        "alpaca": {"instruction": "a", "input": "", "output": "b"},
        "openai": {"messages": [{"role": "user", "content": "a"}]},
        "sharegpt": {"conversations": [{"from": "human", "value": "a"}]},
        "text": {"text": "a"},
    }
    for expected, row in cases.items():
        spec = detect_format([row])
        assert spec is not None and spec.data_format == expected
    assert detect_format([{"foo": 1}]) is None
    assert detect_format([]) is None


def test_qa_problems_name_the_field() -> None:
    spec = FormatSpec("qa")
    missing = convert(7, {"question": "سلام"}, spec, 1000)
    assert [(p.row, p.field, p.kind) for p in missing.problems] == [(7, "answer", "missing_field")]
    empty = convert(8, {"question": "  ", "answer": "x"}, spec, 1000)
    assert [(p.field, p.kind) for p in empty.problems] == [("question", "empty_field")]
    typed = convert(9, {"question": ["a"], "answer": "x"}, spec, 1000)
    assert [(p.field, p.kind) for p in typed.problems] == [("question", "wrong_type")]
    not_object = convert(10, ["a", "b"], spec, 1000)
    assert not_object.problems[0].kind == "wrong_type"


def test_over_long_record_reports_length_and_limit() -> None:
    out = convert(3, {"question": "س" * 60, "answer": "ج" * 60}, FormatSpec("qa"), 100)
    (problem,) = out.problems
    assert problem.kind == "too_long" and "120" in problem.message and "100" in problem.message
    assert out.record is None


def test_qa_converts_to_chat_and_keeps_other_fields_as_meta() -> None:
    out = convert(1, {"qid": 5, "question": "چرا؟", "answer": "چون."}, FormatSpec("qa"), 1000)
    assert out.record == {
        "row": 1,
        "messages": [{"role": "user", "content": "چرا؟"}, {"role": "assistant", "content": "چون."}],
        "meta": {"qid": 5},
    }


def test_alpaca_folds_input_into_the_prompt() -> None:
    row = {"instruction": "ترجمه کن", "input": "hello", "output": "سلام"}
    out = convert(1, row, FormatSpec("alpaca"), 1000)
    assert out.record is not None
    assert out.record["messages"][0]["content"] == "ترجمه کن\n\nhello"


def test_chat_roles_out_of_order_and_bad_roles() -> None:
    spec = FormatSpec("openai")
    two_users = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    (problem,) = convert(4, two_users, spec, 1000).problems
    assert problem.kind == "roles_order" and problem.field == "messages"
    bad_role = {"messages": [{"role": "robot", "content": "a"}]}
    (problem,) = convert(4, bad_role, spec, 1000).problems
    assert problem.field == "messages[0].role" and problem.kind == "bad_role"
    ends_with_user = {
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "a"},
        ]
    }
    assert "ends with a user turn" in convert(4, ends_with_user, spec, 1000).problems[0].message
    empty = {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "b"}]}
    (problem,) = convert(4, empty, spec, 1000).problems
    assert problem.field == "messages[0].content" and problem.kind == "empty_field"


def test_sharegpt_roles_are_mapped() -> None:
    row = {"conversations": [{"from": "human", "value": "سلام"}, {"from": "gpt", "value": "درود"}]}
    out = convert(1, row, FormatSpec("sharegpt"), 1000)
    assert out.record is not None
    assert [m["role"] for m in out.record["messages"]] == ["user", "assistant"]


def test_every_wrong_field_of_a_row_is_named() -> None:
    qa = convert(5, {"question": ["a"], "answer": ""}, FormatSpec("qa"), 1000)
    assert [(p.row, p.field, p.kind) for p in qa.problems] == [
        (5, "question", "wrong_type"),
        (5, "answer", "empty_field"),
    ]
    # a turn with a bad role and no content: both, not the role alone
    turn = {"messages": [{"role": "robot", "content": ""}, {"role": "assistant", "content": 1}]}
    chat = convert(6, turn, FormatSpec("openai"), 1000)
    assert [(p.row, p.field, p.kind) for p in chat.problems] == [
        (6, "messages[0].role", "bad_role"),
        (6, "messages[0].content", "empty_field"),
    ]
    assert chat.problems[1].message == "the field `messages[0].content` is empty"


def test_other_fields_with_invalid_utf8_are_a_problem_not_a_crash() -> None:
    # CSV keeps invalid bytes as surrogates; the record could not be written
    row = {"question": "چرا؟", "answer": "چون.", "source\udcff": "x", "note": "b\udcfe"}
    out = convert(2, row, FormatSpec("qa"), 1000)
    assert out.record is None
    assert [(p.field, p.kind) for p in out.problems] == [
        ("source?", "bad_utf8"),
        ("note", "bad_utf8"),
    ]


def test_bidi_controls_are_a_warning_naming_row_and_field() -> None:
    row = {"question": "رمز \u202eنیست\u202c درست", "answer": "باشه"}
    out = convert(3, row, FormatSpec("qa"), 1000)
    assert out.record is not None and not out.problems
    (warning,) = out.warnings
    assert (warning.row, warning.field, warning.kind) == (3, "question", "bidi_control")
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in warning.message
    assert "character 5" in warning.message
    isolate = {
        "messages": [{"role": "user", "content": "a\u2067b"}, {"role": "assistant", "content": "c"}]
    }
    (warning,) = convert(4, isolate, FormatSpec("openai"), 1000).warnings
    assert warning.field == "messages[0].content" and "U+2067" in warning.message


def test_zwnj_and_directional_marks_of_persian_text_are_no_warning() -> None:
    row = {"question": "کتاب\u200cها\u200f را می\u200cخوانم\u200e؟", "answer": "بله"}
    out = convert(1, row, FormatSpec("qa"), 1000)
    assert out.record is not None and out.warnings == []
