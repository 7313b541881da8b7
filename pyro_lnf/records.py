"""Run records: ``RUN/run.json`` (what a run is and how it was started), ``RUN/evaluations.jsonl``
(what ``lnf evaluate`` measured on its checkpoints) and the table of ``lnf runs``.

``run.json`` is written once, atomically, by the trainer that holds the run folder's lock,
before the first step:

============== =====================================================================
key            contents
============== =====================================================================
``format``     ``"pyro-lnf-run"`` and ``format_version``
``model``      the ``--model`` name (``afaf``, ..., ``lstm``, ``svae``, ``nvdm``)
``dataset``    the dataset's name
``config``     the resolved options: preset plus overrides, every training option and the
               model's options (what ``lnf train --config`` reads back)
``overrides``  the options given explicitly (on the command line or to ``run_training``)
``command``    the command line (``null`` when called from Python)
``versions``   pyro-lnf, torch, Pyro and Python
``git_commit`` the commit of the package's checkout, if it is one (``git_dirty`` beside it)
``device``     where it trains; ``parameters``: the number of trainable parameters
``started``    local time, ISO 8601
``resumed``    one entry per ``--resume``: its command, time, position, versions, overrides
============== =====================================================================

``lnf train --config OLD/run.json --out NEW`` repeats the run (seed included): see
:func:`read_config`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyro_lnf.errors import ConfigError
from pyro_lnf.io import atomic_write

__all__ = [
    "EVALUATIONS",
    "RUN_RECORD",
    "distinct_names",
    "read_config",
    "read_run",
    "record_evaluation",
    "runs_table",
    "summarize_run",
    "write_run_record",
]

RUN_RECORD = "run.json"
EVALUATIONS = "evaluations.jsonl"
FORMAT = "pyro-lnf-run"
FORMAT_VERSION = 1

#: Training options that say where and how a run reports, not what it computes: not part of
#: the recorded configuration (``out`` and ``resume`` are given on the command line).
_NOT_RECORDED = ("out", "resume", "quiet", "log_every", "log_minutes", "tensorboard")


# ------------------------------------------------------------------------------------------
# writing


def versions() -> dict[str, str]:
    import pyro
    import torch

    from pyro_lnf import __version__

    return {
        "pyro-lnf": __version__,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "python": platform.python_version(),
    }


def git_commit(where: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """The commit of the git checkout holding ``where`` (default: this package) and whether
    its tracked files differ from it; ``(None, None)`` outside a checkout or without git."""
    where = Path(where or Path(__file__).resolve().parent)

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True,
                              timeout=10, check=False)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None, None
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return head.stdout.strip(), bool(dirty.stdout.strip()) if dirty.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None, None


def command_line(argv: list[str] | None) -> str | None:
    return None if argv is None else shlex.join(argv)


def recorded_config(train_config: dict[str, Any],
                    model_options: dict[str, Any]) -> dict[str, Any]:
    """The options ``--config`` reads back: the training options (less where and how the run
    reports) and the model's options."""
    config = {k: v for k, v in train_config.items() if k not in _NOT_RECORDED}
    config.update(model_options)
    return config


def write_run_record(out: str | os.PathLike, record: dict[str, Any], *, resume: bool,
                     position: dict[str, Any] | None = None) -> Path:
    """Write ``out/run.json`` for a new run, or add ``record``'s command to the ``resumed``
    list of the run's record (written afresh, marked, if the run has none). Only the holder
    of the folder's lock may call this."""
    path = Path(out) / RUN_RECORD
    if resume:
        try:
            existing = read_run(path)
        except ConfigError:
            existing = None
        entry = {k: record.get(k) for k in ("command", "overrides", "versions", "git_commit",
                                            "git_dirty", "device")}
        entry.update(at=record.get("started"), **(position or {}))
        if existing is None:  # a run from before run.json, or its record lost
            existing = {**record, "recorded_on_resume": True}
        existing.setdefault("resumed", []).append(entry)
        record = existing
    with atomic_write(path, "w") as f:
        f.write(json.dumps(record, indent=2, default=_jsonable) + "\n")
    return path


