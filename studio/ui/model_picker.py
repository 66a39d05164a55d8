"""The model choice of the tools that run model files through spandrel (Upscale, Restore).

One picker lists the Models library's installed models for its tool (built-in ones first), then
the files the user browsed to recently, then "Get more…", which opens the Models dialog instead
of becoming the choice. The chosen file's architecture is read off the GUI thread; a file the
tool cannot use is refused with the tool's reason.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QPushButton, QWidget
from superqt.utils import create_worker

from studio.app.runs import describe_error
from studio.app.settings import Settings
from studio.errors import UserError
from studio.models.library import LibraryError

GET_MORE = "studio:get-more-models"
MODEL_FILTER = "Model files (*.pth *.pt *.safetensors *.ckpt);;All files (*)"


class ModelFilePicker(QWidget):
    """`combo` and `browse_button` in one row, `label` below it for the tab's form.

    `refuse(info)` returns why the tool cannot use a model (None: it can), `describe(info)` the
    line shown once it is read, `remember(settings, path)` the settings that record a usable
    choice. `changed` fires whenever the usable choice changes.
    """

    changed = Signal()

    def __init__(
        self,
        window: Any,
        tool: str,
        *,
        hint: str,
        browse_title: str,
        describe: Callable[[Any], str],
        remember: Callable[[Settings, str], Settings],
        refuse: Callable[[Any], str | None] = lambda info: None,
    ) -> None:
        super().__init__()
        self.window_ = window
        self.tool = tool
        self.info: Any = None  # the chosen model's ModelInfo, once read
        self.path: str | None = None  # the chosen file, whatever the combo shows
        self._describe = describe
        self._remember = remember
        self._refuse = refuse
        self._browse_title = browse_title
        self.combo = QComboBox()
        self.combo.setMinimumContentsLength(18)
        self.combo.setPlaceholderText("Choose a model file…")
        self.combo.activated.connect(self._activated)
        self.browse_button = QPushButton("Browse…")
        self.browse_button.clicked.connect(self._browse)
        self.label = QLabel(hint)
        self.label.setWordWrap(True)
        self.row = QHBoxLayout(self)
        self.row.setContentsMargins(0, 0, 0, 0)
        self.row.addWidget(self.combo, 1)
        self.row.addWidget(self.browse_button)

    def set_model(self, path: Path | str) -> None:
        """Choose a model file; its architecture is read on a worker thread."""
        path = Path(path)
        self.path = str(path)
        self._add(str(path))
        self.combo.setCurrentIndex(self.combo.findData(str(path)))
        self.info = None
        self.label.setText(f"Reading {path.name}…")
        self.changed.emit()
        self._inspect_worker = create_worker(
            _inspect,
            str(path),
            _connect={
                "returned": lambda info, p=str(path): self._inspected(p, info),
                "errored": lambda exc, p=str(path): self._failed(p, exc),
            },
        )

    def refresh(self) -> None:
        """Rebuild the list from the library; the chosen model stays chosen while its file
        exists."""
        current = self.path
        self.combo.blockSignals(True)
        self.combo.clear()
        try:
            items = self.window_.models.installed(self.tool)
        except LibraryError as exc:
            self.window_.notifications.error(str(exc))
            items = []
        for item in items:
            label = f"{item.name} (built in)" if item.origin == "shipped" else item.name
            self._add(str(item.path), label)
        for model in self.window_.ctx.settings.recent_models:
            if Path(model).is_file():
                self._add(model)
        self.combo.insertSeparator(self.combo.count())
        self.combo.addItem("Get more…", GET_MORE)
        self.combo.setItemData(
            self.combo.count() - 1, "Download, import or remove models", Qt.ItemDataRole.ToolTipRole
        )
        if current and Path(current).is_file():
            self._add(current)
        self.combo.setCurrentIndex(self.combo.findData(current) if current else -1)
        self.combo.blockSignals(False)
        if current and self.combo.currentData() != current:
            self.info = self.path = None  # its file was removed
            self.label.setText("The model was removed; choose another.")
            self.changed.emit()

    def _inspected(self, path: str, info: Any) -> None:
        if self.combo.currentData() != path:
            return  # another model was chosen meanwhile
        reason = self._refuse(info)
        if reason:
            self._failed(path, UserError(reason))
            return
        self.info = info
        self.label.setText(self._describe(info))
        ctx = self.window_.ctx
        ctx.update_settings(self._remember(ctx.settings, path))
        self.changed.emit()

    def _failed(self, path: str, exc: Exception) -> None:
        if self.combo.currentData() != path:
            return
        self.info = None
        self.label.setText("This file cannot be used.")
        self.window_.notifications.error(describe_error(exc))
        self.changed.emit()

    def _add(self, path: str, label: str | None = None) -> None:
        """Add a model above the "Get more…" entry once that is there."""
        if self.combo.findData(path) >= 0:
            return
        get_more = self.combo.findData(GET_MORE)
        index = self.combo.count() if get_more < 0 else get_more - 1  # above the separator
        self.combo.insertItem(index, label or Path(path).name, path)
        self.combo.setItemData(index, path, Qt.ItemDataRole.ToolTipRole)

    def _activated(self, index: int) -> None:
        data = self.combo.itemData(index)
        if data == GET_MORE:
            self.combo.setCurrentIndex(self.combo.findData(self.path))
            self.window_.open_models(self.tool)
            return
        self.set_model(Path(data))

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, self._browse_title, "", MODEL_FILTER)
        if path:
            self.set_model(Path(path))


def _inspect(path: str) -> Any:
    from studio.models.upscalers import inspect_model

    return inspect_model(path)
