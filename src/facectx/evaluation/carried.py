"""Rows of an evaluation made elsewhere, carried into this one: an air-gapped GPU visit takes the
classical baselines' and the real-vs-real rows scored at home on the same test photos (when the
pack was built) and scores only the models it trained."""

from __future__ import annotations

# What must agree for rows to be comparable: the photos, the networks, the verification threshold.
COMPARABLE = ("test_set", "matcher", "fd_network", "perceptual_network", "threshold")


def carried_rows(reference: dict, facts: dict) -> dict[str, dict]:
    """Every method row of `reference` (a metrics.json) when it was measured as this evaluation
    is (`facts`: the COMPARABLE values of this one); a ValueError naming the first that differs."""
    for key in COMPARABLE:
        if reference.get(key) != facts.get(key):
            raise ValueError(
                f"the carried evaluation's {key} is {reference.get(key)!r}, this one's {facts.get(key)!r}: "
                f"rows measured on other photos, networks or thresholds cannot stand beside this run's"
            )
    return dict(reference["methods"])
