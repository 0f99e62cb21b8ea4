"""Training and RL-run metrics: one CSV row per log call, the same scalars to TensorBoard, learning-curve PNGs."""
from __future__ import annotations

import csv
import math
from pathlib import Path


class MetricsLogger:
    """Appends `metrics.csv` in run_dir (column `step` plus every key seen) and writes TensorBoard scalars.

    A key first seen after the header was written rewrites the file with the wider header, so the CSV
    always parses with one header. Non-numeric values go to the CSV only. With `config`, the run's resolved
    config goes to `config.yaml` (a parameter file that reproduces the run) and TensorBoard's text panel.
    """

    def __init__(self, run_dir, tensorboard: bool = True, config=None):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_text = None
        if config is not None:
            from tdmpc_ros.config import config_yaml

            config_text = config_yaml(config)
            (self.run_dir / "config.yaml").write_text(config_text)
        self.csv_path = self.run_dir / "metrics.csv"
        self.columns: list[str] = []
        if self.csv_path.exists() and self.csv_path.stat().st_size:  # a resumed run keeps its rows
            with self.csv_path.open(newline="") as f:
                self.columns = next(csv.reader(f), [])
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            if config_text is not None:  # markdown: indented lines are shown as code
                self.writer.add_text("config", "    " + config_text.replace("\n", "\n    "))

    def log(self, step: int, values: dict) -> None:
        row = {"step": step, **values}
        new = [key for key in row if key not in self.columns]
        if new:
            self._widen(self.columns + new if self.columns else list(row))
        with self.csv_path.open("a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow(row)
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def _widen(self, columns: list[str]) -> None:
        rows = []
        if self.csv_path.exists() and self.columns:
            with self.csv_path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.csv_path)
        self.columns = columns

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(csv_path) -> dict[str, list[float]]:
    """Columns of a metrics CSV as floats (NaN where a row has no value or a non-numeric one)."""
    with Path(csv_path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = rows[0].keys() if rows else []
    return {key: [_number(row.get(key)) for row in rows] for key in columns}


def _number(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def plot_learning_curve(csv_path, out_png, x: str = "step", ys: list[str] | None = None,
                        title: str = "", xlabel: str = "") -> Path:
    """One panel per y column against x (e.g. losses vs updates; success rate and return vs env steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_metrics(csv_path)
    if x not in data:
        raise ValueError(f"{csv_path}: no column {x!r}; columns are {sorted(data)}")
    ys = list(ys or [k for k in data if k != x])
    missing = [y for y in ys if y not in data]
    if missing:
        raise ValueError(f"{csv_path}: no column(s) {missing}; columns are {sorted(data)}")
    fig, axes = plt.subplots(len(ys), 1, figsize=(7, 2.2 * len(ys) + 0.6), sharex=True, squeeze=False)
    for ax, y in zip(axes[:, 0], ys):
        points = [(a, b) for a, b in zip(data[x], data[y]) if math.isfinite(a) and math.isfinite(b)]
        ax.plot([a for a, _ in points], [b for _, b in points], lw=1.2)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(xlabel or x)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_png)


def save_figure(fig, path) -> Path:
    """Lay out, write (making the folder) and close a matplotlib figure: every plot of the package, one look."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_success_curves(path, runs: list[tuple[str, list[dict]]], title: str, target: float = 0.9) -> Path:
    """Rolling success against env steps, one colour per labelled run and one line per seed (each seed a
    benchmark JSON's {"curve": [[env_steps, rate], ...]}), the target rate dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (label, seeds) in enumerate(runs):
        for j, seed in enumerate(seeds):
            steps, rates = zip(*seed["curve"]) if seed["curve"] else ((), ())
            ax.plot(steps, rates, color=f"C{i}", lw=1.3, alpha=1.0 if j == 0 else 0.6, label=label if j == 0 else None)
    ax.axhline(target, color="gray", ls="--", lw=0.8)
    ax.set_xlabel("online env steps")
    ax.set_ylabel("success rate (last 20 ep.)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)
