"""A training run's progress: its phases weighted by what each is expected to cost, the
fraction and ETA that follow, and the one-line messages the terminal and the job row show.

The weights are seconds on the two-core CPU of docs/performance.md, computed from the run's
sizes (covers, views, epochs, covers already cached), so the fraction grows about as fast as
the wall clock, whatever the dataset or the options; the ETA rescales them by the pace this
run has actually kept. A phase of epochs that ends early (early stopping), or a phase that
never runs, hands what is left of its share to the phases after it when the next phase
starts: the fraction never jumps over it, and never goes back. A phase with nothing to count
(loading TensorFlow, the export, the registration) moves by the clock (``estimate``): its
planned cost at the run's pace, up to 90% of its share until it ends.

``RunProgress`` only computes: each method returns a ``Tick`` (the snapshot, and whether it
should reach the terminal now), and the caller, on the event loop or in the training thread,
delivers it. Epoch ends and phase changes always reach it; covers and estimates at most every
``tick_s``. Its methods may be called from two threads (the training thread, and the event
loop's estimates).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from sleeve_common.training_progress import PHASE_LABELS, TrainingPhase, TrainingProgress

__all__ = ["RunProgress", "RunSizes", "Tick", "plan_weights", "trunk_weight", "with_eta"]

# Seconds on two CPU cores (docs/performance.md, 5,000 discogs5 covers, fine-tuning on).
_FETCH_PER_COVER = 0.002
_LOAD = 15.0  # TensorFlow, the base weights, the trunk's ONNX export (first run of a cache)
_TRUNK_PER_VIEW = 0.012  # decode, crop and run one view through the trunk
_TRUNK_PER_CACHED_COVER = 0.0005
_POOL_PER_VIEW = 0.0015  # the top blocks, frozen, over one cached view
_HEAD_PER_SAMPLE = 0.00004
_EPOCH_OVERHEAD = 0.5
_BASELINES = 6.0  # two softmax regressions set up (Keras)
_BASELINES_PER_COVER = 0.004  # decode and colour histogram
_BASELINES_PER_TRAIN_COVER = 0.002  # the regressions' epochs
_FINE_TUNE_PER_COVER = 0.005  # forward and backward through the top blocks
_FINE_TUNE_PER_VAL_COVER = 0.002
_EXPORT = 10.0
_VARIANT = 15.0
_EVALUATE_PER_COVER = 0.01
_EVALUATE = 1.0
_REGISTER = 5.0  # report figures, model card, registry row

_EPOCH_PHASES = (TrainingPhase.HEAD, TrainingPhase.FINE_TUNE)
# Phases with nothing to count: they move by the clock, up to this share of them.
_TIMED_PHASES = (
    TrainingPhase.LOAD,
    TrainingPhase.BASELINES,
    TrainingPhase.EXPORT,
    TrainingPhase.VARIANTS,
    TrainingPhase.EVALUATE,
    TrainingPhase.REGISTER,
)
_TIMED_SHARE_CAP = 0.9
# Snapshot fields shown until the run ends: the cache's share, the last epoch's figures.
_KEPT = ("covers_cached", "covers_computed", "loss", "accuracy", "val_loss", "val_accuracy")

_Method = TypeVar("_Method", bound=Callable[..., "Tick"])
_ETA_MIN_ELAPSED_S = 3.0  # before that the pace says nothing yet
_ETA_MIN_DONE = 1.0  # seconds of planned work


@dataclass(frozen=True)
class RunSizes:
    """What a run's cost depends on."""

    train: int
    val: int
    test: int
    train_views: int  # views of each training cover (the augmentation)
    epochs: int
    fine_tune_epochs: int  # 0: no fine-tuning
    variants: int = 0

    @property
    def covers(self) -> int:
        return self.train + self.val + self.test


def trunk_weight(views_to_compute: int, cached_covers: int) -> float:
    """The trunk phase's cost: the views still to compute, and reading the cached covers."""
    return views_to_compute * _TRUNK_PER_VIEW + cached_covers * _TRUNK_PER_CACHED_COVER


def plan_weights(sizes: RunSizes) -> dict[TrainingPhase, float]:
    """Each phase's expected cost, nothing cached yet (the trunk phase is re-weighed when it
    starts and the cache is known)."""
    train_samples = sizes.train * sizes.train_views
    return {
        TrainingPhase.FETCH: sizes.covers * _FETCH_PER_COVER,
        TrainingPhase.LOAD: _LOAD,
        TrainingPhase.TRUNK: trunk_weight(train_samples + sizes.val + sizes.test, 0),
        TrainingPhase.POOL: train_samples * _POOL_PER_VIEW,
        TrainingPhase.HEAD: sizes.epochs * (train_samples * _HEAD_PER_SAMPLE + _EPOCH_OVERHEAD),
        TrainingPhase.BASELINES: _BASELINES
        + sizes.covers * _BASELINES_PER_COVER
        + sizes.train * _BASELINES_PER_TRAIN_COVER,
        TrainingPhase.FINE_TUNE: sizes.fine_tune_epochs
        * (
            sizes.train * _FINE_TUNE_PER_COVER
            + sizes.val * _FINE_TUNE_PER_VAL_COVER
            + _EPOCH_OVERHEAD
        ),
        TrainingPhase.EXPORT: _EXPORT,
        TrainingPhase.VARIANTS: sizes.variants * _VARIANT,
        TrainingPhase.EVALUATE: sizes.test * _EVALUATE_PER_COVER + _EVALUATE,
        TrainingPhase.REGISTER: _REGISTER,
    }


