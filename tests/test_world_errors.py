"The answer-way classifier of benchmarks/world_errors.py, whose counts nbs/04_world.ipynb quotes (issue 31)."
import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))  # benchmarks/ is not a package
from world_errors import answer_way  # noqa: E402

STEPWISE = ("Ben has 5 bags of 2 beads, so he has 5 * 2 = 10 beads.\nFirst, he gives away 2 beads, so he has 10 - 2 = 8 "
            "beads.\nFinally, he buys 6 more beads, so he has 8 + 6 = 14 beads.\n#### 14")


@pytest.mark.parametrize("prediction, way", [
    (STEPWISE, "stepwise"),
    (" Emma has 18 marbles.\nFirst, she buys 5 more marbles, so she has 18 + 5 = 23 marbles.\n#### 23", "stepwise"),
    ("Mia has 5 apples, so she has 5 + 3 - 2 = 6 apples.\n#### 6", "compact"),
    ("Ben has 5 bags of 2 beads, so he has 5 * 2 - 2 + 6 = 14 beads.\n#### 14", "compact"),
    (" 12", "answer-only"),
    (" #### 14", "answer-only"),
    ("Mia has 5 apples.\n#### 5 + 3 - 2 = 6", "answer-only"),  # only the working before `####` counts
])
def test_answer_way(prediction, way):
    assert answer_way(prediction) == way
