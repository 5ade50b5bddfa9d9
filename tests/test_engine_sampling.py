"""Specifications of the deterministic data order that makes a resume exact."""

from paa_toolkit.engine.sampling import DeterministicBatchSampler


def test_batch_of_an_iteration_does_not_depend_on_where_the_run_started():
    straight = list(DeterministicBatchSampler(5, 2, seed=1, start=0, end=6))
    resumed = list(DeterministicBatchSampler(5, 2, seed=1, start=3, end=6))
    assert resumed == straight[3:]
    first_epoch = [i for batch in straight for i, _ in batch][:5]
    assert sorted(first_epoch) == [0, 1, 2, 3, 4]
