import logging

from spark_vl.rewards import check


def test_wrong_answer_to_word_options_is_plain_wrong_without_gold_warning(caplog):
    choices = ["circle", "square", "triangle"]
    with caplog.at_level(logging.WARNING, logger="spark_vl.rewards"):
        result = check("qqq", "C", answer_type="mcq_letter", choices=choices)
        assert not result.correct and result.gold_error is None
        assert check("triangle", "C", answer_type="mcq_letter", choices=choices).correct
        assert not check("square", "C", answer_type="mcq_letter", choices=choices).correct
    assert not caplog.records
