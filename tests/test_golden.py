"""Issue 19's guard: the same config and seed give the same numbers after popdyn's code moved.

``tests/data/golden.npz`` holds every array a tiny run of each generated task stored (parameters, losses,
fixed points, Jacobian spectra, distances, MDS), recorded by ``python -m tests.golden`` before the
reorganisation.  Bit-identical on the machine that recorded them; another CPU's XLA (other vector
instructions, other summation order) may differ in the last bits, which a few-step run only amplifies
slightly — hence the tolerance, far below any change of the code's maths.
"""

import numpy as np
import pytest

from tests import golden

pytestmark = pytest.mark.slow

RECORDED = dict(np.load(golden.GOLDEN)) if golden.GOLDEN.exists() else {}


@pytest.mark.parametrize("task", golden.TASKS)
def test_a_tiny_run_gives_the_recorded_numbers(task, tmp_path):
    expected = {k[len(task) + 1 :]: v for k, v in RECORDED.items() if k.startswith(task + "/")}
    assert expected, f"nothing recorded for {task}: run python -m tests.golden {task}"
    got = golden.run(task, tmp_path / task)
    missing = sorted(set(expected) - set(got))
    assert not missing, f"{task}: arrays no longer stored: {missing}"
    for key, want in expected.items():
        have = got[key]
        if key.endswith(":statistics"):  # [metric, factor, statistic]: a new metric adds rows, by label
            labels = [str(m) for m in got[key + "_metric"]]
            have = have[[labels.index(str(m)) for m in expected[key + "_metric"]]]
        elif key.endswith(":statistics_metric"):  # the labels themselves: the recorded ones, in order
            have = np.array([m for m in have if m in set(want.tolist())], dtype=want.dtype)
        assert have.shape == want.shape and have.dtype == want.dtype, key
        if want.dtype.kind in "biuSU":
            np.testing.assert_array_equal(have, want, err_msg=key)
        else:
            np.testing.assert_allclose(have, want, rtol=2e-4, atol=2e-5, equal_nan=True, err_msg=key)
