"""What the main window needs of every tool tab: open an image, run, and take a request back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QDragEnterEvent, QDropEvent, QImage
from PySide6.QtWidgets import QFileDialog, QWidget

from studio.app.jobs import JobSnapshot, JobState
from studio.errors import UserError
from studio.ui.convert import load_qimage
from studio.ui.jobs import failure_text

if TYPE_CHECKING:
    from studio.ui.main_window import MainWindow

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
IMAGE_FILTER = "Images (" + " ".join(f"*{s}" for s in IMAGE_SUFFIXES) + ");;All files (*)"


class ToolTab(QWidget):
    tool = ""
    title = ""
    accepts_images = True  # whether history outputs can be sent to it

    def __init__(self, window: MainWindow) -> None:
        super().__init__()
        self.window_ = window
        self.setAcceptDrops(True)

    open_dialog_title = "Open an image"

    def open_image(self, path: Path, parent_id: int | None = None) -> None:
        raise NotImplementedError

    def choose_image(self) -> None:
        """Ask for an image file (the Open button) and open it."""
        path, _ = QFileDialog.getOpenFileName(self, self.open_dialog_title, "", IMAGE_FILTER)
        if path:
            self.open_image(Path(path))

    def run(self) -> None:
        """Queue the request the widgets describe."""
        raise NotImplementedError

    def submit(self, request: Any) -> Any:
        """Queue `request` as it is (re-run) and show its progress and result in this tab."""
        raise NotImplementedError

    def load_request(self, request: Any) -> None:
        """Show a request's parameters in the widgets (re-run from the history shows what runs)."""
        raise NotImplementedError

    # Every tab has `self.view` (an ImageView), `self.status` and `self.input_label` (QLabels),
    # `self.input_path` and `self.parent_id`.
    def take_input(self, path: Path, parent_id: int | None) -> QImage | None:
        """Decode `path` as the tab's new input (None, and a message, if it cannot be read);
        `parent_id` is the history entry it came from, for lineage."""
        try:
            image = load_qimage(path)
        except UserError as exc:
            self.window_.notifications.error(str(exc))
            return None
        self.input_path = Path(path)
        self.parent_id = parent_id
        self.input_label.setText(f"{Path(path).name} — {image.width()}×{image.height()}")
        return image

    def report_unfinished(self, job: JobSnapshot) -> None:
        """A cancelled or failed job: say so in the tab (and, for a failure, the window) and
        show the input again in place of the partial preview."""
        if job.state == JobState.CANCELLED:
            self.set_status("Cancelled — no output was written.")
        else:
            message = failure_text(job)
            self.set_status(f"Failed: {message}", error=True)
            self.window_.notifications.error(f"{job.title} failed: {message}")
        self.restore_input()

    def restore_input(self) -> None:
        if self.input_path is not None:
            self.view.set_before(None)
            self.view.set_image(load_qimage(self.input_path))

    def set_status(self, text: str, *, error: bool = False) -> None:
        self.status.setText(text)
        self.status.setStyleSheet("color:#e06060;" if error else "")

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if _dropped_image(event) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        path = _dropped_image(event)
        if path is not None:
            event.acceptProposedAction()
            self.open_image(path)


def _dropped_image(event: QDragEnterEvent | QDropEvent) -> Path | None:
    for url in event.mimeData().urls():
        if url.isLocalFile() and url.toLocalFile().lower().endswith(IMAGE_SUFFIXES):
            return Path(url.toLocalFile())
    return None
