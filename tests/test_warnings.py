"""No deprecated calls from this project: a whole train.py run (warm-up, rollouts with both KV caches, the update
with every memory option, evaluation, checkpoint, resume) must raise no DeprecationWarning or FutureWarning.

pytest.ini ignores DeprecationWarning from transformers.* (its own internals, outside our control); here every
warning is recorded whatever its origin, because a deprecation that *our* call triggers is reported with the
library's file and line (e.g. transformers 5.24's `past_key_values` FutureWarning points into torch's module.py).
transformers also announces deprecations through its logger (`warning_once`), so those are caught as well.
"""
import contextlib
import logging
import warnings

import countdown
import train

DEPRECATED = (DeprecationWarning, FutureWarning, PendingDeprecationWarning)
TINY = ["--eval-problems", "4", "--eval-samples", "2", "--prompts-per-step", "2", "--group-size", "4", "--k", "2",
        "--max-new-tokens", "6", "--no-progress"]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def recorded_deprecations():
    """Yields a list that, once the block has run, holds every deprecation raised inside it, as readable lines."""
    handler = _Records()
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    once = getattr(logging.Logger, "warning_once", None)
    if hasattr(once, "cache_clear"):
        once.cache_clear()                     # a message already logged once by an earlier test must show again
    found = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")    # overrides pytest.ini's ignore and the once-per-location registry
            yield found
    finally:
        hf_logger.removeHandler(handler)
    found += [f"{w.category.__name__} at {w.filename}:{w.lineno}: {w.message}" for w in caught
              if issubclass(w.category, DEPRECATED)]
    found += [f"transformers log: {m}" for m in handler.messages if "deprecat" in m.lower()]


def test_a_whole_run_and_its_resume_call_nothing_deprecated(tmp_path, monkeypatch):
    # a reward the random-init model gets half the time, so that the update has work to do
    monkeypatch.setattr(countdown, "reward", lambda response, numbers, target: float(len(response) % 2 == 0))
    out = str(tmp_path / "run")
    common = ["--warmup-cache", str(tmp_path / "wc"), "--sft-steps", "2", *TINY]
    with recorded_deprecations() as found:
        train.main(["--out", out, "--steps", "2", "--save-every", "1", "--kl-coef", "0.1", "--stats-from-hidden",
                    "on", "--grad-checkpointing", "--micro-batch-size", "3", *common])
        train.main(["--out", out, "--steps", "3", "--resume"])                   # checkpoint and config reload
        train.main(["--out", str(tmp_path / "static"), "--steps", "1", "--decode", "static", *common])  # cached warm-up
    assert not found, "\n".join(found)


def test_the_check_catches_deprecations_reported_at_a_library_line():
    def library_call():                        # the warning names this function's line, not the caller's
        warnings.warn("`old_name` is deprecated; use `new_name`", FutureWarning, stacklevel=1)
    with recorded_deprecations() as found:
        library_call()
        warnings.warn("harmless", UserWarning)
        logging.getLogger("transformers.models.llama").warning("`foo` is deprecated and will be removed")
    assert len(found) == 2 and "FutureWarning" in found[0] and "transformers log" in found[1]
