"""What the Generate and Inpaint tabs share once a request is built: its jobs, per-step progress
and previews, cancelling, the warnings a run reports, and sending the result on to another tab."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.app.jobs import Job, JobSnapshot, JobState
from studio.ui.convert import qimage_from_array
from studio.ui.diffusion_controls import DiffusionControls
from studio.ui.tool_tab import ToolTab

PROGRESS_STEPS = 1000


@dataclass
class _Run:
    job: Job
    size: tuple[int, int]  # what a preview is scaled to, so it frames like the result
    seed: int


class DiffusionTab(ToolTab):
    """Subclasses build `self.controls`, `self.view` and call `_build_run_widgets`; they show a
    preview with `show_preview` and a finished entry with `show_result`."""

    send_targets: tuple[str, ...] = ()

    def __init__(self, window) -> None:
        super().__init__(window)
        self.input_path = None
        self.parent_id: int | None = None
        self.last_entry_id: int | None = None
        self._runs: dict[int, _Run] = {}
        self.controls = DiffusionControls(window)

    def _build_run_widgets(self, run_text: str) -> QWidget:
        """Run and Cancel, the progress bar, status and warnings, and the send-to buttons."""
        self.run_button = QPushButton(run_text)
        self.run_button.setToolTip(f"{run_text} (Ctrl+Enter)")
        self.run_button.setDefault(True)
        self.run_button.clicked.connect(self.run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop this tab's runs; a stopped run writes nothing")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setRange(0, PROGRESS_STEPS)
        self.progress.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.warning = QLabel("")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color:#e0a040;")
        self.warning.setVisible(False)
        self.send_buttons: dict[str, QPushButton] = {}
        box = QWidget()
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.cancel_button)
        send_row = QHBoxLayout()
        send_row.setContentsMargins(0, 0, 0, 0)
        for title in self.send_targets:
            button = QPushButton(f"To {title}")
            button.setToolTip(
                f"Open the result in the {title} tab (its history entry is the parent)"
            )
            button.clicked.connect(lambda _checked=False, t=title: self.send_result(t))
            button.setEnabled(False)
            self.send_buttons[title] = button
            send_row.addWidget(button)
        layout = QVBoxLayout(box)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.warning)
        layout.addLayout(send_row)
        return box

    # -- running --------------------------------------------------------------------------
    def submit(self, request: Any) -> Job:
        title = f"{self.title} “{_short(request.prompt)}” · seed {request.seed}"
        job = self.window_.submit(
            request, title=title, parent_id=self.parent_id, on_finished=self._finished
        )
        self._runs[job.id] = _Run(job, self.preview_size(request), request.seed)
        self.cancel_button.setEnabled(True)
        self.warning.setVisible(False)
        self.set_status(f"Queued: {title}")
        return job

    def preview_size(self, request: Any) -> tuple[int, int]:
        raise NotImplementedError

    def cancel(self) -> None:
        """Cancel this tab's queued and running jobs."""
        for run in list(self._runs.values()):
            self.window_.jobs.cancel(run.job)

    def job_changed(self, job: JobSnapshot) -> None:
        run = self._runs.get(job.id)
        if run is None or job.state != JobState.RUNNING:
            return
        self.progress.setValue(int(job.fraction * PROGRESS_STEPS))
        waiting = len(self._runs) - 1
        more = f" · {waiting} more queued" if waiting else ""
        self.set_status(f"Seed {run.seed}: {job.message}{more}")
        if job.preview is not None:
            preview = qimage_from_array(job.preview).scaled(
                run.size[0],
                run.size[1],
                Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.SmoothTransformation,
            )
            self.show_preview(preview)

    def show_preview(self, image: QImage) -> None:
        self.view.set_before(None)
        self.view.set_image(image, keep_view=True)

    def _finished(self, job: JobSnapshot) -> None:
        run = self._runs.pop(job.id, None)
        self.cancel_button.setEnabled(bool(self._runs))
        self.progress.setValue(PROGRESS_STEPS if job.state == JobState.DONE else 0)
        if job.state != JobState.DONE:
            self.report_unfinished(job)
            return
        entry = job.result
        self.show_result(entry)
        seed = entry.seed if entry.seed is not None else (run.seed if run else "?")
        left = f" · {len(self._runs)} more to go" if self._runs else ""
        self.set_status(
            f"Done — seed {seed} · entry #{entry.id} · {entry.duration_s or 0:.1f} s{left}"
        )
        warnings = list(entry.facts.get("warnings") or [])
        self.warning.setText("\n".join(f"⚠ {text[0].upper()}{text[1:]}" for text in warnings))
        self.warning.setVisible(bool(warnings))
        for button in self.send_buttons.values():
            button.setEnabled(True)

    def show_result(self, entry: Any) -> None:
        """Show a finished entry, and set `last_entry_id` to what the send buttons send."""
        raise NotImplementedError

    def send_result(self, tab_title: str) -> None:
        if self.last_entry_id is not None:
            self.window_.send_to(self.last_entry_id, tab_title)

    def has_model(self) -> bool:
        """Say what to do when no model is chosen, instead of failing."""
        if self.controls.picker.reference:
            return True
        self.set_status(
            "Choose a model first: pick a local model or type a repo id under Model, or "
            "Get models… to download one.",
            error=True,
        )
        return False


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
