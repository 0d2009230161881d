"""A training run's progress, on a simulated clock: a tick per epoch, a fraction that grows
smoothly to 1 (no phase, early stop or cache hit makes it jump), and an ETA that follows the
pace the run keeps.

The run is the size of the discogs5 one in docs/performance.md; the simulated machine is
30% slower than the one the costs were measured on, and each step takes its planned cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

import pytest

from sleeve_common.training_progress import TrainingPhase, TrainingProgress, eta_now
from sleeve_trainer.run_progress import (
    RunProgress,
    RunSizes,
    Tick,
    plan_weights,
    trunk_weight,
    with_eta,
)

SIZES = RunSizes(train=3556, val=444, test=444, train_views=12, epochs=10, fine_tune_epochs=8)
SLOWER = 1.3
HEAD_STOPS_AFTER = 6  # early stopping
FINE_TUNE_STOPS_AFTER = 5


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(
    cached: int = 0, stops: tuple[int, int] = (HEAD_STOPS_AFTER, FINE_TUNE_STOPS_AFTER)
) -> tuple[list[Tick], list[float]]:
    """Every tick of a whole run, and the clock at each (``cached`` covers in the cache, the
    head and fine-tuning stopped early after ``stops`` epochs)."""
    clock = Clock()
    weights = plan_weights(SIZES)
    progress = RunProgress(weights, clock=clock)
    ticks: list[Tick] = []
    times: list[float] = []

    def tick(t: Tick, cost: float = 0.0) -> None:
        clock.now += cost * SLOWER
        ticks.append(t)
        times.append(clock.now)

    def timed(phase: TrainingPhase) -> None:
        """A phase with nothing to count, estimated every half second as the run does."""
        tick(progress.phase(phase))
        end = clock.now + weights[phase] * SLOWER
        while clock.now + 0.5 < end:
            clock.now += 0.5
            estimate = progress.estimate()
            assert estimate is not None
            tick(estimate)
        clock.now = end

    covers = SIZES.covers
    tick(progress.phase(TrainingPhase.FETCH, covers=0, covers_total=covers))
    per_cover = weights[TrainingPhase.FETCH] / covers
    for done in range(1, covers + 1):
        tick(progress.covers(done, covers), per_cover)
    timed(TrainingPhase.LOAD)
    views = [SIZES.train_views] * SIZES.train + [1] * (SIZES.val + SIZES.test)
    to_compute = sum(views[cached:])
    tick(progress.trunk_phase(total=covers, cached=cached, views_to_compute=to_compute))
    computed = computed_views = 0
    for done, n in enumerate(views, start=1):
        if done > cached:
            computed, computed_views = computed + 1, computed_views + n
            cost = trunk_weight(n, 0)
        else:
            cost = trunk_weight(0, 1)
        tick(progress.trunk(done, computed=computed, computed_views=computed_views), cost)
    tick(progress.phase(TrainingPhase.POOL))
    chunks = range(64, SIZES.train + 64, 64)
    for done in chunks:
        tick(
            progress.advance(min(done, SIZES.train), SIZES.train),
            weights[TrainingPhase.POOL] / len(chunks),
        )
    for phase, epochs, stop in (
        (TrainingPhase.HEAD, SIZES.epochs, stops[0]),
        (TrainingPhase.FINE_TUNE, SIZES.fine_tune_epochs, stops[1]),
    ):
        if phase is TrainingPhase.FINE_TUNE:
            timed(TrainingPhase.BASELINES)
        tick(progress.epoch_phase(phase, epochs=epochs))
        assert progress.estimate() is None  # epochs are counted
        for epoch in range(1, stop + 1):
            logs = {"loss": 1 / epoch, "accuracy": 0.5, "val_loss": 1.2, "val_accuracy": 0.4}
            tick(progress.epoch(epoch, logs), weights[phase] / epochs)
    for phase in (TrainingPhase.EXPORT, TrainingPhase.EVALUATE, TrainingPhase.REGISTER):
        timed(phase)
    tick(progress.finished("registered model v1"))
    return ticks, times


def fractions(ticks: list[Tick]) -> list[float]:
    return [t.progress.fraction for t in ticks]


def test_the_fraction_grows_smoothly_from_0_to_1() -> None:
    ticks, _ = simulate()

    shares = fractions(ticks)
    assert shares[0] == 0.0 and shares[-1] == 1.0
    assert shares == sorted(shares), "the fraction went back"
    jumps = [b - a for a, b in pairwise(shares)]
    # The largest step: an epoch of fine-tuning (2.4% of this run).
    assert max(jumps) < 0.03, f"a jump of {max(jumps):.1%}"


def test_an_early_stop_hands_its_share_on_without_a_jump() -> None:
    ticks, _ = simulate()
    progress = [t.progress for t in ticks]

    last_fine_tune = max(i for i, p in enumerate(progress) if p.phase is TrainingPhase.FINE_TUNE)
    stopped, export = progress[last_fine_tune], progress[last_fine_tune + 1]
    assert (stopped.epoch, stopped.epochs) == (FINE_TUNE_STOPS_AFTER, SIZES.fine_tune_epochs)
    assert export.phase is TrainingPhase.EXPORT
    assert export.fraction == stopped.fraction


def test_every_epoch_ticks_with_its_figures_and_reaches_the_terminal() -> None:
    ticks, _ = simulate()

    epochs = [t for t in ticks if t.progress.epoch]
    assert len(epochs) == HEAD_STOPS_AFTER + FINE_TUNE_STOPS_AFTER
    assert all(t.forward for t in epochs)
    head = [t.progress for t in epochs if t.progress.phase is TrainingPhase.HEAD]
    assert [(p.epoch, p.epochs) for p in head] == [(n, 10) for n in range(1, 7)]
    assert head[2].loss == pytest.approx(1 / 3)
    assert (head[2].accuracy, head[2].val_accuracy, head[2].val_loss) == (0.5, 0.4, 1.2)
    assert head[2].message == "head epoch 3/10: loss 0.333, accuracy 0.500, val accuracy 0.400"
    assert head[2].step == 5 and head[2].steps == 10  # no variants: 10 of the 11 phases
    last = ticks[-1].progress  # the last epoch's figures stay, its number does not
    assert (last.loss, last.epoch, last.epochs) == (1 / FINE_TUNE_STOPS_AFTER, None, None)


def test_covers_reach_the_terminal_at_most_twice_a_second() -> None:
    ticks, times = simulate()

    trunk = [
        (t, at)
        for t, at in zip(ticks, times, strict=True)
        if t.progress.phase is TrainingPhase.TRUNK and t.progress.covers
    ]
    forwarded = [at for t, at in trunk if t.forward]
    seconds = trunk[-1][1] - trunk[0][1]
    assert len(trunk) == SIZES.covers
    assert seconds - 2 <= len(forwarded) <= seconds / 0.5 + 2  # about twice a second
    gaps = [b - a for a, b in pairwise(forwarded)]
    assert min(gaps) >= 0.5 or forwarded[-1] == trunk[-1][1]  # the last cover always passes
    assert trunk[-1][0].forward


def test_the_eta_follows_the_pace_the_run_keeps() -> None:
    # Every epoch runs: the plan cannot know when early stopping will end a phase.
    ticks, times = simulate(stops=(SIZES.epochs, SIZES.fine_tune_epochs))
    end = times[-1]

    checked = 0
    for t, at in zip(ticks, times, strict=True):
        if at < 60 or end - at < 20:
            continue
        assert t.progress.eta_s is not None
        assert 0.85 * (end - at) <= t.progress.eta_s <= 1.15 * (end - at), t.progress
        checked += 1
    assert checked > 1000
    assert ticks[-1].progress.eta_s == 0


def test_covers_found_in_the_cache_are_shown_and_move_the_fraction_little() -> None:
    ticks, _ = simulate(cached=SIZES.covers)

    trunk = [t.progress for t in ticks if t.progress.phase is TrainingPhase.TRUNK]
    assert trunk[-1].covers == SIZES.covers
    assert (trunk[-1].covers_cached, trunk[-1].covers_computed) == (SIZES.covers, 0)
    assert trunk[-1].fraction - trunk[0].fraction < 0.02
    assert ticks[-1].progress.covers_cached == SIZES.covers  # still said at the end
    assert trunk[-1].message == "trunk activations: cover 4444/4444 (4444 from the cache)"
    shares = fractions(ticks)
    assert shares == sorted(shares)
    # An epoch of fine-tuning is a larger share of a run that computes nothing (6.4%).
    assert max(b - a for a, b in pairwise(shares)) < 0.07


def test_the_eta_counts_down_from_when_it_was_written() -> None:
    written = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    progress = TrainingProgress(
        phase=TrainingPhase.HEAD,
        step=5,
        steps=10,
        fraction=0.5,
        elapsed_s=60,
        eta_s=40,
        message="head epoch 1/10",
        updated_at=written,
    )

    assert eta_now(progress, written.replace(second=15)) == 25
    assert eta_now(progress, written.replace(minute=5)) == 0
    assert with_eta(progress) == "head epoch 1/10 · ETA 0:40"
    assert with_eta(progress.model_copy(update={"eta_s": None})) == "head epoch 1/10"
