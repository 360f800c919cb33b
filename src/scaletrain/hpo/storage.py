"""Where a study lives: SQLite in the run directory by default, or any Optuna storage URL.

Several `scaletrain optimize` processes (or jobs) share one study by naming the same
storage URL and study name, e.g. a PostgreSQL server:
`--storage postgresql+psycopg2://user:password@host:5432/dbname` (with the psycopg2-binary
package of the dev extra; a plain postgresql:// URL needs psycopg 3).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from scaletrain.errors import ConfigError, RunDirError
from scaletrain.hpo.evolution import VOID

DB_NAME = "study.db"


def storage_url(storage: str | None, run_dir: str | Path) -> str:
    """The configured URL, or SQLite in the run directory."""
    if storage:
        return storage
    return f"sqlite:///{(Path(run_dir) / DB_NAME).resolve()}"


def open_study(
    url: str,
    name: str,
    *,
    direction: str,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    resume: bool,
    overwrite: bool,
    shared: bool,
) -> optuna.Study:
    """Create or load the study. A study in the run directory is continued only with
    --resume; a shared storage (`shared`) is joined as it is."""
    storage = _open_storage(url)
    exists = name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if exists and overwrite:
        optuna.delete_study(study_name=name, storage=storage)
        exists = False
    if resume and not exists:
        raise RunDirError(f"nothing to resume: no study {name!r} in {_safe(url)}")
    if exists and not (resume or shared):
        raise RunDirError(
            f"study {name!r} already exists in {_safe(url)}; use --resume to continue it or "
            "--overwrite to replace it"
        )
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {name!r} {study.direction.name.lower()}s its objective but "
            f"search.direction is {direction}"
        )
    return study


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Mark trials left RUNNING by a killed study as failed and enqueue their parameters
    again (the evolution sampler gives their generation slot to the replacement)."""
    storage, numbers = study._storage, []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_system_attr(t._trial_id, VOID, True)
        storage.set_trial_user_attr(t._trial_id, "error", "interrupted; re-enqueued by --resume")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"requeued_from": t.number})
        numbers.append(t.number)
    return numbers


def counted(study: optuna.Study) -> int:
    """Trials that count towards search.trials: asked and not voided by a resume."""
    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return sum(
        1 for t in study.get_trials(deepcopy=False, states=states) if not t.system_attrs.get(VOID)
    )


def _storage(url: str, attempts: int = 6) -> optuna.storages.BaseStorage:
    kwargs = {}
    if url.startswith("sqlite:"):
        # several processes may write: wait for the lock instead of failing at once
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except ImportError:
            raise
        except Exception:
            # processes that start together on an empty database race to create its tables:
            # the losers fail once, then find the tables made
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


def _open_storage(url: str) -> optuna.storages.BaseStorage:
    try:
        return _storage(url)
    except ImportError:
        hint = ""
        if url.startswith("postgresql:"):
            hint = (
                " (SQLAlchemy 2.1 reads postgresql:// with psycopg 3: pip install 'psycopg[binary]'"
                ", or use postgresql+psycopg2:// with pip install psycopg2-binary)"
            )
        raise ConfigError(f"storage {_safe(url)} needs a database driver{hint}") from None
    except Exception as exc:  # sqlalchemy's errors: unreachable server, bad URL, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot open study storage {_safe(url)}: {first}") from None


def _safe(url: str) -> str:
    """The URL without its password."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, user = head.partition("://")
    if ":" not in user:
        return url
    return f"{scheme}://{user.split(':')[0]}:***@{tail}"