def new_record(*, model: str, dataset: str, config: dict[str, Any], overrides: dict[str, Any],
               command: list[str] | None, device: str, parameters: int) -> dict[str, Any]:
    commit, dirty = git_commit()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "dataset": dataset,
        "config": config,
        "overrides": {k: v for k, v in overrides.items() if k not in ("out", "resume")},
        "command": command_line(command),
        "versions": versions(),
        "git_commit": commit,
        "git_dirty": dirty,
        "device": device,
        "parameters": parameters,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def start_record(out: str | os.PathLike, module: Any, config: Any, given: dict[str, Any],
                 state: Any) -> dict[str, Any]:
    """Write (or, resuming, extend) ``out/run.json`` for ``module`` trained with ``config``
    (a :class:`~pyro_lnf.train.TrainConfig`); ``given`` holds what the caller knows beyond
    them: ``model``, ``dataset``, ``model_options`` (the options the model was built with,
    recorded in ``config``; the app's typed model config knows them, the module does not),
    ``overrides``, ``command``. Returns the record."""
    model_config = dict(getattr(module, "config", {}))
    name = getattr(module, "name", type(module).__name__)
    record = new_record(
        model=given.get("model") or (model_config.get("prior") if name == "lnf" else name),
        dataset=given.get("dataset") or model_config.get("dataset"),
        config=recorded_config(config.to_dict(), given.get("model_options") or {}),
        overrides=given.get("overrides") or {},
        command=given.get("command"),
        device=str(config.device),
        parameters=sum(p.numel() for p in module.parameters() if p.requires_grad),
    )
    position = {"epoch": state.epoch, "batch": state.batch, "step": state.step}
    write_run_record(out, record, resume=config.resume, position=position)
    return read_run(Path(out) / RUN_RECORD) if config.resume else record


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # a tensor or numpy value in a model's options
        return value.tolist()
    return str(value)


def describe(record: dict[str, Any]) -> str:
    """The few lines ``lnf train`` prints before the first step."""
    config = record["config"]
    size = {k: config[k] for k in ("latent_dim", "hidden_size", "flow_layers") if k in config}
    lines = [
        f"run {record['model']} on {record['dataset']}: {record['parameters']:,} parameters "
        f"on {record['device']}, seed {config.get('seed')}",
        "  " + ", ".join(f"{k} {v}" for k, v in (
            ("epochs", config.get("epochs")), ("batch", config.get("batch_size")),
            ("lr", config.get("lr")), ("optimizer", config.get("optimizer")), *size.items(),
        )),
    ]
    if config.get("limit_batches"):
        lines[-1] += f", at most {config['limit_batches']} batches per pass"
    v = record["versions"]
    commit = record.get("git_commit")
    lines.append(
        f"  pyro-lnf {v['pyro-lnf']}, torch {v['torch']}, pyro {v['pyro']}"
        + (f", commit {commit[:10]}{'+' if record.get('git_dirty') else ''}" if commit else "")
    )
    if record.get("resumed"):
        lines[0] = f"resuming {lines[0][4:]} (resume {len(record['resumed'])})"
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# reading a record back as options


def read_run(path: str | os.PathLike) -> dict[str, Any]:
    """A ``run.json`` (or an options file), as a dict; :class:`ConfigError` in one line if it
    is missing, unreadable or not a JSON object."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory; give its {RUN_RECORD}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The options of a ``--config`` file, flat: ``model``, ``dataset`` and option names.

    The file is either a ``run.json`` (its ``model``, ``dataset`` and ``config``; the rest is
    history and ignored) or a JSON object of option names (underscores, as in ``run.json``'s
    ``config``). Names are checked by the caller, which knows the options.
    """
    data = read_run(path)
    if data.get("format") == FORMAT:
        config = data.get("config")
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: 'config' must be a JSON object")
        options = {"model": data.get("model"), "dataset": data.get("dataset"), **config}
    else:
        options = dict(data)
    if "model" in options and "config" in options:  # a nested file of another layout
        raise ConfigError(f"{path}: unknown key 'config' (is 'format' missing?)")
    return {k: v for k, v in options.items() if v is not None}


# ------------------------------------------------------------------------------------------
# evaluations


