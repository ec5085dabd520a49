"""poller.ClaimBudget: after a poll conflicts, the next polls claim
fewer jobs (half as many as the conflicted one), and as many as the
agent may hold again once polls commit."""
from pyramid_zcasync.poller import FEWEST_CLAIMS, UNCAPPED, ClaimBudget


class Agent(list):
    """len() is the jobs the agent holds."""


def test_no_cap_until_a_conflict():
    assert ClaimBudget().limit(Agent([1, 2]), 150) == 150


def test_a_conflict_halves_what_the_next_poll_claims():
    budget = ClaimBudget()
    budget.conflicted(claimed=120)
    assert budget.limit(Agent([1, 2]), 150) == 2 + 60
    budget.conflicted(claimed=60)
    assert budget.limit(Agent(), 150) == 30


def test_never_below_the_fewest():
    budget = ClaimBudget()
    budget.conflicted(claimed=1)
    assert budget.limit(Agent(), 150) == FEWEST_CLAIMS


def test_commits_double_it_back_to_no_cap():
    budget = ClaimBudget()
    budget.conflicted(claimed=8)
    for _ in range(UNCAPPED.bit_length()):
        budget.committed()
    assert budget.cap is None
    assert budget.limit(Agent(), 150) == 150
