import pytest

import ember
from tests.oracle import check_op, gradcheck_op, rand


@pytest.mark.parametrize(
    "sa,sb",
    [
        ((3, 4), (4, 5)),
        ((4,), (4,)),
        ((3, 4), (4,)),
        ((4,), (4, 5)),
        ((2, 3, 4), (4, 5)),
        ((2, 3, 4), (2, 4, 5)),
        ((2, 1, 3, 4), (5, 4, 2)),
        ((4,), (2, 4, 3)),
        ((2, 3, 4), (4,)),
        ((0, 4), (4, 3)),
    ],
)
def test_matmul_matches_torch(sa, sb):
    check_op(lambda a, b: a @ b, [rand(*sa, seed=1), rand(*sb, seed=2)])


def test_matmul_noncontiguous():
    check_op(lambda a, b: a @ b, [rand(3, 4, seed=1), rand(4, 5, seed=2)], noncontiguous=True)


@pytest.mark.parametrize("sa,sb", [((2, 3), (3, 2)), ((3,), (3,)), ((2, 2, 3), (3,))])
def test_matmul_gradcheck(sa, sb):
    gradcheck_op(lambda a, b: ember.matmul(a, b), [rand(*sa, seed=3), rand(*sb, seed=4)])


def test_mm_bmm_mv_dot():
    check_op(lambda a, b: a.mm(b), [rand(2, 3), rand(3, 4)])
    check_op(lambda a, b: a.bmm(b), [rand(2, 2, 3), rand(2, 3, 4)])
    check_op(lambda a, b: a.mv(b), [rand(2, 3), rand(3)])
    check_op(lambda a, b: a.dot(b), [rand(3), rand(3)])
