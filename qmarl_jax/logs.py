"""Progress bar (tqdm) and TensorBoard event files (tensorboardX) for the host loop."""

from __future__ import annotations

from pathlib import Path


class ProgressBar:
    """A tqdm bar over batches showing the latest headline metrics."""

    def __init__(self, total: int, done: int, enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=done, unit="batch", disable=not enabled,
                        dynamic_ncols=True)  # fmt: skip

    def update(self, rows: list[dict], headline: tuple[str, ...]) -> None:
        last = rows[-1]
        self.bar.set_postfix({k: f"{last[k]:.3g}" for k in headline if k in last})
        self.bar.update(len(rows))

    def write(self, message: str) -> None:
        """Print a line above the bar."""
        self.bar.write(message)

    def close(self) -> None:
        self.bar.close()


class TensorBoard:
    """Writes every metric of every batch as a TensorBoard scalar."""

    def __init__(self, log_dir: Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    def write(self, rows: list[dict]) -> None:
        for row in rows:
            for key, value in row.items():
                if key != "batch":
                    self.writer.add_scalar(key, value, row["batch"])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
