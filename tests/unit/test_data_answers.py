"""Gold normalisation, option parsing and question keys (spark_vl.data.answers)."""

from __future__ import annotations

import pytest

from spark_vl.data.answers import Gold, normalize_gold, parse_options, question_key, unbox


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\\boxed{17}", "17"),
        ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("The answer is \\boxed{5}.", "5"),
        ("\\boxed{1}, \\boxed{2}", "1, 2"),
        ("x = \\boxed{3} when y = 2", "x = \\boxed{3} when y = 2"),  # prose around a box is kept
        ("\\boxed{unbalanced", "\\boxed{unbalanced"),
        ("plain", "plain"),
    ],
)
def test_unbox(raw, expected):
    assert unbox(raw) == expected


@pytest.mark.parametrize(
    ("raw", "choices", "expected"),
    [
        ("\\boxed{17^\\circ}", None, Gold("17^\\circ", "expression")),
        ("\\boxed{B}", None, Gold("B", "mcq_letter")),
        ("(B)", ["3", "4", "5"], Gold("B", "mcq_letter")),
        ("B.", ["3", "4", "5"], Gold("B", "mcq_letter")),
        ("Option C", ["3", "4", "5"], Gold("C", "mcq_letter")),
        ("4", ["3", "4", "5"], Gold("B", "mcq_letter")),  # option text resolves to its letter
        ("B: 4", ["3", "4", "5"], Gold("B", "mcq_letter")),
        ("A, C", ["1", "2", "3"], Gold("A, C", "mcq_multi")),
        ("C and A", ["1", "2", "3"], Gold("A, C", "mcq_multi")),
        ("1,000", None, Gold("1000", "integer")),
        ("-3", None, Gold("-3", "integer")),
        ("2.50", None, Gold("2.50", "float")),
        ("yes", None, Gold("Yes", "yes_no")),
        ("<answer> 3 </answer>", None, Gold("3", "integer")),
        ("\\text{left}", None, Gold("left", "text")),
        ("AC", None, Gold("AC", "text")),  # a segment name, not two letters
        (12, None, Gold("12", "integer")),
        (True, None, Gold("Yes", "yes_no")),
        ("3\\sqrt{2}", None, Gold("3\\sqrt{2}", "expression")),
    ],
)
def test_normalize_gold(raw, choices, expected):
    assert normalize_gold(raw, choices) == expected


def test_option_text_that_looks_like_a_letter_form():
    # "A: yes" is itself an option: the gold names that option, not whatever "A" is.
    assert normalize_gold("B: no", ["A: yes", "B: no"]) == Gold("B", "mcq_letter")


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ("Find x.\nChoices:\n(A) 3\n(B) 4", ["3", "4"]),
        ("Which?\nA. red\nB. green\nC. blue", ["red", "green", "blue"]),
        ("Which? Choices: A. 3 B. 4 C. 5", ["3", "4", "5"]),
        ("Point A. is on the line", None),
        ("(B) only\n(C) later", None),  # must start at A
        ("No options here", None),
    ],
)
def test_parse_options(problem, expected):
    assert parse_options(problem) == expected


def test_question_key_normalises_prefixes_options_and_placeholders():
    a = "<image>Hint: Please answer the question.\nQuestion: What is  $X$ ?\nChoices:\n(A) 1\n(B) 2"
    b = "What is x?"
    assert question_key(a) == question_key(b) == "what is x"
    assert question_key("<image 1>Find   the area!") == "find the area"