def _locked(method: _Method) -> _Method:
    """The method holds the progress' lock while it runs."""

    @functools.wraps(method)
    def locked(self: RunProgress, *args: Any, **kwargs: Any) -> Tick:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast("_Method", locked)


@dataclass(frozen=True)
class Tick:
    """A progress update: the snapshot, and whether the terminal should get it now."""

    progress: TrainingProgress
    forward: bool


class RunProgress:
    """Where one training run stands, fed by its phases from the training thread and by
    ``estimate`` from the event loop (each method holds a lock)."""

    def __init__(
        self,
        weights: Mapping[TrainingPhase, float],
        *,
        tick_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._weights = dict(weights)
        self._order = [phase for phase in TrainingPhase if self._weights.get(phase, 0.0) > 0]
        self._tick_s = tick_s
        self._clock = clock
        self._now = now
        self._lock = threading.RLock()
        self._started = clock()
        self._last_forward = float("-inf")
        self._last_percent = -1
        self._phase: TrainingPhase | None = None
        self._phase_started = self._started
        self._message = ""
        self._share = 0.0  # of the current phase
        self._entry_fraction = 0.0  # when the current phase started
        self._entry_left = 0.0  # planned cost of the current and later phases then
        self._done_before = 0.0  # planned cost of the work finished in earlier phases
        self._fraction = 0.0
        self._fields: dict[str, object] = {}
        self._epochs = 0  # of the current epoch phase
        self._trunk_total = 0
        self._trunk_cached = 0
        self._trunk_expected_views = 0
        self._latest: TrainingProgress | None = None

    @property
    def latest(self) -> TrainingProgress | None:
        """The last snapshot (None before the first phase)."""
        return self._latest

    # --- what the run reports ------------------------------------------------------------

    @_locked
    def phase(self, phase: TrainingPhase, *, weight: float | None = None, **fields: object) -> Tick:
        """``phase`` starts (``weight``: its cost, re-estimated now; ``fields``: snapshot
        fields it sets); always forwarded. The phase before it is done: all of it, unless
        it was one of epochs, which early stopping may end sooner."""
        if self._phase is not None:
            if self._phase not in _EPOCH_PHASES:
                self._advance(1.0)
            self._done_before += self._weights.get(self._phase, 0.0) * self._share
        if weight is not None:
            self._weights[phase] = weight
        if phase not in self._order:
            self._order = [p for p in TrainingPhase if p in self._order or p == phase]
        self._phase, self._share = phase, 0.0
        self._phase_started = self._clock()
        self._entry_fraction = self._fraction
        self._entry_left = sum(self._weights.get(p, 0.0) for p in self._later(phase))
        self._fields = {k: v for k, v in self._fields.items() if k in _KEPT} | fields
        self._message = PHASE_LABELS[phase]
        return self._tick(self._message, forward=True)

    def estimate(self) -> Tick | None:
        """For a phase with nothing to count: its share guessed from the time it has run,
        against its planned cost at the run's pace (at most 90%); None for other phases."""
        with self._lock:
            if self._phase not in _TIMED_PHASES:
                return None
            now = self._clock()
            expected = self._weights.get(self._phase, 0.0) * self._pace(now - self._started)
            if expected > 0:
                self._advance(min((now - self._phase_started) / expected, _TIMED_SHARE_CAP))
            return self._tick(self._message, forward=False, moved=True)

    @_locked
    def covers(self, done: int, total: int) -> Tick:
        """``done`` of ``total`` covers fetched (the fetch phase)."""
        self._advance(done / total if total else 1.0)
        self._fields.update(covers=done, covers_total=total)
        return self._tick(f"fetching covers: {done}/{total}", forward=done >= total)

    @_locked
    def advance(self, done: int, total: int) -> Tick:
        """``done`` of ``total`` parts of the current phase (covers pooled, …)."""
        self._advance(done / total if total else 1.0)
        label = PHASE_LABELS[self._phase or TrainingPhase.LOAD]
        return self._tick(f"{label}: {done}/{total}", forward=done >= total)

    @_locked
    def epoch_phase(self, phase: TrainingPhase, *, epochs: int) -> Tick:
        """A phase of at most ``epochs`` epochs starts."""
        self._epochs = epochs
        return self.phase(phase, epoch=0, epochs=epochs)

    @_locked
    def trunk_phase(self, *, total: int, cached: int, views_to_compute: int) -> Tick:
        """The trunk phase starts: ``cached`` of ``total`` covers are in the cache already."""
        self._trunk_total = total
        self._trunk_cached = cached
        self._trunk_expected_views = views_to_compute
        return self.phase(
            TrainingPhase.TRUNK,
            weight=trunk_weight(views_to_compute, cached),
            covers=0,
            covers_total=total,
            covers_cached=cached,
            covers_computed=0,
        )

    @_locked
    def trunk(self, done: int, *, computed: int, computed_views: int) -> Tick:
        """``done`` covers through the trunk, ``computed`` of them (``computed_views`` views)
        by this run, the others read from the cache."""
        total = self._trunk_total
        read = done - computed
        planned = trunk_weight(self._trunk_expected_views, self._trunk_cached)
        work = trunk_weight(computed_views, read)
        self._advance(work / planned if planned else 1.0)
        # An entry the cache could not read is computed: cached is what was read.
        self._fields.update(covers=done, covers_cached=read, covers_computed=computed)
        message = f"trunk activations: cover {done}/{total}"
        if read:
            message += f" ({read} from the cache)"
        return self._tick(message, forward=done >= total)

    @_locked
    def epoch(self, epoch: int, logs: Mapping[str, float]) -> Tick:
        """Epoch ``epoch`` (1-based) of the current phase ended with ``logs``; forwarded."""
        epochs = max(self._epochs, epoch)
        self._advance(epoch / epochs)
        metrics = {
            name: float(logs[name])
            for name in ("loss", "accuracy", "val_loss", "val_accuracy")
            if name in logs
        }
        self._fields.update(epoch=epoch, **metrics)
        label = PHASE_LABELS[self._phase or TrainingPhase.HEAD]
        shown = ", ".join(
            f"{name.replace('_', ' ')} {metrics[name]:.3f}"
            for name in ("loss", "accuracy", "val_accuracy")
            if name in metrics
        )
        return self._tick(f"{label} epoch {epoch}/{epochs}: {shown}", forward=True)

    @_locked
    def finished(self, message: str) -> Tick:
        """The run is over; always forwarded."""
        self._fraction = 1.0
        self._share = 1.0
        return self._tick(message, forward=True, eta_s=0.0)

    # --- arithmetic ------------------------------------------------------------------------

    def _later(self, phase: TrainingPhase) -> list[TrainingPhase]:
        return self._order[self._order.index(phase) :]

    def _advance(self, share: float) -> None:
        """The current phase is ``share`` done: the fraction is its entry value plus that share
        of its cost, out of what was left when it started."""
        self._share = min(max(share, self._share), 1.0)
        if self._phase is None or self._entry_left <= 0:
            return
        cost = self._weights.get(self._phase, 0.0) * self._share
        fraction = self._entry_fraction + (1 - self._entry_fraction) * cost / self._entry_left
        self._fraction = min(max(fraction, self._fraction), 1.0)

    def _done(self) -> float:
        """Planned cost of the work done so far."""
        current = self._weights.get(self._phase, 0.0) if self._phase is not None else 0.0
        return self._done_before + current * self._share

    def _pace(self, elapsed: float) -> float:
        """Seconds per planned second so far (1 until the pace says something)."""
        done = self._done()
        if elapsed < _ETA_MIN_ELAPSED_S or done < _ETA_MIN_DONE:
            return 1.0
        return elapsed / done

    def _eta_s(self, elapsed: float) -> float | None:
        if self._phase is None or elapsed < _ETA_MIN_ELAPSED_S or self._done() < _ETA_MIN_DONE:
            return None
        current = self._weights.get(self._phase, 0.0)
        later = self._later(self._phase)[1:]
        left = current * (1 - self._share) + sum(self._weights.get(p, 0.0) for p in later)
        return left * self._pace(elapsed)  # the planned cost at the pace kept so far

    def _tick(
        self, message: str, *, forward: bool, eta_s: float | None = None, moved: bool = False
    ) -> Tick:
        """The snapshot now; ``forward`` it, or any tick ``tick_s`` after the last one that
        was (with ``moved``, only if the percent shown changed since: an estimate)."""
        assert self._phase is not None, "a phase must start first"
        now = self._clock()
        elapsed = now - self._started
        eta = eta_s if eta_s is not None else self._eta_s(elapsed)
        step = self._order.index(self._phase) + 1
        snapshot = TrainingProgress.model_validate(
            {
                **self._fields,
                "phase": self._phase,
                "step": step,
                "steps": len(self._order),
                "fraction": round(self._fraction, 4),
                "elapsed_s": round(elapsed, 1),
                "eta_s": None if eta is None else round(eta, 1),
                "message": message,
                "updated_at": self._now(),
            }
        )
        self._latest = snapshot
        percent = int(self._fraction * 100)
        forward = forward or (
            now - self._last_forward >= self._tick_s
            and not (moved and percent == self._last_percent)
        )
        if forward:
            self._last_forward, self._last_percent = now, percent
        return Tick(snapshot, forward)


def with_eta(progress: TrainingProgress) -> str:
    """The snapshot's message, with the time left at its end when it is known."""
    if progress.eta_s is None or progress.fraction >= 1:
        return progress.message
    seconds = round(progress.eta_s)
    return f"{progress.message} · ETA {seconds // 60}:{seconds % 60:02d}"