def run_folder_of(checkpoint: str | os.PathLike) -> Path | None:
    """The run folder a checkpoint lies in (one with ``run.json`` or ``metrics.jsonl``)."""
    folder = Path(checkpoint).resolve().parent
    if (folder / RUN_RECORD).is_file() or (folder / "metrics.jsonl").is_file():
        return folder
    return None


def record_evaluation(checkpoint: str | os.PathLike, results: dict[str, Any],
                      command: list[str] | None = None) -> Path | None:
    """Append ``results`` (with the checkpoint's name, the time and the command) to
    ``RUN/evaluations.jsonl`` when the checkpoint lies in a run folder; return the file.

    The file is rewritten atomically under its own lock (not the run folder's, which a
    training run may hold while its best.pt is evaluated), so concurrent evaluations each
    keep their line and a reader never sees half of one.
    """
    import fcntl

    folder = run_folder_of(checkpoint)
    if folder is None:
        return None
    path = folder / EVALUATIONS
    entry = {
        "checkpoint": Path(checkpoint).name,
        "evaluated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command_line(command),
        **results,
    }
    with open(folder / ".evaluations.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = path.read_bytes() if path.exists() else b""
        if old and not old.endswith(b"\n"):
            old += b"\n"
        with atomic_write(path, "wb") as f:
            f.write(old + (json.dumps(entry, default=_jsonable) + "\n").encode())
    return path


def best_epoch(metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The metrics line of the epoch ``best.pt`` holds: the lowest validation −ELBO at β = 1
    once annealing is done (lines written before ``anneal_done`` existed count as done), as
    :func:`pyro_lnf.train.train` chooses it; ``None`` if no epoch qualifies."""
    done = [m for m in metrics if m.get("anneal_done", True) is not False
            and _finite(m.get("valid_loss_beta1")) and _finite(m.get("epoch"))]
    return min(done, key=lambda m: m["valid_loss_beta1"], default=None)


def read_jsonl(path: str | os.PathLike, *, strict: bool = False) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file (``metrics.jsonl``, ``evaluations.jsonl``), in
    order; blank lines are skipped.

    Lenient by default, for tables over runs that may be being written: a missing file is
    ``[]`` and a line that is not a JSON object (a torn last line) is skipped. With ``strict``
    such a line raises :class:`ConfigError` naming the file and the line, and text that is not
    UTF-8 raises :class:`UnicodeDecodeError`.
    """
    path = Path(path)
    if not strict and not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="strict" if strict else "replace")
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            if strict:
                raise ConfigError(f"{path}, line {number}: not valid JSON ({err.msg})") from err
            continue
        if isinstance(value, dict):
            found.append(value)
        elif strict:
            raise ConfigError(f"{path}, line {number}: expected a JSON object per line")
    return found


# ------------------------------------------------------------------------------------------
# lnf runs


def distinct_names(folders: Sequence[str | os.PathLike]) -> list[str]:
    """Each run folder's name, with as many of its parent folders as it takes to tell it from
    the other folders': ``runs/repro-jsb/afaf`` and ``runs/repro-piano/afaf`` are
    ``repro-jsb/afaf`` and ``repro-piano/afaf``; a name no other folder shares, or a folder
    given twice, stays bare (``lnf runs``, and the legend of ``lnf plot``)."""
    paths = [Path(folder).resolve().parts for folder in folders]

    def tail(parts: tuple[str, ...], depth: int) -> str:
        return Path(*parts[-depth:]).as_posix()

    names = []
    for parts in paths:
        depth = 1
        while depth < len(parts) and any(
            other != parts and tail(other, depth) == tail(parts, depth) for other in paths
        ):
            depth += 1
        names.append(tail(parts, depth))
    return names


def summarize_run(folder: str | os.PathLike) -> dict[str, Any]:
    """One run's figures for :func:`runs_table`: model, dataset, epochs done (and planned),
    best validation −ELBO (β = 1, the best.pt rule) and its epoch, best validation IS NLL,
    the latest test NLL that ``lnf evaluate`` recorded (best.pt's if any), wall-clock.

    :raises ConfigError: ``folder`` holds neither ``run.json`` nor ``metrics.jsonl``.
    """
    folder = Path(folder)
    record_path, metrics_path = folder / RUN_RECORD, folder / "metrics.jsonl"
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a directory")
    if not record_path.is_file() and not metrics_path.is_file():
        raise ConfigError(f"{folder} is not a run folder (no {RUN_RECORD} or metrics.jsonl)")
    record = read_run(record_path) if record_path.is_file() else {}
    metrics = read_jsonl(metrics_path)
    planned = record.get("config", {}).get("epochs")
    for resumed in record.get("resumed", []):
        planned = (resumed.get("overrides") or {}).get("epochs", planned)
    best = best_epoch(metrics)
    nlls = [m["valid_nll"] for m in metrics if _finite(m.get("valid_nll"))]
    tests = [e for e in read_jsonl(folder / EVALUATIONS)
             if e.get("split") == "test" and _finite(_test_nll(e))]
    test = ([e for e in tests if e.get("checkpoint") == "best.pt"] or tests or [None])[-1]
    return {
        "run": folder.name or str(folder),
        "model": record.get("model", "?"),
        "dataset": record.get("dataset", "?"),
        "epochs": metrics[-1]["epoch"] + 1 if metrics and "epoch" in metrics[-1] else 0,
        "planned": planned,
        "best_valid": best["valid_loss_beta1"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "best_nll": min(nlls) if nlls else None,
        "test_nll": _test_nll(test) if test else None,
        "test_checkpoint": test.get("checkpoint") if test else None,
        "wall_s": metrics[-1].get("wall_s") if metrics else None,
    }


def _test_nll(evaluation: dict[str, Any]) -> float | None:
    # Latent-flow models: nats per unit; the VAEs: IS NLL per token.
    return evaluation.get("nll_nats_per_unit", evaluation.get("nll_is_nats_per_token"))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_SHORT_DATASETS = {
    "jsb_chorales": "jsb", "nottingham": "nott", "muse_data": "muse", "piano_midi": "piano",
    "ptb_char": "ptb-c", "ptb_words": "ptb-w", "20news": "20news",
}


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


#: The run column's width: what the figures leave of 80 columns.
_RUN_WIDTH = 18


def _fit(name: str) -> str:
    """A run's name cut to the run column. A name of :func:`distinct_names` differs from the
    others in its first part and its folder, so both stay: ``seed1/…/afaf``, ``repro-not…/afaf``.
    Plain names are left to the table, which cuts their end."""
    if len(name) <= _RUN_WIDTH or "/" not in name:
        return name
    first, *_, last = name.split("/")
    between = "/…/" if name.count("/") > 1 else "/"
    room = _RUN_WIDTH - len(between) - len(last)
    if room < 2:
        return "…" + name[1 - _RUN_WIDTH:]
    return (first if len(first) <= room else first[: room - 1] + "…") + between + last


def runs_table(summaries: list[dict[str, Any]]):
    """A rich table of run summaries that fits 80 columns: long run names are cut with an
    ellipsis; datasets are abbreviated; figures in nats per unit."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0),
                  caption="nats/unit; valid: best -ELBO at β=1 (epoch); test*: not best.pt")
    # The figures keep their widths; the run's name takes what is left and is cut with "…".
    table.add_column("run", overflow="ellipsis", no_wrap=True, max_width=_RUN_WIDTH)
    for header, width in (("model", 6), ("data", 6), ("epochs", 7), ("valid", 11),
                          ("val NLL", 7), ("test NLL", 8), ("wall", 6)):
        table.add_column(header, justify="left" if header in ("model", "data") else "right",
                         no_wrap=True, min_width=width)
    for s in summaries:
        epochs = str(s["epochs"]) + (f"/{s['planned']}" if s["planned"] is not None else "")
        valid = "-" if s["best_valid"] is None else f"{s['best_valid']:.3f} ({s['best_epoch']})"
        table.add_row(
            _fit(s["run"]), s["model"], _SHORT_DATASETS.get(s["dataset"], s["dataset"]), epochs,
            valid,
            "-" if s["best_nll"] is None else f"{s['best_nll']:.3f}",
            "-" if s["test_nll"] is None else f"{s['test_nll']:.3f}"
            + ("" if s["test_checkpoint"] in ("best.pt", None) else "*"),
            _clock(s["wall_s"]),
        )
    return table
