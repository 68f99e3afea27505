"""Gold normalisation, option parsing and question keys (spark_vl.data.answers)."""

from __future__ import annotations

import pytest

from spark_vl.config import RewardConfig
from spark_vl.data.answers import Gold, normalize_gold, parse_options, question_key, unbox
from spark_vl.rewards import infer_answer_type, score
from spark_vl.types import Sample


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
        ("\\boxed{17^\\circ}", None, Gold("17^\\circ", "integer")),  # degrees are a number (the verifier's rule)
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


# One gold vocabulary: the stored type of a prepared row is the verifier's inference on its canonical gold.
# The first nine rows are the structure review's simple golds; the two old classifiers disagreed on six of them.
GOLDS = [
    ("3/4", None, "float"),  # a number: exact fraction
    ("pi", None, "expression"),  # a maths word, not text: "\\pi", "π" and 3.14 must match it
    ("\\frac{1}{2}", None, "float"),
    ("50%", None, "float"),
    ("x=3", None, "integer"),  # the verifier reads the assignment's value
    ("A, C", None, "mcq_multi"),  # "C, A" and "A and C" must match it
    ("12", None, "integer"),
    ("yes", None, "yes_no"),
    ("red", None, "text"),
    ("1,000", None, "integer"),
    ("-2.5", None, "float"),
    ("0.125", None, "float"),
    ("\\dfrac{3}{8}", None, "float"),
    ("17^\\circ", None, "integer"),
    ("5 cm", None, "integer"),
    ("3\\sqrt{2}", None, "expression"),
    ("x^2 + 1", None, "expression"),
    ("(1, 3]", None, "expression"),
    ("(-\\infty, 2)", None, "expression"),
    ("\\{1, 2\\}", None, "expression"),
    ("B", None, "mcq_letter"),
    ("(B)", ["3", "4", "5"], "mcq_letter"),
    ("4", ["3", "4", "5"], "mcq_letter"),
    ("C and A", ["1", "2", "3"], "mcq_multi"),
    ("AC", ["1", "2", "3"], "mcq_multi"),
    ("AC", None, "text"),  # a segment name without options
    ("No.", None, "yes_no"),
    ("\\text{left}", None, "text"),
    ("New York, NY", None, "text"),
    ("Mr. Smith", None, "text"),
    ("x, y", None, "expression"),
]


@pytest.mark.parametrize(("raw", "choices", "kind"), GOLDS)
def test_stored_type_is_the_verifier_inference_on_the_canonical_gold(raw, choices, kind):
    gold = normalize_gold(raw, choices)
    assert gold.answer_type == kind
    assert infer_answer_type(gold.answer, choices) == gold.answer_type


@pytest.mark.parametrize(("raw", "choices", "kind"), GOLDS)
def test_a_prepared_gold_verifies_its_own_boxed_form(raw, choices, kind):
    gold = normalize_gold(raw, choices)
    sample = Sample(uid="g", problem="", answer=gold.answer, choices=choices, answer_type=gold.answer_type)
    assert score(f"\\boxed{{{gold.answer}}}", sample, RewardConfig()).parts["accuracy"] == 1.0


@pytest.mark.parametrize("response", ["\\boxed{C, A}", "\\boxed{A and C}", "\\boxed{A, C}"])
def test_stored_multi_choice_gold_accepts_the_letters_in_any_order(response):
    gold = normalize_gold("A, C")  # a recipe row without parsed options
    assert gold == Gold("A, C", "mcq_multi")
    sample = Sample(uid="m", problem="", answer=gold.answer, answer_type=gold.answer_type)
    assert score(response, sample, RewardConfig()).parts["accuracy"] == 1.0
    assert score("\\boxed{A}", sample, RewardConfig()).parts["accuracy"] == 0.0


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
