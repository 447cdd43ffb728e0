"""Every error this product raises on purpose, in one tree (catch what you expect, by its branch):

    LoopError                      base: a known failure, with a message a person can act on
    ├── InvalidInput (ValueError)  what someone gave us is wrong; nothing was changed
    │   ├── SettingsError              feedback/settings.py   a bad setting (named in the message)
    │   ├── KeyPartError               feedback/keys.py       an id or user name that may not reach a key (HTTP 400)
    │   ├── PromptSpecError            feedback/prompt.py     a prompt spec that is malformed or conflicts with a published one
    │   ├── RatingError                feedback/rating.py     a rating refused: unknown answer, someone else's
    │   │   └── RatingLimited          feedback/rating.py     past RATINGS_PER_MINUTE (HTTP 429)
    │   └── RegistryError              feedback/registry.py   an unknown version, or one the gate rejected
    ├── NotEnoughData (ValueError) the ratings cannot make a retraining run yet: the run is skipped
    │   ├── DatasetError               training/dataset/      too few, one class only, nothing new
    │   └── TrainDataError             training/train.py      nothing left to train on (e.g. all too long)
    ├── ServiceError (RuntimeError) something we depend on failed or is missing
    │   ├── StartupError               launcher/process.py    a service did not come up
    │   ├── WarmUpError                feedback/serving.py    the model server could not load a version: it was not switched to
    │   ├── ModelError                 bot/model.py           the chat model failed an answer
    │   ├── TrainError                 training/train.py      a model or adapter could not be loaded to train
    │   ├── EvalError                  training/evaluate.py   a model could not be loaded to score it
    │   ├── JudgeError                 training/judge.py      the judge model could not be asked
    │   └── RetentionError             training/retention.py  a dataset prune could not run (a run holds the lock)
    ├── LostLockError (RuntimeError) training/job.py         the retraining lock expired before commit
    └── OwnershipError (PermissionError) bot/datalayer.py     a write into someone else's thread

The simulated users' own errors (sim/simulate.py) are not the product's and stay outside.
"""

from __future__ import annotations


class LoopError(Exception):
    """A failure the product knows about; its message says what happened and what to do."""


class InvalidInput(LoopError, ValueError):
    """Something given to us (a setting, an id, a spec, a rating, a version) is wrong; nothing changed."""


class NotEnoughData(LoopError, ValueError):
    """The ratings cannot make a retraining run yet; the run is skipped, not failed."""


class ServiceError(LoopError, RuntimeError):
    """Something the product depends on (a server, a model, a file) failed or is missing."""
